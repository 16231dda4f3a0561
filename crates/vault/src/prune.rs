//! `prune`: drop recovery points older than the retention window, then
//! collect packs no remaining point references — mark and sweep with a grace
//! period, safe against a concurrent `sync`:
//!
//! 1. **Mark**: packs that no point references are written to a collection
//!    set (`collection/<time>-<id>.set`). From then on, new syncs do not reuse
//!    chunks from them (they store those chunks again if they need them).
//! 2. **Sweep** (a later prune, once the set is older than the grace period
//!    and no lease older than the set is still fresh): the live set is
//!    recomputed and every candidate still unreferenced is deleted, index
//!    first, then pack.
//!
//! A sync that started before the mark may have chosen to reuse a candidate's
//! chunk; its lease holds the sweep back until it has published (and so made
//! the pack live again) or died (and its lease gone stale).
//! The newest point of a disk is never dropped.

use std::collections::HashSet;
use std::time::Duration;

use rayon::prelude::*;
use serde::Serialize;
use standby_format::PackId;

use crate::collection::{collection_candidates, read_sets, write_set};
use crate::index::{pack_id_of, ChunkIndex, INDEXES_FOLDER};
use crate::lease::{list_leases, now_micros, LEASE_STALE};
use crate::vault::{index_path, pack_path};
use crate::{format_time, Vault, VaultError};

pub(crate) const PACKS_FOLDER: &str = "packs/";

