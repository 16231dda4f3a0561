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
    let stored = store_disk(vault, view.size(), &read, lease, &|_| {})?;
    let config = vault.config();
    let base = PointManifest {
        sequence,
        time_micros,
        kind: PointKind::CrashConsistent,
        disk: disk.to_string(),
        label: BASE_LABEL.to_string(),
        disk_bytes: view.size(),
        chunk_bytes: config.chunk_bytes,
        page_entries: config.page_entries,
        bytes_read: view.size(),
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
