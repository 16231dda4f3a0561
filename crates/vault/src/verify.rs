//! `verify`: read every object of the vault, check every checksum and every
//! chunk against its id, and check that every recovery point is complete.
//! Damage is reported, never repaired silently: each damaged object is named
//! together with the points it breaks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;
use standby_format::{
    chunk_of_frame, decode_frame, ChunkId, FrameKind, MapPage, PackHeader, PackId, PackIndex, PACK_HEADER_BYTES,
};

use crate::backend::StorageError;
use crate::index::{pack_id_of, read_index, INDEXES_FOLDER};
use crate::prune::PACKS_FOLDER;
use crate::vault::{index_path, pack_path};
use crate::{Vault, VaultError};

#[derive(Debug, Clone, Serialize)]
pub struct DamagedObject {
    pub object: String,
    pub problem: String,
    /// Points this damage makes unrestorable, as `disk@point`.
    pub breaks: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokenPoint {
    pub disk: String,
    pub point: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub packs_checked: u64,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    pub points_checked: u64,
    pub damaged: Vec<DamagedObject>,
    pub broken_points: Vec<BrokenPoint>,
    /// Packs no point references (a crashed sync's leftovers; prune collects them).
    pub packs_unreferenced: u64,
    pub segments_checked: u64,
    /// Journals that cannot be replayed from a sequence on.
    pub broken_journals: Vec<BrokenJournal>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokenJournal {
    pub disk: String,
    /// Restores at or after this sequence fail.
    pub from_sequence: u64,
    pub reason: String,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.broken_points.is_empty() && self.broken_journals.is_empty()
    }
}

/// What checking one pack found.
struct PackCheck {
    pack: PackId,
    /// Object that holds the damage, and what it is.
    problems: Vec<(String, String)>,
    /// Chunks whose frames decoded and matched their ids.
    good: Vec<ChunkId>,
    /// Every chunk the pack claims to hold (from whichever index copy was readable).
    claimed: Vec<ChunkId>,
    pages: Vec<(ChunkId, MapPage)>,
    bytes: u64,
}

pub fn verify(vault: &Vault, progress: &(dyn Fn(u64) + Sync)) -> Result<VerifyReport, VaultError> {
    let mut findings = Findings::check_packs(vault, progress)?;
    findings.check_points(vault)?;
    findings.check_journals(vault)?;
    Ok(findings.report())
}

/// What verify has found so far: the report, the damaged objects with the
/// points and journals each breaks, and what the packs hold.
#[derive(Default)]
struct Findings {
    report: VerifyReport,
    damaged: BTreeMap<String, (String, BTreeSet<String>)>,
    /// Chunks whose bytes were read and matched their id, where a restore finds them.
    good: HashSet<ChunkId>,
    /// The pack each chunk is claimed by (its index, or the pack's frames).
    holder: HashMap<ChunkId, PackId>,
    pages: HashMap<ChunkId, MapPage>,
    /// Packs something (a point, a base, a journal) refers to.
    referenced: HashSet<PackId>,
    packs: BTreeSet<PackId>,
    /// Packs with no index object.
    indexless: Vec<PackId>,
}

impl Findings {
    /// Reads every pack (in parallel) and every index: which chunks are
    /// good and where each is; indexes without packs and packs without
    /// indexes are damage until proven harmless.
    fn check_packs(vault: &Vault, progress: &(dyn Fn(u64) + Sync)) -> Result<Findings, VaultError> {
        let backend = vault.backend();
        let packs: BTreeSet<PackId> =
            backend.list(PACKS_FOLDER)?.iter().filter_map(|o| pack_id_of(&o.path, PACKS_FOLDER, ".pack")).collect();
        let indexes: BTreeSet<PackId> = backend
            .list(INDEXES_FOLDER)?
            .iter()
            .filter_map(|o| pack_id_of(&o.path, INDEXES_FOLDER, ".index"))
            .collect();
        let checks: Vec<PackCheck> = packs
            .par_iter()
            .map(|pack| {
                let check = check_pack(vault, *pack, indexes.contains(pack));
                progress(check.as_ref().map_or(0, |c| c.bytes));
                check
            })
            .collect::<Result<_, _>>()?;
        let mut findings = Findings::default();
        // Chunks of packs that have no index object cannot be found by a
        // restore: they count as good only where an indexed pack holds them too.
        let (indexed_checks, indexless_checks): (Vec<PackCheck>, Vec<PackCheck>) =
            checks.into_iter().partition(|check| indexes.contains(&check.pack));
        let indexed_chunks: HashSet<ChunkId> =
            indexed_checks.iter().flat_map(|check| check.claimed.iter().copied()).collect();
        findings.indexless = indexless_checks.iter().map(|check| check.pack).collect();
        for pack in &findings.indexless {
            let problem = "index object is missing, so restores cannot find this pack's chunks";
            findings.damaged.insert(index_path(pack), (problem.into(), BTreeSet::new()));
        }
        for check in indexed_checks.into_iter().chain(indexless_checks) {
            findings.report.packs_checked += 1;
            findings.report.chunks_checked += check.good.len() as u64;
            findings.report.bytes_checked += check.bytes;
            for (object, problem) in check.problems {
                findings.damaged.entry(object).or_insert_with(|| (problem, BTreeSet::new()));
            }
            let has_index = indexes.contains(&check.pack);
            for id in check.claimed {
                findings.holder.entry(id).or_insert(check.pack);
            }
            findings.good.extend(check.good.into_iter().filter(|id| has_index || indexed_chunks.contains(id)));
            findings.pages.extend(check.pages);
        }
        for pack in indexes.difference(&packs) {
            let object = index_path(pack);
            findings.damaged.insert(object, (format!("its pack {} is missing", pack_path(pack)), BTreeSet::new()));
            if let Ok(index) = read_index(vault, &index_path(pack)) {
                for entry in index.entries {
                    findings.holder.entry(entry.id).or_insert(*pack);
                }
            }
        }
        findings.packs = packs;
        Ok(findings)
    }