pub struct PruneOptions {
    /// Drop points older than this time (now minus the retention window);
    /// `None` keeps every point.
    pub drop_before_micros: Option<i64>,
    /// How long a collection set waits before its sweep.
    pub grace: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct DroppedPoint {
    pub disk: String,
    pub point: u64,
    pub time: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub points_dropped: Vec<DroppedPoint>,
    pub packs_marked: u64,
    pub packs_deleted: u64,
    pub bytes_freed: u64,
    /// Collection sets not swept yet, and why.
    pub waiting: Vec<String>,
    /// Leftovers of writes interrupted by a crash (a local vault's
    /// temporary files), removed once older than the lease lifetime.
    pub abandoned_writes_removed: u64,
    pub abandoned_bytes_freed: u64,
    /// Journals whose records older than the window were compacted into a base.
    pub journals_compacted: Vec<crate::compact::CompactReport>,
}

pub fn prune(vault: &Vault, options: &PruneOptions) -> Result<PruneReport, VaultError> {
    let mut report = PruneReport::default();
    let now = now_micros();
    if let Some(cutoff) = options.drop_before_micros {
        for disk in vault.disks()? {
            let listing = vault.point_listing(&disk)?;
            if let Some((object, problem)) = listing.damaged.first() {
                return Err(VaultError::damaged(object, problem));
            }
            let newest = listing.points.last().map(|point| point.sequence);
            for point in &listing.points {
                if point.time_micros < cutoff && Some(point.sequence) != newest {
                    vault.backend().delete(&crate::vault::point_path(&disk, point.sequence))?;
                    report.points_dropped.push(DroppedPoint {
                        disk: disk.clone(),
                        point: point.sequence,
                        time: format_time(point.time_micros),
                    });
                }
            }
            // A journal keeps every moment inside the window; what is older
            // becomes its base.
            if let Some(compacted) = crate::compact::compact_journal(vault, &disk, cutoff)? {
                report.journals_compacted.push(compacted);
            }
        }
    }

    let sets = read_sets(vault)?;
    let mut live = live_packs(vault)?;
    let leases = list_leases(vault)?;
    let mut still_pending: HashSet<PackId> = HashSet::new();
    for (path, set) in sets {
        let age = Duration::from_micros((now - set.created_micros).max(0) as u64);
        if age < options.grace {
            report.waiting.push(format!("{path}: grace period has {}s left", (options.grace - age).as_secs()));
            still_pending.extend(set.packs.iter().filter_map(|hex| PackId::from_hex(hex)));
            continue;
        }
        let blocking = leases.iter().find(|lease| {
            lease.started_micros < set.created_micros && now - lease.refreshed_micros < LEASE_STALE.as_micros() as i64
        });
        if let Some(lease) = blocking {
            report.waiting.push(format!(
                "{path}: waiting for {} of {} (pid {} on {}) started {}",
                lease.operation,
                lease.detail,
                lease.pid,
                lease.host,
                format_time(lease.started_micros)
            ));
            still_pending.extend(set.packs.iter().filter_map(|hex| PackId::from_hex(hex)));
            continue;
        }
        // The live set is recomputed now: a sync that published since the
        // mark made its packs live again.
        live = live_packs(vault)?;
        let sizes = pack_sizes(vault)?;
        for pack in set.packs.iter().filter_map(|hex| PackId::from_hex(hex)) {
            if live.contains(&pack) {
                continue;
            }
            vault.backend().delete(&index_path(&pack))?;
            vault.backend().delete(&pack_path(&pack))?;
            report.packs_deleted += 1;
            report.bytes_freed += sizes.iter().find(|(id, _)| *id == pack).map_or(0, |(_, bytes)| *bytes);
        }
        vault.backend().delete(&path)?;
    }

    // Mark: every pack (with or without an index) that nothing references.
    let mut candidates: Vec<PackId> =
        all_packs(vault)?.into_iter().filter(|pack| !live.contains(pack) && !still_pending.contains(pack)).collect();
    candidates.sort();
    candidates.dedup();
    if !candidates.is_empty() {
        write_set(vault, &candidates)?;
        report.packs_marked = candidates.len() as u64;
    }

    // A write still in flight is younger than a stale lease: anything older
    // belongs to a process that died (or lost its lease) long ago.
    let before = std::time::SystemTime::now() - options.grace.max(LEASE_STALE);
    let (removed, bytes) = vault.backend().remove_abandoned_writes(before)?;
    report.abandoned_writes_removed = removed;
    report.abandoned_bytes_freed = bytes;
    Ok(report)
}

/// Packs holding any chunk or page of any point. Fails rather than guess when
/// a point or page cannot be read: collecting on a partial view could delete
/// live data.
fn live_packs(vault: &Vault) -> Result<HashSet<PackId>, VaultError> {
    let candidates = collection_candidates(vault)?;
    // Every point and journal listed before the chunk index is loaded: a
    // writer stores packs and their indexes before the point or segment
    // naming their chunks, so the index holds all the listed ones name.
    let mut listed = Vec::new();
    for disk in vault.disks()? {
        let listing = vault.point_listing(&disk)?;
        if let Some((object, problem)) = listing.damaged.first() {
            return Err(VaultError::damaged(object, format!("{problem} (collection needs every point readable)")));
        }
        listed.push((listing, crate::journal::journal_objects(vault, &disk)?));
    }
    let index = ChunkIndex::load_preferring(vault, &candidates)?;
    let mut live = HashSet::new();
    for (listing, objects) in listed {
        let mut bases = Vec::new();
        for (_, path) in &objects.bases {
            bases.push(vault.read_point(path).map_err(|e| {
                VaultError::damaged(path, format!("{e} (collection needs every journal base readable)"))
            })?);
        }
        let mut pages_seen = HashSet::new();
        for point in listing.points.iter().chain(&bases) {
            for (page_number, page_id) in point.pages.iter().enumerate() {
                if page_id.is_zero() || !pages_seen.insert(*page_id) {
                    continue;
                }
                live.insert(index.locate(page_id, "map page")?.pack);
                let page = index.read_page(vault, page_id, point.entries_in_page(page_number))?;
                for id in page.entries.iter().filter(|id| !id.is_zero()) {
                    live.insert(index.locate(id, "chunk")?.pack);
                }
            }
        }
        // Journal data is live as long as its segment exists.
        for (_, path) in &objects.segments {
            let segment = crate::journal::read_segment(vault, path)
                .map_err(|e| VaultError::damaged(path, format!("{e} (collection needs every segment readable)")))?;
            for record in &segment.records {
                if let standby_format::RecordKind::Write { pieces, .. } = &record.kind {
                    for id in pieces {
                        live.insert(index.locate(id, "journal data")?.pack);
                    }
                }
            }
        }
    }
    Ok(live)
}

fn all_packs(vault: &Vault) -> Result<Vec<PackId>, VaultError> {
    let mut packs: Vec<PackId> = vault
        .backend()
        .list(PACKS_FOLDER)?
        .iter()
        .filter_map(|object| pack_id_of(&object.path, PACKS_FOLDER, ".pack"))
        .collect();
    packs.extend(
        vault
            .backend()
            .list(INDEXES_FOLDER)?
            .iter()
            .filter_map(|object| pack_id_of(&object.path, INDEXES_FOLDER, ".index")),
    );
    Ok(packs)
}

fn pack_sizes(vault: &Vault) -> Result<Vec<(PackId, u64)>, VaultError> {
    Ok(vault
        .backend()
        .list(PACKS_FOLDER)?
        .par_iter()
        .filter_map(|object| Some((pack_id_of(&object.path, PACKS_FOLDER, ".pack")?, object.bytes)))
        .collect())
}
