//! Opening and creating vaults, object paths, and recovery point listing and
//! selection.

use std::sync::Arc;

use bytes::Bytes;
use rayon::prelude::*;
use standby_format::{
    validate_disk_name, EncryptionConfig, FormatError, KeyMaterial, Keys, PackId, PointKind, PointManifest,
    VaultConfig, CHUNK_BYTES_DEFAULT, FORMAT_VERSION, PAGE_ENTRIES_DEFAULT, ZSTD_LEVEL_DEFAULT,
};

use crate::backend::{Backend, StorageError};
use crate::VaultError;

/// The one object every vault has; see `docs/format.md`.
pub const CONFIG_PATH: &str = "vault.config";
const DISKS_FOLDER: &str = "disks/";

pub(crate) fn pack_path(id: &PackId) -> String {
    format!("packs/{id}.pack")
}

pub(crate) fn index_path(id: &PackId) -> String {
    format!("indexes/{id}.index")
}

pub(crate) fn points_folder(disk: &str) -> String {
    format!("{DISKS_FOLDER}{disk}/points/")
}

pub(crate) fn point_path(disk: &str, sequence: u64) -> String {
    format!("{}{sequence:020}.point", points_folder(disk))
}

/// Choices fixed when a vault is created.
pub struct InitOptions {
    pub key: Option<KeyMaterial>,
    pub chunk_bytes: u32,
    /// Chunk ids per map page (tests use small pages to exercise many of them).
    pub page_entries: u32,
    pub zstd_level: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            key: None,
            chunk_bytes: CHUNK_BYTES_DEFAULT,
            page_entries: PAGE_ENTRIES_DEFAULT,
            zstd_level: ZSTD_LEVEL_DEFAULT,
        }
    }
}

/// An open vault: its backend, config and keys.
#[derive(Clone)]
pub struct Vault {
    backend: Arc<dyn Backend>,
    config: VaultConfig,
    keys: Keys,
}

/// The recovery points of one disk, oldest first, and manifests that could
/// not be read.
#[derive(Debug, Default)]
pub struct PointListing {
    pub points: Vec<PointManifest>,
    pub damaged: Vec<(String, String)>,
}

/// How an operator names a recovery point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointSelector {
    Latest,
    LatestProcessed,
    LatestApp,
    Sequence(u64),
    /// The newest point at or before this time.
    Time(jiff::Timestamp),
}

impl PointSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "latest" => return Ok(PointSelector::Latest),
            "latest-processed" => return Ok(PointSelector::LatestProcessed),
            "latest-app" => return Ok(PointSelector::LatestApp),
            _ => {}
        }
        if let Ok(sequence) = text.parse::<u64>() {
            return Ok(PointSelector::Sequence(sequence));
        }
        text.parse::<jiff::Timestamp>().map(PointSelector::Time).map_err(|_| {
            format!("'{text}' is not a recovery point: use latest, latest-processed, latest-app, a point id, or an RFC 3339 time")
        })
    }
}

impl Vault {
    /// Creates a vault at an empty location.
    pub fn init(backend: Arc<dyn Backend>, options: InitOptions) -> Result<Vault, VaultError> {
        let location = backend.describe();
        let existing = backend.list("")?;
        if existing.iter().any(|object| object.path == CONFIG_PATH) {
            return Err(VaultError::AlreadyAVault { location });
        }
        if !existing.is_empty() {
            return Err(VaultError::NotEmpty { location });
        }
        let vault_id = PackId::random().to_hex();
        let encryption = options.key.as_ref().map(|key| EncryptionConfig {
            algorithm: "xchacha20poly1305".into(),
            key_derivation: "blake3-derive-key".into(),
            key_check: key.key_check(&vault_id),
        });
        let config = VaultConfig {
            vault_id,
            created: jiff::Timestamp::now().to_string(),
            chunk_bytes: options.chunk_bytes,
            page_entries: options.page_entries,
            zstd_level: options.zstd_level,
            encryption,
        };
        match backend.put_new(CONFIG_PATH, Bytes::from(config.seal())) {
            Ok(()) => {}
            Err(StorageError::AlreadyExists { .. }) => return Err(VaultError::AlreadyAVault { location }),
            Err(e) => return Err(e.into()),
        }
        let keys = options.key.as_ref().map(Keys::from_material).unwrap_or_else(Keys::plain);
        Ok(Vault { backend, config, keys })
    }

