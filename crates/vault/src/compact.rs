//! Retention for journals: the records older than the retention window are
//! compacted into a **base**, the disk as it was after one sequence, stored
//! like a sync point (map pages of content-addressed chunks, so chunks the
//! journal already stored whole are not stored again), at
//! `disks/<disk>/journal/<sequence>.base`. Replays start from the newest
//! base; the segments it covers are then deleted, and their data, once
//! nothing references it, is collected by `prune`'s mark and sweep.
//!
//! Commit order: the base's packs and indexes, the base (create-only), then
//! the deletion of covered segments (oldest first) and older bases. A crash
//! at any moment leaves a journal that replays the same: readers start at
//! the newest base and skip what it covers, and a later compaction finishes
//! the deletions.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use standby_format::{PointKind, PointManifest, RecordKind};

use crate::backend::StorageError;
use crate::journal::{base_path, journal_objects, newest_base, read_segment, JournalTarget, BASE_LABEL};
use crate::lease::Lease;
use crate::sync::store_disk;
use crate::view::PointView;
use crate::{format_time, Vault, VaultError};

#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    pub disk: String,
    /// The new base: the disk as it was after this sequence.
    pub base_sequence: u64,
    pub base_time: String,
    pub segments_removed: u64,
    pub bases_removed: u64,
    pub chunks_new: u64,
    /// Bytes of new objects (packs, indexes, the base).
    pub bytes_new: u64,
}

/// Compacts the journal of `disk` up to the newest segment end that is
/// older than `before_micros` and at which the journal is exact. Returns
/// `None` when there is nothing to compact.
pub fn compact_journal(vault: &Vault, disk: &str, before_micros: i64) -> Result<Option<CompactReport>, VaultError> {
    let objects = journal_objects(vault, disk)?;
    let current_base = newest_base(vault, &objects, disk)?.map(|base| (base.sequence, base.time_micros));
    let current = current_base.map_or(0, |(sequence, _)| sequence);

    // The newest segment end before the cutoff where the journal is exact.
    let mut target: Option<(u64, i64)> = None;
    let mut exact = true;
    for (_, path) in objects.segments_after(current) {
        let segment = read_segment(vault, path)?;
        let Some(last) = segment.records.last() else { continue };
        if last.time_micros >= before_micros {
            break;
        }
        for record in segment.records.iter().filter(|record| record.sequence > current) {
            match record.kind {
                RecordKind::Gap => exact = false,
                RecordKind::Exact => exact = true,
                _ => {}
            }
        }
        if exact && last.sequence > current {
            target = Some((last.sequence, last.time_micros));
        }
    }
    let (sequence, time_micros, chunks_new, bytes_new) = match target {
        Some((sequence, time_micros)) => {
            // The lease holds back the sweep of packs whose chunks the base
            // may reuse (as for a sync).
            let mut lease = Lease::acquire(vault, "compact", disk)?;
            let (chunks_new, bytes_new) = store_base(vault, disk, sequence, time_micros, &mut lease)?;
            lease.release()?;
            (sequence, time_micros, chunks_new, bytes_new)
        }
        // Nothing new to compact; an interrupted compaction may have left
        // covered segments or older bases to delete.
        None => match current_base {
            Some((sequence, time_micros)) => (sequence, time_micros, 0, 0),
            None => return Ok(None),
        },
    };

    let mut report = CompactReport {
        disk: disk.to_string(),
        base_sequence: sequence,
        base_time: format_time(time_micros),
        segments_removed: 0,
        bases_removed: 0,
        chunks_new,
        bytes_new,
    };
    // A base always ends where a segment ends, so every segment starting at
    // or before it lies wholly inside the base.
    for (first, path) in &objects.segments {
        if *first <= sequence {
            vault.backend().delete(path)?;
            report.segments_removed += 1;
        }
    }
    for (older, path) in &objects.bases {
        if *older < sequence {
            vault.backend().delete(path)?;
            report.bases_removed += 1;
        }
    }
    if target.is_none() && report.segments_removed == 0 && report.bases_removed == 0 {
        return Ok(None);
    }
    Ok(Some(report))
}

/// Stores the disk as it was after `sequence` as a base; returns the new
/// chunks and bytes it stored.
fn store_base(
    vault: &Vault,
    disk: &str,
    sequence: u64,
    time_micros: i64,
    lease: &mut Lease,
) -> Result<(u64, u64), VaultError> {
    let view = PointView::of_journal(Arc::new(vault.clone()), disk, JournalTarget::Sequence(sequence))?;
    let read = |offset: u64, buffer: &mut [u8]| view.read(offset, buffer);
    write_base(vault, disk, sequence, time_micros, view.size(), &read, lease)
}

