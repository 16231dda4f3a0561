//! A vault in an object store of the `object_store` crate (Azure Blob, S3,
//! GCS). The vault engine is synchronous; this backend owns a small tokio
//! runtime and blocks on each request, so it may be called from any number of
//! threads at once (but not from inside another tokio runtime).

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{check_path, Backend, ObjectInfo, StorageError};

pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// What messages name: the URL and the endpoint behind it.
    description: String,
    endpoint: String,
    runtime: tokio::runtime::Runtime,
}

impl ObjectStoreBackend {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, description: String, endpoint: String) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("standby-object-store")
            .enable_all()
            .build()
            .expect("a tokio runtime can be built");
        let prefix = prefix.trim_matches('/').to_string();
        ObjectStoreBackend { store, prefix, description, endpoint, runtime }
    }

    fn store_path(&self, path: &str) -> Result<StorePath, StorageError> {
        check_path(path)?;
        let full = if self.prefix.is_empty() { path.to_string() } else { format!("{}/{path}", self.prefix) };
        StorePath::parse(&full).map_err(|e| StorageError::Failed {
            operation: "address",
            path: path.to_string(),
            detail: e.to_string(),
        })
    }

    fn classify(&self, operation: &'static str, path: &str, error: object_store::Error) -> StorageError {
        match error {
            object_store::Error::NotFound { .. } => StorageError::NotFound { path: path.to_string() },
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
                StorageError::AlreadyExists { path: path.to_string() }
            }
            other => {
                let chain = error_chain(&other);
                let detail = innermost(&other);
                if is_connection_failure(&chain) {
                    StorageError::Unreachable { endpoint: self.endpoint.clone(), detail }
                } else if detail.contains("404") {
                    // A 404 on a listing or an upload means the container itself is missing.
                    StorageError::MissingContainer { location: self.description.clone() }
                } else {
                    StorageError::Failed { operation, path: path.to_string(), detail }
                }
            }
        }
    }

    fn put_with(&self, path: &str, bytes: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let location = self.store_path(path)?;
        let options = PutOptions { mode, ..Default::default() };
        self.runtime
            .block_on(self.store.put_opts(&location, PutPayload::from_bytes(bytes), options))
            .map(|_| ())
            .map_err(|e| self.classify("put", path, e))
    }
}

impl Backend for ObjectStoreBackend {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn put(&self, path: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.put_with(path, bytes, PutMode::Overwrite)
    }

    fn put_new(&self, path: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.put_with(path, bytes, PutMode::Create)
    }

    fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        let location = self.store_path(path)?;
        self.runtime
            .block_on(async { self.store.get(&location).await?.bytes().await })
            .map_err(|e| self.classify("get", path, e))
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let location = self.store_path(path)?;
        let expected = range.end - range.start;
        let bytes =
            self.runtime.block_on(self.store.get_range(&location, range)).map_err(|e| self.classify("get", path, e))?;
        if bytes.len() as u64 != expected {
            return Err(StorageError::Failed {
                operation: "get",
                path: path.to_string(),
                detail: format!("asked for {expected} bytes, got {}", bytes.len()),
            });
        }
        Ok(bytes)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let full_prefix = match (self.prefix.is_empty(), prefix.trim_end_matches('/')) {
            (true, "") => None,
            (true, rest) => Some(StorePath::from(rest)),
            (false, "") => Some(StorePath::from(self.prefix.as_str())),
            (false, rest) => Some(StorePath::from(format!("{}/{rest}", self.prefix))),
        };
        let strip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        let listed: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(full_prefix.as_ref()).try_collect())
            .map_err(|e| self.classify("list", prefix, e))?;
        let mut found: Vec<ObjectInfo> = listed
            .into_iter()
            .filter_map(|meta| {
                let path = meta.location.as_ref().get(strip..)?.to_string();
                path.starts_with(prefix).then(|| ObjectInfo {
                    path,
                    bytes: meta.size,
                    modified: SystemTime::UNIX_EPOCH
                        + Duration::from_micros(meta.last_modified.timestamp_micros().max(0) as u64),
                })
            })
            .collect();
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }

    fn delete(&self, path: &str) -> Result<(), StorageError> {
        let location = self.store_path(path)?;
        match self.runtime.block_on(self.store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.classify("delete", path, e)),
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn is_connection_failure(detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    ["error sending request", "connection refused", "tcp connect", "dns error", "timed out", "connection reset"]
        .iter()
        .any(|needle| detail.contains(needle))
}

/// The most specific cause, shortened: "Connection refused (os error 111)" or
/// "Server returned non-2xx status code: 503 Service Unavailable".
fn innermost(error: &dyn std::error::Error) -> String {
    let mut last = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        last = cause.to_string();
        source = cause.source();
    }
    if let Some(at) = last.find("status code: ") {
        let rest = &last[at + "status code: ".len()..];
        let status = rest.split(':').next().unwrap_or(rest);
        return format!("HTTP {status}");
    }
    last.lines().next().unwrap_or_default().chars().take(300).collect()
}
