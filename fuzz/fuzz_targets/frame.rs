//! Chunk frame decoding on untrusted bytes: both codecs, plain and encrypted
//! vaults, any claimed raw length. It must never panic and never return
//! bytes that do not match the id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby_format::{decode_frame, ChunkId, Codec, KeyMaterial, Keys};

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let raw_len = u32::from_le_bytes(data[..4].try_into().unwrap()) % (5 << 20);
    let codec = if data[4] & 1 == 0 { Codec::Raw } else { Codec::Zstd };
    let frame = &data[5..];
    let encrypted = Keys::from_material(&KeyMaterial::new(vec![3; 32]).unwrap());
    for keys in [Keys::plain(), encrypted] {
        let id = ChunkId([0xAB; 32]);
        if let Ok(raw) = decode_frame(frame, &id, codec, raw_len, &keys) {
            assert_eq!(keys.chunk_id(&raw), id);
        }
    }
});
