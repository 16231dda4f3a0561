//! The status board: every machine's status as last found, for the views
//! of the whole fleet (`GET /v1/status`, the console's replicated items,
//! `/metrics`, `sites` and the alerts). Finding a machine's status asks its
//! splitters and reads its journals' summaries; with a thousand machines a
//! view that found them all at each request would keep the daemon busy and
//! its operators waiting.
//!
//! The alerts loop posts a new board every few seconds. A view takes the
//! board posted unless the state changed since it was found (SQLite's
//! `data_version`, seen through a connection of the board's own: a
//! protect, a failover's step, a machine added or an alert raised all
//! commit), or it is older than [`OLDEST`]; then it finds the statuses
//! itself, one view at a time (the others wait and take its board), and
//! posts them. One machine's status (`status NAME`, a machine's page) is
//! always found at the request.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use standby_api::StatusList;

use super::lock;
use crate::error::ControlError;
use crate::state::State;

/// The oldest board a view takes.
const OLDEST: Duration = Duration::from_secs(5);

/// Every machine's status, found at one moment.
pub(super) struct Posted {
    pub(super) list: StatusList,
    /// The state's version before the statuses were found.
    data_version: i64,
    found: Instant,
    /// `list` as JSON, made at its first request.
    json: OnceLock<Bytes>,
}

impl Posted {
    /// The statuses as `GET /v1/status` sends them.
    pub(super) fn json(&self) -> Bytes {
        self.json.get_or_init(|| Bytes::from(serde_json::to_vec(&self.list).expect("statuses serialise"))).clone()
    }
}

#[derive(Default)]
pub(super) struct Board {
    /// The board's own connection to the state, opened at first use.
    watch: Mutex<Option<State>>,
    posted: Mutex<Option<Arc<Posted>>>,
    /// Held while statuses are found for the board.
    finding: Mutex<()>,
}

impl Board {
    /// The state's version now.
    pub(super) fn data_version(&self, state_file: &std::path::Path) -> Result<i64, ControlError> {
        let mut watch = lock(&self.watch);
        if watch.is_none() {
            *watch = Some(State::open(state_file)?);
        }
        watch.as_ref().expect("opened").data_version()
    }

    /// The board posted, while the state has not changed since and it is
    /// not too old.
    fn current(&self, data_version: i64) -> Option<Arc<Posted>> {
        lock(&self.posted)
            .as_ref()
            .filter(|posted| posted.data_version == data_version && posted.found.elapsed() < OLDEST)
            .cloned()
    }

    /// The statuses of every machine: the board posted if it is current,
    /// otherwise those `find` finds (posted for the next views).
    pub(super) fn view(
        &self,
        state_file: &std::path::Path,
        find: impl FnOnce() -> Result<StatusList, ControlError>,
    ) -> Result<Arc<Posted>, ControlError> {
        if let Some(posted) = self.current(self.data_version(state_file)?) {
            return Ok(posted);
        }
        let _finding = lock(&self.finding);
        // Another view may have found them while this one waited.
        let data_version = self.data_version(state_file)?;
        if let Some(posted) = self.current(data_version) {
            return Ok(posted);
        }
        self.find_and_post(data_version, find)
    }

    /// Finds every machine's status now and posts it (the alerts loop).
    pub(super) fn refresh(
        &self,
        state_file: &std::path::Path,
        find: impl FnOnce() -> Result<StatusList, ControlError>,
    ) -> Result<Arc<Posted>, ControlError> {
        let _finding = lock(&self.finding);
        let data_version = self.data_version(state_file)?;
        self.find_and_post(data_version, find)
    }

    fn find_and_post(
        &self,
        data_version: i64,
        find: impl FnOnce() -> Result<StatusList, ControlError>,
    ) -> Result<Arc<Posted>, ControlError> {
        let found = Instant::now();
        let posted = Arc::new(Posted { list: find()?, data_version, found, json: OnceLock::new() });
        *lock(&self.posted) = Some(posted.clone());
        Ok(posted)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn list(names: &[&str]) -> StatusList {
        let machines = names
            .iter()
            .map(|name| {
                let (state, site) = (standby_lifecycle::State::Unprotected, standby_lifecycle::Site::Primary);
                standby_api::MachineStatus::recorded(name, state, site, false, None)
            })
            .collect();
        StatusList { machines, plans: Vec::new() }
    }

    /// Views take the posted board until the state changes; then one finds
    /// the statuses again.
    #[test]
    fn a_view_finds_the_statuses_again_once_the_state_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.db");
        let writer = State::create(&file).unwrap();
        let board = Board::default();
        let found = Cell::new(0);
        let find = |names: &'static [&'static str]| {
            let found = &found;
            move || {
                found.set(found.get() + 1);
                Ok(list(names))
            }
        };
        assert_eq!(board.view(&file, find(&["a"])).unwrap().list.machines.len(), 1);
        assert_eq!(board.view(&file, find(&["a", "b"])).unwrap().list.machines.len(), 1, "the board posted");
        assert_eq!(found.get(), 1);
        assert!(String::from_utf8(board.view(&file, find(&[])).unwrap().json().to_vec()).unwrap().contains("\"a\""));
        writer.add_host(standby_lifecycle::Site::Primary, "10.0.0.1:7443").unwrap();
        assert_eq!(board.view(&file, find(&["a", "b"])).unwrap().list.machines.len(), 2, "found again");
        assert_eq!(found.get(), 2);
        board.refresh(&file, find(&["c"])).unwrap();
        assert_eq!(board.view(&file, find(&[])).unwrap().list.machines[0].name, "c");
        assert_eq!(found.get(), 3);
    }
}
