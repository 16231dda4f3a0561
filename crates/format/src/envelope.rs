//! The envelope around every small vault object (config, point manifests,
//! pack indexes, collection sets, leases):
//!
//! ```text
//! 0   8  magic (per object kind)
//! 8   2  format version (u16 LE)
//! 10  2  flags: bit 0 zstd-compressed body, bit 1 encrypted body
//! 12  4  reserved, zero
//! 16  8  payload length (u64 LE)
//! 24  n  payload: body, or nonce||ciphertext||tag when encrypted
//! 24+n 32 BLAKE3 of bytes [0, 24+n)
//! ```
//!
//! The trailing checksum lets `verify` detect damage without the key; the
//! AEAD tag (with the header as associated data) detects tampering with it.

use crate::bytes::Reader;
use crate::{FormatError, Keys, FORMAT_VERSION};

pub const ENVELOPE_HEADER_BYTES: usize = 24;
const CHECKSUM_BYTES: usize = 32;
/// Largest payload an envelope may carry: bounds what a decoder allocates.
pub const ENVELOPE_PAYLOAD_BYTES_MAX: u64 = 256 << 20;

const FLAG_COMPRESSED: u16 = 1;
const FLAG_ENCRYPTED: u16 = 2;
const FLAGS_KNOWN: u16 = FLAG_COMPRESSED | FLAG_ENCRYPTED;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Config,
    Point,
    Index,
    CollectionSet,
    Lease,
    Journal,
    /// The control plane's records (machines, policies, protection).
    Control,
}

impl ObjectKind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            ObjectKind::Config => b"SBYVAULT",
            ObjectKind::Point => b"SBYPOINT",
            ObjectKind::Index => b"SBYINDEX",
            ObjectKind::CollectionSet => b"SBYCOLLS",
            ObjectKind::Lease => b"SBYLEASE",
            ObjectKind::Journal => b"SBYJOURN",
            ObjectKind::Control => b"SBYCNTRL",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Config => "vault config",
            ObjectKind::Point => "recovery point",
            ObjectKind::Index => "pack index",
            ObjectKind::CollectionSet => "collection set",
            ObjectKind::Lease => "lease",
            ObjectKind::Journal => "journal segment",
            ObjectKind::Control => "control record",
        }
    }
}

/// What [`Envelope::check`] learns without opening the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    pub version: u16,
    pub compressed: bool,
    pub encrypted: bool,
    pub payload_bytes: u64,
}

