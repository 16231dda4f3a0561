//! The chunk index: where every stored chunk lives, merged from the pack
//! index objects (`indexes/*.index`). Loading it costs one list and one get
//! per pack; nothing on this path reads packs.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use standby_format::{chunk_of_frame, decode_frame, ChunkId, Codec, FrameKind, MapPage, PackId, PackIndex};

use crate::vault::{index_path, pack_path};
use crate::{Vault, VaultError};

pub(crate) const INDEXES_FOLDER: &str = "indexes/";

/// Where a chunk lives: a frame of a pack, and the chunk's slice of the
/// frame's decoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: PackId,
    pub frame_offset: u32,
    pub frame_len: u32,
    pub frame_raw_len: u32,
    pub raw_offset: u32,
    pub raw_len: u32,
    pub kind: FrameKind,
    pub codec: Codec,
}

impl ChunkLocation {
    /// Decodes the frame this chunk lies in, from the frame's stored bytes.
    pub(crate) fn decode_frame(&self, frame: &[u8], vault: &Vault) -> Result<Vec<u8>, VaultError> {
        decode_frame(frame, self.codec, self.frame_raw_len, vault.keys())
            .map_err(|e| VaultError::damaged(&pack_path(&self.pack), format!("frame at {}: {e}", self.frame_offset)))
    }

    /// This chunk's bytes in its decoded frame, checked against its id.
    pub(crate) fn chunk<'a>(&self, decoded: &'a [u8], id: &ChunkId, vault: &Vault) -> Result<&'a [u8], VaultError> {
        chunk_of_frame(decoded, id, self.raw_offset, self.raw_len, vault.keys())
            .map_err(|e| VaultError::damaged(&pack_path(&self.pack), format!("chunk {id}: {e}")))
    }
}

#[derive(Debug, Default)]
pub struct ChunkIndex {
    chunks: HashMap<ChunkId, ChunkLocation>,
    /// Index objects that could not be read: (object, problem).
    pub damaged: Vec<(String, String)>,
}

impl ChunkIndex {
    /// Loads every pack index except those of `excluded` packs.
    pub fn load(vault: &Vault, excluded: &HashSet<PackId>) -> Result<Self, VaultError> {
        Self::load_with(vault, |pack| !excluded.contains(pack), &HashSet::new())
    }

    /// Loads every pack index; a chunk stored in several packs is located
    /// in one outside `avoided` when there is one (collection counts the
    /// packs it finds live: a chunk stored again must not keep a pack marked
    /// for collection alive).
    pub fn load_preferring(vault: &Vault, avoided: &HashSet<PackId>) -> Result<Self, VaultError> {
        Self::load_with(vault, |_| true, avoided)
    }

    fn load_with(
        vault: &Vault,
        wanted: impl Fn(&PackId) -> bool + Sync,
        avoided: &HashSet<PackId>,
    ) -> Result<Self, VaultError> {
        let listed = vault.backend().list(INDEXES_FOLDER)?;
        let loaded: Vec<(String, Result<PackIndex, VaultError>)> = listed
            .par_iter()
            .filter(|object| pack_id_of(&object.path, INDEXES_FOLDER, ".index").is_some_and(|id| wanted(&id)))
            .map(|object| (object.path.clone(), read_index(vault, &object.path)))
            .collect();
        Self::merge(loaded, avoided)
    }

    fn merge(
        mut loaded: Vec<(String, Result<PackIndex, VaultError>)>,
        avoided: &HashSet<PackId>,
    ) -> Result<Self, VaultError> {
        // Avoided packs first: later packs overwrite their locations.
        loaded.sort_by_key(|(_, result)| !matches!(result, Ok(index) if avoided.contains(&index.pack)));
        let mut index = ChunkIndex::default();
        for (path, result) in loaded {
            match result {
                Ok(pack_index) => index.add_pack(&pack_index),
                Err(VaultError::Damaged { problem, .. }) => index.damaged.push((path, problem)),
                Err(other) => return Err(other),
            }
        }
        Ok(index)
    }

