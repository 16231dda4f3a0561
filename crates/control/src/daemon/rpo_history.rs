//! Each machine's RPO over the last hours, for the console's charts: the
//! highest RPO seen in each [`BUCKET`] of time, the last [`BUCKETS`] of
//! them, from the statuses the alerts loop posts. Kept in memory (a
//! restarted daemon charts from its start), a few hundred bytes a machine.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use standby_api::StatusList;

use super::lock;

/// The span of one bar of the chart, in seconds.
pub(super) const BUCKET: i64 = 600;
/// How many bars: six hours.
pub(super) const BUCKETS: usize = 36;

#[derive(Default)]
pub(super) struct RpoHistory {
    /// Per machine, (bucket number, highest RPO in it), oldest first.
    machines: Mutex<HashMap<String, VecDeque<(i64, f64)>>>,
}

impl RpoHistory {
    /// Notes the RPO of every machine in `list` at `now` (seconds since the
    /// epoch); machines no longer listed are forgotten.
    pub(super) fn record(&self, list: &StatusList, now: i64) {
        let bucket = now.div_euclid(BUCKET);
        let mut machines = lock(&self.machines);
        let mut seen = std::mem::take(&mut *machines);
        for machine in &list.machines {
            let history =
                machines.entry(machine.name.clone()).or_insert_with(|| seen.remove(&machine.name).unwrap_or_default());
            let Some(rpo) = machine.rpo_seconds else { continue };
            match history.back_mut() {
                Some((last, highest)) if *last == bucket => *highest = highest.max(rpo),
                _ => history.push_back((bucket, rpo)),
            }
            while history.front().is_some_and(|(first, _)| *first <= bucket - BUCKETS as i64) {
                history.pop_front();
            }
        }
    }

    /// The highest RPO of `machine` in each of the last [`BUCKETS`] buckets
    /// up to `now`, oldest first; none where nothing was seen.
    pub(super) fn chart(&self, machine: &str, now: i64) -> Vec<Option<f64>> {
        let newest = now.div_euclid(BUCKET);
        let machines = lock(&self.machines);
        let history = machines.get(machine);
        (newest + 1 - BUCKETS as i64..=newest)
            .map(|bucket| history?.iter().find(|(b, _)| *b == bucket).map(|(_, rpo)| *rpo))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use standby_api::MachineStatus;

    use super::*;

    fn list(rpos: &[(&str, Option<f64>)]) -> StatusList {
        let machines = rpos
            .iter()
            .map(|(name, rpo)| {
                let (state, site) = (standby_lifecycle::State::Protected, standby_lifecycle::Site::Primary);
                let mut status = MachineStatus::recorded(name, state, site, true, None);
                status.rpo_seconds = *rpo;
                status
            })
            .collect();
        StatusList { machines, plans: Vec::new() }
    }

    #[test]
    fn each_bar_is_the_highest_rpo_of_its_span() {
        let history = RpoHistory::default();
        let start = 1_000 * BUCKET;
        history.record(&list(&[("web", Some(3.0))]), start);
        history.record(&list(&[("web", Some(40.0))]), start + 10);
        history.record(&list(&[("web", Some(5.0))]), start + 20);
        history.record(&list(&[("web", Some(2.0))]), start + 2 * BUCKET);
        let chart = history.chart("web", start + 2 * BUCKET);
        assert_eq!(chart.len(), BUCKETS);
        assert_eq!(&chart[BUCKETS - 3..], &[Some(40.0), None, Some(2.0)]);
        assert!(chart[..BUCKETS - 3].iter().all(Option::is_none));
        assert!(history.chart("db", start).iter().all(Option::is_none), "a machine never seen");
    }

    #[test]
    fn bars_older_than_the_chart_and_machines_gone_are_forgotten() {
        let history = RpoHistory::default();
        let start = 1_000 * BUCKET;
        history.record(&list(&[("web", Some(9.0)), ("db", Some(1.0))]), start);
        let later = start + BUCKETS as i64 * BUCKET;
        history.record(&list(&[("web", Some(1.0))]), later);
        assert_eq!(lock(&history.machines)["web"].len(), 1, "the first bar is out of the chart");
        assert!(!lock(&history.machines).contains_key("db"), "db is no longer a machine");
        assert_eq!(history.chart("web", later).last(), Some(&Some(1.0)));
    }
}
