use standby_format::FormatError;
use standby_image::ImageError;
use thiserror::Error;

use crate::backend::StorageError;

/// Why a vault operation did not happen. [`VaultError::is_bad_input`] tells
/// the operator's mistakes (exit code 2) from failures (exit code 1).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error("{location} is not a vault (it has no vault.config); create one with `standby vault init {location}`")]
    NotAVault { location: String },
    #[error("{location} is already a vault")]
    AlreadyAVault { location: String },
    #[error("{location} is not empty and is not a vault; choose an empty or new location")]
    NotEmpty { location: String },
    #[error(
        "vault at {location} has format version {found}; this standby reads up to version {supported}: upgrade standby"
    )]
    NewerFormat { location: String, found: u16, supported: u16 },
    #[error("vault at {location} is encrypted: pass --key-file with its key")]
    KeyRequired { location: String },
    #[error("the key in {key_file} is not the key of vault {location}")]
    WrongKey { location: String, key_file: String },
    #[error("vault at {location} is not encrypted: drop --key-file")]
    KeyNotUsed { location: String },
    #[error("invalid disk name {name:?}: {reason}")]
    InvalidDiskName { name: String, reason: String },
    #[error("no disk '{disk}' in the vault{}", known_disks(.known))]
    UnknownDisk { disk: String, known: Vec<String> },
    #[error("no recovery point '{point}' for disk '{disk}': {reason}")]
    UnknownPoint { disk: String, point: String, reason: String },
    #[error("{path} already exists; choose a new path or pass --force")]
    OutputExists { path: String },
    #[error("another sync published point {sequence} of disk '{disk}' at the same time; run sync again")]
    ConcurrentSync { disk: String, sequence: u64 },
    #[error("{object} is damaged: {problem}; run `standby verify`")]
    Damaged { object: String, problem: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot {operation} {path}: {source}")]
    Io { operation: &'static str, path: String, source: std::io::Error },
}

fn known_disks(known: &[String]) -> String {
    if known.is_empty() {
        " (it holds no disks yet)".to_string()
    } else {
        format!(" (disks: {})", known.join(", "))
    }
}

impl VaultError {
    pub fn is_bad_input(&self) -> bool {
        match self {
            VaultError::NotAVault { .. }
            | VaultError::AlreadyAVault { .. }
            | VaultError::NotEmpty { .. }
            | VaultError::NewerFormat { .. }
            | VaultError::KeyRequired { .. }
            | VaultError::WrongKey { .. }
            | VaultError::KeyNotUsed { .. }
            | VaultError::InvalidDiskName { .. }
            | VaultError::UnknownDisk { .. }
            | VaultError::UnknownPoint { .. }
            | VaultError::OutputExists { .. }
            | VaultError::Storage(StorageError::Unreachable { .. } | StorageError::MissingContainer { .. }) => true,
            VaultError::Image(e) => e.is_bad_input(),
            _ => false,
        }
    }

    pub(crate) fn damaged(object: &str, problem: impl std::fmt::Display) -> Self {
        VaultError::Damaged { object: object.to_string(), problem: problem.to_string() }
    }

    /// Turns a decoding failure of `object` into the right error: a newer
    /// format is the operator's to fix; anything else is damage.
    pub(crate) fn decoding(location: &str, object: &str, error: FormatError) -> Self {
        match error {
            FormatError::NewerVersion { found, supported } => {
                VaultError::NewerFormat { location: location.to_string(), found, supported }
            }
            other => VaultError::damaged(object, other),
        }
    }
}
