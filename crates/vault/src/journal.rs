//! The journal: a disk's write-ordered change stream in the vault, from
//! which the disk can be rebuilt as it was after any record. The splitter
//! appends every write, zeroing and bookmark through a [`JournalWriter`]
//! and seals a segment every second or so; [`restore_journal`] replays the
//! segments up to a sequence or a time.
//!
//! Commit order of a seal: the pack holding the segment's new data, its
//! index, then the segment object with a create-only put. A crash leaves
//! either the segment whole or no segment (and perhaps a pack no segment
//! references, which `prune` collects). Sequences are consecutive across
//! segments, so a missing segment is detected, never skipped.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use standby_format::{
    encode_frame, pieces, ChunkId, FrameKind, PointKind, PointManifest, Record, RecordKind, Segment,
    JOURNAL_WRITE_BYTES_MAX,
};

use crate::backend::StorageError;
use crate::index::{read_chunk, ChunkIndex};
use crate::lease::Lease;
use crate::packer::{store_pack, PackBuilder, PACK_BYTES_TARGET};
use crate::restore::{create_partial, io_error, partial_path, RestoreReport};
use crate::vault::check_disk_name;
use crate::{format_time, Vault, VaultError};

pub(crate) fn journal_folder(disk: &str) -> String {
    format!("disks/{disk}/journal/")
}

fn segment_path(disk: &str, first_sequence: u64) -> String {
    format!("{}{first_sequence:020}.segment", journal_folder(disk))
}

pub(crate) fn base_path(disk: &str, sequence: u64) -> String {
    format!("{}{sequence:020}.base", journal_folder(disk))
}

/// The objects of a disk's journal, each list in sequence order.
#[derive(Debug, Default)]
pub struct JournalObjects {
    /// (first sequence, object)
    pub segments: Vec<(u64, String)>,
    /// Compacted bases: (sequence the base is the disk after, object).
    pub bases: Vec<(u64, String)>,
}

impl JournalObjects {
    /// The segments not wholly covered by the base at `after` (every
    /// segment whose records may go beyond it).
    pub fn segments_after(&self, after: u64) -> impl Iterator<Item = &(u64, String)> {
        let next_firsts = self.segments.iter().skip(1).map(|(first, _)| Some(*first)).chain([None]);
        self.segments
            .iter()
            .zip(next_firsts)
            .filter(move |(_, next)| next.is_none_or(|next| next > after + 1))
            .map(|(segment, _)| segment)
    }
}

/// The segments and bases of a disk's journal (one listing).
pub fn journal_objects(vault: &Vault, disk: &str) -> Result<JournalObjects, VaultError> {
    check_disk_name(disk)?;
    let folder = journal_folder(disk);
    let mut objects = JournalObjects::default();
    for object in vault.backend().list(&folder)? {
        let Some(name) = object.path.strip_prefix(&folder) else { continue };
        if let Some(sequence) = name.strip_suffix(".segment").and_then(|n| n.parse().ok()) {
            objects.segments.push((sequence, object.path));
        } else if let Some(sequence) = name.strip_suffix(".base").and_then(|n| n.parse().ok()) {
            objects.bases.push((sequence, object.path));
        }
    }
    objects.segments.sort();
    objects.bases.sort();
    Ok(objects)
}

/// The segments of a disk's journal in sequence order: (first sequence, object).
pub fn segments(vault: &Vault, disk: &str) -> Result<Vec<(u64, String)>, VaultError> {
    Ok(journal_objects(vault, disk)?.segments)
}

/// The newest compacted base of a disk's journal: the disk as it was after
/// the base's sequence, as a point manifest (map pages of chunks).
pub fn newest_base(vault: &Vault, objects: &JournalObjects, disk: &str) -> Result<Option<PointManifest>, VaultError> {
    let Some((sequence, path)) = objects.bases.last() else { return Ok(None) };
    let base = vault.read_point(path)?;
    if base.disk != disk || base.sequence != *sequence {
        return Err(VaultError::damaged(path, "the journal base names another disk or sequence"));
    }
    Ok(Some(base))
}

pub fn read_segment(vault: &Vault, path: &str) -> Result<Segment, VaultError> {
    let bytes = vault.backend().get(path)?;
    Segment::open(&bytes, vault.keys()).map_err(|e| VaultError::decoding(&vault.location(), path, e))
}

/// What one seal stored.
#[derive(Debug, Clone, Serialize)]
pub struct SealReport {
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub records: u64,
    /// Bytes of new objects (pack, index, segment).
    pub bytes_new: u64,
}