impl Envelope {
    /// Wraps `body`. It is encrypted when `keys` carry a cipher.
    pub fn seal(kind: ObjectKind, body: &[u8], keys: &Keys, compress: bool) -> Vec<u8> {
        let compressed_body;
        let (body, mut flags) = if compress {
            compressed_body = zstd::bulk::compress(body, 3).expect("compressing an in-memory buffer cannot fail");
            (&compressed_body[..], FLAG_COMPRESSED)
        } else {
            (body, 0)
        };
        if keys.encrypted() {
            flags |= FLAG_ENCRYPTED;
        }
        let mut header = Vec::with_capacity(ENVELOPE_HEADER_BYTES);
        header.extend_from_slice(kind.magic());
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&flags.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        let payload = keys.seal(&header[..16], body);
        assert!(payload.len() as u64 <= ENVELOPE_PAYLOAD_BYTES_MAX, "{} too large to seal", kind.name());
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let mut out = header;
        out.extend_from_slice(&payload);
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    /// Checks magic, version, length and checksum: everything verifiable without a key.
    pub fn check(kind: ObjectKind, bytes: &[u8]) -> Result<Envelope, FormatError> {
        let mut reader = Reader::new(bytes, kind.name());
        if reader.array::<8>()? != *kind.magic() {
            return Err(FormatError::BadMagic { expected: kind.name() });
        }
        let version = reader.u16()?;
        if version > FORMAT_VERSION {
            return Err(FormatError::NewerVersion { found: version, supported: FORMAT_VERSION });
        }
        if version == 0 {
            return Err(crate::error::malformed("format version 0"));
        }
        let flags = reader.u16()?;
        if flags & !FLAGS_KNOWN != 0 {
            return Err(crate::error::malformed(format!("unknown envelope flags {flags:#x}")));
        }
        let _reserved = reader.u32()?;
        let payload_bytes = reader.u64()?;
        if payload_bytes > ENVELOPE_PAYLOAD_BYTES_MAX {
            return Err(FormatError::TooLarge { context: kind.name() });
        }
        let expected_len = ENVELOPE_HEADER_BYTES as u64 + payload_bytes + CHECKSUM_BYTES as u64;
        if (bytes.len() as u64) < expected_len {
            return Err(FormatError::Truncated { context: kind.name() });
        }
        if (bytes.len() as u64) > expected_len {
            return Err(crate::error::malformed(format!("trailing bytes after {}", kind.name())));
        }
        let split = bytes.len() - CHECKSUM_BYTES;
        if blake3::hash(&bytes[..split]).as_bytes() != &bytes[split..] {
            return Err(FormatError::ChecksumMismatch);
        }
        Ok(Envelope {
            version,
            compressed: flags & FLAG_COMPRESSED != 0,
            encrypted: flags & FLAG_ENCRYPTED != 0,
            payload_bytes,
        })
    }

    /// Checks and opens an envelope, returning its body.
    pub fn open(kind: ObjectKind, bytes: &[u8], keys: &Keys) -> Result<Vec<u8>, FormatError> {
        let envelope = Self::check(kind, bytes)?;
        let payload = &bytes[ENVELOPE_HEADER_BYTES..bytes.len() - CHECKSUM_BYTES];
        let body = if envelope.encrypted {
            keys.open(&bytes[..16], payload)?
        } else if keys.encrypted() && kind != ObjectKind::Config {
            // An encrypted vault never writes plaintext data objects: one that
            // appears was put there by someone else.
            return Err(crate::error::malformed(format!("unencrypted {} in an encrypted vault", kind.name())));
        } else {
            payload.to_vec()
        };
        if envelope.compressed {
            decompress_bounded(&body, ENVELOPE_PAYLOAD_BYTES_MAX as usize)
        } else {
            Ok(body)
        }
    }
}

/// Decompresses a zstd frame into at most `limit` bytes.
pub(crate) fn decompress_bounded(compressed: &[u8], limit: usize) -> Result<Vec<u8>, FormatError> {
    use std::io::Read;
    let decoder =
        zstd::stream::read::Decoder::new(compressed).map_err(|_| crate::error::malformed("bad zstd frame"))?;
    let mut out = Vec::new();
    decoder.take(limit as u64 + 1).read_to_end(&mut out).map_err(|_| crate::error::malformed("bad zstd frame"))?;
    if out.len() > limit {
        return Err(FormatError::TooLarge { context: "decompressed body" });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyMaterial;

    #[test]
    fn round_trip_plain_and_encrypted() {
        let keys = Keys::from_material(&KeyMaterial::new(vec![7; 32]).unwrap());
        for keys in [Keys::plain(), keys] {
            for compress in [false, true] {
                let sealed = Envelope::seal(ObjectKind::Point, b"hello point", &keys, compress);
                assert_eq!(Envelope::open(ObjectKind::Point, &sealed, &keys).unwrap(), b"hello point");
            }
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let sealed = Envelope::seal(ObjectKind::Index, b"some index body", &Keys::plain(), false);
        for position in 0..sealed.len() {
            let mut damaged = sealed.clone();
            damaged[position] ^= 0x40;
            assert!(Envelope::open(ObjectKind::Index, &damaged, &Keys::plain()).is_err(), "flip at {position}");
        }
    }

    #[test]
    fn wrong_key_and_missing_key_are_named() {
        let right = Keys::from_material(&KeyMaterial::new(vec![1; 32]).unwrap());
        let wrong = Keys::from_material(&KeyMaterial::new(vec![2; 32]).unwrap());
        let sealed = Envelope::seal(ObjectKind::Point, b"secret", &right, true);
        assert_eq!(Envelope::open(ObjectKind::Point, &sealed, &wrong), Err(FormatError::DecryptFailed));
        assert_eq!(Envelope::open(ObjectKind::Point, &sealed, &Keys::plain()), Err(FormatError::KeyRequired));
    }

    #[test]
    fn newer_version_is_refused_by_name() {
        let mut sealed = Envelope::seal(ObjectKind::Config, b"{}", &Keys::plain(), false);
        sealed[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let split = sealed.len() - 32;
        let checksum = blake3::hash(&sealed[..split]);
        sealed[split..].copy_from_slice(checksum.as_bytes());
        assert_eq!(
            Envelope::check(ObjectKind::Config, &sealed),
            Err(FormatError::NewerVersion { found: FORMAT_VERSION + 1, supported: FORMAT_VERSION })
        );
    }
}
