//! A journal's summary: what `status` and a console's timeline need of a
//! disk's journal (its restorable window, its newest points, the points an
//! operator picks from), small enough to keep for thousands of disks and
//! brought up to date by reading only the segments stored since.
//!
//! [`list_journal`](crate::journal::list_journal) reads every segment and
//! returns every bookmark: a week of a bookmark every 5 s is 120,000 of
//! them per disk. A summary keeps the notable ones (app-consistent,
//! labelled, the compacted base) and crash-consistent ones
//! [`CRASH_CONSISTENT_SPACING`] apart; any moment of the window can still be
//! restored, so nothing is lost to the operator but clutter.
//!
//! Segments are never rewritten once stored (a segment object is put
//! create-only, named by its first sequence), and a compaction makes a new
//! base: a summary whose base is still the newest is brought up to date by
//! the segments after the newest it read; another base means reading the
//! journal again from it.

use standby_format::{PointKind, PointManifest, Record, RecordKind};

use crate::backend::StorageError;
use crate::journal::{
    across_compactions, for_each_record, journal_objects, newest_base, track_gaps, Bookmark, JournalObjects, BASE_LABEL,
};
use crate::{format_time, Vault, VaultError};

/// The least time between two unlabelled crash-consistent points a summary
/// keeps among its notable points.
pub const CRASH_CONSISTENT_SPACING_MICROS: i64 = 10 * 60 * 1_000_000;
/// [`CRASH_CONSISTENT_SPACING_MICROS`] for the docs.
pub const CRASH_CONSISTENT_SPACING: std::time::Duration = std::time::Duration::from_secs(600);

/// What a disk's journal offers, in brief (see the module's docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalSummary {
    pub first_sequence: Option<u64>,
    pub last_sequence: Option<u64>,
    pub first_time_micros: Option<i64>,
    pub last_time_micros: Option<i64>,
    pub newest_crash_consistent: Option<Bookmark>,
    pub newest_app_consistent: Option<Bookmark>,
    /// The points an operator picks from, oldest first: every
    /// app-consistent, labelled or base point, and crash-consistent points
    /// at least [`CRASH_CONSISTENT_SPACING`] apart.
    pub notable: Vec<Bookmark>,
    /// Stretches that cannot be restored: (from, to or None while open).
    pub gaps: Vec<(i64, Option<i64>)>,
    /// The base the summary starts from.
    base: Option<String>,
    /// The first sequence of the newest segment read.
    read_upto: Option<u64>,
}

