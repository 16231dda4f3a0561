//! The vault config: the one object written by `vault init` and never
//! rewritten. Its body is JSON so an operator can read it with `tail -c +25`;
//! its envelope is never encrypted, because it says whether the rest is.

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, ObjectKind};
use crate::{FormatError, Keys, CHUNK_BYTES_MAX, CHUNK_BYTES_MIN, PAGE_ENTRIES_MAX};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultConfig {
    /// Random id of this vault (32 hex digits).
    pub vault_id: String,
    /// RFC 3339 creation time.
    pub created: String,
    pub chunk_bytes: u32,
    pub page_entries: u32,
    /// zstd level used for chunk frames.
    pub zstd_level: i32,
    pub encryption: Option<EncryptionConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionConfig {
    /// Always "xchacha20poly1305" in format version 1.
    pub algorithm: String,
    /// Always "blake3-derive-key" in format version 1.
    pub key_derivation: String,
    /// Keyed BLAKE3 of the vault id under a key derived from the key file.
    pub key_check: String,
}

impl VaultConfig {
    pub fn seal(&self) -> Vec<u8> {
        let body = serde_json::to_vec_pretty(self).expect("a vault config always serialises");
        Envelope::seal(ObjectKind::Config, &body, &Keys::plain(), false)
    }

    pub fn open(bytes: &[u8]) -> Result<Self, FormatError> {
        let body = Envelope::open(ObjectKind::Config, bytes, &Keys::plain())?;
        let config: VaultConfig =
            serde_json::from_slice(&body).map_err(|e| crate::error::malformed(format!("vault config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), FormatError> {
        let geometry_ok = (CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&self.chunk_bytes)
            && self.chunk_bytes.is_power_of_two()
            && (1..=PAGE_ENTRIES_MAX).contains(&self.page_entries);
        if !geometry_ok {
            return Err(crate::error::malformed("vault config geometry out of range"));
        }
        if !(-7..=22).contains(&self.zstd_level) {
            return Err(crate::error::malformed("vault config zstd level out of range"));
        }
        if let Some(encryption) = &self.encryption {
            if encryption.algorithm != "xchacha20poly1305" || encryption.key_derivation != "blake3-derive-key" {
                return Err(crate::error::malformed("vault config names an unknown encryption scheme"));
            }
        }
        Ok(())
    }
}