/// Appends records to a disk's journal and seals them into segments.
pub struct JournalWriter<'v> {
    vault: &'v Vault,
    disk: String,
    next_sequence: u64,
    records: Vec<Record>,
    pack: PackBuilder,
    /// The open segment's pack is already stored (a seal failed after it).
    pack_stored: bool,
    pack_stored_bytes: u64,
    index: ChunkIndex,
    /// Chunks in the open segment's pack.
    pending: HashSet<ChunkId>,
    /// Raw bytes of write data in the open segment.
    data_bytes: u64,
    /// A segment taken out for storing ([`take_seal`](Self::take_seal)) and
    /// not yet reported stored: its chunks (not to be stored again) and its
    /// write bytes.
    in_flight: Option<(HashSet<ChunkId>, u64)>,
    /// Announces that this writer may reuse chunks of packs in the index it
    /// loaded; restarted each time the writer has published everything and
    /// forgotten the packs newly marked for collection (`maintain`).
    lease: Lease,
    maintained: Instant,
}

/// Journal data is compressed for speed (the shipper must keep up with the
/// guest): zstd level 1 (or the vault's level, if lower), in frames of up
/// to four adjacent new pieces; docs/format.md has the measurement.
pub const JOURNAL_ZSTD_LEVEL: i32 = 1;
pub const JOURNAL_FRAME_PIECES: usize = 4;

/// A write hashed and compressed by [`JournalWriter::prepare`], ready to append.
pub struct PreparedWrite<'a> {
    parts: Vec<PreparedPart<'a>>,
}

/// One record's worth of a write (at most `JOURNAL_WRITE_BYTES_MAX`).
struct PreparedPart<'a> {
    offset: u64,
    data: &'a [u8],
    ids: Vec<ChunkId>,
    frames: Vec<PreparedFrame>,
}

struct PreparedFrame {
    frame: Vec<u8>,
    codec: standby_format::Codec,
    chunks: Vec<(ChunkId, u32)>,
    /// The frame's raw bytes within the part.
    raw: std::ops::Range<usize>,
}

/// How often an idle or freshly sealed writer reloads the collection sets
/// and restarts its lease.
const MAINTAIN_INTERVAL: Duration = Duration::from_secs(60);

impl<'v> JournalWriter<'v> {
    /// Opens the journal of `disk` for appending after its last segment.
    pub fn open(vault: &'v Vault, disk: &str) -> Result<Self, VaultError> {
        let objects = journal_objects(vault, disk)?;
        let after_segments = match objects.segments.last() {
            Some((_, path)) => read_segment(vault, path)?.last_sequence().map_or(1, |last| last + 1),
            None => 1,
        };
        // Compaction may have removed every segment up to its base.
        let after_base = objects.bases.last().map_or(1, |(sequence, _)| sequence + 1);
        let next_sequence = after_segments.max(after_base);
        let excluded = crate::collection::collection_candidates(vault)?;
        Ok(JournalWriter {
            vault,
            disk: disk.to_string(),
            next_sequence,
            records: Vec::new(),
            pack: PackBuilder::new(vault.keys().encrypted()),
            pack_stored: false,
            pack_stored_bytes: 0,
            index: ChunkIndex::load(vault, &excluded)?,
            pending: HashSet::new(),
            data_bytes: 0,
            in_flight: None,
            lease: Lease::acquire(vault, "journal", disk)?,
            maintained: Instant::now(),
        })
    }

    /// With nothing unsealed: every chunk this writer referenced is in a
    /// published segment. Forget the packs marked for collection since the
    /// last time and restart the lease, so a sweep of a set marked before
    /// now does not wait for this writer (which will not reuse its packs),
    /// while one marked later waits until the next time. Best effort: on
    /// failure the older lease keeps holding sweeps back, which is safe.
    pub fn maintain(&mut self) {
        if !self.records.is_empty() || self.in_flight.is_some() || self.maintained.elapsed() < MAINTAIN_INTERVAL {
            return;
        }
        let Ok(candidates) = crate::collection::collection_candidates(self.vault) else { return };
        self.index.forget_packs(&candidates);
        if self.lease.restart().is_ok() {
            self.maintained = Instant::now();
        }
    }

    /// The sequence the next record gets.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Records not yet sealed.
    pub fn unsealed_records(&self) -> usize {
        self.records.len()
    }

