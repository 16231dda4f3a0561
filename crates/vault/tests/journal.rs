//! Model test of the journal: random streams of writes (any alignment),
//! zeroings, resizes, bookmarks, seals and writer restarts; replaying the
//! journal to any sequence, or to any time, gives exactly the model's disk
//! after the records up to it. Compaction (retention) at random moments
//! folds old records into a base: later points still equal the model, older
//! ones are refused. Collection keeps journal data; verify is clean.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use standby_format::PointKind;
use standby_vault::backend::LocalBackend;
use standby_vault::compact::compact_journal;
use standby_vault::journal::{list_journal, restore_journal, JournalTarget, JournalWriter, BASE_LABEL};
use standby_vault::prune::{prune, PruneOptions};
use standby_vault::verify::verify;
use standby_vault::view::PointView;
use standby_vault::{InitOptions, Vault};

#[derive(Debug, Clone)]
enum Operation {
    Write {
        offset: usize,
        len: usize,
        seed: u64,
        compressible: bool,
    },
    Zero {
        offset: usize,
        len: usize,
    },
    Resize {
        bytes: usize,
    },
    Bookmark {
        app: bool,
    },
    Seal,
    /// Drop the writer (sealing first, as a clean stop does) and open a new one.
    Restart,
    /// The clock moves on: later records get a later time.
    Tick,
    /// The journal stops describing the disk exactly (until `Exact`).
    Gap,
    Exact,
    /// Retention: compact what is sealed and older than the clock (or, with
    /// `now`, everything sealed).
    Compact {
        now: bool,
    },
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (0usize..300_000, 1usize..20_000, any::<u64>(), any::<bool>())
            .prop_map(|(offset, len, seed, compressible)| Operation::Write { offset, len, seed, compressible }),
        1 => (0usize..300_000, 1usize..50_000).prop_map(|(offset, len)| Operation::Zero { offset, len }),
        1 => (1usize..300_000).prop_map(|bytes| Operation::Resize { bytes }),
        2 => any::<bool>().prop_map(|app| Operation::Bookmark { app }),
        2 => Just(Operation::Seal),
        1 => Just(Operation::Restart),
        3 => Just(Operation::Tick),
        1 => Just(Operation::Gap),
        1 => Just(Operation::Exact),
        1 => any::<bool>().prop_map(|now| Operation::Compact { now }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn replay_to_any_sequence_or_time_equals_the_model(
        initial in 1usize..200_000,
        operations in proptest::collection::vec(operation(), 1..40),
        probes in proptest::collection::vec(any::<prop::sample::Index>(), 4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(Vault::init(
            Arc::new(LocalBackend::new(dir.path().join("vault"))),
            InitOptions { chunk_bytes: 4096, ..InitOptions::default() },
        ).unwrap());
        let mut image = vec![0u8; initial];
        // Model: the disk after each sequence, and the time of each sequence.
        let mut after: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut times: BTreeMap<u64, i64> = BTreeMap::new();
        // Sequences at which the journal is inside a gap.
        let mut inexact: std::collections::BTreeSet<u64> = Default::default();
        let mut in_gap = false;
        let mut clock = 1_000_000i64;
        // The newest compacted base: points before it are gone.
        let mut base = 0u64;
        let mut writer = JournalWriter::open(&vault, "disk").unwrap();
        let sequence = writer.size(initial as u64, clock);
        after.insert(sequence, image.clone());
        times.insert(sequence, clock);
        for operation in &operations {
            let sequence = match operation {
                Operation::Write { offset, len, seed, compressible } => {
                    let offset = offset % image.len();
                    let len = (*len).min(image.len() - offset);
                    let mut data = vec![0u8; len];
                    if *compressible {
                        data.iter_mut().enumerate().for_each(|(i, b)| *b = (i % 13) as u8 + 1);
                    } else {
                        standby_testkit::Random::new(*seed).fill(&mut data);
                    }
                    image[offset..offset + len].copy_from_slice(&data);
                    Some(writer.write(offset as u64, &data, clock))
                }
                Operation::Zero { offset, len } => {
                    let offset = offset % image.len();
                    let len = (*len).min(image.len() - offset);
                    image[offset..offset + len].fill(0);
                    Some(writer.zero(offset as u64, len as u64, clock))
                }
                Operation::Resize { bytes } => {
                    image.resize(*bytes, 0);
                    Some(writer.size(*bytes as u64, clock))
                }
                Operation::Bookmark { app } => {
                    let kind = if *app { PointKind::AppConsistent } else { PointKind::CrashConsistent };
                    Some(writer.bookmark(kind, "mark", clock))
                }
                Operation::Seal => {
                    writer.seal().unwrap();
                    None
                }
                Operation::Restart => {
                    writer.seal().unwrap();
                    let next = writer.next_sequence();
                    drop(writer);
                    writer = JournalWriter::open(&vault, "disk").unwrap();
                    prop_assert_eq!(writer.next_sequence(), next);
                    None
                }
                Operation::Tick => {
                    clock += 1000;
                    None
                }
                Operation::Gap => {
                    in_gap = true;
                    Some(writer.gap(clock))
                }
                Operation::Exact => {
                    in_gap = false;
                    Some(writer.exact(clock))
                }
                Operation::Compact { now } => {
                    writer.seal().unwrap();
                    let cutoff = if *now { clock + 1 } else { clock };
                    if let Some(report) = compact_journal(&vault, "disk", cutoff).unwrap() {
                        prop_assert!(report.base_sequence > base);
                        prop_assert!(!inexact.contains(&report.base_sequence), "a base inside a gap");
                        prop_assert!(times[&report.base_sequence] < cutoff);
                        base = report.base_sequence;
                    }
                    None
                }
            };
            if let Some(sequence) = sequence {
                after.insert(sequence, image.clone());
                times.insert(sequence, clock);
                if in_gap {
                    inexact.insert(sequence);
                }
            }
        }
        writer.seal().unwrap();
        drop(writer);

        let listing = list_journal(&vault, "disk").unwrap();
        prop_assert_eq!(listing.last_sequence, after.keys().last().copied());
        let listed: Vec<u64> =
            listing.bookmarks.iter().filter(|b| b.label != BASE_LABEL).map(|b| b.sequence).collect();
        prop_assert!(listed.iter().all(|&sequence| sequence > base), "a bookmark before the base is listed");
        if base > 0 {
            prop_assert_eq!(listing.first_sequence, Some(base));
            prop_assert_eq!(listing.bookmarks[0].sequence, base);
        }

        // Every bookmark, the end, and random sequences.
        let sequences: Vec<u64> = after.keys().copied().collect();
        let mut targets: Vec<u64> = listing.bookmarks.iter().map(|b| b.sequence).collect();
        targets.push(*sequences.last().unwrap());
        targets.extend(probes.iter().map(|p| sequences[p.index(sequences.len())]));
        let output = dir.path().join("restored");
        for target in targets {
            let result = restore_journal(&vault, "disk", JournalTarget::Sequence(target), &output, true);
            if target < base {
                let error = result.unwrap_err().to_string();
                prop_assert!(error.contains("older than the retention window"), "{}", error);
                continue;
            }
            if inexact.contains(&target) {
                prop_assert!(result.is_err(), "sequence {} is inside a gap but restored", target);
                continue;
            }
            result.unwrap();
            prop_assert!(std::fs::read(&output).unwrap() == after[&target], "sequence {} differs", target);
            // The same point read on demand, in uneven pieces, as export serves it.
            let view = PointView::of_journal(vault.clone(), "disk", JournalTarget::Sequence(target)).unwrap();
            prop_assert_eq!(view.size(), after[&target].len() as u64);
            let mut read = vec![0u8; after[&target].len()];
            let mut at = 0usize;
            let mut step = 1usize + (target as usize * 7919) % 9000;
            while at < read.len() {
                let end = (at + step).min(read.len());
                view.read(at as u64, &mut read[at..end]).unwrap();
                at = end;
                step = 1 + (step * 31) % 20_000;
            }
            prop_assert!(read == after[&target], "the view of sequence {} differs", target);
        }
        // A time: the state after the last record stamped at or before it.
        for probe in &probes {
            let time = times[&sequences[probe.index(sequences.len())]];
            let last = *times.iter().filter(|(_, &t)| t <= time).map(|(s, _)| s).next_back().unwrap();
            let result = restore_journal(&vault, "disk", JournalTarget::Time(time), &output, true);
            if last < base {
                prop_assert!(result.is_err(), "time {} is before the base but restored", time);
                continue;
            }
            if inexact.contains(&last) {
                prop_assert!(result.is_err(), "time {} is inside a gap but restored", time);
                continue;
            }
            result.unwrap();
            prop_assert!(std::fs::read(&output).unwrap() == after[&last], "time {} differs", time);
        }

        // Collection keeps every pack the journal needs; verify agrees.
        let options = PruneOptions { drop_before_micros: Some(i64::MAX), grace: Duration::ZERO };
        prune(&vault, &options).unwrap();
        prune(&vault, &options).unwrap();
        let report = verify(&vault, &|_| {}).unwrap();
        prop_assert!(report.is_clean(), "{:?}", report);
        prop_assert_eq!(report.packs_unreferenced, 0);
        let latest = restore_journal(&vault, "disk", JournalTarget::Latest, &output, true);
        if in_gap {
            prop_assert!(latest.is_err());
        } else {
            latest.unwrap();
            prop_assert!(std::fs::read(&output).unwrap() == image);
        }
    }
}

#[test]
fn a_missing_segment_is_named_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
    let mut writer = JournalWriter::open(&vault, "d").unwrap();
    writer.size(1 << 20, 1);
    for round in 0..3u8 {
        writer.write(u64::from(round) * 65536, &[round + 1; 65536], 2);
        writer.seal().unwrap();
    }
    let middle = dir.path().join("vault/disks/d/journal/00000000000000000003.segment");
    std::fs::remove_file(&middle).unwrap();
    let error = restore_journal(&vault, "d", JournalTarget::Latest, &dir.path().join("out"), false).unwrap_err();
    assert!(error.to_string().contains("no records 3..4"), "{error}");
    assert!(!dir.path().join("out").exists() && !dir.path().join("out.standby-partial").exists());
    let report = verify(&vault, &|_| {}).unwrap();
    assert_eq!(report.broken_journals.len(), 1, "{report:?}");
    assert_eq!(report.broken_journals[0].from_sequence, 4);
    // Up to before the gap still restores.
    restore_journal(&vault, "d", JournalTarget::Sequence(2), &dir.path().join("out"), false).unwrap();
}

#[test]
fn an_interrupted_compaction_replays_the_same_and_a_later_one_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
    let mut writer = JournalWriter::open(&vault, "d").unwrap();
    writer.size(1 << 20, 0);
    for round in 0..6u8 {
        let time = i64::from(round) * 1000;
        writer.write(u64::from(round) * 65536, &[round + 1; 65536], time);
        writer.write(u64::from(round) * 1000 + 7, &[round + 100; 3000], time);
        writer.bookmark(PointKind::CrashConsistent, "round", time);
        writer.seal().unwrap();
    }
    drop(writer);
    let restore = |target: JournalTarget, name: &str| {
        let out = dir.path().join(name);
        restore_journal(&vault, "d", target, &out, true).map(|_| std::fs::read(&out).unwrap())
    };
    let listing = list_journal(&vault, "d").unwrap();
    let before: Vec<(u64, Vec<u8>)> = listing
        .bookmarks
        .iter()
        .map(|b| (b.sequence, restore(JournalTarget::Sequence(b.sequence), "before").unwrap()))
        .collect();

