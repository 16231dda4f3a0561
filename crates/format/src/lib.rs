//! The byte-level encodings of a Standby vault: object envelopes, chunk frames,
//! pack indexes, map pages, recovery point manifests and the vault config.
//!
//! Key types: [`Envelope`] (the checksummed wrapper around every small object),
//! [`ChunkId`], [`Keys`] (chunk-id and encryption keys derived from a key file),
//! [`PackIndex`], [`MapPage`], [`PointManifest`], [`VaultConfig`].
//!
//! This crate does no I/O and knows nothing about object stores, files or
//! time zones: every function here turns bytes into values or values into
//! bytes, and every decoder treats its input as untrusted (fuzzed in `fuzz/`).
//! `docs/format.md` is the specification; a change here that changes bytes
//! bumps [`FORMAT_VERSION`].

mod bytes;
mod chunk;
mod config;
mod envelope;
mod error;
mod intent;
mod journal;
mod keys;
mod overlay;
mod pack;
mod page;
mod point;

pub use chunk::{chunk_of_frame, decode_frame, encode_frame, round_trip, ChunkId, Codec, FrameKind};
pub use config::{EncryptionConfig, VaultConfig};
pub use envelope::{Envelope, ObjectKind, ENVELOPE_HEADER_BYTES, ENVELOPE_PAYLOAD_BYTES_MAX};
pub use error::FormatError;
pub use intent::{decode_intent_log, encode_intent_header, intent_log_bytes, intent_regions, INTENT_HEADER_BYTES};
pub use journal::{pieces, Record, RecordKind, Segment, JOURNAL_WRITE_BYTES_MAX, SEGMENT_RECORDS_MAX};
pub use keys::{KeyMaterial, Keys};
pub use overlay::{encode_overlay_record, OverlayHeader, OverlayMap, OVERLAY_RECORD_BYTES};
pub use pack::{PackEntry, PackHeader, PackId, PackIndex, FRAME_RAW_BYTES_MAX, PACK_BYTES_MAX, PACK_HEADER_BYTES};
pub use page::MapPage;
pub use point::{PointKind, PointManifest};

/// The vault format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// Bytes of disk data one chunk covers (the last chunk of a disk may be shorter).
pub const CHUNK_BYTES_DEFAULT: u32 = 64 * 1024;
/// Smallest and largest chunk size a vault may be created with.
pub const CHUNK_BYTES_MIN: u32 = 4 * 1024;
pub const CHUNK_BYTES_MAX: u32 = 4 * 1024 * 1024;

/// zstd level of new vaults: with adjacent chunks compressed together it
/// stores less than `zstd -1` of a whole image at about the same speed on
/// two cores (docs/format.md).
pub const ZSTD_LEVEL_DEFAULT: i32 = 2;

/// Chunk ids per map page: with 64 KiB chunks one page maps 256 MiB of disk.
pub const PAGE_ENTRIES_DEFAULT: u32 = 4096;
pub const PAGE_ENTRIES_MAX: u32 = 1 << 16;

/// Largest disk a point may describe (64 TiB): bounds every allocation that a
/// manifest's numbers drive.
pub const DISK_BYTES_MAX: u64 = 64 << 40;

/// Longest disk name and label, in bytes.
pub const DISK_NAME_BYTES_MAX: usize = 64;
pub const LABEL_BYTES_MAX: usize = 256;

/// The labels of replication groups' points begin with this: a point made
/// at once in every disk of the group's machines (`group:GROUP:ID`). No
/// other bookmark may carry such a label.
pub const GROUP_LABEL_PREFIX: &str = "group:";

/// Checks a replication group's name: the rules of a disk name
/// ([`validate_disk_name`]), so it never holds the label's `:`.
pub fn validate_group_name(name: &str) -> Result<(), String> {
    validate_disk_name(name).map_err(|e| e.replacen("disk name", "group name", 1))
}

/// The label of group `group`'s point `id` (a group names its points by
/// increasing ids, the microsecond its control plane began them).
pub fn group_point_label(group: &str, id: u64) -> String {
    format!("{GROUP_LABEL_PREFIX}{group}:{id}")
}

/// The group and id of a group point's label; None for any other label.
pub fn parse_group_point_label(label: &str) -> Option<(&str, u64)> {
    let rest = label.strip_prefix(GROUP_LABEL_PREFIX)?;
    let (group, id) = rest.rsplit_once(':')?;
    let id = id.parse().ok().filter(|_| !group.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))?;
    Some((group, id))
}

const _: () = assert!(CHUNK_BYTES_MIN <= CHUNK_BYTES_DEFAULT && CHUNK_BYTES_DEFAULT <= CHUNK_BYTES_MAX);
const _: () = assert!(PAGE_ENTRIES_DEFAULT <= PAGE_ENTRIES_MAX);

/// Checks a disk name: 1–64 bytes of `A-Z a-z 0-9 . _ -`, not starting with `.`.
/// Disk names become parts of object paths, so nothing else is allowed.
pub fn validate_disk_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > DISK_NAME_BYTES_MAX {
        return Err(format!("disk name must be 1 to {DISK_NAME_BYTES_MAX} characters"));
    }
    if name.starts_with('.') {
        return Err("disk name must not start with '.'".to_string());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("disk name may only hold letters, digits, '.', '_' and '-' (found {c:?})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_point_labels_read_back_and_nothing_else_reads_as_one() {
        let label = group_point_label("shop", 1_733_000_000_123_456);
        assert_eq!(parse_group_point_label(&label), Some(("shop", 1_733_000_000_123_456)));
        for other in ["", "group:", "group:g", "group::5", "group:g:", "group:g:+5", "group:g:x", "nightly", "g:5"] {
            assert_eq!(parse_group_point_label(other), None, "{other:?}");
        }
    }
}
