//! The NBD decoders on untrusted bytes: request headers and the data of
//! NBD_OPT_GO/NBD_OPT_INFO. They must never panic, and a decoded request
//! must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby_nbd::protocol::{InfoRequest, Request, REQUEST_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.get(..REQUEST_BYTES) {
        let header: &[u8; REQUEST_BYTES] = header.try_into().unwrap();
        if let Ok(request) = Request::decode(header) {
            assert_eq!(&request.encode(), header);
            let _ = request.in_range(1 << 30);
        }
    }
    let _ = InfoRequest::decode(data);
});
