//! Model test: random sequences of writes (random, compressible, zero and
//! duplicated data), resizes, syncs and prunes on an image; every surviving
//! recovery point must restore to exactly the image the model recorded when
//! the point was made, before and after collection. The vault uses 4 KiB
//! chunks and 4-entry map pages so that small images span many chunks and
//! pages. Proptest prints the failing case; its seed is in
//! `proptest-regressions/` when one is found.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use standby_format::PointKind;
use standby_vault::backend::LocalBackend;
use standby_vault::prune::{prune, PruneOptions};
use standby_vault::restore::{restore_point, RestoreOptions};
use standby_vault::sync::{sync_image, SyncOptions};
use standby_vault::verify::verify;
use standby_vault::{InitOptions, PointSelector, Vault};

const CHUNK: usize = 4096;

#[derive(Debug, Clone)]
enum Operation {
    /// Write `len` bytes at `offset` (modulo the image size) with a pattern.
    Write {
        offset: usize,
        len: usize,
        pattern: u8,
        seed: u64,
    },
    /// Copy a region elsewhere (identical chunks: dedup).
    Copy {
        from: usize,
        to: usize,
        len: usize,
    },
    Resize {
        bytes: usize,
    },
    Sync {
        app_consistent: bool,
    },
    /// Drop points older than the `nth` surviving point, then collect with no grace.
    Prune {
        nth: usize,
    },
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        4 => (0usize..400_000, 1usize..40_000, 0u8..4, any::<u64>())
            .prop_map(|(offset, len, pattern, seed)| Operation::Write { offset, len, pattern, seed }),
        1 => (0usize..400_000, 0usize..400_000, 1usize..30_000).prop_map(|(from, to, len)| Operation::Copy { from, to, len }),
        1 => (0usize..400_000).prop_map(|bytes| Operation::Resize { bytes }),
        3 => any::<bool>().prop_map(|app_consistent| Operation::Sync { app_consistent }),
        1 => (0usize..6).prop_map(|nth| Operation::Prune { nth }),
    ]
}

fn apply(image: &mut Vec<u8>, operation: &Operation) {
    match operation {
        Operation::Write { offset, len, pattern, seed } => {
            if image.is_empty() {
                return;
            }
            let start = offset % image.len();
            let end = (start + len).min(image.len());
            let mut random = standby_testkit::Random::new(*seed);
            match pattern {
                0 => random.fill(&mut image[start..end]),
                1 => image[start..end].fill(0),
                2 => image[start..end].fill((*seed % 251) as u8 + 1),
                _ => {
                    for (i, byte) in image[start..end].iter_mut().enumerate() {
                        *byte = (i % 7) as u8 + b'a';
                    }
                }
            }
        }
        Operation::Copy { from, to, len } => {
            if image.is_empty() {
                return;
            }
            let from = (from % image.len()) / CHUNK * CHUNK;
            let to = (to % image.len()) / CHUNK * CHUNK;
            let len = (*len).min(image.len() - from).min(image.len() - to);
            let region = image[from..from + len].to_vec();
            image[to..to + len].copy_from_slice(&region);
        }
        Operation::Resize { bytes } => image.resize(*bytes, 0),
        Operation::Sync { .. } | Operation::Prune { .. } => {}
    }
}

