//! A splitter's intent log on untrusted bytes (a local file that a crash,
//! a full disk or anyone may have left in any state): the first 16 bytes
//! choose the region and image sizes, the rest is the log.
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby_format::{decode_intent_log, intent_regions};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let region_bytes = u64::from_le_bytes(data[..8].try_into().unwrap());
    let image_bytes = u64::from_le_bytes(data[8..16].try_into().unwrap());
    let log = &data[16..];
    if let Some(dirty) = decode_intent_log(log, region_bytes, image_bytes) {
        let count = intent_regions(region_bytes, image_bytes);
        assert!(dirty.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(dirty.iter().all(|&region| region < count));
    }
});
