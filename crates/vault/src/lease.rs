//! Leases: a running sync (or restore, compaction, journal writer) announces itself with an object under
//! `leases/`, refreshed while it runs and deleted when it ends. Collection
//! does not sweep a candidate set while a lease older than the set is fresh,
//! because that operation may have chosen to reuse a chunk from it.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use standby_format::{Envelope, Keys, ObjectKind, PackId};

use crate::{Vault, VaultError};

pub(crate) const LEASES_FOLDER: &str = "leases/";
/// How often a running operation rewrites its lease.
pub(crate) const LEASE_REFRESH: Duration = Duration::from_secs(60);
/// A lease not refreshed for this long belongs to a process that died.
pub(crate) const LEASE_STALE: Duration = Duration::from_secs(15 * 60);
const _: () = assert!(LEASE_REFRESH.as_secs() * 5 <= LEASE_STALE.as_secs());

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseBody {
    pub operation: String,
    pub detail: String,
    pub host: String,
    pub pid: u32,
    pub started_micros: i64,
    pub refreshed_micros: i64,
}

pub(crate) struct Lease {
    vault: Vault,
    path: String,
    body: LeaseBody,
    released: bool,
}

pub(crate) fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

impl Lease {
    pub(crate) fn acquire(vault: &Vault, operation: &str, detail: &str) -> Result<Lease, VaultError> {
        let now = now_micros();
        let body = LeaseBody {
            operation: operation.to_string(),
            detail: detail.to_string(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string(),
            pid: std::process::id(),
            started_micros: now,
            refreshed_micros: now,
        };
        let path = format!("{LEASES_FOLDER}{}.lease", PackId::random());
        let lease = Lease { vault: vault.clone(), path, body, released: false };
        lease.write()?;
        Ok(lease)
    }

    fn write(&self) -> Result<(), VaultError> {
        let json = serde_json::to_vec(&self.body).expect("a lease always serialises");
        let sealed = Envelope::seal(ObjectKind::Lease, &json, &Keys::plain(), false);
        self.vault.backend().put(&self.path, Bytes::from(sealed))?;
        Ok(())
    }

    /// Rewrites the lease if it is due.
    pub(crate) fn refresh_if_due(&mut self) -> Result<(), VaultError> {
        let now = now_micros();
        if now - self.body.refreshed_micros >= LEASE_REFRESH.as_micros() as i64 {
            self.body.refreshed_micros = now;
            self.write()?;
        }
        Ok(())
    }

    /// Starts the lease again from now: for a long-running writer that has
    /// just published everything it referenced and reloaded the collection
    /// sets, so sweeps of sets marked before now need not wait for it.
    pub(crate) fn restart(&mut self) -> Result<(), VaultError> {
        let now = now_micros();
        let previous = (self.body.started_micros, self.body.refreshed_micros);
        self.body.started_micros = now;
        self.body.refreshed_micros = now;
        if let Err(e) = self.write() {
            (self.body.started_micros, self.body.refreshed_micros) = previous;
            return Err(e);
        }
        Ok(())
    }

    pub(crate) fn release(mut self) -> Result<(), VaultError> {
        self.released = true;
        self.vault.backend().delete(&self.path)?;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            // Best effort on an error path: a lease left behind only delays
            // collection until it goes stale.
            let _ = self.vault.backend().delete(&self.path);
        }
    }
}

/// A lease held for as long as a long-lived reader runs (an export serving
/// a recovery point to a drill or a failed-over machine): while it is
/// fresh, no pack marked for collection after it started is swept, so the
/// chunks the reader's point needs stay even when a retention run compacts
/// that point away. A thread of its own refreshes it; dropping the hold
/// releases it.
pub struct Hold {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Vault {
    /// Takes a [`Hold`] for `operation` on `detail` (both shown by `prune`
    /// when the hold makes it wait).
    pub fn hold(&self, operation: &str, detail: &str) -> Result<Hold, VaultError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut lease = Lease::acquire(self, operation, detail)?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("standby-hold".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    // A failed refresh is retried on the next tick (the lease
                    // stays fresh for five refresh periods).
                    let _ = lease.refresh_if_due();
                }
                let _ = lease.release();
            })
            .map_err(|e| VaultError::Io { operation: "start the lease thread", path: String::new(), source: e })?;
        Ok(Hold { stop, thread: Some(thread) })
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Every lease in the vault. One that cannot be decoded is kept, dated by
/// its listing time, so that it blocks collection until it goes stale.
pub(crate) fn list_leases(vault: &Vault) -> Result<Vec<LeaseBody>, VaultError> {
    let mut leases = Vec::new();
    for object in vault.backend().list(LEASES_FOLDER)? {
        let body = vault
            .backend()
            .get(&object.path)
            .ok()
            .and_then(|bytes| Envelope::open(ObjectKind::Lease, &bytes, &Keys::plain()).ok())
            .and_then(|json| serde_json::from_slice::<LeaseBody>(&json).ok());
        leases.push(body.unwrap_or_else(|| {
            let modified = jiff::Timestamp::try_from(object.modified).map(|t| t.as_microsecond()).unwrap_or(0);
            LeaseBody {
                operation: "unknown".into(),
                detail: object.path.clone(),
                host: String::new(),
                pid: 0,
                started_micros: modified,
                refreshed_micros: modified,
            }
        }));
    }
    Ok(leases)
}