    /// Every point and every compacted journal base: its manifest, its
    /// pages, every chunk of every page. A broken base breaks its journal.
    fn check_points(&mut self, vault: &Vault) -> Result<(), VaultError> {
        for disk in vault.disks()? {
            let points = vault.point_sequences(&disk)?.into_iter().map(|(sequence, path)| (sequence, path, false));
            let bases = crate::journal::journal_objects(vault, &disk)?.bases;
            for (sequence, path, is_base) in
                points.chain(bases.into_iter().map(|(sequence, path)| (sequence, path, true)))
            {
                let name =
                    if is_base { format!("{disk}@journal-base:{sequence}") } else { format!("{disk}@{sequence}") };
                self.report.points_checked += 1;
                let reasons = self.check_point(vault, &path, &name)?;
                if reasons.is_empty() {
                    continue;
                }
                let total = reasons.len();
                let mut reason: Vec<String> = reasons.into_iter().take(3).collect();
                if total > 3 {
                    reason.push(format!("and {} more", total - 3));
                }
                let reason = reason.join("; ");
                if is_base {
                    self.report.broken_journals.push(BrokenJournal {
                        disk: disk.clone(),
                        from_sequence: sequence,
                        reason,
                    });
                } else {
                    self.report.broken_points.push(BrokenPoint { disk: disk.clone(), point: sequence, reason });
                }
            }
        }
        Ok(())
    }

    /// Why the point (or base) at `path`, called `name` in the report,
    /// cannot be restored; empty when it can.
    fn check_point(&mut self, vault: &Vault, path: &str, name: &str) -> Result<BTreeSet<String>, VaultError> {
        let mut reasons: BTreeSet<String> = BTreeSet::new();
        let point = match vault.read_point(path) {
            Ok(point) => point,
            Err(VaultError::Damaged { problem, .. }) => {
                self.damaged.insert(path.to_string(), (problem.clone(), BTreeSet::from([name.to_string()])));
                reasons.insert(format!("{path}: {problem}"));
                return Ok(reasons);
            }
            Err(other) => return Err(other),
        };
        for (page_number, page_id) in point.pages.iter().enumerate() {
            if page_id.is_zero() {
                continue;
            }
            self.refer(page_id);
            let page = match self.pages.get(page_id) {
                Some(page) if self.good.contains(page_id) => page.clone(),
                _ => {
                    reasons.insert(self.missing(page_id, "map page", name, false));
                    continue;
                }
            };
            if page.entries.len() != point.entries_in_page(page_number) as usize {
                reasons.insert(format!("map page {page_id} has the wrong number of entries"));
                continue;
            }
            for id in page.entries.iter().filter(|id| !id.is_zero()) {
                self.refer(id);
                if !self.good.contains(id) {
                    reasons.insert(self.missing(id, "chunk", name, false));
                }
            }
        }
        Ok(reasons)
    }

