//! What a daemon does at its start with the jobs the previous one left
//! running (it died in the middle, maybe by `kill -9`): each resumes or
//! rolls back, so no machine stays half-way and none runs at both sites.
//!
//! | interrupted job                         | the machine is        | at the restart                         |
//! |-----------------------------------------|-----------------------|----------------------------------------|
//! | failover, planned/complete-failover     | failover-in-progress  | rolled back (back at its source)       |
//! | protect                                 | enabling              | resumed                                |
//! | reprotect (after the rebuild)           | reprotecting          | resumed                                |
//! | reprotect (before)                      | committed             | nothing to do: run it again            |
//! | unprotect                               | enabling or protected | resumed                                |
//! | test-failover                           | test-failover         | rolled back: the drill removed         |
//! | cleanup-test-failover                   | test-failover         | resumed                                |
//! | change-point                            | failed-over           | resumed (the new point is recorded)    |
//! | cancel                                  | failed-over, ready-to-complete | resumed                       |
//! | commit                                  | failed-over           | resumed                                |
//! | planned-failover --sync-first           | protected             | resumed (waits for ready-to-complete)  |
//! | machine start / stop                    | any                   | not redone; a running QEMU is adopted  |
//!
//! A job stopped by a restart is recorded `interrupted`; the one that
//! resumes or rolls it back is a new job named after it. A machine whose
//! details say a job owed it a start (`start_pending`: a cancelled
//! failover had shut its source down) is started.

use std::sync::Arc;

use standby_lifecycle::job::StepState;
use standby_lifecycle::State;

use super::failover::{CANCEL_STEPS, CHANGE_POINT_STEPS, CLEANUP_STEPS, COMMIT_STEPS, SYNC_FIRST_STEPS};
use super::protection::UNPROTECT_STEPS;
use super::Daemon;
use crate::error::ControlError;
use crate::state::Job;

/// The command of the newest job of machine `name` among `interrupted`
/// (without what a resumed job adds to its name: "cancel (resumed …)" is
/// a cancel).
pub(super) fn interrupted_command<'a>(interrupted: &'a [Job], name: &str) -> Option<&'a str> {
    let job = interrupted.iter().filter(|job| job.machine == name).max_by_key(|job| job.id)?;
    Some(job.command.split(" (").next().unwrap_or(&job.command))
}

impl Daemon {
    /// Resumes or rolls back the `interrupted` jobs the state-driven
    /// restarts (`roll_back_interrupted_failovers`, `resume_protection`)
    /// do not cover; returns what it started, one line per machine.
    pub(super) fn resume_interrupted(self: &Arc<Self>, interrupted: &[Job]) -> Result<Vec<String>, ControlError> {
        let deployment = self.deployment()?;
        let mut started = Vec::new();
        for machine in deployment.state.machines()? {
            let name = machine.definition.name.clone();
            let command = interrupted_command(interrupted, &name).unwrap_or("");
            let resumed = format!("{command} (resumed after a daemon restart)");
            let change_point = machine.details.failover.as_ref().and_then(|failover| failover.change_point.clone());
            let job = match (command, machine.state) {
                ("unprotect", State::Enabling | State::Protected) => {
                    self.spawn_job(&deployment, &name, &resumed, &UNPROTECT_STEPS, move |daemon, job| {
                        daemon.unprotect_job(&machine, job)
                    })?
                }
                ("test-failover", State::TestFailover) => self.spawn_job(
                    &deployment,
                    &name,
                    "test-failover (rolled back after a daemon restart)",
                    &CLEANUP_STEPS,
                    move |daemon, job| daemon.cleanup_job(&machine, job),
                )?,
                ("cleanup-test-failover", State::TestFailover) => {
                    self.spawn_job(&deployment, &name, &resumed, &CLEANUP_STEPS, move |daemon, job| {
                        daemon.cleanup_job(&machine, job)
                    })?
                }
                ("change-point", State::FailedOver) if change_point.is_some() => {
                    let point = change_point.expect("matched").point;
                    self.spawn_job(&deployment, &name, &resumed, &CHANGE_POINT_STEPS, move |daemon, job| {
                        daemon.change_point_job(&machine, &point, true, job)
                    })?
                }
                ("cancel", State::FailedOver | State::ReadyToComplete) => {
                    self.spawn_job(&deployment, &name, &resumed, &CANCEL_STEPS, move |daemon, job| {
                        daemon.cancel_job(&machine, job)
                    })?
                }
                ("commit", State::FailedOver) => {
                    self.spawn_job(&deployment, &name, &resumed, &COMMIT_STEPS, move |daemon, job| {
                        daemon.commit_job(&machine, job)
                    })?
                }
                ("planned-failover --sync-first", State::Protected) => {
                    self.spawn_job(&deployment, &name, &resumed, &SYNC_FIRST_STEPS, move |daemon, job| {
                        daemon.sync_first_job(&machine, job)
                    })?
                }
                _ if machine.details.start_pending.is_some() => {
                    let owed = machine.details.start_pending.as_ref().expect("matched").job;
                    let owner = name.clone();
                    self.spawn_job(
                        &deployment,
                        &name,
                        &format!("machine start (owed by job {owed}, resumed after a daemon restart)"),
                        &["start the machine"],
                        move |daemon, job| {
                            job.step("start the machine", StepState::Running, "")?;
                            let done = daemon.start_pending(job.deployment, &owner)?;
                            job.step("start the machine", StepState::Done, &done)?;
                            Ok(serde_json::json!({"name": owner, "done": done}))
                        },
                    )?
                }
                _ => continue,
            };
            started.push(format!("{}: {} (job {})", job.machine, job.command, job.job));
        }
        Ok(started)
    }
}
