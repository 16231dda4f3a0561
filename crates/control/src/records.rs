//! What the lifecycle remembers about a machine between the steps of its
//! jobs and between jobs (the `details` column of `machines`): the drill
//! that runs, the failover in flight or done, a start a job owes the
//! machine, the reprotect in flight and the last one done.
//!
//! Each record is written before the act it allows a restarted daemon to
//! finish or undo (see `daemon/restart.rs`), and read back typed: a record
//! this version cannot read fails the read instead of being dropped.
//!
//! The JSON shape is the one versions 3 of the state schema have written
//! since the column exists (`machine list --json` shows it as `details`);
//! a field added later is optional, so older records read as they are.

use serde::{Deserialize, Serialize};
use standby_lifecycle::Site;

use crate::error::ControlError;
use crate::points::MachinePoint;

pub use standby_api::JobId;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecords {
    /// The drill copy (test failover) that runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillRecord>,
    /// The failover in flight (`failover-in-progress`) or done, until
    /// reprotect replicates the machine back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverRecord>,
    /// A job stopped the machine and owes it a start (a failover that was
    /// undone after it shut the source down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_pending: Option<StartPending>,
    /// The reprotect in flight (`reprotecting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprotect: Option<ReprotectRecord>,
    /// The last reprotect that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprotected: Option<ReprotectedRecord>,
}

impl MachineRecords {
    /// The failover of machine `name`, which its state says it has.
    pub fn failover_mut(&mut self, name: &str) -> Result<&mut FailoverRecord, ControlError> {
        self.failover.as_mut().ok_or_else(|| {
            ControlError::Failed(format!("machine '{name}' has no failover recorded; the state is damaged"))
        })
    }

    /// The point machine `name` runs from after its failover.
    pub fn failover_point(&self, name: &str) -> Result<&MachinePoint, ControlError> {
        self.failover.as_ref().and_then(|failover| failover.point.as_ref()).ok_or_else(|| {
            ControlError::Failed(format!("machine '{name}' has no failover point recorded; the state is damaged"))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub point: MachinePoint,
    pub job: JobId,
}

/// A failover, from its first step: what a roll-back needs (where the
/// machine came from, whether its source ran and what was done to it) and
/// what the failed-over machine runs on (the point).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    pub job: JobId,
    pub from_site: Site,
    /// Recorded before anything is stopped: a roll-back starts the source
    /// again when it ran.
    pub source_was_running: bool,
    /// What happened to the source; absent while it is being shut down
    /// (a daemon that died there lets a shutdown finish before deciding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_shut_down: Option<bool>,
    /// The point the copy runs from, once chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<MachinePoint>,
    /// When the copy started (µs since the epoch): a write the old source
    /// makes after it is a split brain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<i64>,
    /// From the source stopped to the copy started, for a planned move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// A change of point in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_point: Option<ChangePointRecord>,
    /// When it was committed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<String>,
}

impl FailoverRecord {
    pub fn new(job: JobId, from_site: Site, source_was_running: bool) -> FailoverRecord {
        FailoverRecord {
            job,
            from_site,
            source_was_running,
            source: None,
            source_shut_down: None,
            point: None,
            diverged: None,
            downtime_ms: None,
            change_point: None,
            committed: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePointRecord {
    pub job: JobId,
    pub point: MachinePoint,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartPending {
    pub job: JobId,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReprotectRecord {
    pub job: JobId,
    /// The guest writes through the reverse splitters: the overlays must
    /// not be copied over its disks again.
    pub switched: bool,
    pub alternate_location: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReprotectedRecord {
    pub job: JobId,
    pub bytes_moved: u64,
    pub to: Site,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as the previous version wrote them (`json!` by key paths)
    /// read back whole, and write back the same.
    #[test]
    fn records_written_by_the_untyped_version_read_back() {
        let point =
            r#"{"asked": "latest", "time_micros": 1, "time": "1970-01-01T00:00:00.000001Z", "described": "latest"}"#;
        let text = format!(
            r#"{{"failover": {{"job": 7, "from_site": "primary", "source_was_running": true,
                 "source": "the source shut down cleanly", "source_shut_down": true, "point": {point},
                 "diverged": 1764000000000000, "downtime_ms": 150, "committed": "2026-11-24T02:00:00Z"}},
                "reprotected": {{"job": 9, "bytes_moved": 4096, "to": "primary"}},
                "start_pending": {{"job": 8, "why": "the failover it stopped it for was undone"}}}}"#
        );
        let records: MachineRecords = serde_json::from_str(&text).unwrap();
        let failover = records.failover.as_ref().unwrap();
        assert_eq!(
            (failover.from_site, failover.downtime_ms, failover.source_shut_down),
            (Site::Primary, Some(150), Some(true))
        );
        assert_eq!(records.reprotected.as_ref().unwrap().to, Site::Primary);
        let again: serde_json::Value = serde_json::to_value(&records).unwrap();
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(&text).unwrap());
        assert_eq!(serde_json::to_string(&MachineRecords::default()).unwrap(), "{}");
    }

    #[test]
    fn a_record_this_version_cannot_read_is_an_error() {
        assert!(serde_json::from_str::<MachineRecords>(r#"{"failover": {"job": "seven"}}"#).is_err());
        assert!(serde_json::from_str::<MachineRecords>(
            r#"{"reprotected": {"job": 1, "bytes_moved": 1, "to": "mars"}}"#
        )
        .is_err());
    }
}
