//! A journal's summary: what `status` and a console's timeline need of a
//! disk's journal (its restorable window, its newest points, the points an
//! operator picks from), small enough to keep for thousands of disks and
//! brought up to date by reading only the segments stored since.
//!
//! [`list_journal`](crate::journal::list_journal) reads every segment and
//! returns every bookmark: a week of a bookmark every 5 s is 120,000 of
//! them per disk. A summary keeps the notable ones (app-consistent,
//! labelled, the compacted base) and the first crash-consistent one of each
//! [`CRASH_CONSISTENT_SPACING`] of time; any moment of the window can still
//! be restored, so nothing is lost to the operator but clutter. A
//! replication group's points (`group:GROUP:ID`, one every few seconds) are
//! thinned like crash-consistent ones (app-consistent ones are kept), and
//! the newest [`RECENT_GROUP_POINTS`] are kept besides, for the point every
//! member of the group holds.
//!
//! Segments are never rewritten once stored (a segment object is put
//! create-only, named by its first sequence), and a compaction (retention,
//! every few minutes) makes a new base at the end of a segment and deletes
//! the segments it covers: a summary drops what the new base covers and
//! reads the segments after the newest it read. Only a journal compacted
//! past everything the summary read, or begun again, is read whole.

use standby_format::{PointKind, PointManifest, Record, RecordKind};

use crate::backend::StorageError;
use crate::journal::{
    across_compactions, for_each_record, journal_objects, newest_base, track_gaps, Bookmark, JournalObjects, BASE_LABEL,
};
use crate::{format_time, Vault, VaultError};

/// The span of time of which a summary keeps the first crash-consistent
/// point among its notable points.
pub const CRASH_CONSISTENT_SPACING_MICROS: i64 = 10 * 60 * 1_000_000;
/// [`CRASH_CONSISTENT_SPACING_MICROS`] for the docs.
pub const CRASH_CONSISTENT_SPACING: std::time::Duration = std::time::Duration::from_secs(600);

/// How many of the newest group points a summary keeps: members seal at
/// their own pace, so the newest point they all hold may be a few back.
pub const RECENT_GROUP_POINTS: usize = 32;

/// Whether a point carries an operator's label (a group's is not one).
fn labelled(point: &Bookmark) -> bool {
    !point.label.is_empty() && standby_format::parse_group_point_label(&point.label).is_none()
}

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
    /// app-consistent, labelled or base point, and the first
    /// crash-consistent point of each [`CRASH_CONSISTENT_SPACING`] of time.
    pub notable: Vec<Bookmark>,
    /// Stretches that cannot be restored: (from, to or None while open).
    pub gaps: Vec<(i64, Option<i64>)>,
    /// The newest replication group points, oldest first (at most
    /// [`RECENT_GROUP_POINTS`]).
    pub recent_group_points: std::collections::VecDeque<Bookmark>,
    /// The sequence of each gap's record, to drop those a base covers.
    gap_sequences: Vec<u64>,
    /// The span of time ([`CRASH_CONSISTENT_SPACING`] long) of the newest
    /// crash-consistent point.
    crash_span: Option<i64>,
    /// The base the summary starts from.
    base: Option<String>,
    /// The first sequence of the newest segment read.
    read_upto: Option<u64>,
}

