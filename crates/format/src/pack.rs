//! Packs: large immutable objects holding many chunk frames, so a sync costs
//! a few requests per tens of MiB instead of one per chunk.
//!
//! ```text
//! pack   = header(32) || frame* || index envelope || index envelope length (u64 LE) || "SBYPEND\0"
//! header = "SBYPACK\0" || version u16 || flags u16 (bit 1: encrypted) || reserved u32 || pack id (16)
//! ```
//!
//! The same index envelope is also written as its own object
//! (`indexes/<pack id>.index`) so that readers learn where every chunk lives
//! without reading packs; the copy inside the pack lets `verify` check the
//! two agree and lets a lost index be rebuilt.

use std::fmt;

use crate::bytes::Reader;
use crate::envelope::{Envelope, ObjectKind};
use crate::{ChunkId, Codec, FormatError, FrameKind, Keys, CHUNK_BYTES_MAX, FORMAT_VERSION, PAGE_ENTRIES_MAX};

pub const PACK_HEADER_BYTES: usize = 32;
const PACK_MAGIC: &[u8; 8] = b"SBYPACK\0";
const PACK_END_MAGIC: &[u8; 8] = b"SBYPEND\0";
const TRAILER_BYTES: usize = 16;
const ENTRY_BYTES: usize = 56;
/// Largest pack this format describes (offsets are u32).
pub const PACK_BYTES_MAX: u64 = u32::MAX as u64;
/// Largest raw chunk: a data chunk or an encoded map page.
pub const RAW_BYTES_MAX: u32 = {
    let page = 4 + 32 * PAGE_ENTRIES_MAX;
    if page > CHUNK_BYTES_MAX {
        page
    } else {
        CHUNK_BYTES_MAX
    }
};
/// Largest decoded frame (the chunks one frame holds together).
pub const FRAME_RAW_BYTES_MAX: u32 = 2 * RAW_BYTES_MAX;

/// 16 random bytes naming a pack, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 16]);

impl PackId {
    pub fn random() -> Self {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).expect("the operating system's random source is available");
        PackId(id)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(PackId(id))
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({})", self.to_hex())
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackHeader {
    pub id: PackId,
    pub encrypted: bool,
}

impl PackHeader {
    pub fn encode(&self) -> [u8; PACK_HEADER_BYTES] {
        let mut out = [0u8; PACK_HEADER_BYTES];
        out[..8].copy_from_slice(PACK_MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[10..12].copy_from_slice(&(if self.encrypted { 2u16 } else { 0 }).to_le_bytes());
        out[16..32].copy_from_slice(&self.id.0);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut reader = Reader::new(bytes, "pack header");
        if reader.array::<8>()? != *PACK_MAGIC {
            return Err(FormatError::BadMagic { expected: "pack" });
        }
        let version = reader.u16()?;
        if version > FORMAT_VERSION {
            return Err(FormatError::NewerVersion { found: version, supported: FORMAT_VERSION });
        }
        let flags = reader.u16()?;
        if flags & !2 != 0 {
            return Err(crate::error::malformed(format!("unknown pack flags {flags:#x}")));
        }
        let _reserved = reader.u32()?;
        let id = PackId(reader.array()?);
        Ok(PackHeader { id, encrypted: flags & 2 != 0 })
    }
}

/// Where one chunk lies in a pack: its frame, and its place in the frame's
/// decoded bytes. Chunks that share a frame have the same frame fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    /// Offset of the frame in the pack.
    pub frame_offset: u32,
    /// Stored (compressed, perhaps encrypted) length of the frame.
    pub frame_len: u32,
    /// Length of the frame's decoded bytes.
    pub frame_raw_len: u32,
    /// Where this chunk starts in the decoded bytes.
    pub raw_offset: u32,
    pub raw_len: u32,
    pub kind: FrameKind,
    pub codec: Codec,
}

/// The table of contents of one pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackIndex {
    pub pack: PackId,
    /// Offset where frames end and the trailer starts.
    pub frames_end: u64,
    /// BLAKE3 of pack bytes `[0, frames_end)`: checkable without a key.
    pub frames_checksum: [u8; 32],
    pub entries: Vec<PackEntry>,
}

