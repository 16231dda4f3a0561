//! Key files: the secret of an encrypted vault, kept outside it (the vault
//! stores only a check that recognises the key, never the key).
//!
//! A key file holds 32 random bytes as hex and a newline; any file of at
//! least [`KeyMaterial::BYTES_MIN`] bytes is a key (its bytes are the key).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use standby_format::KeyMaterial;

/// Writes a new random key to `path`, which must not exist: readable by
/// this user only (0600) and durable before it returns.
pub fn create(path: &Path) -> Result<(), String> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("reading the system's random source: {e}"))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let cannot = |e: std::io::Error| format!("cannot create key file {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(cannot)?;
    file.write_all(format!("{hex}\n").as_bytes()).map_err(cannot)?;
    file.sync_all().map_err(cannot)?;
    Ok(())
}

/// Reads the key in `path`, with errors that name it.
pub fn read(path: &Path) -> Result<KeyMaterial, String> {
    if path.is_dir() {
        return Err(format!("key file {} is a directory", path.display()));
    }
    let secret = std::fs::read(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    KeyMaterial::new(secret).map_err(|e| format!("{}: {e}", path.display()))
}