    /// Opens an existing vault, checking its version and the key.
    /// `key_file` names the key's source for messages.
    pub fn open(backend: Arc<dyn Backend>, key: Option<(KeyMaterial, String)>) -> Result<Vault, VaultError> {
        let location = backend.describe();
        let bytes = match backend.get(CONFIG_PATH) {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => return Err(VaultError::NotAVault { location }),
            Err(e) => return Err(e.into()),
        };
        let config = VaultConfig::open(&bytes).map_err(|e| match e {
            FormatError::BadMagic { .. } => VaultError::NotAVault { location: location.clone() },
            other => VaultError::decoding(&location, CONFIG_PATH, other),
        })?;
        let keys = match (&config.encryption, key) {
            (None, None) => Keys::plain(),
            (None, Some(_)) => return Err(VaultError::KeyNotUsed { location }),
            (Some(_), None) => return Err(VaultError::KeyRequired { location }),
            (Some(encryption), Some((material, key_file))) => {
                if material.key_check(&config.vault_id) != encryption.key_check {
                    return Err(VaultError::WrongKey { location, key_file });
                }
                Keys::from_material(&material)
            }
        };
        Ok(Vault { backend, config, keys })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn location(&self) -> String {
        self.backend.describe()
    }

    pub fn format_version(&self) -> u16 {
        FORMAT_VERSION
    }

    /// Names of every disk with at least one point (or a damaged one).
    pub fn disks(&self) -> Result<Vec<String>, VaultError> {
        let mut disks: Vec<String> = self
            .backend
            .list(DISKS_FOLDER)?
            .into_iter()
            .filter_map(|object| object.path.strip_prefix(DISKS_FOLDER)?.split('/').next().map(str::to_string))
            .collect();
        disks.sort();
        disks.dedup();
        Ok(disks)
    }

    /// Sequence numbers of a disk's points, from object names alone.
    pub(crate) fn point_sequences(&self, disk: &str) -> Result<Vec<(u64, String)>, VaultError> {
        let folder = points_folder(disk);
        let mut sequences: Vec<(u64, String)> = self
            .backend
            .list(&folder)?
            .into_iter()
            .filter_map(|object| {
                let name = object.path.strip_prefix(&folder)?.strip_suffix(".point")?;
                Some((name.parse::<u64>().ok()?, object.path))
            })
            .collect();
        sequences.sort();
        Ok(sequences)
    }

    pub fn read_point(&self, path: &str) -> Result<PointManifest, VaultError> {
        let bytes = self.backend.get(path)?;
        PointManifest::open(&bytes, &self.keys).map_err(|e| VaultError::decoding(&self.location(), path, e))
    }

    /// Every point of `disk`, oldest first. An unknown disk is an error.
    pub fn points(&self, disk: &str) -> Result<PointListing, VaultError> {
        let listing = self.point_listing(disk)?;
        if listing.points.is_empty() && listing.damaged.is_empty() {
            return Err(VaultError::UnknownDisk { disk: disk.to_string(), known: self.disks()? });
        }
        Ok(listing)
    }

    /// A disk's points, none when it has none (a disk protected by its
    /// journal alone, say).
    pub(crate) fn point_listing(&self, disk: &str) -> Result<PointListing, VaultError> {
        check_disk_name(disk)?;
        let sequences = self.point_sequences(disk)?;
        let results: Vec<(String, Result<PointManifest, VaultError>)> =
            sequences.par_iter().map(|(_, path)| (path.clone(), self.read_point(path))).collect();
        let mut listing = PointListing::default();
        for (path, result) in results {
            match result {
                Ok(point) => listing.points.push(point),
                Err(VaultError::Damaged { problem, .. }) => listing.damaged.push((path, problem)),
                Err(other) => return Err(other),
            }
        }
        Ok(listing)
    }

    /// Resolves a selector to one point of `disk`.
    pub fn select_point(&self, disk: &str, selector: &PointSelector) -> Result<PointManifest, VaultError> {
        let listing = self.points(disk)?;
        let unknown = |reason: String| VaultError::UnknownPoint {
            disk: disk.to_string(),
            point: describe_selector(selector),
            reason,
        };
        let found = match selector {
            PointSelector::Latest | PointSelector::LatestProcessed => listing.points.last(),
            PointSelector::LatestApp => {
                listing.points.iter().rev().find(|point| point.kind == PointKind::AppConsistent)
            }
            PointSelector::Sequence(sequence) => listing.points.iter().find(|point| point.sequence == *sequence),
            PointSelector::Time(time) => {
                let micros = time.as_microsecond();
                listing.points.iter().rev().find(|point| point.time_micros <= micros)
            }
        };
        if let Some(point) = found {
            return Ok(point.clone());
        }
        // Say why, naming a damaged manifest when that is the reason.
        if let Some((path, problem)) = listing.damaged.first() {
            return Err(VaultError::damaged(path, problem));
        }
        Err(match selector {
            PointSelector::LatestApp => {
                unknown("it has no app-consistent point; list points with `standby points`".into())
            }
            PointSelector::Time(_) => unknown(format!(
                "the oldest point is from {}",
                listing.points.first().map(|p| format_time(p.time_micros)).unwrap_or_default()
            )),
            _ => unknown("list points with `standby points`".into()),
        })
    }
}

pub(crate) fn check_disk_name(disk: &str) -> Result<(), VaultError> {
    validate_disk_name(disk).map_err(|reason| VaultError::InvalidDiskName { name: disk.to_string(), reason })
}

fn describe_selector(selector: &PointSelector) -> String {
    match selector {
        PointSelector::Latest => "latest".into(),
        PointSelector::LatestProcessed => "latest-processed".into(),
        PointSelector::LatestApp => "latest-app".into(),
        PointSelector::Sequence(sequence) => sequence.to_string(),
        PointSelector::Time(time) => time.to_string(),
    }
}

/// RFC 3339 text for a point time.
pub fn format_time(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros).map(|t| t.to_string()).unwrap_or_else(|_| format!("@{micros}µs"))
}
