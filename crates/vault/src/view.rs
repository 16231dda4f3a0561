//! A point-in-time view of a disk that reads chunks from the vault on
//! demand, without materialising the disk: what `export` serves over NBD
//! so a drill or a failover boots at once, whatever the disk's size.
//!
//! Opening a view costs the point's map pages (for a sync point) or a scan
//! of the journal's records (for a journal point), never the disk's data.
//! The view is an extent map: disk ranges → a slice of a stored chunk;
//! ranges with no extent read as zeros.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use standby_format::{pieces, ChunkId, PointManifest, RecordKind};

use crate::index::{read_chunk, ChunkIndex};
use crate::journal::{JournalTarget, Step};
use crate::{Vault, VaultError};

/// Decoded chunks kept for reads (64 KiB chunks: 16 MiB).
const CACHE_CHUNKS: usize = 256;

/// Decoded chunks by id, and their order of arrival (oldest first).
type ChunkCache = (HashMap<ChunkId, Arc<Vec<u8>>>, VecDeque<ChunkId>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    end: u64,
    id: ChunkId,
    /// Disk offset of the chunk's first byte: byte `o` of the disk is byte
    /// `o - chunk_start` of the chunk.
    chunk_start: u64,
}

pub struct PointView {
    /// What the view shows, e.g. "journal 1234" or "point 7": the sequence
    /// a journal replay stopped at, or the sync point's sequence.
    pub point: String,
    vault: Arc<Vault>,
    index: ChunkIndex,
    size: u64,
    /// Keyed by extent start; extents never overlap.
    extents: BTreeMap<u64, Extent>,
    cache: Mutex<ChunkCache>,
}

impl PointView {
    /// The disk at a sync point.
    pub fn of_point(vault: Arc<Vault>, point: &PointManifest) -> Result<PointView, VaultError> {
        let index = ChunkIndex::load(&vault, &HashSet::new())?;
        let mut view = PointView {
            point: format!("point {}", point.sequence),
            vault,
            index,
            size: 0,
            extents: BTreeMap::new(),
            cache: Mutex::default(),
        };
        view.load_point(point)?;
        Ok(view)
    }

    /// Makes the view the disk at `point` (a sync point or a journal base).
    fn load_point(&mut self, point: &PointManifest) -> Result<(), VaultError> {
        self.extents.clear();
        self.size = point.disk_bytes;
        let chunk_bytes = u64::from(point.chunk_bytes);
        for (number, page_id) in point.pages.iter().enumerate() {
            if page_id.is_zero() {
                continue;
            }
            let page = self.index.read_page(&self.vault, page_id, point.entries_in_page(number))?;
            let first = number as u64 * u64::from(point.page_entries);
            for (position, id) in page.entries.iter().enumerate() {
                if id.is_zero() {
                    continue;
                }
                let chunk = first + position as u64;
                let start = chunk * chunk_bytes;
                self.extents.insert(
                    start,
                    Extent { end: start + u64::from(point.chunk_len(chunk)), id: *id, chunk_start: start },
                );
            }
        }
        Ok(())
    }

    /// The disk after the journal's records up to `target` (metadata only).
    pub fn of_journal(vault: Arc<Vault>, disk: &str, target: JournalTarget) -> Result<PointView, VaultError> {
        crate::journal::across_compactions(&vault.clone(), disk, || {
            PointView::of_journal_once(vault.clone(), disk, target)
        })
    }

