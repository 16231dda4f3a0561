//! Storage backends: the five object-store verbs the vault is allowed to use
//! (put, get, ranged get, list, delete) plus create-only put, behind one
//! trait. [`LocalBackend`] is a directory on a local filesystem;
//! [`ObjectStoreBackend`] is any store of the `object_store` crate (Azure Blob
//! is tested against Azurite). Both pass the same suite (`tests/backends.rs`).
//!
//! Backends never interpret object contents and never retry a failed write
//! into silence: an error goes back to the caller.

#[cfg(feature = "conformance")]
pub mod conformance;
mod local;
mod location;
mod object;

use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
pub use local::LocalBackend;
pub use location::{open_location, VaultLocation};
pub use object::ObjectStoreBackend;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("object {path} not found")]
    NotFound { path: String },
    #[error("object {path} already exists")]
    AlreadyExists { path: String },
    #[error("cannot reach {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("{location}: the container or bucket does not exist; create it first (for Azure: az storage container create --name NAME)")]
    MissingContainer { location: String },
    #[error("{operation} {path} failed: {detail}")]
    Failed { operation: &'static str, path: String, detail: String },
}

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the vault root, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub modified: SystemTime,
}

pub trait Backend: Send + Sync {
    /// Where this backend stores data, for messages (a path or URL).
    fn describe(&self) -> String;

    /// Stores `bytes` at `path`, replacing any object there. Atomic: readers
    /// see the old object or the new one, never a part.
    fn put(&self, path: &str, bytes: Bytes) -> Result<(), StorageError>;

    /// Stores `bytes` at `path` only if nothing is there yet; otherwise
    /// [`StorageError::AlreadyExists`]. Atomic like [`Backend::put`].
    fn put_new(&self, path: &str, bytes: Bytes) -> Result<(), StorageError>;

    fn get(&self, path: &str) -> Result<Bytes, StorageError>;

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StorageError>;

    /// Every object whose path starts with `prefix` (a `/`-terminated folder).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;

    /// Removes `path`; removing a missing object is not an error.
    fn delete(&self, path: &str) -> Result<(), StorageError>;

    /// Removes what interrupted writes left behind (a local directory's
    /// temporary files) last modified before `before`; returns how many
    /// objects and bytes it removed. Stores whose puts are atomic requests
    /// leave nothing behind.
    fn remove_abandoned_writes(&self, before: SystemTime) -> Result<(u64, u64), StorageError> {
        let _ = before;
        Ok((0, 0))
    }
}

/// Checks a relative object path: no empty, `.` or `..` parts, no leading `/`.
pub fn check_path(path: &str) -> Result<(), StorageError> {
    let ok = !path.is_empty() && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if ok {
        Ok(())
    } else {
        Err(StorageError::Failed { operation: "address", path: path.to_string(), detail: "invalid object path".into() })
    }
}
