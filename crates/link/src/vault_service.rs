//! A site's vault served to the deployment's other hosts: the backend verbs
//! (put, create-only put, get, ranged get, list, delete) over HTTP/2 on the
//! host's TLS listener, for hosts only ([`Peer::Host`]). Objects pass
//! through as they are stored (a pack is compressed and encrypted by the
//! writer; this host never holds the vault's key to read it).
//!
//! ```text
//! PUT    /v1/vault/objects/PATH   body: the object; `if-none-match: *` for create-only
//! GET    /v1/vault/objects/PATH   `range: bytes=FIRST-LAST` for a ranged get
//! DELETE /v1/vault/objects/PATH
//! GET    /v1/vault/list?prefix=P  {"objects": [{"path", "bytes", "modified_micros"}]}
//! ```
//!
//! Errors are `{"code", "message"}` with a stable code: `unauthenticated`
//! (401), `not_found` (404), `already_exists` (409), `bad_request` (400),
//! `too_large` (413), `storage` (502: the store behind failed).
//!
//! Writes are held to the site's bandwidth limit ([`Bandwidth`]): a body
//! is read no faster than the limit allows, so TCP slows the sender.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use standby_vault::backend::{Backend, ObjectInfo, StorageError};

use crate::server::Peer;

pub const OBJECTS: &str = "/v1/vault/objects";
pub const LIST: &str = "/v1/vault/list";
/// The largest object a client may put (packs are near 16 MiB).
pub const OBJECT_BYTES_MAX: usize = 256 << 20;

/// A listing as it crosses the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listing {
    pub objects: Vec<ListedObject>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ListedObject {
    pub path: String,
    pub bytes: u64,
    pub modified_micros: i64,
}

impl From<&ObjectInfo> for ListedObject {
    fn from(object: &ObjectInfo) -> Self {
        let micros = match object.modified.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(since) => since.as_micros() as i64,
            Err(before) => -(before.duration().as_micros() as i64),
        };
        ListedObject { path: object.path.clone(), bytes: object.bytes, modified_micros: micros }
    }
}

impl ListedObject {
    pub fn info(&self) -> ObjectInfo {
        let modified = if self.modified_micros >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_micros(self.modified_micros as u64)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_micros(self.modified_micros.unsigned_abs())
        };
        ObjectInfo { path: self.path.clone(), bytes: self.bytes, modified }
    }
}

/// An error as it crosses the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    pub message: String,
}

/// The rate writes into the vault may take, in bytes per second (0: no
/// limit); changed while it serves.
#[derive(Debug, Default)]
pub struct Bandwidth {
    limit: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may pass now; below zero, owed by earlier writes.
    tokens: f64,
    refilled: Instant,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket { tokens: 0.0, refilled: Instant::now() }
    }
}

impl Bandwidth {
    pub fn set(&self, bytes_per_second: u64) {
        self.limit.store(bytes_per_second, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// How long `bytes` more must wait to keep to the limit (taking them).
    fn take(&self, bytes: usize) -> Duration {
        let rate = self.limit() as f64;
        if rate == 0.0 {
            return Duration::ZERO;
        }
        let mut bucket = self.bucket.lock().expect("the bucket's lock is never poisoned");
        let now = Instant::now();
        // A burst of a tenth of a second at most.
        let burst = rate / 10.0;
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.refilled).as_secs_f64() * rate).min(burst);
        bucket.refilled = now;
        bucket.tokens -= bytes as f64;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rate)
        }
    }
}

#[derive(Clone)]
struct Served {
    backend: Arc<dyn Backend>,
    bandwidth: Arc<Bandwidth>,
}

/// The routes serving `backend` (the vault at this host's site).
pub fn routes(backend: Arc<dyn Backend>, bandwidth: Arc<Bandwidth>) -> Router {
    Router::new()
        .route(&format!("{OBJECTS}/{{*path}}"), get(get_object).put(put_object).delete(delete_object))
        .route(LIST, get(list))
        .layer(axum::middleware::from_fn(hosts_only))
        .with_state(Served { backend, bandwidth })
}

