//! The client of [`vault_service`](crate::vault_service): a vault at
//! another site's host, `standby://ADDRESS/SITE`, as a [`Backend`].
//!
//! The connection is TLS with this host's certificate (the identity in a
//! host's `tls/` folder), and the server must show the certificate of
//! SITE's host under the deployment's CA: the client asks for
//! `SITE.sites.standby` and resolves it to ADDRESS itself. Requests take
//! turns on a few HTTP/2 connections, many in flight on each, with windows
//! wide enough for a long round trip; keep-alive pings find a dead link
//! within about 20 s.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use standby_vault::backend::{check_path, Backend, ObjectInfo, StorageError};

use crate::identity::{host_name, Identity};
use crate::vault_service::{Listing, WireError, LIST, OBJECTS};

/// The scheme of a vault at another host.
pub const SCHEME: &str = "standby://";

/// Where a remote vault is: the host's address and its site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteLocation {
    pub address: SocketAddr,
    pub site: String,
}

impl RemoteLocation {
    /// `standby://ADDRESS:PORT/SITE`.
    pub fn parse(text: &str) -> Result<RemoteLocation, String> {
        let rest = text.strip_prefix(SCHEME).ok_or_else(|| format!("{text} is not a {SCHEME} URL"))?;
        let (address, site) = rest
            .split_once('/')
            .ok_or_else(|| format!("vault URL {text} names no site: use {SCHEME}ADDRESS:PORT/SITE"))?;
        let address: SocketAddr =
            address.parse().map_err(|_| format!("vault URL {text}: '{address}' is not an IP address and port"))?;
        let site = site.trim_end_matches('/');
        if site.is_empty() || !site.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(format!("vault URL {text}: '{site}' is not a site name (lowercase letters, digits, -)"));
        }
        Ok(RemoteLocation { address, site: site.to_string() })
    }
}

impl std::fmt::Display for RemoteLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.address, self.site)
    }
}

/// TCP connections to a remote vault. One connection moves at most its
/// receive window per round trip (Linux's default largest is 6 MiB:
/// 120 MiB/s at 50 ms), and a sync's uploaders send three packs at once:
/// large puts take the connections in turn, which keeps a distant vault's
/// link as busy as a near one (bench/hosts.py, "proxy, 25 ms each way").
/// Everything else goes on the first, so a short command pays one
/// connection's handshake, not three.
const CONNECTIONS: usize = 3;
/// A put at least this large takes the next connection in turn.
const BULK_BYTES: usize = 1 << 20;

pub struct RemoteBackend {
    location: RemoteLocation,
    base: reqwest::Url,
    /// A client per connection: reqwest keeps one HTTP/2 connection per
    /// client and host.
    clients: Vec<reqwest::Client>,
    turn: AtomicUsize,
    runtime: tokio::runtime::Runtime,
}

impl RemoteBackend {
    pub fn new(location: RemoteLocation, identity: &Identity) -> Result<RemoteBackend, String> {
        let tls = identity.client_config().map_err(|e| e.to_string())?;
        let name = host_name(&location.site);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("standby-remote-vault")
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime for the remote vault: {e}"))?;
        let connection = || {
            let _entered = runtime.enter();
            reqwest::Client::builder()
                .tls_backend_preconfigured(tls.clone())
                .resolve(&name, location.address)
                .http2_prior_knowledge()
                .http2_adaptive_window(true)
                .http2_initial_stream_window_size(8 << 20)
                .http2_initial_connection_window_size(32 << 20)
                .http2_max_frame_size(1 << 20)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .http2_keep_alive_timeout(Duration::from_secs(10))
                .http2_keep_alive_while_idle(true)
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(600))
                .tcp_nodelay(true)
                .no_proxy()
                .build()
                .map_err(|e| format!("a client for {location}: {e}"))
        };
        let clients = (0..CONNECTIONS).map(|_| connection()).collect::<Result<Vec<_>, _>>()?;
        let base = reqwest::Url::parse(&format!("https://{name}:{}/", location.address.port()))
            .map_err(|e| format!("{location}: {e}"))?;
        Ok(RemoteBackend { location, base, clients, turn: AtomicUsize::new(0), runtime })
    }

    /// The client of the first connection (it connects when first used).
    fn client(&self) -> &reqwest::Client {
        &self.clients[0]
    }

    /// The client for a put of `bytes`: large ones take the connections in turn.
    fn client_for_put(&self, bytes: &Bytes) -> &reqwest::Client {
        if bytes.len() < BULK_BYTES {
            return self.client();
        }
        &self.clients[self.turn.fetch_add(1, Ordering::Relaxed) % self.clients.len()]
    }

    fn object_url(&self, path: &str) -> Result<reqwest::Url, StorageError> {
        check_path(path)?;
        let mut url = self.base.clone();
        {
            let mut segments = url.path_segments_mut().expect("an https URL has a path");
            segments.extend(OBJECTS.trim_start_matches('/').split('/'));
            segments.extend(path.split('/'));
        }
        Ok(url)
    }

    /// Sends `request`; a response whose status is not a success becomes
    /// the error its code names.
    fn send(
        &self,
        operation: &'static str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Bytes, StorageError> {
        self.runtime.block_on(async {
            let response = request.send().await.map_err(|e| self.failure(operation, path, e))?;
            let status = response.status();
            let body = response.bytes().await.map_err(|e| self.failure(operation, path, e))?;
            if status.is_success() {
                return Ok(body);
            }
            let wire: Option<WireError> = serde_json::from_slice(&body).ok();
            let path = path.to_string();
            Err(match wire {
                Some(e) if e.code == "not_found" => StorageError::NotFound { path },
                Some(e) if e.code == "already_exists" => StorageError::AlreadyExists { path },
                Some(e) => StorageError::Failed { operation, path, detail: format!("{} ({})", e.message, e.code) },
                None => {
                    StorageError::Failed { operation, path, detail: format!("{} answered {status}", self.location) }
                }
            })
        })
    }

    fn failure(&self, operation: &'static str, path: &str, error: reqwest::Error) -> StorageError {
        let detail = chain(&error);
        if error.is_connect() || error.is_timeout() || detail.contains("connection") || detail.contains("broken pipe") {
            StorageError::Unreachable { endpoint: self.location.to_string(), detail }
        } else {
            StorageError::Failed { operation, path: path.to_string(), detail }
        }
    }
}

