use thiserror::Error;

/// Why bytes could not be decoded. Every variant means "do not trust this object".
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    #[error("not a {expected} object (wrong magic bytes)")]
    BadMagic { expected: &'static str },
    #[error("object is format version {found}, newer than this standby reads ({supported}); upgrade standby")]
    NewerVersion { found: u16, supported: u16 },
    #[error("checksum mismatch: the object is damaged")]
    ChecksumMismatch,
    #[error("object is truncated ({context})")]
    Truncated { context: &'static str },
    #[error("object is too large ({context})")]
    TooLarge { context: &'static str },
    #[error("object is encrypted and no key was given")]
    KeyRequired,
    #[error("decryption failed: wrong key, or the object is damaged")]
    DecryptFailed,
    #[error("chunk content does not match its id: the chunk is damaged")]
    ChunkMismatch,
    #[error("malformed object: {0}")]
    Malformed(String),
}

pub(crate) fn malformed(what: impl Into<String>) -> FormatError {
    FormatError::Malformed(what.into())
}