    fn of_journal_once(vault: Arc<Vault>, disk: &str, target: JournalTarget) -> Result<PointView, VaultError> {
        // Listed first, then the index (see replay_metadata): a segment
        // sealed in between must not name chunks the view cannot find.
        let objects = crate::journal::journal_objects(&vault, disk)?;
        let index = ChunkIndex::load(&vault, &HashSet::new())?;
        let chunk_bytes = vault.config().chunk_bytes;
        let mut view = PointView {
            point: String::new(),
            vault: vault.clone(),
            index,
            size: 0,
            extents: BTreeMap::new(),
            cache: Mutex::default(),
        };
        let (last, _) = crate::journal::replay_metadata(&vault, disk, &objects, target, |step| {
            let record = match step {
                Step::Base(base) => return view.load_point(base),
                Step::Record(record) => record,
            };
            match &record.kind {
                RecordKind::Write { offset, length, pieces: ids } => {
                    for ((start, len), id) in pieces(*offset, u64::from(*length), chunk_bytes).zip(ids) {
                        view.remove(start, start + u64::from(len));
                        view.extents.insert(start, Extent { end: start + u64::from(len), id: *id, chunk_start: start });
                    }
                }
                RecordKind::Zero { offset, length } => view.remove(*offset, offset + length),
                RecordKind::Size { disk_bytes } => {
                    view.remove(*disk_bytes, u64::MAX);
                    view.size = *disk_bytes;
                }
                RecordKind::Bookmark { .. } | RecordKind::Gap | RecordKind::Exact => {}
            }
            Ok(())
        })?;
        view.point = format!("journal {last}");
        Ok(view)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of stored extents (for tests and status).
    pub fn extent_count(&self) -> usize {
        self.extents.len()
    }

    /// Removes `[start, end)` from the map, trimming extents that straddle it.
    fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // An extent that begins before `start` and reaches into the range.
        if let Some((&at, &extent)) = self.extents.range(..start).next_back() {
            if extent.end > start {
                self.extents.insert(at, Extent { end: start, ..extent });
                if extent.end > end {
                    self.extents.insert(end, extent);
                }
            }
        }
        let inside: Vec<u64> = self.extents.range(start..end).map(|(&at, _)| at).collect();
        for at in inside {
            let extent = self.extents.remove(&at).expect("listed");
            if extent.end > end {
                self.extents.insert(end, extent);
            }
        }
    }

    fn chunk(&self, id: &ChunkId) -> Result<Arc<Vec<u8>>, VaultError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(data) = cache.0.get(id) {
                return Ok(data.clone());
            }
        }
        let location = self.index.locate(id, "exported chunk")?;
        let data = Arc::new(read_chunk(&self.vault, id, location)?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0.insert(*id, data.clone()).is_none() {
            cache.1.push_back(*id);
            while cache.1.len() > CACHE_CHUNKS {
                let old = cache.1.pop_front().expect("non-empty");
                cache.0.remove(&old);
            }
        }
        Ok(data)
    }

    /// Reads `buffer.len()` bytes at `offset` (inside the disk).
    pub fn read(&self, offset: u64, buffer: &mut [u8]) -> Result<(), VaultError> {
        buffer.fill(0);
        let end = offset + buffer.len() as u64;
        let first = self.extents.range(..=offset).next_back().map_or(offset, |(&at, _)| at);
        for (&at, extent) in self.extents.range(first..end) {
            let from = at.max(offset);
            let to = extent.end.min(end);
            if from >= to {
                continue;
            }
            let data = self.chunk(&extent.id)?;
            let source = (from - extent.chunk_start) as usize..(to - extent.chunk_start) as usize;
            let bytes = data
                .get(source)
                .ok_or_else(|| VaultError::damaged(&format!("chunk {}", extent.id), "is shorter than the map says"))?;
            buffer[(from - offset) as usize..(to - offset) as usize].copy_from_slice(bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_ranges_trims_and_splits_extents() {
        let mut extents = BTreeMap::new();
        let id = ChunkId([1; 32]);
        extents.insert(0, Extent { end: 100, id, chunk_start: 0 });
        extents.insert(100, Extent { end: 200, id, chunk_start: 100 });
        let vault_less = |extents| extents;
        let mut map: BTreeMap<u64, Extent> = vault_less(extents);
        remove_from(&mut map, 50, 150);
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), vec![0, 150]);
        assert_eq!(map[&0].end, 50);
        assert_eq!(map[&150], Extent { end: 200, id, chunk_start: 100 });
        remove_from(&mut map, 10, 20);
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), vec![0, 20, 150]);
        assert_eq!(map[&20], Extent { end: 50, id, chunk_start: 0 });
    }

    fn remove_from(map: &mut BTreeMap<u64, Extent>, start: u64, end: u64) {
        let mut view = PointView {
            point: String::new(),
            vault: Arc::new(test_vault()),
            index: ChunkIndex::default(),
            size: 200,
            extents: std::mem::take(map),
            cache: Mutex::default(),
        };
        view.remove(start, end);
        *map = view.extents;
    }

    fn test_vault() -> Vault {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(crate::backend::LocalBackend::new(dir.keep()));
        Vault::init(backend, crate::InitOptions::default()).unwrap()
    }
}