    pub fn add_pack(&mut self, pack_index: &PackIndex) {
        self.add_entries(pack_index.pack, &pack_index.entries);
    }

    /// Learns where the chunks of `pack` lie.
    pub(crate) fn add_entries(&mut self, pack: PackId, entries: &[standby_format::PackEntry]) {
        for entry in entries {
            self.chunks.insert(
                entry.id,
                ChunkLocation {
                    pack,
                    frame_offset: entry.frame_offset,
                    frame_len: entry.frame_len,
                    frame_raw_len: entry.frame_raw_len,
                    raw_offset: entry.raw_offset,
                    raw_len: entry.raw_len,
                    kind: entry.kind,
                    codec: entry.codec,
                },
            );
        }
    }

    /// Forgets the chunks of `packs` (marked for collection: not to be reused).
    pub(crate) fn forget_packs(&mut self, packs: &HashSet<PackId>) {
        if !packs.is_empty() {
            self.chunks.retain(|_, location| !packs.contains(&location.pack));
        }
    }

    pub fn get(&self, id: &ChunkId) -> Option<&ChunkLocation> {
        self.chunks.get(id)
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Finds a chunk, or names why it cannot be found.
    pub(crate) fn locate(&self, id: &ChunkId, what: &str) -> Result<&ChunkLocation, VaultError> {
        self.get(id).ok_or_else(|| {
            let damaged = match self.damaged.first() {
                Some((object, _)) => format!("; {object} is damaged"),
                None => String::new(),
            };
            VaultError::damaged(&format!("chunk {id}"), format!("{what} is in no pack index{damaged}"))
        })
    }

    /// Reads and decodes a map page.
    pub(crate) fn read_page(&self, vault: &Vault, id: &ChunkId, entries: u32) -> Result<MapPage, VaultError> {
        let location = self.locate(id, "map page")?;
        let raw = read_chunk(vault, id, location)?;
        let page = MapPage::decode(&raw).map_err(|e| VaultError::damaged(&pack_path(&location.pack), e))?;
        if page.entries.len() != entries as usize {
            return Err(VaultError::damaged(&pack_path(&location.pack), "map page has the wrong number of entries"));
        }
        Ok(page)
    }
}

/// A ranged get of a pack; a pack that is gone is damage, named.
pub(crate) fn read_pack_range(
    vault: &Vault,
    pack: &PackId,
    range: std::ops::Range<u64>,
) -> Result<bytes::Bytes, VaultError> {
    let path = pack_path(pack);
    vault.backend().get_range(&path, range).map_err(|e| match e {
        crate::backend::StorageError::NotFound { .. } => VaultError::damaged(&path, "pack is missing"),
        other => other.into(),
    })
}

/// Reads one chunk with a ranged get of its frame and checks it against its id.
pub(crate) fn read_chunk(vault: &Vault, id: &ChunkId, location: &ChunkLocation) -> Result<Vec<u8>, VaultError> {
    let start = u64::from(location.frame_offset);
    let frame = read_pack_range(vault, &location.pack, start..start + u64::from(location.frame_len))?;
    let decoded = location.decode_frame(&frame, vault)?;
    location.chunk(&decoded, id, vault).map(<[u8]>::to_vec)
}

pub(crate) fn read_index(vault: &Vault, path: &str) -> Result<PackIndex, VaultError> {
    let bytes = vault.backend().get(path)?;
    let index = PackIndex::open(&bytes, vault.keys()).map_err(|e| VaultError::decoding(&vault.location(), path, e))?;
    if Some(index.pack) != pack_id_of(path, INDEXES_FOLDER, ".index") {
        return Err(VaultError::damaged(path, "index names another pack"));
    }
    Ok(index)
}

/// The pack id in an object name like `packs/<hex>.pack`.
pub(crate) fn pack_id_of(path: &str, folder: &str, suffix: &str) -> Option<PackId> {
    PackId::from_hex(path.strip_prefix(folder)?.strip_suffix(suffix)?)
}

pub(crate) fn index_object(id: &PackId) -> String {
    index_path(id)
}
