//! The map of an export's overlay (`<overlay>.map`, beside the overlay file):
//! which byte ranges of the overlay hold data written through the export,
//! so that an export can be stopped and resumed (a drill or a failover VM
//! outlives the process serving its disk) without losing a flushed write.
//! It is a local file, appended to, never rewritten:
//!
//! ```text
//! header = magic "SBYOVMAP" | version u16 (1) | disk name (u16 len + UTF-8)
//!          | point (u16 len + UTF-8) | disk bytes u64 | checksum (8, BLAKE3 of the above)
//! record = start u64 | end u64 | checksum (4, BLAKE3 of start and end)   (start < end <= disk bytes)
//! ```
//!
//! The writer appends the ranges written since the last flush, after the
//! overlay's data is durable, and makes the map durable before it answers
//! the flush. Every record before the last append is therefore whole; a
//! crash mid-append can leave that append's records torn, missing or (page
//! writeback has no order) some whole after a torn one. Decoding keeps the
//! records up to the first bad one and reports the bytes after it, which the
//! writer truncates away: they describe writes never acknowledged as flushed.

use crate::bytes::{put_string, Reader};
use crate::{FormatError, DISK_BYTES_MAX, DISK_NAME_BYTES_MAX, LABEL_BYTES_MAX};

const MAGIC: &[u8; 8] = b"SBYOVMAP";
const VERSION: u16 = 1;
pub const OVERLAY_RECORD_BYTES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayHeader {
    pub disk: String,
    /// The point the overlay was started from, as the export resolved it.
    pub point: String,
    pub disk_bytes: u64,
}

/// A decoded map: its header, the ranges in the order written, and the
/// length of the valid prefix (shorter than the file after a torn append).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMap {
    pub header: OverlayHeader,
    pub ranges: Vec<(u64, u64)>,
    pub valid_bytes: usize,
}

impl OverlayHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.disk.len() + self.point.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        put_string(&mut out, &self.disk);
        put_string(&mut out, &self.point);
        out.extend_from_slice(&self.disk_bytes.to_le_bytes());
        let checksum = blake3::hash(&out);
        out.extend_from_slice(&checksum.as_bytes()[..8]);
        out
    }
}

pub fn encode_overlay_record(start: u64, end: u64) -> [u8; OVERLAY_RECORD_BYTES] {
    let mut out = [0u8; OVERLAY_RECORD_BYTES];
    out[..8].copy_from_slice(&start.to_le_bytes());
    out[8..16].copy_from_slice(&end.to_le_bytes());
    let checksum = blake3::hash(&out[..16]);
    out[16..].copy_from_slice(&checksum.as_bytes()[..4]);
    out
}

impl OverlayMap {
    pub fn decode(bytes: &[u8]) -> Result<OverlayMap, FormatError> {
        let mut reader = Reader::new(bytes, "overlay map");
        if reader.array::<8>()? != *MAGIC {
            return Err(FormatError::BadMagic { expected: "overlay map" });
        }
        let version = reader.u16()?;
        if version != VERSION {
            return Err(FormatError::NewerVersion { found: version, supported: VERSION });
        }
        let disk = reader.string(DISK_NAME_BYTES_MAX)?;
        let point = reader.string(LABEL_BYTES_MAX)?;
        let disk_bytes = reader.u64()?;
        let header_bytes = bytes.len() - reader.remaining();
        let checksum = reader.array::<8>()?;
        if blake3::hash(&bytes[..header_bytes]).as_bytes()[..8] != checksum {
            return Err(FormatError::ChecksumMismatch);
        }
        if disk_bytes > DISK_BYTES_MAX {
            return Err(crate::error::malformed("overlay map disk size out of range"));
        }
        let header = OverlayHeader { disk, point, disk_bytes };
        let records_start = header_bytes + 8;
        let mut ranges = Vec::new();
        let records = &bytes[records_start..];
        let mut valid_bytes = records_start;
        for (number, record) in records.chunks(OVERLAY_RECORD_BYTES).enumerate() {
            let good =
                record.len() == OVERLAY_RECORD_BYTES && blake3::hash(&record[..16]).as_bytes()[..4] == record[16..];
            if !good {
                break;
            }
            let start = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
            let end = u64::from_le_bytes(record[8..16].try_into().expect("8 bytes"));
            if start >= end || end > disk_bytes {
                return Err(crate::error::malformed(format!("overlay map record {number} is out of range")));
            }
            ranges.push((start, end));
            valid_bytes += OVERLAY_RECORD_BYTES;
        }
        Ok(OverlayMap { header, ranges, valid_bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Vec<u8> {
        let header = OverlayHeader { disk: "web-01".into(), point: "42".into(), disk_bytes: 1 << 20 };
        let mut bytes = header.encode();
        bytes.extend_from_slice(&encode_overlay_record(0, 4096));
        bytes.extend_from_slice(&encode_overlay_record(8192, 9000));
        bytes
    }

    #[test]
    fn round_trips_and_drops_a_torn_tail() {
        let bytes = map();
        let decoded = OverlayMap::decode(&bytes).unwrap();
        assert_eq!(decoded.header.point, "42");
        assert_eq!(decoded.ranges, [(0, 4096), (8192, 9000)]);
        assert_eq!(decoded.valid_bytes, bytes.len());
        let torn = &bytes[..bytes.len() - 7];
        let decoded = OverlayMap::decode(torn).unwrap();
        assert_eq!(decoded.ranges, [(0, 4096)]);
        assert_eq!(decoded.valid_bytes, bytes.len() - OVERLAY_RECORD_BYTES);
    }

    #[test]
    fn records_after_a_bad_one_are_dropped() {
        let mut bytes = map();
        let first_record = bytes.len() - 2 * OVERLAY_RECORD_BYTES;
        bytes[first_record] ^= 1;
        let decoded = OverlayMap::decode(&bytes).unwrap();
        assert!(decoded.ranges.is_empty());
        assert_eq!(decoded.valid_bytes, first_record);
    }

    #[test]
    fn a_damaged_header_and_bad_ranges_are_errors() {
        let mut bytes = map();
        bytes[14] ^= 1;
        assert_eq!(OverlayMap::decode(&bytes), Err(FormatError::ChecksumMismatch));
        let header = OverlayHeader { disk: "d".into(), point: "1".into(), disk_bytes: 100 };
        let mut bytes = header.encode();
        bytes.extend_from_slice(&encode_overlay_record(50, 101));
        assert!(OverlayMap::decode(&bytes).is_err());
        assert!(OverlayMap::decode(b"SBYOVMA").is_err());
    }
}