/// The summary of `disk`'s journal now: `previous` (of the same disk in
/// the same vault) brought up to date, or the journal read whole when there
/// is none or a compaction made a new base since.
pub fn summarize_journal(
    vault: &Vault,
    disk: &str,
    previous: Option<JournalSummary>,
) -> Result<JournalSummary, VaultError> {
    if let Some(mut summary) = previous {
        let objects = journal_objects(vault, disk)?;
        if objects.bases.last().map(|(_, path)| path) == summary.base.as_ref() {
            let newer: Vec<(u64, String)> = objects
                .segments
                .into_iter()
                .filter(|(first, _)| summary.read_upto.is_none_or(|upto| *first > upto))
                .collect();
            if newer.is_empty() {
                return Ok(summary);
            }
            let after = summary.last_sequence.unwrap_or(0);
            match summary.read(vault, disk, &JournalObjects { segments: newer, bases: Vec::new() }, after) {
                Ok(()) => return Ok(summary),
                // Compacted meanwhile: read it whole from the new base.
                Err(VaultError::Storage(StorageError::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
    }
    across_compactions(vault, disk, || summarize_whole(vault, disk))
}

fn summarize_whole(vault: &Vault, disk: &str) -> Result<JournalSummary, VaultError> {
    let objects = journal_objects(vault, disk)?;
    let mut summary = JournalSummary { base: objects.bases.last().map(|(_, path)| path.clone()), ..Default::default() };
    if let Some(base) = newest_base(vault, &objects, disk)? {
        summary.note_base(&base);
    }
    let after = summary.last_sequence.unwrap_or(0);
    summary.read(vault, disk, &objects, after)?;
    Ok(summary)
}

impl JournalSummary {
    /// Takes in the records after `after` of the segments of `objects`.
    fn read(&mut self, vault: &Vault, disk: &str, objects: &JournalObjects, after: u64) -> Result<(), VaultError> {
        for_each_record(
            vault,
            disk,
            objects,
            after,
            |_| true,
            |record| {
                self.note(record);
                Ok(true)
            },
        )?;
        if let Some((first, _)) = objects.segments.last() {
            self.read_upto = Some(*first);
        }
        Ok(())
    }

    fn note_base(&mut self, base: &PointManifest) {
        self.first_sequence = Some(base.sequence);
        self.first_time_micros = Some(base.time_micros);
        self.last_sequence = Some(base.sequence);
        self.last_time_micros = Some(base.time_micros);
        self.keep(Bookmark {
            sequence: base.sequence,
            time: format_time(base.time_micros),
            time_micros: base.time_micros,
            kind: base.kind,
            label: BASE_LABEL.to_string(),
        });
    }

    fn note(&mut self, record: &Record) {
        self.first_sequence.get_or_insert(record.sequence);
        self.first_time_micros.get_or_insert(record.time_micros);
        self.last_sequence = Some(record.sequence);
        self.last_time_micros = Some(record.time_micros);
        track_gaps(&mut self.gaps, record);
        if let RecordKind::Bookmark { kind, label } = &record.kind {
            self.keep(Bookmark {
                sequence: record.sequence,
                time: format_time(record.time_micros),
                time_micros: record.time_micros,
                kind: *kind,
                label: label.clone(),
            });
        }
    }

    /// Takes in a point: the newest of its kind, and notable when it is
    /// app-consistent, labelled, or far enough from the last kept.
    fn keep(&mut self, bookmark: Bookmark) {
        let notable = match bookmark.kind {
            PointKind::AppConsistent => true,
            PointKind::CrashConsistent => {
                let last_kept = self.notable.iter().rev().find(|b| b.kind == PointKind::CrashConsistent);
                !bookmark.label.is_empty()
                    || last_kept
                        .is_none_or(|kept| bookmark.time_micros - kept.time_micros >= CRASH_CONSISTENT_SPACING_MICROS)
            }
        };
        if notable {
            self.notable.push(bookmark.clone());
        }
        match bookmark.kind {
            PointKind::AppConsistent => self.newest_app_consistent = Some(bookmark),
            PointKind::CrashConsistent => self.newest_crash_consistent = Some(bookmark),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::backend::LocalBackend;
    use crate::compact::compact_journal;
    use crate::journal::{list_journal, JournalWriter};
    use crate::InitOptions;

    #[derive(Debug, Clone)]
    enum Step {
        Write(u8),
        Bookmark { app: bool, labelled: bool },
        Gap,
        Exact,
        Seal,
        Compact,
        Summarize,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => any::<u8>().prop_map(Step::Write),
            4 => (any::<bool>(), any::<bool>()).prop_map(|(app, labelled)| Step::Bookmark { app, labelled }),
            1 => Just(Step::Gap),
            1 => Just(Step::Exact),
            3 => Just(Step::Seal),
            1 => Just(Step::Compact),
            2 => Just(Step::Summarize),
        ]
    }

    /// What a summary must agree with: the journal listed whole.
    fn check(vault: &Vault, summary: &JournalSummary) {
        let listing = list_journal(vault, "d").unwrap();
        assert_eq!(summary.first_sequence, listing.first_sequence);
        assert_eq!(summary.last_sequence, listing.last_sequence);
        assert_eq!(summary.first_time_micros, listing.first_time_micros);
        assert_eq!(summary.last_time_micros, listing.last_time_micros);
        assert_eq!(summary.gaps, listing.gaps);
        let newest = |kind| listing.bookmarks.iter().rev().find(|b| b.kind == kind).cloned();
        assert_eq!(summary.newest_crash_consistent, newest(PointKind::CrashConsistent));
        assert_eq!(summary.newest_app_consistent, newest(PointKind::AppConsistent));
        let expected: Vec<&Bookmark> =
            listing.bookmarks.iter().filter(|b| b.kind == PointKind::AppConsistent || !b.label.is_empty()).collect();
        let kept: Vec<&Bookmark> =
            summary.notable.iter().filter(|b| b.kind == PointKind::AppConsistent || !b.label.is_empty()).collect();
        assert_eq!(kept, expected, "every app-consistent or labelled point is notable");
        assert!(summary.notable.iter().all(|b| listing.bookmarks.contains(b)), "notable points are points");
        let crash: Vec<i64> =
            summary.notable.iter().filter(|b| b.kind == PointKind::CrashConsistent).map(|b| b.time_micros).collect();
        assert!(crash.windows(2).all(|w| w[1] > w[0]), "oldest first: {crash:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// A summary brought up to date step by step is the summary of the
        /// journal read whole, and agrees with its listing, across seals,
        /// gaps and compactions.
        #[test]
        fn a_summary_kept_up_to_date_agrees_with_the_listing(steps in proptest::collection::vec(step(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
            let mut writer = JournalWriter::open(&vault, "d").unwrap();
            writer.size(1 << 20, 1);
            let mut now = 1_000_000i64;
            let mut kept: Option<JournalSummary> = None;
            for step in steps {
                // Some steps far apart, so spacing thins and keeps.
                now += if now % 3 == 0 { CRASH_CONSISTENT_SPACING_MICROS / 2 } else { 1_000_000 };
                match step {
                    Step::Write(byte) => { writer.write(u64::from(byte) * 4096, &[byte; 4096], now); }
                    Step::Bookmark { app, labelled } => {
                        let kind = if app { PointKind::AppConsistent } else { PointKind::CrashConsistent };
                        writer.bookmark(kind, if labelled { "label" } else { "" }, now);
                    }
                    Step::Gap => { writer.gap(now); }
                    Step::Exact => { writer.exact(now); }
                    Step::Seal => { writer.seal().unwrap(); }
                    Step::Compact => { compact_journal(&vault, "d", now).unwrap(); }
                    Step::Summarize => {
                        let summary = summarize_journal(&vault, "d", kept.take()).unwrap();
                        check(&vault, &summary);
                        prop_assert_eq!(&summary, &summarize_journal(&vault, "d", None).unwrap());
                        kept = Some(summary);
                    }
                }
            }
            writer.seal().unwrap();
            let summary = summarize_journal(&vault, "d", kept).unwrap();
            check(&vault, &summary);
            prop_assert_eq!(&summary, &summarize_journal(&vault, "d", None).unwrap());
        }
    }

    /// Steady bookmarks every 5 s for a day keep a notable point every
    /// [`CRASH_CONSISTENT_SPACING`], not 17,280.
    #[test]
    fn crash_consistent_points_are_thinned() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
        let mut writer = JournalWriter::open(&vault, "d").unwrap();
        let start = 1_700_000_000_000_000i64;
        for tick in 0..(24 * 3600 / 5) {
            writer.bookmark(PointKind::CrashConsistent, "", start + tick * 5_000_000);
            if tick % 720 == 719 {
                writer.seal().unwrap();
            }
        }
        writer.seal().unwrap();
        let summary = summarize_journal(&vault, "d", None).unwrap();
        assert_eq!(summary.notable.len(), 24 * 6);
        assert_eq!(summary.newest_crash_consistent.unwrap().time_micros, start + (24 * 3600 / 5 - 1) * 5_000_000);
    }
}
