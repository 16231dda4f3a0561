//! Every envelope-wrapped object decoder (config, point, index, journal
//! segment, lease and collection envelopes) on untrusted bytes, with and without a key, and the
//! body decoders directly (as a reader would after a valid checksum).
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby_format::{Envelope, KeyMaterial, Keys, ObjectKind, PackIndex, PointManifest, Segment, VaultConfig};

fuzz_target!(|data: &[u8]| {
    let key = Keys::from_material(&KeyMaterial::new(vec![7; 32]).unwrap());
    let _ = VaultConfig::open(data);
    for keys in [Keys::plain(), key] {
        let _ = PointManifest::open(data, &keys);
        let _ = PackIndex::open(data, &keys);
        let _ = Segment::open(data, &keys);
        for kind in [ObjectKind::Lease, ObjectKind::CollectionSet] {
            let _ = Envelope::open(kind, data, &keys);
        }
    }
    let _ = PointManifest::decode_body(data);
    let _ = PackIndex::decode_body(data);
    let _ = Segment::decode_body(data);
});