    let journal = dir.path().join("vault/disks/d/journal");
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    let report = compact_journal(&vault, "d", 3500).unwrap().expect("records older than the cutoff");
    assert_eq!(report.segments_removed, 4, "{report:?}");
    // kill -9 after the base was stored, before the segments were deleted.
    for (path, bytes) in &saved {
        std::fs::write(path, bytes).unwrap();
    }
    for (sequence, expected) in &before {
        let restored = restore(JournalTarget::Sequence(*sequence), "after");
        if *sequence < report.base_sequence {
            let error = restored.unwrap_err().to_string();
            assert!(error.contains("older than the retention window"), "{error}");
        } else {
            assert!(restored.unwrap() == *expected, "point {sequence} changed");
        }
    }
    assert!(verify(&vault, &|_| {}).unwrap().is_clean());

    let finished = compact_journal(&vault, "d", 3500).unwrap().expect("the leftovers are deleted");
    assert_eq!((finished.base_sequence, finished.segments_removed, finished.chunks_new), (report.base_sequence, 4, 0));
    assert!(compact_journal(&vault, "d", 3500).unwrap().is_none(), "nothing left to do");
    // The writer carries on after the base even with no segment before it.
    let mut writer = JournalWriter::open(&vault, "d").unwrap();
    assert_eq!(writer.next_sequence(), listing.last_sequence.unwrap() + 1);
    writer.write(0, &[9; 512], 9000);
    writer.seal().unwrap();
    let mut latest = before.last().unwrap().1.clone();
    latest[..512].fill(9);
    assert!(restore(JournalTarget::Latest, "latest").unwrap() == latest);
}

