//! Chunks and frames. A chunk is up to one chunk-size of disk data (or an
//! encoded map page), named by its content id; it is stored once per vault.
//! A *frame* is what a pack holds: the compressed bytes of one chunk or of a
//! few chunks that were new and adjacent on the disk together (compressing
//! them as one input finds matches across chunk boundaries; see
//! docs/format.md for the measurement):
//!
//! ```text
//! payload           = zstd(chunk || chunk || ...)  or the chunks as they are, when zstd does not shrink them
//! plain vault:      frame = payload
//! encrypted vault:  frame = nonce || XChaCha20-Poly1305(payload) || tag
//! ```
//!
//! Reading a chunk decodes its frame and recomputes the chunk id from the
//! chunk's slice of the decoded bytes, so a frame can never be restored as
//! anything but what was written.

use std::fmt;

use crate::{FormatError, Keys};

/// BLAKE3 (keyed in an encrypted vault) of a chunk's raw bytes.
/// The all-zero id is reserved: it means "this block is all zeros" and is
/// never stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub const ZERO: ChunkId = ChunkId([0; 32]);

    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// How a frame's payload is encoded before any encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    pub fn from_u8(value: u8) -> Result<Self, FormatError> {
        match value {
            0 => Ok(Codec::Raw),
            1 => Ok(Codec::Zstd),
            other => Err(crate::error::malformed(format!("unknown codec {other}"))),
        }
    }
}

/// What a frame holds: disk data, or an encoded [`crate::MapPage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Data = 0,
    Page = 1,
}

impl FrameKind {
    pub fn from_u8(value: u8) -> Result<Self, FormatError> {
        match value {
            0 => Ok(FrameKind::Data),
            1 => Ok(FrameKind::Page),
            other => Err(crate::error::malformed(format!("unknown frame kind {other}"))),
        }
    }
}

/// Additional authenticated data of every encrypted frame. A frame is
/// not bound to a chunk id (it may hold several); every chunk read from it
/// is checked against its keyed id instead.
const FRAME_AAD: &[u8] = b"standby frame";

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Encodes the raw bytes of one or more adjacent chunks into a frame.
/// `level` is the zstd level. Compression contexts are kept per thread:
/// allocating one per frame costs as much as compressing a 64 KiB chunk.
pub fn encode_frame(raw: &[u8], level: i32, keys: &Keys) -> (Vec<u8>, Codec) {
    let compressed = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(cached, _)| *cached != level) {
            let compressor = zstd::bulk::Compressor::new(level).expect("zstd accepts every level in range");
            *cell = Some((level, compressor));
        }
        let (_, compressor) = cell.as_mut().expect("just set");
        compressor.compress(raw).expect("compressing an in-memory buffer cannot fail")
    });
    let (payload, codec) =
        if compressed.len() < raw.len() { (compressed, Codec::Zstd) } else { (raw.to_vec(), Codec::Raw) };
    if keys.encrypted() {
        (keys.seal(FRAME_AAD, &payload), codec)
    } else {
        (payload, codec)
    }
}

/// Decodes a frame back into its raw bytes, which must be exactly
/// `raw_len` long. The chunks inside are checked by [`chunk_of_frame`].
pub fn decode_frame(frame: &[u8], codec: Codec, raw_len: u32, keys: &Keys) -> Result<Vec<u8>, FormatError> {
    let opened;
    let payload = if keys.encrypted() {
        opened = keys.open(FRAME_AAD, frame)?;
        &opened[..]
    } else {
        frame
    };
    let raw = match codec {
        Codec::Raw => payload.to_vec(),
        Codec::Zstd => DECOMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            let decompressor = cell.get_or_insert_with(|| {
                zstd::bulk::Decompressor::new().expect("a zstd decompression context can be made")
            });
            decompressor
                .decompress(payload, raw_len as usize)
                .map_err(|_| crate::error::malformed("bad zstd data in frame"))
        })?,
    };
    if raw.len() != raw_len as usize {
        return Err(FormatError::ChunkMismatch);
    }
    Ok(raw)
}

/// The chunk at `offset..offset + len` of a decoded frame, checked against its id.
pub fn chunk_of_frame<'a>(
    decoded: &'a [u8],
    id: &ChunkId,
    offset: u32,
    len: u32,
    keys: &Keys,
) -> Result<&'a [u8], FormatError> {
    let start = offset as usize;
    let raw =
        start.checked_add(len as usize).and_then(|end| decoded.get(start..end)).ok_or(FormatError::ChunkMismatch)?;
    if keys.chunk_id(raw) != *id {
        return Err(FormatError::ChunkMismatch);
    }
    Ok(raw)
}

/// Encodes one chunk as a frame of its own and reads it back: a helper for tests.
pub fn round_trip(raw: &[u8], id: &ChunkId, level: i32, keys: &Keys) -> Result<Vec<u8>, FormatError> {
    let (frame, codec) = encode_frame(raw, level, keys);
    let decoded = decode_frame(&frame, codec, raw.len() as u32, keys)?;
    chunk_of_frame(&decoded, id, 0, raw.len() as u32, keys).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyMaterial;

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let encrypted = Keys::from_material(&KeyMaterial::new(b"0123456789abcdef".to_vec()).unwrap());
        let compressible = vec![b'a'; 65536];
        let random: Vec<u8> = (0..65536u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for keys in [Keys::plain(), encrypted] {
            for raw in [&compressible, &random] {
                let id = keys.chunk_id(raw);
                assert_eq!(&round_trip(raw, &id, 1, &keys).unwrap(), raw);
                let (frame, codec) = encode_frame(raw, 1, &keys);
                let mut damaged = frame.clone();
                let middle = damaged.len() / 2;
                damaged[middle] ^= 1;
                let decoded = decode_frame(&damaged, codec, raw.len() as u32, &keys);
                assert!(decoded.and_then(|d| chunk_of_frame(&d, &id, 0, raw.len() as u32, &keys).map(|_| ())).is_err());
            }
        }
    }

    #[test]
    fn frames_of_several_chunks_give_each_chunk_back() {
        let keys = Keys::plain();
        let chunks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i + 1; 65536]).collect();
        let joined = chunks.concat();
        let (frame, codec) = encode_frame(&joined, 2, &keys);
        let decoded = decode_frame(&frame, codec, joined.len() as u32, &keys).unwrap();
        for (i, chunk) in chunks.iter().enumerate() {
            let id = keys.chunk_id(chunk);
            let offset = (i * 65536) as u32;
            assert_eq!(chunk_of_frame(&decoded, &id, offset, 65536, &keys).unwrap(), &chunk[..]);
            // The right id at the wrong place is refused.
            assert!(chunk_of_frame(&decoded, &id, (offset + 65536) % (4 * 65536), 65536, &keys).is_err());
        }
        assert!(chunk_of_frame(&decoded, &keys.chunk_id(&chunks[3]), 3 * 65536, 65537, &keys).is_err());
        assert!(decode_frame(&frame, codec, joined.len() as u32 - 1, &keys).is_err());
    }

    #[test]
    fn keyed_ids_differ_from_plain_ids() {
        let keys = Keys::from_material(&KeyMaterial::new(vec![9; 16]).unwrap());
        assert_ne!(keys.chunk_id(b"data"), Keys::plain().chunk_id(b"data"));
    }
}
