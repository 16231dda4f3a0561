//! The control plane's records in a vault: what a deployment's control
//! plane knows (machines, policies, protection), so that a vault describes
//! itself for the control plane as it does for disks and a lost control
//! plane can be rebuilt from it (`standby recover-control`).
//!
//! Each record is one object, `control/<time µs, 20 digits>.control`, in an
//! envelope (`SBYCNTRL`, compressed, encrypted in an encrypted vault); its
//! body is the control plane's own document, opaque here. A writer puts a
//! new record (never rewrites one: a put that breaks off leaves the older
//! records whole) and then removes all but the newest [`RECORDS_KEPT`];
//! a reader takes the newest record that opens.

use bytes::Bytes;
use standby_format::{Envelope, ObjectKind};

use crate::{Vault, VaultError};

pub const CONTROL_FOLDER: &str = "control/";
/// How many records a writer leaves behind it.
pub const RECORDS_KEPT: usize = 3;

/// A record read back: when it was written and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRecord {
    pub time_micros: i64,
    pub body: Vec<u8>,
}

fn record_path(time_micros: i64) -> String {
    format!("{CONTROL_FOLDER}{time_micros:020}.control")
}

/// The records in the vault, oldest first, by time.
fn record_times(vault: &Vault) -> Result<Vec<(i64, String)>, VaultError> {
    let mut times: Vec<(i64, String)> = vault
        .backend()
        .list(CONTROL_FOLDER)?
        .into_iter()
        .filter_map(|object| {
            let name = object.path.strip_prefix(CONTROL_FOLDER)?.strip_suffix(".control")?;
            Some((name.parse().ok()?, object.path))
        })
        .collect();
    times.sort();
    Ok(times)
}

/// Writes `body` as the newest record (its time now, or just after the
/// newest there), then removes all but the newest [`RECORDS_KEPT`].
pub fn write_record(vault: &Vault, body: &[u8]) -> Result<i64, VaultError> {
    let times = record_times(vault)?;
    let newest = times.last().map_or(i64::MIN, |(time, _)| *time);
    let time = jiff::Timestamp::now().as_microsecond().max(newest + 1);
    let sealed = Envelope::seal(ObjectKind::Control, body, vault.keys(), true);
    vault.backend().put(&record_path(time), Bytes::from(sealed))?;
    let stale = (times.len() + 1).saturating_sub(RECORDS_KEPT);
    for (_, path) in times.iter().take(stale) {
        vault.backend().delete(path)?;
    }
    Ok(time)
}

/// The newest record that opens (a damaged newest one falls back to the
/// one before, saying nothing: the caller sees its time); `None` in a vault
/// no control plane wrote to.
pub fn latest_record(vault: &Vault) -> Result<Option<ControlRecord>, VaultError> {
    let mut last_error = None;
    for (time_micros, path) in record_times(vault)?.into_iter().rev() {
        let bytes = vault.backend().get(&path)?;
        match Envelope::open(ObjectKind::Control, &bytes, vault.keys()) {
            Ok(body) => return Ok(Some(ControlRecord { time_micros, body })),
            Err(e) => last_error = Some(VaultError::decoding(&vault.location(), &path, e)),
        }
    }
    match last_error {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::LocalBackend;
    use crate::InitOptions;

    fn vault(dir: &std::path::Path, key: bool) -> Vault {
        let backend = Arc::new(LocalBackend::new(dir.to_path_buf()));
        let key = key.then(|| standby_format::KeyMaterial::new(vec![7; 32]).unwrap());
        Vault::init(backend, InitOptions { key, ..InitOptions::default() }).unwrap()
    }

    #[test]
    fn the_newest_record_is_read_and_only_a_few_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(dir.path(), true);
        assert_eq!(latest_record(&vault).unwrap(), None);
        let mut times = Vec::new();
        for n in 0..5 {
            times.push(write_record(&vault, format!("record {n}").as_bytes()).unwrap());
        }
        assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "{times:?}");
        let latest = latest_record(&vault).unwrap().unwrap();
        assert_eq!((latest.time_micros, latest.body), (times[4], b"record 4".to_vec()));
        assert_eq!(record_times(&vault).unwrap().len(), RECORDS_KEPT);
        // Encrypted: the body is not in the object's bytes.
        let object = std::fs::read(dir.path().join(record_path(times[4]))).unwrap();
        assert!(!object.windows(8).any(|w| w == b"record 4"));
    }

    #[test]
    fn a_damaged_newest_record_falls_back_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(dir.path(), false);
        let older = write_record(&vault, b"older").unwrap();
        let newer = write_record(&vault, b"newer").unwrap();
        let path = dir.path().join(record_path(newer));
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let latest = latest_record(&vault).unwrap().unwrap();
        assert_eq!((latest.time_micros, latest.body), (older, b"older".to_vec()));
        // With every record damaged, the error says which.
        std::fs::write(dir.path().join(record_path(older)), b"garbage").unwrap();
        let error = latest_record(&vault).unwrap_err().to_string();
        assert!(error.contains("control/"), "{error}");
    }
}
