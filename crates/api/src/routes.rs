//! The daemon's routes, in one place for the server and the client.
//!
//! ```text
//! GET  /v1/health                              Health
//! GET  /v1/machines                            MachineList
//! POST /v1/machines                            AddMachine -> MachineView
//! POST /v1/machines/NAME/start                 -> Started
//! POST /v1/machines/NAME/stop                  StopRequest -> Stopped
//! POST /v1/machines/NAME/nics                  SetNics -> MachineView
//! POST /v1/machines/NAME/protect               ProtectRequest -> JobStarted
//! POST /v1/machines/NAME/unprotect             -> JobStarted
//! POST /v1/machines/NAME/test-failover         PointRequest -> JobStarted
//! POST /v1/machines/NAME/cleanup-test-failover -> JobStarted
//! POST /v1/machines/NAME/failover              FailoverRequest -> JobStarted
//! POST /v1/machines/NAME/planned-failover      PlannedFailoverRequest -> JobStarted
//! POST /v1/machines/NAME/complete-failover     -> JobStarted
//! POST /v1/machines/NAME/change-point          PointRequest (point required) -> JobStarted
//! POST /v1/machines/NAME/commit, …/cancel      -> JobStarted
//! POST /v1/machines/NAME/reprotect             ReprotectRequest -> JobStarted
//! GET  /v1/machines/NAME/points                MachinePoints
//! GET  /v1/status, /v1/status/NAME             StatusList
//! GET  /v1/jobs, /v1/jobs/ID                   JobList, Job
//! GET  /v1/policies                            PolicyList
//! POST /v1/policies                            Policy -> Policy
//! GET  /v1/sites                               SiteList
//! GET  /v1/groups, /v1/groups/NAME             GroupList, GroupView
//! GET  /v1/plans, /v1/plans/NAME               PlanList, PlanView
//! POST /v1/plans                               PlanSource -> PlanView
//! POST /v1/plans/validate                      PlanSource -> PlanView (nothing kept)
//! DELETE /v1/plans/NAME                        -> PlanDeleted
//! POST /v1/plans/NAME/schedule                 PlanSchedule -> PlanView (scheduled drills)
//! POST /v1/plans/NAME/OPERATION                PlanJobRequest -> JobStarted (a lifecycle command's
//!                                              name but protect/unprotect, or resume)
//! GET  /v1/tokens                              TokenList (admin)
//! POST /v1/tokens                              TokenRequest -> NewToken (admin)
//! DELETE /v1/tokens/NAME                       -> TokenRevoked (admin)
//! GET  /v1/audit?limit=N                       AuditList
//! GET  /v1/alerts?all=BOOL                     AlertList
//! ```
//!
//! Every POST takes a JSON body (`{}` when it has no fields); every answer
//! is JSON, an [`ErrorBody`](crate::ErrorBody) when the status is not 200.

use standby_lifecycle::Command;

pub const HEALTH: &str = "/v1/health";
pub const MACHINES: &str = "/v1/machines";
pub const STATUS: &str = "/v1/status";
pub const JOBS: &str = "/v1/jobs";
pub const POLICIES: &str = "/v1/policies";
pub const SITES: &str = "/v1/sites";
pub const GROUPS: &str = "/v1/groups";
pub const PLANS: &str = "/v1/plans";
pub const PLAN_VALIDATE: &str = "/v1/plans/validate";
pub const TOKENS: &str = "/v1/tokens";
pub const AUDIT: &str = "/v1/audit";
pub const ALERTS: &str = "/v1/alerts";
/// Prometheus' metrics (OpenMetrics text).
pub const METRICS: &str = "/metrics";
/// The OpenAPI document of every route.
pub const OPENAPI: &str = "/api/openapi.json";

pub fn token(name: &str) -> String {
    format!("{TOKENS}/{}", encode(name))
}

/// An operation on one machine: `/v1/machines/NAME/OPERATION`.
pub fn machine(name: &str, operation: &str) -> String {
    format!("{MACHINES}/{}/{operation}", encode(name))
}

/// The path segment of a lifecycle command: its name, without its flags
/// (they travel in the request's body).
pub fn operation(command: Command) -> &'static str {
    match command {
        Command::PlannedFailover { .. } => "planned-failover",
        command => command.name(),
    }
}

pub fn group(name: &str) -> String {
    format!("{GROUPS}/{}", encode(name))
}

pub fn plan(name: &str) -> String {
    format!("{PLANS}/{}", encode(name))
}

/// A plan's operation: `/v1/plans/NAME/OPERATION`.
pub fn plan_operation(name: &str, operation: &str) -> String {
    format!("{PLANS}/{}/{operation}", encode(name))
}

/// The plan route that sets its drills' schedule.
pub const SCHEDULE: &str = "schedule";

/// The plan operation that resumes a plan.
pub const RESUME: &str = "resume";

pub fn status_of(name: &str) -> String {
    format!("{STATUS}/{}", encode(name))
}

pub fn job(id: i64) -> String {
    format!("{JOBS}/{id}")
}

/// `text` as one URL path segment (percent-encoded).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lifecycle_command_is_one_path_segment() {
        for command in standby_lifecycle::COMMANDS {
            let segment = operation(command);
            assert!(segment.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{segment}");
            assert!(command.name().starts_with(segment));
        }
    }
}
