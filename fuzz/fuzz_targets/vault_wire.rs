//! What crosses the wire between hosts, from untrusted bytes: the first
//! byte picks the decoder (a listing and an error as a client reads them,
//! a range header, a token, a vault URL), the rest is its input. None may
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby_link::vault_service::{parse_range, Listing, WireError};

fuzz_target!(|data: &[u8]| {
    let Some((which, input)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(input);
    match which % 5 {
        0 => {
            if let Ok(listing) = serde_json::from_slice::<Listing>(input) {
                for object in &listing.objects {
                    let _ = object.info();
                }
            }
        }
        1 => drop(serde_json::from_slice::<WireError>(input)),
        2 => drop(parse_range(&text)),
        3 => drop(standby_link::Token::parse(&text)),
        _ => drop(standby_link::RemoteLocation::parse(&text)),
    }
});