    /// Every journal: segments whole and consecutive, every write's data good.
    fn check_journals(&mut self, vault: &Vault) -> Result<(), VaultError> {
        for disk in vault.disks()? {
            let objects = crate::journal::journal_objects(vault, &disk)?;
            // After a compacted base, records continue at the one after it
            // (segments it covers may still be there, if a compaction was
            // interrupted before deleting them).
            let mut expected: Option<u64> = objects.bases.last().map(|(sequence, _)| sequence + 1);
            for (first, path) in objects.segments {
                self.report.segments_checked += 1;
                let name = format!("{disk}@journal:{first}");
                let mut reasons: BTreeSet<String> = BTreeSet::new();
                if expected.is_some_and(|expected| expected < first) {
                    reasons.insert(format!("records {}..{first} are missing", expected.unwrap_or(0)));
                }
                match crate::journal::read_segment(vault, &path) {
                    Ok(segment) => {
                        expected = segment.last_sequence().map(|last| last + 1).max(expected);
                        for record in &segment.records {
                            let standby_format::RecordKind::Write { pieces, .. } = &record.kind else { continue };
                            for id in pieces {
                                self.refer(id);
                                if !self.good.contains(id) {
                                    reasons.insert(self.missing(id, "journal data", &name, true));
                                }
                            }
                        }
                    }
                    Err(VaultError::Damaged { problem, .. }) => {
                        expected = None;
                        self.damaged.insert(path.clone(), (problem.clone(), BTreeSet::from([name.clone()])));
                        reasons.insert(format!("{path}: {problem}"));
                    }
                    Err(other) => return Err(other),
                }
                if !reasons.is_empty() {
                    let reason: Vec<String> = reasons.into_iter().take(3).collect();
                    let reason = reason.join("; ");
                    self.report.broken_journals.push(BrokenJournal {
                        disk: disk.clone(),
                        from_sequence: first,
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    /// Records that something refers to chunk `id`'s pack.
    fn refer(&mut self, id: &ChunkId) {
        if let Some(pack) = self.holder.get(id) {
            self.referenced.insert(*pack);
        }
    }

    /// Chunk `id` (a `what`) is not good: the damaged object holding it
    /// (its pack, else its index; with `both`, each that is damaged) now
    /// breaks `name`; returns the reason.
    fn missing(&mut self, id: &ChunkId, what: &str, name: &str, both: bool) -> String {
        let Some(pack) = self.holder.get(id) else { return format!("{what} {id} is in no pack") };
        let object = pack_path(pack);
        for key in [object.clone(), index_path(pack)] {
            if let Some((_, breaks)) = self.damaged.get_mut(&key) {
                breaks.insert(name.to_string());
                if !both {
                    break;
                }
            }
        }
        format!("{what} {id} in {object} is damaged")
    }

    /// The report: a pack without an index that nothing needs is a crashed
    /// sync's leftover (prune collects it), not damage.
    fn report(mut self) -> VerifyReport {
        for pack in &self.indexless {
            if self.damaged.get(&index_path(pack)).is_some_and(|(_, breaks)| breaks.is_empty()) {
                self.damaged.remove(&index_path(pack));
            }
        }
        let referenced = &self.referenced;
        self.report.packs_unreferenced = self.packs.iter().filter(|pack| !referenced.contains(pack)).count() as u64;
        self.report.damaged = self
            .damaged
            .into_iter()
            .map(|(object, (problem, breaks))| DamagedObject { object, problem, breaks: breaks.into_iter().collect() })
            .collect();
        self.report
    }
}

fn check_pack(vault: &Vault, pack: PackId, has_index: bool) -> Result<PackCheck, VaultError> {
    let path = pack_path(&pack);
    let mut check =
        PackCheck { pack, problems: Vec::new(), good: Vec::new(), claimed: Vec::new(), pages: Vec::new(), bytes: 0 };
    let bytes = match vault.backend().get(&path) {
        Ok(bytes) => bytes,
        Err(StorageError::NotFound { .. }) => {
            check.problems.push((path, "pack disappeared during verify".into()));
            return Ok(check);
        }
        Err(e) => return Err(e.into()),
    };
    check.bytes = bytes.len() as u64;

    // The separate index object, when there is one.
    let separate = if has_index {
        match read_index(vault, &index_path(&pack)) {
            Ok(index) => Some(index),
            Err(VaultError::Damaged { problem, .. }) => {
                check.problems.push((index_path(&pack), problem));
                None
            }
            Err(other) => return Err(other),
        }
    } else {
        // A crashed sync's leftover, or a deleted index: `verify` decides
        // which once it knows whether any point needs this pack.
        None
    };
    let embedded = PackIndex::sealed_from_pack(&bytes)
        .and_then(|sealed| PackIndex::open(sealed, vault.keys()))
        .and_then(|index| {
            let header = PackHeader::decode(&bytes[..PACK_HEADER_BYTES.min(bytes.len())])?;
            if header.id != pack || index.pack != pack {
                return Err(standby_format::FormatError::Malformed("pack names another id".into()));
            }
            Ok(index)
        });
    let embedded = match embedded {
        Ok(index) => Some(index),
        Err(e) => {
            check.problems.push((path.clone(), e.to_string()));
            None
        }
    };
    if let (Some(a), Some(b)) = (&separate, &embedded) {
        if a != b {
            check.problems.push((index_path(&pack), "index object disagrees with the copy inside its pack".into()));
        }
    }
    let Some(index) = embedded.or(separate) else { return Ok(check) };
    check.claimed = index.entries.iter().map(|entry| entry.id).collect();
    let frames_damaged = index.frames_end as usize > bytes.len()
        || blake3::hash(&bytes[..index.frames_end as usize]).as_bytes() != &index.frames_checksum;
    if frames_damaged && !check.problems.iter().any(|(object, _)| *object == path) {
        check.problems.push((path.clone(), "frames checksum mismatch".into()));
    }
    let mut bad_chunks = 0usize;
    // Chunks of one frame are consecutive entries: decode each frame once.
    type FrameKey = (u32, u32, u32, standby_format::Codec);
    let mut current: Option<(FrameKey, Option<Vec<u8>>)> = None;
    for entry in &index.entries {
        let key = (entry.frame_offset, entry.frame_len, entry.frame_raw_len, entry.codec);
        if current.as_ref().is_none_or(|(decoded_key, _)| *decoded_key != key) {
            let range = entry.frame_offset as usize..entry.frame_offset as usize + entry.frame_len as usize;
            let decoded = bytes
                .get(range)
                .and_then(|frame| decode_frame(frame, entry.codec, entry.frame_raw_len, vault.keys()).ok());
            current = Some((key, decoded));
        }
        let decoded = current.as_ref().and_then(|(_, decoded)| decoded.as_deref());
        let Some(raw) =
            decoded.and_then(|d| chunk_of_frame(d, &entry.id, entry.raw_offset, entry.raw_len, vault.keys()).ok())
        else {
            bad_chunks += 1;
            continue;
        };
        if entry.kind == FrameKind::Page {
            match MapPage::decode(raw) {
                Ok(page) => check.pages.push((entry.id, page)),
                Err(_) => {
                    bad_chunks += 1;
                    continue;
                }
            }
        }
        check.good.push(entry.id);
    }
    let bad_frames = bad_chunks;
    if bad_frames > 0 {
        check.problems.retain(|(object, _)| *object != path);
        check.problems.push((path, format!("{bad_frames} of {} chunks are damaged", index.entries.len())));
    }
    Ok(check)
}
