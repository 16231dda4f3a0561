//! The states of a job and of its steps (DESIGN.md §2: every operation is a
//! job with named steps, progress and a clear outcome).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::UnknownName;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    /// The daemon stopped (or died) while it ran; a later job named after
    /// it resumed or rolled it back.
    Interrupted,
}

pub const JOB_STATES: [JobState; 4] = [JobState::Running, JobState::Succeeded, JobState::Failed, JobState::Interrupted];

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Interrupted => "interrupted",
        }
    }

    pub fn parse(name: &str) -> Option<JobState> {
        JOB_STATES.into_iter().find(|state| state.name() == name)
    }

    /// Whether the job has ended (any way but running).
    pub fn ended(self) -> bool {
        self != JobState::Running
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for JobState {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<JobState, UnknownName> {
        JobState::parse(name).ok_or_else(|| UnknownName { kind: "job state", name: name.to_string() })
    }
}

/// Where one step of a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
}

pub const STEP_STATES: [StepState; 4] = [StepState::Pending, StepState::Running, StepState::Done, StepState::Failed];

impl StepState {
    pub fn name(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
        }
    }

    pub fn parse(name: &str) -> Option<StepState> {
        STEP_STATES.into_iter().find(|state| state.name() == name)
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serde_agrees_with_them() {
        for state in JOB_STATES {
            assert_eq!(JobState::parse(state.name()), Some(state));
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("\"{state}\""));
        }
        for state in STEP_STATES {
            assert_eq!(StepState::parse(state.name()), Some(state));
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("\"{state}\""));
        }
    }
}