    /// Raw write bytes not yet sealed (including a segment being stored).
    pub fn unsealed_bytes(&self) -> u64 {
        self.data_bytes + self.in_flight.as_ref().map_or(0, |(_, bytes)| *bytes)
    }

    /// Whether a segment taken out by [`take_seal`](Self::take_seal) is
    /// still being stored.
    pub fn sealing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The zstd level of journal data: level 1, or the vault's if lower.
    fn level(&self) -> i32 {
        self.vault.config().zstd_level.min(JOURNAL_ZSTD_LEVEL)
    }

    fn known(&self, id: &ChunkId) -> bool {
        self.index.contains(id)
            || self.pending.contains(id)
            || self.in_flight.as_ref().is_some_and(|(c, _)| c.contains(id))
    }

    /// Whether the open segment should be sealed now for size reasons.
    pub fn is_full(&self) -> bool {
        self.pack.len() >= PACK_BYTES_TARGET
    }

    fn push(&mut self, time_micros: i64, kind: RecordKind) -> u64 {
        let sequence = self.next_sequence;
        // Times never go backwards inside a journal, whatever the clock does.
        let time_micros = self.records.last().map_or(time_micros, |last| last.time_micros.max(time_micros));
        self.records.push(Record { sequence, time_micros, kind });
        self.next_sequence += 1;
        sequence
    }

    /// Appends a write; returns the sequence of its (last) record.
    pub fn write(&mut self, offset: u64, data: &[u8], time_micros: i64) -> u64 {
        let prepared = self.prepare(offset, data);
        self.append(prepared, time_micros)
    }

