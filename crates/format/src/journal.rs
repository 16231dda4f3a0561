//! Journal segments: the write-ordered change stream of one disk, as the
//! splitter ships it. A segment is one object per seal
//! (`disks/<disk>/journal/<first sequence, 20 digits>.segment`), written with
//! a create-only put after the packs holding its data, so a segment exists
//! only whole and only once its data is stored.
//!
//! Body (inside an envelope, LE):
//!
//! ```text
//! disk name (u16 len + UTF-8) | chunk bytes u32 | first sequence u64 | record count u32
//! record = sequence u64 | time (µs since the Unix epoch, UTC) i64 | kind u8 | reserved [3] | fields
//!   0 write:     offset u64 | length u32 | piece id (32) * pieces
//!   1 zero:      offset u64 | length u64
//!   2 bookmark:  point kind u8 | label (u16 len + UTF-8)
//!   3 size:      disk bytes u64
//!   4 gap:       (none) from here the journal does not describe the disk exactly
//!   5 exact:     (none) from here it does again
//! ```
//!
//! A write's data is cut at the disk's chunk grid into pieces (the first and
//! last may be partial chunks); each piece is stored as a chunk, by content
//! id, in packs, so a write that covers a whole chunk stores exactly the
//! chunk a sync of the disk would store. The number of pieces follows from
//! offset, length and chunk size. Sequences are consecutive within a
//! segment and across a disk's segments; times never decrease.

use crate::bytes::{put_string, Reader};
use crate::envelope::{Envelope, ObjectKind};
use crate::{
    validate_disk_name, ChunkId, FormatError, Keys, PointKind, CHUNK_BYTES_MAX, CHUNK_BYTES_MIN, DISK_BYTES_MAX,
    LABEL_BYTES_MAX,
};

/// Largest write one record describes (larger writes become several records).
pub const JOURNAL_WRITE_BYTES_MAX: u32 = 64 << 20;
/// Most records one segment holds.
pub const SEGMENT_RECORDS_MAX: u32 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    /// `length` bytes at `offset`, stored as chunk-grid pieces.
    Write { offset: u64, length: u32, pieces: Vec<ChunkId> },
    /// The range reads as zeros from here on (write-zeroes and trim).
    Zero { offset: u64, length: u64 },
    /// A named recovery point: the disk as of this record.
    Bookmark { kind: PointKind, label: String },
    /// The disk's size from here on.
    Size { disk_bytes: u64 },
    /// Changes were lost (the splitter restarted, or fell behind): until the
    /// next [`RecordKind::Exact`], records do not rebuild the disk exactly.
    Gap,
    /// The journal describes the disk exactly again (a refresh finished).
    Exact,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    pub time_micros: i64,
    pub kind: RecordKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub disk: String,
    pub chunk_bytes: u32,
    pub records: Vec<Record>,
}

/// The chunk-grid pieces of `length` bytes at `offset`: (offset, length) of each.
pub fn pieces(offset: u64, length: u64, chunk_bytes: u32) -> impl Iterator<Item = (u64, u32)> {
    let chunk = u64::from(chunk_bytes);
    let end = offset + length;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let piece_end = ((at / chunk + 1) * chunk).min(end);
        let piece = (at, (piece_end - at) as u32);
        at = piece_end;
        Some(piece)
    })
}

impl Segment {
    pub fn first_sequence(&self) -> Option<u64> {
        self.records.first().map(|r| r.sequence)
    }