/// Stores a disk of `disk_bytes` read through `read` as the base at
/// `sequence` (create-only; an identical base already there is fine).
fn write_base(
    vault: &Vault,
    disk: &str,
    sequence: u64,
    time_micros: i64,
    disk_bytes: u64,
    read: &crate::sync::ReadAt,
    lease: &mut Lease,
) -> Result<(u64, u64), VaultError> {
    let stored = store_disk(vault, disk_bytes, read, lease, &|_| {})?;
    let config = vault.config();
    let base = PointManifest {
        sequence,
        time_micros,
        kind: PointKind::CrashConsistent,
        disk: disk.to_string(),
        label: BASE_LABEL.to_string(),
        disk_bytes,
        chunk_bytes: config.chunk_bytes,
        page_entries: config.page_entries,
        bytes_read: disk_bytes,
        bytes_new: stored.bytes_new,
        pages: stored.pages,
    };
    let sealed = base.seal(vault.keys());
    let base_bytes = sealed.len() as u64;
    match vault.backend().put_new(&base_path(disk, sequence), Bytes::from(sealed)) {
        // Another compaction made the same base: finish its deletions.
        Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok((stored.chunks_new, stored.bytes_new + base_bytes))
}

/// What [`seed_journal`] stored.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    pub disk: String,
    /// The base's sequence: the journal continues after it.
    pub base_sequence: u64,
    pub disk_bytes: u64,
    pub chunks_new: u64,
    pub bytes_new: u64,
}

/// Makes the disk image at `image` the newest base of `disk`'s journal, so
/// that a splitter started on an image that differs from it only where its
/// intent log says re-reads just those regions. Used by reprotect at the
/// site that receives the reversed replication: the old source's disk is
/// there already, and storing it moves nothing between sites (its chunks
/// then make the splitter's re-reads store only what differs). Records
/// the journal held before become older than its window.
pub fn seed_journal(vault: &Vault, disk: &str, image: &std::path::Path) -> Result<SeedReport, VaultError> {
    let objects = journal_objects(vault, disk)?;
    let after_segments = match objects.segments.last() {
        Some((_, path)) => read_segment(vault, path)?.last_sequence().unwrap_or(0),
        None => 0,
    };
    let after_base = objects.bases.last().map_or(0, |(sequence, _)| *sequence);
    // Past every record, and never 1: a writer that finds nothing but a
    // base at 1 would take the journal for empty.
    let sequence = after_segments.max(after_base).max(1) + 1;
    let file = std::fs::File::open(image).map_err(|source| VaultError::Io {
        operation: "open",
        path: image.display().to_string(),
        source,
    })?;
    let disk_bytes = file
        .metadata()
        .map_err(|source| VaultError::Io { operation: "stat", path: image.display().to_string(), source })?
        .len();
    let read = |offset: u64, buffer: &mut [u8]| {
        standby_image::read_sparse(&file, buffer, offset).map_err(|source| VaultError::Io {
            operation: "read",
            path: image.display().to_string(),
            source,
        })
    };
    let mut lease = Lease::acquire(vault, "seed", disk)?;
    let (chunks_new, bytes_new) =
        write_base(vault, disk, sequence, jiff::Timestamp::now().as_microsecond(), disk_bytes, &read, &mut lease)?;
    lease.release()?;
    Ok(SeedReport { disk: disk.to_string(), base_sequence: sequence, disk_bytes, chunks_new, bytes_new })
}

/// The byte ranges `disk`'s journal changed (writes, zeroings) in records
/// stamped after `after_micros`, or `None` when the journal no longer holds
/// all of them (compacted, or a gap: the splitter lost track there).
pub fn changed_since(vault: &Vault, disk: &str, after_micros: i64) -> Result<Option<Vec<(u64, u64)>>, VaultError> {
    let objects = journal_objects(vault, disk)?;
    let base = newest_base(vault, &objects, disk)?;
    if base.as_ref().is_some_and(|base| base.time_micros > after_micros) {
        return Ok(None);
    }
    let from = base.map_or(0, |base| base.sequence);
    let mut ranges = Vec::new();
    for (_, path) in objects.segments_after(from) {
        for record in read_segment(vault, path)?.records {
            if record.sequence <= from || record.time_micros <= after_micros {
                continue;
            }
            match record.kind {
                RecordKind::Write { offset, length, .. } => ranges.push((offset, u64::from(length))),
                RecordKind::Zero { offset, length } => ranges.push((offset, length)),
                RecordKind::Gap => return Ok(None),
                _ => {}
            }
        }
    }
    Ok(Some(ranges))
}