    /// The CPU work of a write, without changing the writer: hashes its
    /// chunk-grid pieces and compresses those the vault lacks, in frames
    /// of up to [`JOURNAL_FRAME_PIECES`] adjacent pieces. Callers with many
    /// writes prepare them in parallel, then [`append`](Self::append) them
    /// in order.
    pub fn prepare<'a>(&self, offset: u64, data: &'a [u8]) -> PreparedWrite<'a> {
        let chunk_bytes = self.vault.config().chunk_bytes;
        let level = self.level();
        let keys = self.vault.keys();
        let mut parts = Vec::new();
        for (part, part_offset) in data
            .chunks(JOURNAL_WRITE_BYTES_MAX as usize)
            .zip((0u64..).map(|i| offset + i * u64::from(JOURNAL_WRITE_BYTES_MAX)))
        {
            let mut pieces_of_part: Vec<(ChunkId, std::ops::Range<usize>)> = Vec::new();
            let mut at = 0usize;
            for (_, len) in pieces(part_offset, part.len() as u64, chunk_bytes) {
                let range = at..at + len as usize;
                at += len as usize;
                pieces_of_part.push((keys.chunk_id(&part[range.clone()]), range));
            }
            // Runs of adjacent pieces the vault lacks become frames.
            let mut frames: Vec<PreparedFrame> = Vec::new();
            let mut run: Vec<usize> = Vec::new();
            let flush = |run: &mut Vec<usize>, frames: &mut Vec<PreparedFrame>| {
                if run.is_empty() {
                    return;
                }
                let raw = pieces_of_part[run[0]].1.start..pieces_of_part[*run.last().expect("non-empty")].1.end;
                let (frame, codec) = encode_frame(&part[raw.clone()], level, keys);
                let chunks = run.iter().map(|&i| (pieces_of_part[i].0, pieces_of_part[i].1.len() as u32)).collect();
                frames.push(PreparedFrame { frame, codec, chunks, raw });
                run.clear();
            };
            for (position, (id, _)) in pieces_of_part.iter().enumerate() {
                let known = self.known(id) || run.iter().any(|&i| pieces_of_part[i].0 == *id);
                if known {
                    flush(&mut run, &mut frames);
                    continue;
                }
                run.push(position);
                if run.len() == JOURNAL_FRAME_PIECES {
                    flush(&mut run, &mut frames);
                }
            }
            flush(&mut run, &mut frames);
            let ids = pieces_of_part.into_iter().map(|(id, _)| id).collect();
            parts.push(PreparedPart { offset: part_offset, data: part, ids, frames });
        }
        PreparedWrite { parts }
    }

    /// Appends a prepared write; returns the sequence of its (last) record.
    pub fn append(&mut self, prepared: PreparedWrite, time_micros: i64) -> u64 {
        let mut last = self.next_sequence;
        for part in prepared.parts {
            for frame in part.frames {
                let new: Vec<bool> =
                    frame.chunks.iter().map(|(id, _)| !self.index.contains(id) && !self.pending.contains(id)).collect();
                if new.iter().all(|&n| n) {
                    self.pending.extend(frame.chunks.iter().map(|(id, _)| *id));
                    self.pack.add(&frame.frame, frame.codec, &frame.chunks, FrameKind::Data);
                    continue;
                }
                // Another write prepared alongside stored some of these
                // chunks first: store the rest alone (rare).
                let mut at = frame.raw.start;
                for ((id, len), new) in frame.chunks.iter().zip(new) {
                    let raw = &part.data[at..at + *len as usize];
                    at += *len as usize;
                    if new && self.pending.insert(*id) {
                        let (encoded, codec) = encode_frame(raw, self.level(), self.vault.keys());
                        self.pack.add(&encoded, codec, &[(*id, *len)], FrameKind::Data);
                    }
                }
            }
            self.data_bytes += part.data.len() as u64;
            last = self.push(
                time_micros,
                RecordKind::Write { offset: part.offset, length: part.data.len() as u32, pieces: part.ids },
            );
        }
        last
    }

    /// Appends a zeroing (write-zeroes or trim) of `length` bytes at `offset`.
    pub fn zero(&mut self, offset: u64, length: u64, time_micros: i64) -> u64 {
        self.push(time_micros, RecordKind::Zero { offset, length })
    }

    pub fn bookmark(&mut self, kind: PointKind, label: &str, time_micros: i64) -> u64 {
        self.push(time_micros, RecordKind::Bookmark { kind, label: label.to_string() })
    }

    pub fn size(&mut self, disk_bytes: u64, time_micros: i64) -> u64 {
        self.push(time_micros, RecordKind::Size { disk_bytes })
    }

    /// Marks the start of records that do not rebuild the disk exactly.
    pub fn gap(&mut self, time_micros: i64) -> u64 {
        self.push(time_micros, RecordKind::Gap)
    }

    /// Marks the end of a gap: the journal is exact again from here.
    pub fn exact(&mut self, time_micros: i64) -> u64 {
        self.push(time_micros, RecordKind::Exact)
    }

    /// Stores the open segment: its pack and index, then the segment object.
    /// On failure nothing is lost: the records stay open and the next seal
    /// tries again (a pack already stored is not stored twice).
    pub fn seal(&mut self) -> Result<Option<SealReport>, VaultError> {
        assert!(self.in_flight.is_none(), "seal() while a taken segment is being stored");
        let Some(mut job) = self.take_seal() else {
            self.maintain();
            return Ok(None);
        };
        match job.store(self.vault) {
            Ok(report) => {
                self.sealed(job);
                self.maintain();
                Ok(Some(report))
            }
            Err(e) => {
                self.put_back(job);
                Err(e)
            }
        }
    }

    /// Takes the open segment out to be stored, on another thread perhaps,
    /// while new records go into a new open segment; `None` when there is
    /// nothing to seal. One segment at a time: segments must be stored in
    /// order (a later one stored before an earlier one would leave a hole
    /// after a crash). Report the outcome with [`sealed`](Self::sealed).
    pub fn take_seal(&mut self) -> Option<SealJob> {
        assert!(self.in_flight.is_none(), "one segment is stored at a time");
        if self.records.is_empty() {
            return None;
        }
        let job = SealJob {
            disk: self.disk.clone(),
            chunk_bytes: self.vault.config().chunk_bytes,
            records: std::mem::take(&mut self.records),
            pack: std::mem::replace(&mut self.pack, PackBuilder::new(self.vault.keys().encrypted())),
            pack_stored: std::mem::take(&mut self.pack_stored),
            pack_stored_bytes: std::mem::take(&mut self.pack_stored_bytes),
        };
        self.in_flight = Some((std::mem::take(&mut self.pending), std::mem::take(&mut self.data_bytes)));
        Some(job)
    }

    /// The taken segment is stored: its chunks join the index.
    pub fn sealed(&mut self, job: SealJob) {
        self.index.add_entries(job.pack.id, &job.pack.entries);
        self.in_flight = None;
    }

    /// Undoes [`take_seal`] when nothing was appended since (for `seal`).
    fn put_back(&mut self, job: SealJob) {
        let (pending, data_bytes) = self.in_flight.take().expect("a taken segment");
        debug_assert!(self.records.is_empty() && self.pack.is_empty());
        self.records = job.records;
        self.pack = job.pack;
        self.pack_stored = job.pack_stored;
        self.pack_stored_bytes = job.pack_stored_bytes;
        self.pending = pending;
        self.data_bytes = data_bytes;
    }
}