#[test]
fn a_journal_compacted_whole_still_restores_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
    let mut writer = JournalWriter::open(&vault, "d").unwrap();
    writer.size(300_000, 0);
    writer.write(70_000, &[5; 100_000], 10);
    let last = writer.bookmark(PointKind::AppConsistent, "app", 10);
    writer.seal().unwrap();
    drop(writer);
    let report = compact_journal(&vault, "d", 11).unwrap().unwrap();
    assert_eq!(report.base_sequence, last);
    assert!(standby_vault::journal::segments(&vault, "d").unwrap().is_empty());
    let listing = list_journal(&vault, "d").unwrap();
    assert_eq!(listing.bookmarks.len(), 1);
    assert_eq!(listing.bookmarks[0].label, BASE_LABEL);
    let out = dir.path().join("out");
    restore_journal(&vault, "d", JournalTarget::Latest, &out, false).unwrap();
    let mut expected = vec![0u8; 300_000];
    expected[70_000..170_000].fill(5);
    assert!(std::fs::read(&out).unwrap() == expected);
    let mut writer = JournalWriter::open(&vault, "d").unwrap();
    assert_eq!(writer.next_sequence(), last + 1);
    writer.zero(70_000, 10, 20);
    writer.seal().unwrap();
    restore_journal(&vault, "d", JournalTarget::Latest, &out, true).unwrap();
    expected[70_000..70_010].fill(0);
    assert!(std::fs::read(&out).unwrap() == expected);
}

