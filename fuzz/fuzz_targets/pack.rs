//! Pack parsing on untrusted bytes: header, trailer (embedded index) and map
//! pages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby_format::{Keys, MapPage, PackHeader, PackIndex};

fuzz_target!(|data: &[u8]| {
    let _ = PackHeader::decode(data);
    if let Ok(sealed) = PackIndex::sealed_from_pack(data) {
        let _ = PackIndex::open(sealed, &Keys::plain());
    }
    let _ = MapPage::decode(data);
});