impl PackIndex {
    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 + 32 + 4 + self.entries.len() * ENTRY_BYTES);
        out.extend_from_slice(&self.pack.0);
        out.extend_from_slice(&self.frames_end.to_le_bytes());
        out.extend_from_slice(&self.frames_checksum);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.id.0);
            out.extend_from_slice(&entry.frame_offset.to_le_bytes());
            out.extend_from_slice(&entry.frame_len.to_le_bytes());
            out.extend_from_slice(&entry.frame_raw_len.to_le_bytes());
            out.extend_from_slice(&entry.raw_offset.to_le_bytes());
            out.extend_from_slice(&entry.raw_len.to_le_bytes());
            out.push(entry.kind as u8);
            out.push(entry.codec as u8);
            out.extend_from_slice(&[0, 0]);
        }
        out
    }

    pub fn decode_body(body: &[u8]) -> Result<Self, FormatError> {
        let mut reader = Reader::new(body, "pack index");
        let pack = PackId(reader.array()?);
        let frames_end = reader.u64()?;
        if frames_end < PACK_HEADER_BYTES as u64 || frames_end > PACK_BYTES_MAX {
            return Err(crate::error::malformed("pack index frames end out of range"));
        }
        let frames_checksum = reader.array()?;
        let count = reader.u32()? as usize;
        if count.checked_mul(ENTRY_BYTES) != Some(reader.remaining()) {
            return Err(crate::error::malformed("pack index entry count does not match its length"));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let id = ChunkId(reader.array()?);
            let frame_offset = reader.u32()?;
            let frame_len = reader.u32()?;
            let frame_raw_len = reader.u32()?;
            let raw_offset = reader.u32()?;
            let raw_len = reader.u32()?;
            let kind = FrameKind::from_u8(reader.u8()?)?;
            let codec = Codec::from_u8(reader.u8()?)?;
            let _reserved = reader.u16()?;
            let end = u64::from(frame_offset) + u64::from(frame_len);
            if (frame_offset as usize) < PACK_HEADER_BYTES || end > frames_end {
                return Err(crate::error::malformed("pack index entry lies outside the pack's frames"));
            }
            let chunk_end = u64::from(raw_offset) + u64::from(raw_len);
            if raw_len == 0
                || raw_len > RAW_BYTES_MAX
                || frame_raw_len > FRAME_RAW_BYTES_MAX
                || chunk_end > u64::from(frame_raw_len)
                || id.is_zero()
            {
                return Err(crate::error::malformed("pack index entry has an impossible chunk"));
            }
            entries.push(PackEntry { id, frame_offset, frame_len, frame_raw_len, raw_offset, raw_len, kind, codec });
        }
        reader.finish()?;
        Ok(PackIndex { pack, frames_end, frames_checksum, entries })
    }

    pub fn seal(&self, keys: &Keys) -> Vec<u8> {
        Envelope::seal(ObjectKind::Index, &self.encode_body(), keys, false)
    }

    pub fn open(bytes: &[u8], keys: &Keys) -> Result<Self, FormatError> {
        Self::decode_body(&Envelope::open(ObjectKind::Index, bytes, keys)?)
    }

    /// The trailer appended after the frames: index envelope, its length, end magic.
    pub fn encode_trailer(sealed_index: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(sealed_index.len() + TRAILER_BYTES);
        out.extend_from_slice(sealed_index);
        out.extend_from_slice(&(sealed_index.len() as u64).to_le_bytes());
        out.extend_from_slice(PACK_END_MAGIC);
        out
    }

    /// Finds the sealed index inside a whole pack's bytes.
    pub fn sealed_from_pack(pack: &[u8]) -> Result<&[u8], FormatError> {
        if pack.len() < PACK_HEADER_BYTES + TRAILER_BYTES {
            return Err(FormatError::Truncated { context: "pack" });
        }
        let end = pack.len() - 8;
        if &pack[end..] != PACK_END_MAGIC {
            return Err(FormatError::Truncated { context: "pack (no end marker)" });
        }
        let len = u64::from_le_bytes(pack[end - 8..end].try_into().expect("8 bytes"));
        let start = (end as u64 - 8).checked_sub(len).ok_or(FormatError::Truncated { context: "pack trailer" })?;
        if start < PACK_HEADER_BYTES as u64 {
            return Err(FormatError::Truncated { context: "pack trailer" });
        }
        Ok(&pack[start as usize..end - 8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_through_pack_trailer() {
        let index = PackIndex {
            pack: PackId::random(),
            frames_end: 1000,
            frames_checksum: [3; 32],
            entries: vec![PackEntry {
                id: ChunkId([5; 32]),
                frame_offset: 32,
                frame_len: 100,
                frame_raw_len: 131072,
                raw_offset: 65536,
                raw_len: 65536,
                kind: FrameKind::Data,
                codec: Codec::Zstd,
            }],
        };
        let sealed = index.seal(&Keys::plain());
        let mut pack = vec![0u8; 1000];
        pack.extend(PackIndex::encode_trailer(&sealed));
        let found = PackIndex::sealed_from_pack(&pack).unwrap();
        assert_eq!(PackIndex::open(found, &Keys::plain()).unwrap(), index);
        assert_eq!(PackId::from_hex(&index.pack.to_hex()), Some(index.pack));
    }
}