/// An error and its causes on one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Backend for RemoteBackend {
    fn describe(&self) -> String {
        self.location.to_string()
    }

    fn put(&self, path: &str, bytes: Bytes) -> Result<(), StorageError> {
        let url = self.object_url(path)?;
        self.send("put", path, self.client_for_put(&bytes).put(url).body(bytes)).map(|_| ())
    }

    fn put_new(&self, path: &str, bytes: Bytes) -> Result<(), StorageError> {
        let url = self.object_url(path)?;
        self.send("put", path, self.client_for_put(&bytes).put(url).header("if-none-match", "*").body(bytes))
            .map(|_| ())
    }

    fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        let url = self.object_url(path)?;
        self.send("get", path, self.client().get(url))
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let url = self.object_url(path)?;
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let bytes = self.send("get", path, self.client().get(url).header("range", header))?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(StorageError::Failed {
                operation: "get",
                path: path.to_string(),
                detail: format!("asked for {} bytes, {} came", range.end - range.start, bytes.len()),
            });
        }
        Ok(bytes)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut url = self.base.join(LIST.trim_start_matches('/')).expect("a route joins");
        url.query_pairs_mut().append_pair("prefix", prefix);
        let body = self.send("list", prefix, self.client().get(url))?;
        let listing: Listing = serde_json::from_slice(&body).map_err(|e| StorageError::Failed {
            operation: "list",
            path: prefix.to_string(),
            detail: format!("{} answered a listing that does not parse: {e}", self.location),
        })?;
        Ok(listing.objects.iter().map(|object| object.info()).collect())
    }

    fn delete(&self, path: &str) -> Result<(), StorageError> {
        let url = self.object_url(path)?;
        self.send("delete", path, self.client().delete(url)).map(|_| ())
    }
}

/// Opens the vault at `text`: a remote one (`standby://`, reached with the
/// host identity in `STANDBY_TLS_DIR`), or any location the vault crate
/// opens itself (a folder, `az://`, `s3://`, `gs://`).
pub fn open_location(text: &str) -> Result<Arc<dyn Backend>, String> {
    if !text.starts_with(SCHEME) {
        let location = standby_vault::backend::VaultLocation::parse(text)?;
        return standby_vault::backend::open_location(&location);
    }
    let location = RemoteLocation::parse(text)?;
    let Some(dir) = std::env::var_os(TLS_DIR_ENV) else {
        return Err(format!(
            "a vault at another host ({text}) is reached with this host's certificate: set {TLS_DIR_ENV} to the \
             tls folder of a deployment made by standby init or join"
        ));
    };
    let identity = Identity::load(std::path::Path::new(&dir)).map_err(|e| e.to_string())?;
    Ok(Arc::new(RemoteBackend::new(location, &identity)?))
}

/// The environment variable naming the folder of this host's identity.
pub const TLS_DIR_ENV: &str = "STANDBY_TLS_DIR";
