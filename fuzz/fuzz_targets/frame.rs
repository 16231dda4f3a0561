//! Frame decoding on untrusted bytes: both codecs, plain and encrypted
//! vaults, any claimed raw length, any chunk slice. It must never panic and
//! never return a chunk that does not match its id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby_format::{chunk_of_frame, decode_frame, ChunkId, Codec, KeyMaterial, Keys, FRAME_RAW_BYTES_MAX};

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let word = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
    let raw_len = word(0) % (FRAME_RAW_BYTES_MAX + 1);
    let (offset, len) = (word(4) % (raw_len + 1), word(8) % (raw_len + 1));
    let codec = if data[12] & 1 == 0 { Codec::Raw } else { Codec::Zstd };
    let frame = &data[13..];
    let encrypted = Keys::from_material(&KeyMaterial::new(vec![3; 32]).unwrap());
    for keys in [Keys::plain(), encrypted] {
        let id = ChunkId([0xAB; 32]);
        if let Ok(decoded) = decode_frame(frame, codec, raw_len, &keys) {
            assert_eq!(decoded.len(), raw_len as usize);
            if let Ok(chunk) = chunk_of_frame(&decoded, &id, offset, len, &keys) {
                assert_eq!(keys.chunk_id(chunk), id);
            }
        }
    }
});
