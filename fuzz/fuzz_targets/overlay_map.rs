//! An export's overlay map on untrusted bytes (a local file that a crash may
//! have torn, or anything else found at that path).
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby_format::OverlayMap;

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = OverlayMap::decode(data) {
        assert!(map.valid_bytes <= data.len());
        for (start, end) in map.ranges {
            assert!(start < end && end <= map.header.disk_bytes);
        }
    }
});