/// A segment taken out of a [`JournalWriter`] to be stored.
pub struct SealJob {
    disk: String,
    chunk_bytes: u32,
    records: Vec<Record>,
    pack: PackBuilder,
    /// The pack is already stored (an earlier attempt failed after it).
    pack_stored: bool,
    pack_stored_bytes: u64,
}

impl SealJob {
    /// Stores the pack and its index, then the segment (create-only). May be
    /// retried after a failure; a pack already stored is not stored again.
    pub fn store(&mut self, vault: &Vault) -> Result<SealReport, VaultError> {
        if !self.pack.is_empty() && !self.pack_stored {
            self.pack_stored_bytes = store_pack(vault, &self.pack)?;
            self.pack_stored = true;
        }
        let segment = Segment { disk: self.disk.clone(), chunk_bytes: self.chunk_bytes, records: self.records.clone() };
        let first = segment.first_sequence().expect("a segment with records");
        let last = segment.last_sequence().expect("a segment with records");
        let sealed = segment.seal(vault.keys());
        let segment_bytes = sealed.len() as u64;
        let path = segment_path(&self.disk, first);
        match vault.backend().put_new(&path, Bytes::from(sealed)) {
            Ok(()) => {}
            // An earlier attempt may have stored it and lost the answer (a
            // timeout after the object store committed): then it holds our
            // records. Anything else there is another writer's.
            Err(StorageError::AlreadyExists { .. }) => {
                let stored = read_segment(vault, &path).ok();
                if stored.is_none_or(|stored| stored.records != self.records || stored.disk != self.disk) {
                    return Err(VaultError::ConcurrentSync { disk: self.disk.clone(), sequence: first });
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(SealReport {
            first_sequence: first,
            last_sequence: last,
            records: self.records.len() as u64,
            bytes_new: self.pack_stored_bytes + segment_bytes,
        })
    }
}

/// How far to replay a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalTarget {
    /// Every record up to and including this sequence.
    Sequence(u64),
    /// Every record stamped at or before this time (µs since the epoch).
    Time(i64),
    /// Every record sealed so far.
    Latest,
}

/// A bookmark of the journal, as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bookmark {
    pub sequence: u64,
    pub time: String,
    pub time_micros: i64,
    pub kind: PointKind,
    pub label: String,
}

/// What a journal offers: its bookmarks, and the window of times and
/// sequences any of which can be restored exactly.
#[derive(Debug, Clone, Serialize, Default)]
pub struct JournalListing {
    pub bookmarks: Vec<Bookmark>,
    pub first_sequence: Option<u64>,
    pub last_sequence: Option<u64>,
    pub first_time_micros: Option<i64>,
    pub last_time_micros: Option<i64>,
    pub segments: u64,
    /// Stretches of the journal that cannot be restored (the splitter was
    /// refreshing): (from time, to time or None while still open).
    pub gaps: Vec<(i64, Option<i64>)>,
}

/// Label of the listed point that stands for a compacted base.
pub const BASE_LABEL: &str = "journal base (older records compacted)";

/// Runs `read`, a walk over `disk`'s journal, again when it failed because
/// an object it had listed is gone and a compaction made a newer base
/// meanwhile (compaction deletes the segments a base covers right after
/// storing it): readers never hold compaction back, they start again from
/// the new base. A missing object without a new base is an error as ever.
pub fn across_compactions<T>(
    vault: &Vault,
    disk: &str,
    mut read: impl FnMut() -> Result<T, VaultError>,
) -> Result<T, VaultError> {
    let newest = || -> Result<Option<u64>, VaultError> {
        Ok(journal_objects(vault, disk)?.bases.last().map(|(sequence, _)| *sequence))
    };
    let mut attempts = 0;
    loop {
        let before = newest()?;
        match read() {
            Err(VaultError::Storage(StorageError::NotFound { .. })) if attempts < 3 && newest()? != before => {
                attempts += 1;
            }
            other => return other,
        }
    }
}

pub fn list_journal(vault: &Vault, disk: &str) -> Result<JournalListing, VaultError> {
    across_compactions(vault, disk, || list_journal_once(vault, disk))
}

fn list_journal_once(vault: &Vault, disk: &str) -> Result<JournalListing, VaultError> {
    let objects = journal_objects(vault, disk)?;
    let base = newest_base(vault, &objects, disk)?;
    let mut listing = JournalListing::default();
    if let Some(base) = &base {
        listing.first_sequence = Some(base.sequence);
        listing.first_time_micros = Some(base.time_micros);
        listing.last_sequence = Some(base.sequence);
        listing.last_time_micros = Some(base.time_micros);
        listing.bookmarks.push(Bookmark {
            sequence: base.sequence,
            time: format_time(base.time_micros),
            time_micros: base.time_micros,
            kind: base.kind,
            label: BASE_LABEL.to_string(),
        });
    }
    let after = base.as_ref().map_or(0, |base| base.sequence);
    for_each_record(
        vault,
        disk,
        &objects,
        after,
        |_| true,
        |record| {
            listing.first_sequence.get_or_insert(record.sequence);
            listing.first_time_micros.get_or_insert(record.time_micros);
            listing.last_sequence = Some(record.sequence);
            listing.last_time_micros = Some(record.time_micros);
            track_gaps(&mut listing.gaps, record);
            if let RecordKind::Bookmark { kind, label } = &record.kind {
                listing.bookmarks.push(Bookmark {
                    sequence: record.sequence,
                    time: format_time(record.time_micros),
                    time_micros: record.time_micros,
                    kind: *kind,
                    label: label.clone(),
                });
            }
            Ok(true)
        },
    )?;
    listing.segments = objects.segments.len() as u64;
    Ok(listing)
}

/// Opens a stretch that cannot be restored at a gap record, closes it at
/// the exact record that ends it.
pub(crate) fn track_gaps(gaps: &mut Vec<(i64, Option<i64>)>, record: &Record) {
    match &record.kind {
        RecordKind::Gap => gaps.push((record.time_micros, None)),
        RecordKind::Exact => {
            if let Some(open) = gaps.last_mut().filter(|gap| gap.1.is_none()) {
                open.1 = Some(record.time_micros);
            }
        }
        _ => {}
    }
}

/// Calls `visit` on every record after sequence `after` (a base's), in
/// sequence order, until it returns false. A gap between segments (a
/// segment missing) is an error naming it when `wants` says the record
/// after the gap is needed.
pub(crate) fn for_each_record(
    vault: &Vault,
    disk: &str,
    objects: &JournalObjects,
    after: u64,
    wants: impl Fn(&Record) -> bool,
    mut visit: impl FnMut(&Record) -> Result<bool, VaultError>,
) -> Result<(), VaultError> {
    let mut expected: Option<u64> = (after > 0).then_some(after + 1);
    for (first, path) in objects.segments_after(after) {
        let segment = read_segment(vault, path)?;
        if segment.disk != disk || segment.first_sequence() != Some(*first) {
            return Err(VaultError::damaged(path, "segment names another disk or sequence"));
        }
        // The first segment after a base may begin at or before it.
        if let Some(expected) = expected.filter(|&expected| expected < *first) {
            if !segment.records.first().is_some_and(&wants) {
                return Ok(());
            }
            return Err(VaultError::damaged(
                path,
                format!("the journal of disk '{disk}' has no records {expected}..{first} (a segment is missing)"),
            ));
        }
        expected = segment.last_sequence().map(|last| last + 1);
        for record in segment.records.iter().filter(|record| record.sequence > after) {
            if !visit(record)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Rebuilds the disk as it was after `target` by replaying its journal into
/// OUT (through `OUT.standby-partial`, fsynced and renamed, like `restore`).
pub fn restore_journal(
    vault: &Vault,
    disk: &str,
    target: JournalTarget,
    output: &Path,
    force: bool,
) -> Result<RestoreReport, VaultError> {
    let started = Instant::now();
    if output.exists() && !force {
        return Err(VaultError::OutputExists { path: output.display().to_string() });
    }
    let partial = partial_path(output);
    let result = across_compactions(vault, disk, || replay_into(vault, disk, target, &partial));
    let (last, time_micros, disk_bytes, written, fetched) = match result {
        Ok(totals) => totals,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&partial, output) {
        let _ = std::fs::remove_file(&partial);
        return Err(io_error("rename into place", output, e));
    }
    Ok(RestoreReport {
        disk: disk.to_string(),
        point: last,
        time: format_time(time_micros),
        output: output.display().to_string(),
        disk_bytes,
        bytes_written: written,
        bytes_fetched: fetched,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

/// One step of a replay: the compacted base it starts from, then records.
pub(crate) enum Step<'a> {
    Base(&'a PointManifest),
    Record(&'a Record),
}

/// Walks the journal listed as `objects` up to `target`: `apply` gets the
/// compacted base the walk starts from (if the journal has one), then each
/// record after it. Checks that the journal is exact there; returns the
/// last record's sequence and time. The caller discards what it built when
/// this fails.
///
/// A caller that reads the records' data lists the journal *before* it
/// loads the chunk index: a writer stores a segment's pack and index before
/// the segment, so every chunk a listed segment names is in an index loaded
/// after the listing. (The other way round, a segment sealed in between
/// would name chunks the index never saw, and a live disk would look damaged.)
pub(crate) fn replay_metadata(
    vault: &Vault,
    disk: &str,
    objects: &JournalObjects,
    target: JournalTarget,
    mut apply: impl FnMut(Step) -> Result<(), VaultError>,
) -> Result<(u64, i64), VaultError> {
    let base = newest_base(vault, objects, disk)?;
    let (mut last, mut time_micros) = (0u64, 0i64);
    if let Some(base) = &base {
        let before = match target {
            JournalTarget::Sequence(sequence) => sequence < base.sequence,
            JournalTarget::Time(time) => time < base.time_micros,
            JournalTarget::Latest => false,
        };
        if before {
            return Err(VaultError::UnknownPoint {
                disk: disk.to_string(),
                point: format!("{target:?}"),
                reason: format!(
                    "it is older than the retention window: older records were compacted; the oldest restorable \
                     moment is {} (point {})",
                    format_time(base.time_micros),
                    base.sequence
                ),
            });
        }
        apply(Step::Base(base))?;
        (last, time_micros) = (base.sequence, base.time_micros);
    }
    // Where the current gap began, while the journal is not exact.
    let mut gap_since: Option<i64> = None;
    let beyond = |record: &Record| match target {
        JournalTarget::Sequence(sequence) => record.sequence > sequence,
        JournalTarget::Time(time) => record.time_micros > time,
        JournalTarget::Latest => false,
    };
    for_each_record(
        vault,
        disk,
        objects,
        last,
        |record| !beyond(record),
        |record| {
            if beyond(record) {
                return Ok(false);
            }
            match record.kind {
                RecordKind::Gap => gap_since = gap_since.or(Some(record.time_micros)),
                RecordKind::Exact => gap_since = None,
                _ => {}
            }
            apply(Step::Record(record))?;
            last = record.sequence;
            time_micros = record.time_micros;
            Ok(true)
        },
    )?;
    if let Some(since) = gap_since {
        return Err(VaultError::UnknownPoint {
            disk: disk.to_string(),
            point: format!("{target:?}"),
            reason: format!(
                "the journal cannot rebuild the disk exactly there: the splitter was catching up with the image from {} \
                 (after a start, a restart or a vault outage); choose a point before that or after it caught up",
                format_time(since)
            ),
        });
    }
    if last == 0 {
        return Err(VaultError::UnknownPoint {
            disk: disk.to_string(),
            point: format!("{target:?}"),
            reason: "the journal has no record at or before it".into(),
        });
    }
    Ok((last, time_micros))
}

fn replay_into(
    vault: &Vault,
    disk: &str,
    target: JournalTarget,
    partial: &Path,
) -> Result<(u64, i64, u64, u64, u64), VaultError> {
    let file = create_partial(partial)?;
    // Listed first, then the index (see replay_metadata).
    let objects = journal_objects(vault, disk)?;
    let index = ChunkIndex::load(vault, &HashSet::new())?;
    let chunk_bytes = vault.config().chunk_bytes;
    let (mut disk_bytes, mut written, mut fetched) = (0u64, 0u64, 0u64);
    let what = format!("journal data of disk '{disk}'");
    let (last, time_micros) = replay_metadata(vault, disk, &objects, target, |step| {
        let record = match step {
            Step::Base(base) => {
                disk_bytes = base.disk_bytes;
                file.set_len(base.disk_bytes).map_err(|e| io_error("size", partial, e))?;
                let (base_written, base_fetched) =
                    crate::restore::write_point(vault, &index, base, &file, partial, &|_: u64| {})?;
                written += base_written;
                fetched += base_fetched;
                return Ok(());
            }
            Step::Record(record) => record,
        };
        match &record.kind {
            RecordKind::Write { offset, length, pieces: ids } => {
                for ((piece_offset, piece_len), id) in pieces(*offset, u64::from(*length), chunk_bytes).zip(ids) {
                    let location = index.locate(id, &what)?;
                    let data = read_chunk(vault, id, location)?;
                    if data.len() != piece_len as usize {
                        return Err(VaultError::damaged(&what, format!("chunk {id} has the wrong length")));
                    }
                    file.write_all_at(&data, piece_offset).map_err(|e| io_error("write", partial, e))?;
                    written += data.len() as u64;
                    fetched += u64::from(location.frame_len);
                }
            }
            RecordKind::Zero { offset, length } => {
                standby_image::zero_range(&file, *offset, *length).map_err(|e| io_error("zero", partial, e))?;
            }
            RecordKind::Size { disk_bytes: bytes } => {
                disk_bytes = *bytes;
                file.set_len(*bytes).map_err(|e| io_error("size", partial, e))?;
            }
            RecordKind::Bookmark { .. } | RecordKind::Gap | RecordKind::Exact => {}
        }
        Ok(())
    })?;
    // Writes past the recorded size (none from a well-behaved splitter) do not grow the disk.
    file.set_len(disk_bytes).map_err(|e| io_error("size", partial, e))?;
    file.sync_all().map_err(|e| io_error("flush", partial, e))?;
    Ok((last, time_micros, disk_bytes, written, fetched))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::LocalBackend;
    use crate::prune::{prune, PruneOptions};
    use crate::InitOptions;

    /// A retried seal whose segment an earlier attempt already stored (the
    /// answer was lost) succeeds; another writer's segment is refused.
    #[test]
    fn storing_a_segment_twice_is_idempotent_but_a_foreign_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
        let mut writer = JournalWriter::open(&vault, "d").unwrap();
        writer.size(1 << 20, 1);
        writer.write(0, &[3; 70_000], 1);
        let mut job = writer.take_seal().unwrap();
        let first = job.store(&vault).unwrap();
        let again = job.store(&vault).unwrap();
        assert_eq!((again.first_sequence, again.last_sequence), (first.first_sequence, first.last_sequence));
        writer.sealed(job);
        drop(writer);

        // A second writer that believes it owns the same sequences.
        let mut other = JournalWriter::open(&vault, "d").unwrap();
        other.next_sequence = 1;
        other.size(2 << 20, 2);
        let mut foreign = other.take_seal().unwrap();
        let error = foreign.store(&vault).unwrap_err();
        assert!(matches!(error, VaultError::ConcurrentSync { .. }), "{error}");
    }

    /// A long-running writer loaded its index before a pack was marked for
    /// collection: it must not reuse that pack's chunks once the pack can be
    /// swept, and the sweep must wait until it has stopped relying on it.
    #[test]
    fn a_running_writer_never_references_a_swept_pack() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
        let data = vec![7u8; 65536];
        let mut first = JournalWriter::open(&vault, "a").unwrap();
        first.write(0, &data, 1);
        first.seal().unwrap();
        drop(first);
        // Its segment goes (as compaction would delete it): the pack is garbage.
        for (_, path) in segments(&vault, "a").unwrap() {
            vault.backend().delete(&path).unwrap();
        }
        let packs = || vault.backend().list(crate::prune::PACKS_FOLDER).unwrap().len();
        assert_eq!(packs(), 1);

        let mut writer = JournalWriter::open(&vault, "b").unwrap();
        let options = PruneOptions { drop_before_micros: None, grace: Duration::ZERO };
        assert_eq!(prune(&vault, &options).unwrap().packs_marked, 1);
        let report = prune(&vault, &options).unwrap();
        assert_eq!(report.packs_deleted, 0, "the writer may still reuse the marked pack: {report:?}");
        assert!(report.waiting.iter().any(|w| w.contains("journal of b")), "{report:?}");

        // The writer's next maintenance forgets the marked pack...
        writer.maintained = Instant::now() - MAINTAIN_INTERVAL;
        writer.seal().unwrap();
        // ...so the same data is stored again, not referenced.
        writer.size(65536, 2);
        writer.write(0, &data, 2);
        writer.seal().unwrap();
        assert_eq!(packs(), 2);
        let report = prune(&vault, &options).unwrap();
        assert_eq!(report.packs_deleted, 1, "{report:?}");
        drop(writer);

        let out = dir.path().join("out");
        restore_journal(&vault, "b", JournalTarget::Latest, &out, false).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
        assert!(crate::verify::verify(&vault, &|_| {}).unwrap().is_clean());
    }
}