#[test]
fn a_seeded_base_is_the_image_and_the_journal_continues_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
    let image = dir.path().join("old.raw");
    let mut content: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&image, &content).unwrap();
    // A journal with history: the seed goes after it and covers it.
    let mut writer = JournalWriter::open(&vault, "d").unwrap();
    writer.size(400_000, 0);
    writer.write(0, &[9; 1000], 5);
    writer.seal().unwrap();
    let before = writer.next_sequence();
    drop(writer);
    let seeded = standby_vault::compact::seed_journal(&vault, "d", &image).unwrap();
    assert!(seeded.base_sequence >= before, "{seeded:?}");
    let out = dir.path().join("out");
    restore_journal(&vault, "d", JournalTarget::Latest, &out, false).unwrap();
    assert!(std::fs::read(&out).unwrap() == content, "the seeded base is not the image");
    let mut writer = JournalWriter::open(&vault, "d").unwrap();
    assert_eq!(writer.next_sequence(), seeded.base_sequence + 1);
    writer.write(100_000, &[1; 5000], 50);
    writer.seal().unwrap();
    content[100_000..105_000].fill(1);
    restore_journal(&vault, "d", JournalTarget::Latest, &out, true).unwrap();
    assert!(std::fs::read(&out).unwrap() == content);
    // A fresh journal seeded is never taken for empty.
    let seeded = standby_vault::compact::seed_journal(&vault, "e", &image).unwrap();
    assert!(JournalWriter::open(&vault, "e").unwrap().next_sequence() > 1, "{seeded:?}");
}

#[test]
fn changes_since_a_moment_are_the_ranges_written_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
    let mut writer = JournalWriter::open(&vault, "d").unwrap();
    writer.size(1 << 20, 0);
    writer.write(0, &[1; 4096], 10);
    writer.write(8192, &[2; 4096], 20);
    writer.seal().unwrap();
    writer.zero(65_536, 1000, 30);
    writer.write(4096, &[3; 10], 30);
    writer.seal().unwrap();
    let changed = |after| standby_vault::compact::changed_since(&vault, "d", after).unwrap();
    assert_eq!(changed(20), Some(vec![(65_536, 1000), (4096, 10)]));
    assert_eq!(changed(10), Some(vec![(8192, 4096), (65_536, 1000), (4096, 10)]));
    assert_eq!(changed(30), Some(vec![]));
    // After a gap the journal cannot say what changed.
    writer.gap(40);
    writer.seal().unwrap();
    assert_eq!(changed(35), None);
    drop(writer);
    // Nor once what followed the moment was compacted.
    compact_journal(&vault, "d", 25).unwrap();
    assert_eq!(changed(5), None);
}

#[test]
fn a_reader_that_a_compaction_overtakes_starts_again_from_the_new_base() {
    use standby_vault::journal::{across_compactions, journal_objects, read_segment};
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
    let mut writer = JournalWriter::open(&vault, "d").unwrap();
    writer.size(100_000, 0);
    for time in 1..5 {
        writer.write(time as u64 * 1000, &[time as u8; 500], time * 10);
        writer.seal().unwrap();
    }
    drop(writer);
    // The first attempt lists the segments, then a compaction deletes them
    // before they are read: the reader starts again and succeeds.
    let mut attempts = 0;
    let read = across_compactions(&vault, "d", || {
        attempts += 1;
        let objects = journal_objects(&vault, "d")?;
        if attempts == 1 {
            compact_journal(&vault, "d", 35).unwrap().unwrap();
        }
        for (_, path) in &objects.segments {
            read_segment(&vault, path)?;
        }
        Ok(objects.segments.len())
    })
    .unwrap();
    assert_eq!((attempts, read), (2, 1), "one segment is left after the base");
    // A segment gone without a newer base is an error, as ever.
    let objects = journal_objects(&vault, "d").unwrap();
    std::fs::remove_file(dir.path().join("vault").join(&objects.segments[0].1)).unwrap();
    let missing = across_compactions(&vault, "d", || read_segment(&vault, &objects.segments[0].1));
    assert!(missing.is_err());
}

