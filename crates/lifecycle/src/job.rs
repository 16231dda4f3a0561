//! The states of a job and of its steps (every operation is a
//! job with named steps, progress and a clear outcome).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Command, UnknownName, COMMANDS};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    MachineStart,
    MachineStop,
    /// A lifecycle command (protect, failover, …).
    Lifecycle(Command),
    /// The start a roll-back owed a machine it had shut down.
    OwedStart,
}

impl JobKind {
    /// As recorded and shown: the command an operator types.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::MachineStart => "machine start",
            JobKind::MachineStop => "machine stop",
            JobKind::Lifecycle(command) => command.name(),
            JobKind::OwedStart => "owed machine start",
        }
    }

    pub fn parse(name: &str) -> Option<JobKind> {
        [JobKind::MachineStart, JobKind::MachineStop, JobKind::OwedStart]
            .into_iter()
            .chain(COMMANDS.map(JobKind::Lifecycle))
            .find(|kind| kind.name() == name)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for JobKind {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<JobKind, UnknownName> {
        JobKind::parse(name).ok_or_else(|| UnknownName { kind: "job kind", name: name.to_string() })
    }
}

impl Serialize for JobKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl utoipa::PartialSchema for JobKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names = [JobKind::MachineStart, JobKind::MachineStop, JobKind::OwedStart]
            .into_iter()
            .chain(COMMANDS.map(JobKind::Lifecycle))
            .map(JobKind::name);
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .description(Some("What a job does: the command an operator types"))
            .into()
    }
}

impl utoipa::ToSchema for JobKind {}

impl<'de> Deserialize<'de> for JobKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<JobKind, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// How a job came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobOrigin {
    /// Asked for (the CLI, the API).
    Operator,
    /// Taken up by a daemon from where one that died left it.
    Resumed,
    /// Undone by a daemon after one that died left it half-way.
    RolledBack,
}

pub const JOB_ORIGINS: [JobOrigin; 3] = [JobOrigin::Operator, JobOrigin::Resumed, JobOrigin::RolledBack];

impl JobOrigin {
    pub fn name(self) -> &'static str {
        match self {
            JobOrigin::Operator => "operator",
            JobOrigin::Resumed => "resumed",
            JobOrigin::RolledBack => "rolled-back",
        }
    }

    pub fn parse(name: &str) -> Option<JobOrigin> {
        JOB_ORIGINS.into_iter().find(|origin| origin.name() == name)
    }

    /// What a job of this origin adds to its kind's name when shown.
    pub fn suffix(self) -> &'static str {
        match self {
            JobOrigin::Operator => "",
            JobOrigin::Resumed => " (resumed after a daemon restart)",
            JobOrigin::RolledBack => " (rolled back after a daemon restart)",
        }
    }
}

impl std::str::FromStr for JobOrigin {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<JobOrigin, UnknownName> {
        JobOrigin::parse(name).ok_or_else(|| UnknownName { kind: "job origin", name: name.to_string() })
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
        for origin in JOB_ORIGINS {
            assert_eq!(JobOrigin::parse(origin.name()), Some(origin));
            assert_eq!(serde_json::to_string(&origin).unwrap(), format!("\"{}\"", origin.name()));
        }
        let kinds = [JobKind::MachineStart, JobKind::MachineStop, JobKind::OwedStart].into_iter();
        for kind in kinds.chain(COMMANDS.map(JobKind::Lifecycle)) {
            assert_eq!(JobKind::parse(kind.name()), Some(kind));
            let text = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<JobKind>(&text).unwrap(), kind);
        }
    }
}

/// What a job acts on: one machine, or a replication group or a recovery
/// plan, whose job claims all their machines at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Subject {
    Machine(String),
    Group(String),
    Plan(String),
}

impl Subject {
    /// `machine`, `group` or `plan`.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Machine(_) => "machine",
            Subject::Group(_) => "group",
            Subject::Plan(_) => "plan",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Subject::Machine(name) | Subject::Group(name) | Subject::Plan(name) => name,
        }
    }

    /// The subject of `kind` ([`Subject::kind`]) named `name`.
    pub fn of(kind: &str, name: &str) -> Result<Subject, UnknownName> {
        match kind {
            "machine" => Ok(Subject::Machine(name.to_string())),
            "group" => Ok(Subject::Group(name.to_string())),
            "plan" => Ok(Subject::Plan(name.to_string())),
            other => Err(UnknownName { kind: "job subject", name: other.to_string() }),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.kind(), self.name())
    }
}

#[cfg(test)]
mod subject_tests {
    use super::*;

    #[test]
    fn a_subject_reads_back_from_its_kind_and_name() {
        for subject in [Subject::Machine("web".into()), Subject::Group("shop".into()), Subject::Plan("dr".into())] {
            assert_eq!(Subject::of(subject.kind(), subject.name()), Ok(subject.clone()));
            let json = serde_json::to_value(&subject).unwrap();
            assert_eq!(json["kind"], subject.kind());
            assert_eq!(serde_json::from_value::<Subject>(json).unwrap(), subject);
        }
        assert_eq!(Subject::Group("shop".into()).to_string(), "group 'shop'");
        assert!(Subject::of("cluster", "x").is_err());
    }
}