    pub fn last_sequence(&self) -> Option<u64> {
        self.records.last().map(|r| r.sequence)
    }

    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.records.len() * 64);
        put_string(&mut out, &self.disk);
        out.extend_from_slice(&self.chunk_bytes.to_le_bytes());
        out.extend_from_slice(&self.first_sequence().unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        for record in &self.records {
            out.extend_from_slice(&record.sequence.to_le_bytes());
            out.extend_from_slice(&record.time_micros.to_le_bytes());
            let kind: u8 = match record.kind {
                RecordKind::Write { .. } => 0,
                RecordKind::Zero { .. } => 1,
                RecordKind::Bookmark { .. } => 2,
                RecordKind::Size { .. } => 3,
                RecordKind::Gap => 4,
                RecordKind::Exact => 5,
            };
            out.push(kind);
            out.extend_from_slice(&[0; 3]);
            match &record.kind {
                RecordKind::Write { offset, length, pieces } => {
                    out.extend_from_slice(&offset.to_le_bytes());
                    out.extend_from_slice(&length.to_le_bytes());
                    for piece in pieces {
                        out.extend_from_slice(&piece.0);
                    }
                }
                RecordKind::Zero { offset, length } => {
                    out.extend_from_slice(&offset.to_le_bytes());
                    out.extend_from_slice(&length.to_le_bytes());
                }
                RecordKind::Bookmark { kind, label } => {
                    out.push(match kind {
                        PointKind::CrashConsistent => 0,
                        PointKind::AppConsistent => 1,
                    });
                    put_string(&mut out, label);
                }
                RecordKind::Size { disk_bytes } => out.extend_from_slice(&disk_bytes.to_le_bytes()),
                RecordKind::Gap | RecordKind::Exact => {}
            }
        }
        out
    }

    pub fn decode_body(body: &[u8]) -> Result<Self, FormatError> {
        fn malformed(what: impl Into<String>) -> FormatError {
            crate::error::malformed(what.into())
        }
        let mut reader = Reader::new(body, "journal segment");
        let disk = reader.string(crate::DISK_NAME_BYTES_MAX)?;
        validate_disk_name(&disk).map_err(malformed)?;
        let chunk_bytes = reader.u32()?;
        if !(CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&chunk_bytes) || !chunk_bytes.is_power_of_two() {
            return Err(malformed("journal segment chunk size out of range"));
        }
        let first = reader.u64()?;
        let count = reader.u32()?;
        if count == 0 || count > SEGMENT_RECORDS_MAX {
            return Err(malformed("journal segment record count out of range"));
        }
        let mut records = Vec::with_capacity(count.min(4096) as usize);
        let mut previous_time = i64::MIN;
        for i in 0..u64::from(count) {
            let sequence = reader.u64()?;
            if Some(sequence) != first.checked_add(i) {
                return Err(malformed("journal record sequences are not consecutive"));
            }
            let time_micros = reader.i64()?;
            if time_micros < previous_time {
                return Err(malformed("journal record times go backwards"));
            }
            previous_time = time_micros;
            let kind = reader.u8()?;
            let _reserved = reader.array::<3>()?;
            let kind = match kind {
                0 => {
                    let offset = reader.u64()?;
                    let length = reader.u32()?;
                    let end = offset.checked_add(u64::from(length));
                    if length == 0 || length > JOURNAL_WRITE_BYTES_MAX || end.is_none_or(|end| end > DISK_BYTES_MAX) {
                        return Err(malformed("journal write out of range"));
                    }
                    let count = pieces(offset, u64::from(length), chunk_bytes).count();
                    let mut ids = Vec::with_capacity(count);
                    for _ in 0..count {
                        let id = ChunkId(reader.array()?);
                        ids.push(id);
                    }
                    RecordKind::Write { offset, length, pieces: ids }
                }
                1 => {
                    let offset = reader.u64()?;
                    let length = reader.u64()?;
                    if length == 0 || offset.checked_add(length).is_none_or(|end| end > DISK_BYTES_MAX) {
                        return Err(malformed("journal zero range out of range"));
                    }
                    RecordKind::Zero { offset, length }
                }
                2 => {
                    let kind = match reader.u8()? {
                        0 => PointKind::CrashConsistent,
                        1 => PointKind::AppConsistent,
                        other => return Err(malformed(format!("unknown bookmark kind {other}"))),
                    };
                    RecordKind::Bookmark { kind, label: reader.string(LABEL_BYTES_MAX)? }
                }
                3 => {
                    let disk_bytes = reader.u64()?;
                    if disk_bytes > DISK_BYTES_MAX {
                        return Err(malformed("journal disk size out of range"));
                    }
                    RecordKind::Size { disk_bytes }
                }
                4 => RecordKind::Gap,
                5 => RecordKind::Exact,
                other => return Err(malformed(format!("unknown journal record kind {other}"))),
            };
            records.push(Record { sequence, time_micros, kind });
        }
        reader.finish()?;
        Ok(Segment { disk, chunk_bytes, records })
    }

    pub fn seal(&self, keys: &Keys) -> Vec<u8> {
        Envelope::seal(ObjectKind::Journal, &self.encode_body(), keys, true)
    }

    pub fn open(bytes: &[u8], keys: &Keys) -> Result<Self, FormatError> {
        Self::decode_body(&Envelope::open(ObjectKind::Journal, bytes, keys)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Segment {
        let records = vec![
            Record { sequence: 41, time_micros: 10, kind: RecordKind::Size { disk_bytes: 1 << 30 } },
            Record {
                sequence: 42,
                time_micros: 11,
                kind: RecordKind::Write {
                    offset: 65536 - 512,
                    length: 65536 + 1024,
                    pieces: vec![ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32])],
                },
            },
            Record { sequence: 43, time_micros: 11, kind: RecordKind::Zero { offset: 0, length: 4096 } },
            Record { sequence: 44, time_micros: 12, kind: RecordKind::Gap },
            Record { sequence: 45, time_micros: 12, kind: RecordKind::Exact },
            Record {
                sequence: 46,
                time_micros: 12,
                kind: RecordKind::Bookmark { kind: PointKind::AppConsistent, label: "before upgrade".into() },
            },
        ];
        Segment { disk: "web".into(), chunk_bytes: 65536, records }
    }

    #[test]
    fn pieces_follow_the_chunk_grid() {
        let cut: Vec<_> = pieces(65536 - 512, 65536 + 1024, 65536).collect();
        assert_eq!(cut, vec![(65536 - 512, 512), (65536, 65536), (131072, 512)]);
        assert_eq!(pieces(0, 65536, 65536).count(), 1);
        assert_eq!(pieces(10, 5, 65536).collect::<Vec<_>>(), vec![(10, 5)]);
    }

    #[test]
    fn segments_round_trip_and_refuse_damage() {
        let segment = sample();
        for keys in [Keys::plain(), Keys::from_material(&crate::KeyMaterial::new(vec![4; 32]).unwrap())] {
            assert_eq!(Segment::open(&segment.seal(&keys), &keys).unwrap(), segment);
        }
        let body = segment.encode_body();
        for cut in 0..body.len() {
            assert!(Segment::decode_body(&body[..cut]).is_err(), "accepted a cut at {cut}");
        }
        let mut gap = segment.clone();
        gap.records[2].sequence = 50;
        assert!(Segment::decode_body(&gap.encode_body()).is_err());
        let mut backwards = segment;
        backwards.records[5].time_micros = 1;
        assert!(Segment::decode_body(&backwards.encode_body()).is_err());
    }
}