async fn hosts_only(request: Request, next: axum::middleware::Next) -> Response {
    match request.extensions().get::<Peer>() {
        Some(Peer::Host { .. }) => next.run(request).await,
        _ => {
            let refusal = error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the vault is served to the deployment's hosts only: connect with a host certificate of its CA",
            );
            crate::server::refuse_after_body(request, refusal).await
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(WireError { code: code.into(), message: message.into() })).into_response()
}

fn storage_error(e: StorageError) -> Response {
    match e {
        StorageError::NotFound { .. } => error(StatusCode::NOT_FOUND, "not_found", &e.to_string()),
        StorageError::AlreadyExists { .. } => error(StatusCode::CONFLICT, "already_exists", &e.to_string()),
        other => error(StatusCode::BAD_GATEWAY, "storage", &other.to_string()),
    }
}

/// Runs a backend call off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(storage_error),
        Err(_) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the storage call panicked")),
    }
}

async fn get_object(State(served): State<Served>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    let range = match headers.get("range").map(|value| parse_range(value.to_str().unwrap_or(""))) {
        None => None,
        Some(Ok(range)) => Some(range),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "bad_request", &e),
    };
    let backend = served.backend.clone();
    let result = blocking(move || match range {
        Some(range) => backend.get_range(&path, range),
        None => backend.get(&path),
    })
    .await;
    match result {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(response) => response,
    }
}

async fn put_object(State(served): State<Served>, Path(path): Path<String>, request: Request) -> Response {
    let create_only = request.headers().get("if-none-match").is_some_and(|value| value == "*");
    let bytes = match read_body(request.into_body(), &served.bandwidth).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let backend = served.backend.clone();
    let result =
        blocking(move || if create_only { backend.put_new(&path, bytes) } else { backend.put(&path, bytes) }).await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

/// The body, read no faster than the bandwidth limit and no larger than
/// [`OBJECT_BYTES_MAX`].
async fn read_body(body: Body, bandwidth: &Bandwidth) -> Result<Bytes, Response> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", &format!("the body broke off: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if bytes.len() + data.len() > OBJECT_BYTES_MAX {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("an object is at most {OBJECT_BYTES_MAX} bytes"),
            ));
        }
        let wait = bandwidth.take(data.len());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        bytes.extend_from_slice(&data);
    }
    Ok(bytes.freeze())
}

async fn delete_object(State(served): State<Served>, Path(path): Path<String>) -> Response {
    let backend = served.backend.clone();
    match blocking(move || backend.delete(&path)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
}

async fn list(State(served): State<Served>, Query(query): Query<ListQuery>) -> Response {
    let backend = served.backend.clone();
    match blocking(move || backend.list(&query.prefix)).await {
        Ok(objects) => Json(Listing { objects: objects.iter().map(ListedObject::from).collect() }).into_response(),
        Err(response) => response,
    }
}

/// `bytes=FIRST-LAST` (inclusive, as HTTP has it) as a half-open range.
pub fn parse_range(text: &str) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("range {text:?} is not bytes=FIRST-LAST");
    let (first, last) = text.strip_prefix("bytes=").and_then(|r| r.split_once('-')).ok_or_else(bad)?;
    let first: u64 = first.parse().map_err(|_| bad())?;
    let last: u64 = last.parse().map_err(|_| bad())?;
    if last < first || last == u64::MAX {
        return Err(bad());
    }
    Ok(first..last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_or_are_refused() {
        assert_eq!(parse_range("bytes=10-19").unwrap(), 10..20);
        assert_eq!(parse_range("bytes=0-0").unwrap(), 0..1);
        for bad in ["", "bytes=", "bytes=5", "bytes=9-3", "bytes=-3", "items=0-1", "bytes=0-18446744073709551615"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_bandwidth_limit_holds_writes_to_its_rate() {
        let bandwidth = Bandwidth::default();
        assert_eq!(bandwidth.take(1 << 30), Duration::ZERO);
        bandwidth.set(1 << 20);
        // A second's worth beyond the burst waits about a second.
        let wait = bandwidth.take(1 << 20);
        assert!(wait >= Duration::from_millis(800) && wait <= Duration::from_millis(1100), "{wait:?}");
        // What is owed carries over to the next write.
        let next = bandwidth.take(1 << 19);
        assert!(next >= wait + Duration::from_millis(400), "{next:?} after {wait:?}");
    }
}