fn restore_all(vault: &Arc<Vault>, model: &BTreeMap<u64, Vec<u8>>, scratch: &Path) -> Result<(), TestCaseError> {
    for (sequence, expected) in model {
        let point = vault.select_point("disk", &PointSelector::Sequence(*sequence)).unwrap();
        let output = scratch.join(format!("restored-{sequence}"));
        restore_point(vault, &point, &output, RestoreOptions { force: true, progress: &|_| {} }).unwrap();
        let restored = std::fs::read(&output).unwrap();
        prop_assert!(
            restored == *expected,
            "point {} differs from the model ({} vs {} bytes)",
            sequence,
            restored.len(),
            expected.len()
        );
        // Read on demand, as export serves it, in uneven pieces.
        let view = standby_vault::view::PointView::of_point(vault.clone(), &point).unwrap();
        let mut read = vec![0u8; expected.len()];
        let mut at = 0usize;
        let mut step = 1 + (*sequence as usize * 4099) % 7000;
        while at < read.len() {
            let end = (at + step).min(read.len());
            view.read(at as u64, &mut read[at..end]).unwrap();
            at = end;
            step = 1 + (step * 17) % 12_000;
        }
        prop_assert!(read == *expected, "the view of point {} differs", sequence);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn every_point_restores_to_the_model(
        initial in 0usize..300_000,
        seed in any::<u64>(),
        operations in proptest::collection::vec(operation(), 1..24),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(Vault::init(
            Arc::new(LocalBackend::new(dir.path().join("vault"))),
            InitOptions { chunk_bytes: CHUNK as u32, page_entries: 4, ..InitOptions::default() },
        ).unwrap());
        let image_path = dir.path().join("image");
        let mut image = standby_testkit::Random::new(seed).disk_data(initial);
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut times: BTreeMap<u64, i64> = BTreeMap::new();

        for operation in &operations {
            apply(&mut image, operation);
            match operation {
                Operation::Sync { app_consistent } => {
                    std::fs::write(&image_path, &image).unwrap();
                    let kind = if *app_consistent { PointKind::AppConsistent } else { PointKind::CrashConsistent };
                    let report = sync_image(&vault, &image_path, "disk", SyncOptions { kind, label: String::new(), progress: &|_| {} }).unwrap();
                    prop_assert!(!model.contains_key(&report.point));
                    model.insert(report.point, image.clone());
                    let point = vault.select_point("disk", &PointSelector::Sequence(report.point)).unwrap();
                    times.insert(report.point, point.time_micros);
                }
                Operation::Prune { nth } => {
                    let Some((&sequence, &time)) = times.iter().nth(*nth) else { continue };
                    let options = PruneOptions { drop_before_micros: Some(time), grace: Duration::ZERO };
                    let report = prune(&vault, &options).unwrap();
                    for dropped in &report.points_dropped {
                        prop_assert!(dropped.point < sequence);
                        model.remove(&dropped.point);
                        times.remove(&dropped.point);
                    }
                    // A second pass sweeps what the first one marked.
                    prune(&vault, &PruneOptions { drop_before_micros: None, grace: Duration::ZERO }).unwrap();
                }
                _ => {}
            }
        }
        restore_all(&vault, &model, dir.path())?;
        // Collect everything collectable, then every point must still restore.
        for _ in 0..2 {
            prune(&vault, &PruneOptions { drop_before_micros: None, grace: Duration::ZERO }).unwrap();
        }
        restore_all(&vault, &model, dir.path())?;
        let report = verify(&vault, &|_| {}).unwrap();
        prop_assert!(report.is_clean(), "verify found damage: {:?} {:?}", report.damaged, report.broken_points);
        prop_assert_eq!(report.packs_unreferenced, 0, "collection left unreferenced packs");
        if let Some(latest) = model.keys().last() {
            let point = vault.select_point("disk", &PointSelector::Latest).unwrap();
            prop_assert_eq!(point.sequence, *latest);
        }
    }
}

/// New chunks adjacent on the disk share frames (that is what makes the
/// vault smaller than `zstd -1` of the image); a restore that needs only one
/// chunk of a shared frame still gets exactly that chunk.
#[test]
fn adjacent_new_chunks_share_frames_and_restore_alone() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
    let image_path = dir.path().join("image");
    let mut image = standby_testkit::Random::new(7).disk_data(4 << 20);
    // A compressible first MiB: new and adjacent, so frames of several chunks.
    image[..1 << 20].iter_mut().enumerate().for_each(|(i, b)| *b = (i / 1000) as u8 | 1);
    std::fs::write(&image_path, &image).unwrap();
    let options = || SyncOptions { kind: PointKind::CrashConsistent, label: String::new(), progress: &|_| {} };
    sync_image(&vault, &image_path, "disk", options()).unwrap();

    let index = standby_vault::ChunkIndex::load(&vault, &Default::default()).unwrap();
    let chunk = |at: usize| vault.keys().chunk_id(&image[at..at + 65536]);
    let (first, third) = (index.get(&chunk(0)).unwrap(), index.get(&chunk(2 * 65536)).unwrap());
    assert_eq!(first.frame_offset, third.frame_offset, "adjacent new chunks are in one frame");
    assert_eq!((first.raw_offset, third.raw_offset), (0, 2 * 65536));
    assert!(first.frame_raw_len >= 3 * 65536);

    // Only the third chunk changes back to what it was after a different second point.
    let original = image.clone();
    image[2 * 65536..3 * 65536].fill(0xEE);
    std::fs::write(&image_path, &image).unwrap();
    sync_image(&vault, &image_path, "disk", options()).unwrap();
    std::fs::write(&image_path, &original).unwrap();
    let third_point = sync_image(&vault, &image_path, "disk", options()).unwrap();
    assert_eq!(third_point.chunks_new, 0, "the old chunk is found inside its shared frame");
    for (sequence, expected) in [(1, &original), (2, &image), (3, &original)] {
        let point = vault.select_point("disk", &PointSelector::Sequence(sequence)).unwrap();
        let output = dir.path().join(format!("restored-{sequence}"));
        restore_point(&vault, &point, &output, RestoreOptions { force: true, progress: &|_| {} }).unwrap();
        assert!(std::fs::read(&output).unwrap() == *expected, "point {sequence}");
    }
    assert!(verify(&vault, &|_| {}).unwrap().is_clean());
}
