//! Chunks: the unit of content addressing. A chunk is up to one chunk-size of
//! disk data (or an encoded map page); it is stored once per vault as a
//! *frame* inside a pack:
//!
//! ```text
//! plain vault:      frame = zstd(raw)                or raw when zstd does not shrink it
//! encrypted vault:  frame = nonce || XChaCha20-Poly1305(zstd(raw) or raw, aad = chunk id) || tag
//! ```
//!
//! Decoding always ends by recomputing the chunk id from the raw bytes, so a
//! frame can never be restored as anything but what was written.

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

/// Encodes a chunk's raw bytes into a frame. `level` is the zstd level.
pub fn encode_frame(raw: &[u8], id: &ChunkId, level: i32, keys: &Keys) -> (Vec<u8>, Codec) {
    let compressed = zstd::bulk::compress(raw, level).expect("compressing an in-memory buffer cannot fail");
    let (payload, codec) =
        if compressed.len() < raw.len() { (compressed, Codec::Zstd) } else { (raw.to_vec(), Codec::Raw) };
    if keys.encrypted() {
        (keys.seal(&id.0, &payload), codec)
    } else {
        (payload, codec)
    }
}

/// Decodes a frame back into the chunk's raw bytes and checks them against `id`.
pub fn decode_frame(
    frame: &[u8],
    id: &ChunkId,
    codec: Codec,
    raw_len: u32,
    keys: &Keys,
) -> Result<Vec<u8>, FormatError> {
    let opened;
    let payload = if keys.encrypted() {
        opened = keys.open(&id.0, frame)?;
        &opened[..]
    } else {
        frame
    };
    let raw = match codec {
        Codec::Raw => payload.to_vec(),
        Codec::Zstd => zstd::bulk::decompress(payload, raw_len as usize)
            .map_err(|_| crate::error::malformed("bad zstd frame in chunk"))?,
    };
    if raw.len() != raw_len as usize || keys.chunk_id(&raw) != *id {
        return Err(FormatError::ChunkMismatch);
    }
    Ok(raw)
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
                let (frame, codec) = encode_frame(raw, &id, 1, &keys);
                assert_eq!(&decode_frame(&frame, &id, codec, raw.len() as u32, &keys).unwrap(), raw);
                let mut damaged = frame.clone();
                let middle = damaged.len() / 2;
                damaged[middle] ^= 1;
                assert!(decode_frame(&damaged, &id, codec, raw.len() as u32, &keys).is_err());
            }
        }
    }

    #[test]
    fn keyed_ids_differ_from_plain_ids() {
        let keys = Keys::from_material(&KeyMaterial::new(vec![9; 16]).unwrap());
        assert_ne!(keys.chunk_id(b"data"), Keys::plain().chunk_id(b"data"));
    }
}
