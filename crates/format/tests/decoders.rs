//! Every decoder on random and mutated bytes: no panics, and a decoder only
//! succeeds on mutated input when the checksum still holds (it cannot: any
//! flip is caught). A cheap, always-run companion to the cargo-fuzz targets
//! in `fuzz/`, which explore far more inputs.

use proptest::prelude::*;
use standby_format::{
    chunk_of_frame, decode_frame, ChunkId, Codec, Envelope, KeyMaterial, Keys, MapPage, ObjectKind, PackHeader,
    PackIndex, PointKind, PointManifest, Segment, VaultConfig,
};

fn sample_point() -> Vec<u8> {
    PointManifest {
        sequence: 9,
        time_micros: 1,
        kind: PointKind::CrashConsistent,
        disk: "d".into(),
        label: "l".into(),
        disk_bytes: 65536 * 5,
        chunk_bytes: 65536,
        page_entries: 2,
        bytes_read: 0,
        bytes_new: 0,
        pages: vec![ChunkId([1; 32]); 3],
    }
    .seal(&Keys::plain())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = VaultConfig::open(&data);
        let _ = PointManifest::open(&data, &Keys::plain());
        let _ = PointManifest::decode_body(&data);
        let _ = PackIndex::open(&data, &Keys::plain());
        let _ = PackIndex::decode_body(&data);
        let _ = PackIndex::sealed_from_pack(&data);
        let _ = PackHeader::decode(&data);
        let _ = MapPage::decode(&data);
        let _ = Segment::decode_body(&data);
        let _ = Segment::open(&data, &Keys::plain());
        let _ = Envelope::open(ObjectKind::Lease, &data, &Keys::plain());
        if let Ok(decoded) = decode_frame(&data, Codec::Zstd, 65536, &Keys::plain()) {
            prop_assert!(chunk_of_frame(&decoded, &ChunkId([1; 32]), 0, 65536, &Keys::plain()).is_err());
        }
    }

    #[test]
    fn mutated_points_are_rejected(position in 0usize..1000, value in 1u8..=255) {
        let mut sealed = sample_point();
        let position = position % sealed.len();
        sealed[position] ^= value;
        prop_assert!(PointManifest::open(&sealed, &Keys::plain()).is_err());
    }

    #[test]
    fn mutated_encrypted_frames_are_rejected(position in 0usize..70000, value in 1u8..=255) {
        let keys = Keys::from_material(&KeyMaterial::new(vec![5; 32]).unwrap());
        let raw: Vec<u8> = (0..65536u32).map(|i| (i / 7) as u8).collect();
        let id = keys.chunk_id(&raw);
        let (mut frame, codec) = standby_format::encode_frame(&raw, 1, &keys);
        let position = position % frame.len();
        frame[position] ^= value;
        let decoded = decode_frame(&frame, codec, raw.len() as u32, &keys);
        prop_assert!(decoded.is_err() || chunk_of_frame(&decoded.unwrap(), &id, 0, raw.len() as u32, &keys).is_err());
    }
}