/// The summary of `disk`'s journal now: `previous` (of the same disk in
/// the same vault) brought up to date, or the journal read whole when there
/// is none or it cannot be (see the module's docs).
pub fn summarize_journal(
    vault: &Vault,
    disk: &str,
    previous: Option<JournalSummary>,
) -> Result<JournalSummary, VaultError> {
    if let Some(summary) = previous {
        match summary.update(vault, disk) {
            Ok(Some(summary)) => return Ok(summary),
            Ok(None) => {}
            // Compacted meanwhile: read it whole from the new base.
            Err(VaultError::Storage(StorageError::NotFound { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    across_compactions(vault, disk, || summarize_whole(vault, disk))
}

fn summarize_whole(vault: &Vault, disk: &str) -> Result<JournalSummary, VaultError> {
    let objects = journal_objects(vault, disk)?;
    let mut summary = JournalSummary::default();
    if let Some(base) = newest_base(vault, &objects, disk)? {
        summary.note_base(&base);
    }
    summary.base = objects.bases.last().map(|(_, path)| path.clone());
    let after = summary.last_sequence.unwrap_or(0);
    summary.read(vault, disk, &objects, after)?;
    Ok(summary)
}

impl JournalSummary {
    /// The summary brought up to date from where it read, or None when it
    /// must be read whole: the segment it read last is gone (compacted
    /// away, or the journal begun again), or a base it has not read up to.
    fn update(mut self, vault: &Vault, disk: &str) -> Result<Option<JournalSummary>, VaultError> {
        let objects = journal_objects(vault, disk)?;
        let still_there = self.read_upto.is_none_or(|upto| objects.segments.iter().any(|(first, _)| *first == upto));
        if !still_there {
            return Ok(None);
        }
        match objects.bases.last() {
            Some((_, path)) if Some(path) == self.base.as_ref() => {}
            None if self.base.is_none() => {}
            Some((sequence, path)) if self.last_sequence.is_some_and(|last| *sequence <= last) => {
                let Some(base) = newest_base(vault, &objects, disk)? else { return Ok(None) };
                self.rebase(&base, path);
            }
            _ => return Ok(None),
        }
        let newer: Vec<(u64, String)> =
            objects.segments.into_iter().filter(|(first, _)| self.read_upto.is_none_or(|upto| *first > upto)).collect();
        if !newer.is_empty() {
            let after = self.last_sequence.unwrap_or(0);
            self.read(vault, disk, &JournalObjects { segments: newer, bases: Vec::new() }, after)?;
        }
        Ok(Some(self))
    }

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

    fn base_bookmark(base: &PointManifest) -> Bookmark {
        Bookmark {
            sequence: base.sequence,
            time: format_time(base.time_micros),
            time_micros: base.time_micros,
            kind: base.kind,
            label: BASE_LABEL.to_string(),
        }
    }

    fn note_base(&mut self, base: &PointManifest) {
        self.first_sequence = Some(base.sequence);
        self.first_time_micros = Some(base.time_micros);
        self.last_sequence = Some(base.sequence);
        self.last_time_micros = Some(base.time_micros);
        self.keep(Self::base_bookmark(base));
    }

    /// Drops what `base` (at `path`, a sequence this summary has read past)
    /// covers: the summary is then the one read whole from it.
    fn rebase(&mut self, base: &PointManifest, path: &str) {
        let covered = |sequence: u64| sequence <= base.sequence;
        self.base = Some(path.to_string());
        self.first_sequence = Some(base.sequence);
        self.first_time_micros = Some(base.time_micros);
        let bookmark = Self::base_bookmark(base);
        let span = crash_span(&bookmark);
        // A base ends where the journal is exact: the gaps before it are closed.
        let kept = self.gap_sequences.iter().filter(|sequence| !covered(**sequence)).count();
        self.gaps.drain(..self.gaps.len() - kept);
        self.gap_sequences.drain(..self.gap_sequences.len() - kept);
        // Read from the base, the base is the first crash-consistent point
        // of its span.
        let thinned = |point: &Bookmark| span.is_some() && !labelled(point) && crash_span(point) == span;
        self.notable.retain(|point| !covered(point.sequence) && !thinned(point));
        self.recent_group_points.retain(|point| !covered(point.sequence));
        self.crash_span = self.crash_span.max(span);
        let stale = |newest: &Option<Bookmark>| newest.as_ref().is_none_or(|point| covered(point.sequence));
        if stale(&self.newest_crash_consistent) {
            self.newest_crash_consistent = (base.kind == PointKind::CrashConsistent).then(|| bookmark.clone());
        }
        if stale(&self.newest_app_consistent) {
            self.newest_app_consistent = (base.kind == PointKind::AppConsistent).then(|| bookmark.clone());
        }
        self.notable.insert(0, bookmark);
    }

    fn note(&mut self, record: &Record) {
        self.first_sequence.get_or_insert(record.sequence);
        self.first_time_micros.get_or_insert(record.time_micros);
        self.last_sequence = Some(record.sequence);
        self.last_time_micros = Some(record.time_micros);
        if record.kind == RecordKind::Gap {
            self.gap_sequences.push(record.sequence);
        }
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
    /// app-consistent, labelled, or the first crash-consistent one of its
    /// span of time.
    fn keep(&mut self, bookmark: Bookmark) {
        let span = crash_span(&bookmark);
        let notable = bookmark.kind == PointKind::AppConsistent
            || labelled(&bookmark)
            || self.crash_span.is_none_or(|newest| span > Some(newest));
        self.crash_span = self.crash_span.max(span);
        if notable {
            self.notable.push(bookmark.clone());
        }
        if standby_format::parse_group_point_label(&bookmark.label).is_some() {
            if self.recent_group_points.len() == RECENT_GROUP_POINTS {
                self.recent_group_points.pop_front();
            }
            self.recent_group_points.push_back(bookmark.clone());
        }
        match bookmark.kind {
            PointKind::AppConsistent => self.newest_app_consistent = Some(bookmark),
            PointKind::CrashConsistent => self.newest_crash_consistent = Some(bookmark),
        }
    }
}

/// The span of time of a crash-consistent point (None for another kind).
fn crash_span(point: &Bookmark) -> Option<i64> {
    (point.kind == PointKind::CrashConsistent).then(|| point.time_micros.div_euclid(CRASH_CONSISTENT_SPACING_MICROS))
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

    /// A point's label in the model.
    #[derive(Debug, Clone, Copy)]
    enum Label {
        None,
        Operator,
        Group,
    }

    impl Label {
        fn text(self, now: i64) -> String {
            match self {
                Label::None => String::new(),
                Label::Operator => "label".into(),
                Label::Group => standby_format::group_point_label("g", now as u64),
            }
        }
    }

    fn label() -> impl Strategy<Value = Label> {
        prop_oneof![Just(Label::None), Just(Label::Operator), Just(Label::Group)]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Write(u8),
        Bookmark {
            app: bool,
            label: Label,
        },
        Gap,
        Exact,
        Seal,
        /// Compacts what is older than this many seconds ago.
        Compact(u16),
        Summarize,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => any::<u8>().prop_map(Step::Write),
            4 => (any::<bool>(), label()).prop_map(|(app, label)| Step::Bookmark { app, label }),
            1 => Just(Step::Gap),
            1 => Just(Step::Exact),
            3 => Just(Step::Seal),
            2 => (0u16..1200).prop_map(Step::Compact),
            2 => Just(Step::Summarize),
        ]
    }

    /// A new vault in a folder of its own (kept while the folder is).
    fn vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::init(Arc::new(LocalBackend::new(dir.path().join("vault"))), InitOptions::default()).unwrap();
        (dir, vault)
    }

    /// `kept` brought up to date: checked against the listing, and equal
    /// to the summary read whole.
    fn brought_up_to_date(vault: &Vault, kept: Option<JournalSummary>) -> JournalSummary {
        let summary = summarize_journal(vault, "d", kept).unwrap();
        check(vault, &summary);
        assert_eq!(summary, summarize_journal(vault, "d", None).unwrap());
        summary
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
            listing.bookmarks.iter().filter(|b| b.kind == PointKind::AppConsistent || labelled(b)).collect();
        let kept: Vec<&Bookmark> =
            summary.notable.iter().filter(|b| b.kind == PointKind::AppConsistent || labelled(b)).collect();
        assert_eq!(kept, expected, "every app-consistent or labelled point is notable");
        let groups: Vec<&Bookmark> =
            listing.bookmarks.iter().filter(|b| standby_format::parse_group_point_label(&b.label).is_some()).collect();
        let newest_groups = &groups[groups.len().saturating_sub(RECENT_GROUP_POINTS)..];
        assert_eq!(summary.recent_group_points.iter().collect::<Vec<_>>(), newest_groups, "the newest group points");
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
            let (_dir, vault) = vault();
            let mut writer = JournalWriter::open(&vault, "d").unwrap();
            writer.size(1 << 20, 1);
            let mut now = 1_000_000i64;
            let mut kept: Option<JournalSummary> = None;
            for step in steps {
                // Some steps far apart, so spacing thins and keeps.
                now += if now % 3 == 0 { CRASH_CONSISTENT_SPACING_MICROS / 2 } else { 1_000_000 };
                match step {
                    Step::Write(byte) => { writer.write(u64::from(byte) * 4096, &[byte; 4096], now); }
                    Step::Bookmark { app, label } => {
                        let kind = if app { PointKind::AppConsistent } else { PointKind::CrashConsistent };
                        writer.bookmark(kind, &label.text(now), now);
                    }
                    Step::Gap => { writer.gap(now); }
                    Step::Exact => { writer.exact(now); }
                    Step::Seal => { writer.seal().unwrap(); }
                    Step::Compact(ago) => { compact_journal(&vault, "d", now - i64::from(ago) * 1_000_000).unwrap(); }
                    Step::Summarize => kept = Some(brought_up_to_date(&vault, kept.take())),
                }
            }
            writer.seal().unwrap();
            brought_up_to_date(&vault, kept);
        }
    }

    /// One round of a busy journal: points (app-consistent?, label,
    /// seconds after the one before), sealed, then compacted up to this
    /// many seconds ago.
    type Round = (Vec<(bool, Label, u16)>, u16);

    fn round() -> impl Strategy<Value = Round> {
        (proptest::collection::vec((any::<bool>(), label(), 1u16..400), 1..8), 0u16..1800)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Retention compacts a journal while its summary is kept: the
        /// summary drops what the new base covers and stays the one read
        /// whole.
        #[test]
        fn a_summary_follows_retention(rounds in proptest::collection::vec(round(), 1..12)) {
            let (_dir, vault) = vault();
            let mut writer = JournalWriter::open(&vault, "d").unwrap();
            writer.size(1 << 20, 1);
            let mut now = 1_000_000i64;
            let mut kept: Option<JournalSummary> = None;
            for (points, ago) in rounds {
                for (app, label, after) in points {
                    now += i64::from(after) * 1_000_000;
                    writer.write(0, &[1; 4096], now);
                    let kind = if app { PointKind::AppConsistent } else { PointKind::CrashConsistent };
                    writer.bookmark(kind, &label.text(now), now);
                    writer.seal().unwrap();
                }
                let summary = summarize_journal(&vault, "d", kept.take()).unwrap();
                check(&vault, &summary);
                compact_journal(&vault, "d", now - i64::from(ago) * 1_000_000).unwrap();
                kept = Some(brought_up_to_date(&vault, Some(summary)));
            }
        }
    }

    /// Steady bookmarks every 5 s for a day keep a notable point every
    /// [`CRASH_CONSISTENT_SPACING`], not 17,280.
    #[test]
    fn crash_consistent_points_are_thinned() {
        let (_dir, vault) = vault();
        let mut writer = JournalWriter::open(&vault, "d").unwrap();
        let start = 1_700_000_400_000_000i64; // the start of a span
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

    /// A group's points every 5 s for a day are thinned like
    /// crash-consistent ones, and the newest are kept besides.
    #[test]
    fn group_points_are_thinned_and_the_newest_kept() {
        let (_dir, vault) = vault();
        let mut writer = JournalWriter::open(&vault, "d").unwrap();
        let start = 1_700_000_400_000_000i64;
        let ticks = 24 * 3600 / 5;
        for tick in 0..ticks {
            let label = standby_format::group_point_label("shop", tick as u64);
            writer.bookmark(PointKind::CrashConsistent, &label, start + tick * 5_000_000);
            if tick % 720 == 719 {
                writer.seal().unwrap();
            }
        }
        writer.seal().unwrap();
        let summary = summarize_journal(&vault, "d", None).unwrap();
        assert_eq!(summary.notable.len(), 24 * 6);
        assert_eq!(summary.recent_group_points.len(), RECENT_GROUP_POINTS);
        let newest = summary.recent_group_points.back().unwrap();
        assert_eq!(newest.label, standby_format::group_point_label("shop", ticks as u64 - 1));
    }

    /// A journal removed and begun again under the same name is read
    /// again, not taken for the one summarized.
    #[test]
    fn a_journal_begun_again_is_read_again() {
        let (_dir, vault) = vault();
        let mut writer = JournalWriter::open(&vault, "d").unwrap();
        for tick in 0..3 {
            writer.bookmark(PointKind::AppConsistent, "old", 1_000_000 + tick);
            writer.seal().unwrap();
        }
        let kept = summarize_journal(&vault, "d", None).unwrap();
        for (_, path) in journal_objects(&vault, "d").unwrap().segments {
            vault.backend().delete(&path).unwrap();
        }
        let mut writer = JournalWriter::open(&vault, "d").unwrap();
        writer.bookmark(PointKind::CrashConsistent, "new", 5_000_000);
        writer.seal().unwrap();
        let summary = brought_up_to_date(&vault, Some(kept));
        assert_eq!(summary.notable.len(), 1);
    }
}
