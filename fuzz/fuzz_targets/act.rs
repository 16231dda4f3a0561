//! A host agent's requests and answers, from untrusted bytes: the first
//! byte picks the side (the agent reading an act the control plane sent,
//! or the control plane reading the agent's outcome), the rest is the JSON
//! body. Neither may panic; an act that decodes reads back the same after
//! a trip to the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby_control::fuzzing::{read_act, read_outcome};

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else { return };
    match which % 2 {
        0 => read_act(body, std::path::Path::new("/srv/standby/recovery")),
        _ => read_outcome(body),
    }
});
