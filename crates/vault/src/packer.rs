//! Packs as writers build them: frames appended to one buffer, stored with
//! a pack put followed by its index put (the order the commit protocol of
//! docs/format.md needs: a chunk is only learned from an index whose pack
//! is already stored).

use bytes::Bytes;
use standby_format::{ChunkId, Codec, FrameKind, PackEntry, PackHeader, PackId, PackIndex};

use crate::index::index_object;
use crate::vault::pack_path;
use crate::{Vault, VaultError};

/// A pack is sealed once its frames reach this size.
pub const PACK_BYTES_TARGET: usize = 16 << 20;
const _: () = assert!(PACK_BYTES_TARGET as u64 <= standby_format::PACK_BYTES_MAX / 2);

/// A pack being filled: its frames after the header, and their entries.
pub(crate) struct PackBuilder {
    pub(crate) id: PackId,
    bytes: Vec<u8>,
    pub(crate) entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub(crate) fn new(encrypted: bool) -> Self {
        let id = PackId::random();
        // Room for a full pack and the frame that fills it, so the buffer
        // never grows (each doubling copies it into fresh pages).
        let mut bytes = Vec::with_capacity(PACK_BYTES_TARGET + standby_format::FRAME_RAW_BYTES_MAX as usize);
        bytes.extend_from_slice(&PackHeader { id, encrypted }.encode());
        PackBuilder { id, bytes, entries: Vec::new() }
    }

    /// Bytes of header and frames so far.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pack's table of contents as it stands.
    pub(crate) fn index(&self) -> PackIndex {
        PackIndex {
            pack: self.id,
            frames_end: self.bytes.len() as u64,
            frames_checksum: *blake3::hash(&self.bytes).as_bytes(),
            entries: self.entries.clone(),
        }
    }

    pub(crate) fn would_overflow(&self, frame_len: usize) -> bool {
        !self.entries.is_empty() && self.bytes.len() + frame_len > PACK_BYTES_TARGET
    }

    pub(crate) fn add(&mut self, frame: &[u8], codec: Codec, chunks: &[(ChunkId, u32)], kind: FrameKind) {
        let frame_offset = u32::try_from(self.bytes.len()).expect("packs stay below 4 GiB");
        self.bytes.extend_from_slice(frame);
        let frame_raw_len = chunks.iter().map(|&(_, len)| len).sum();
        let mut raw_offset = 0;
        for &(id, raw_len) in chunks {
            self.entries.push(PackEntry {
                id,
                frame_offset,
                frame_len: frame.len() as u32,
                frame_raw_len,
                raw_offset,
                raw_len,
                kind,
                codec,
            });
            raw_offset += raw_len;
        }
    }
}

/// Stores a pack, then its index; returns the bytes written.
pub(crate) fn store_pack(vault: &Vault, pack: &PackBuilder) -> Result<u64, VaultError> {
    let sealed_index = pack.index().seal(vault.keys());
    let mut bytes = Vec::with_capacity(pack.bytes.len() + sealed_index.len() + 16);
    bytes.extend_from_slice(&pack.bytes);
    bytes.extend_from_slice(&PackIndex::encode_trailer(&sealed_index));
    let pack_bytes = bytes.len() as u64;
    vault.backend().put(&pack_path(&pack.id), Bytes::from(bytes))?;
    let index_bytes = sealed_index.len() as u64;
    vault.backend().put(&index_object(&pack.id), Bytes::from(sealed_index))?;
    Ok(pack_bytes + index_bytes)
}