/// A reader's hold (what a running export takes) keeps collection from
/// sweeping the chunks of its point after retention compacted the point
/// away; once released, the sweep goes ahead.
#[test]
fn a_hold_keeps_a_compacted_points_chunks_until_it_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
    let mut writer = JournalWriter::open(&vault, "d").unwrap();
    writer.size(200_000, 0);
    writer.write(0, &standby_testkit::Random::new(3).disk_data(100_000), 10);
    writer.bookmark(PointKind::CrashConsistent, "old", 10);
    writer.seal().unwrap();
    writer.write(0, &standby_testkit::Random::new(4).disk_data(100_000), 20);
    writer.seal().unwrap();
    drop(writer);
    let vault = Arc::new(vault);
    let hold = vault.hold("export", "d at old").unwrap();
    let view = PointView::of_journal(vault.clone(), "d", JournalTarget::Time(10)).unwrap();
    let mut expected = vec![0u8; 200_000];
    expected[..100_000].copy_from_slice(&standby_testkit::Random::new(3).disk_data(100_000));

    // Retention folds everything into a base at the newest write: the old
    // point's data is unreferenced, marked, and its sweep waits.
    compact_journal(&vault, "d", 21).unwrap().unwrap();
    let options = PruneOptions { drop_before_micros: None, grace: Duration::ZERO };
    let marked = prune(&vault, &options).unwrap();
    assert!(marked.packs_marked > 0, "{marked:?}");
    let held = prune(&vault, &options).unwrap();
    assert_eq!(held.packs_deleted, 0, "{held:?}");
    assert!(held.waiting.iter().any(|w| w.contains("waiting for export of d at old")), "{held:?}");
    let mut read = vec![0u8; 200_000];
    view.read(0, &mut read).unwrap();
    assert!(read == expected, "the held point no longer reads as it was");

    drop(hold);
    let swept = prune(&vault, &options).unwrap();
    assert!(swept.packs_deleted > 0, "{swept:?}");
}

/// Readers of a journal a splitter is sealing into (a restore of `latest`,
/// a failover's view of it, a prune) list the journal before they load the
/// chunk index: a segment sealed between the two must never make a live
/// disk look damaged ("journal data … is in no pack index").
#[test]
fn readers_of_a_journal_being_sealed_never_find_its_data_missing() {
    let dir = tempfile::tempdir().unwrap();
    let vault =
        Arc::new(Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap());
    let mut writer = JournalWriter::open(&vault, "d").unwrap();
    writer.size(1 << 20, 1);
    writer.write(0, &[1; 4096], 1);
    writer.seal().unwrap();
    drop(writer);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sealing = {
        let (vault, stop) = (vault.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut writer = JournalWriter::open(&vault, "d").unwrap();
            let mut round = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                // New data every seal: a new pack, its index, then the segment.
                let data: Vec<u8> = (0..4096u64).map(|i| (i * 31 + round * 7) as u8 ^ (round >> 8) as u8).collect();
                writer.write((round % 200) * 4096, &data, 1 + round as i64);
                writer.seal().unwrap();
            }
            round
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let mut reads = 0;
    while std::time::Instant::now() < deadline {
        let out = dir.path().join("latest.raw");
        restore_journal(&vault, "d", JournalTarget::Latest, &out, true).unwrap();
        let view = PointView::of_journal(vault.clone(), "d", JournalTarget::Latest).unwrap();
        let mut disk = vec![0u8; 1 << 20];
        view.read(0, &mut disk).unwrap();
        prune(&vault, &PruneOptions { drop_before_micros: None, grace: Duration::from_secs(3600) }).unwrap();
        reads += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = sealing.join().unwrap();
    // Both went on side by side (how often each depends on the machine).
    eprintln!("journal: {rounds} seals while the readers read {reads} times");
    assert!(rounds >= 10 && reads >= 3, "the writer sealed {rounds} times while the readers read {reads} times");
}
