//! What a daemon does at its start with the jobs the previous one left
//! running (it died in the middle, maybe by `kill -9`): each resumes or
//! rolls back, so no machine stays half-way and none runs at both sites.
//! [`take_up`] is the one table, pure; [`Daemon::take_up_interrupted`]
//! acts on it.
//!
//! | interrupted job                         | the machine is        | at the restart                         |
//! |-----------------------------------------|-----------------------|----------------------------------------|
//! | failover, planned/complete-failover     | failover-in-progress  | rolled back (back at its source)       |
//! | unprotect                               | enabling, protected or reprotecting | resumed                  |
//! | protect                                 | enabling              | resumed                                |
//! | reprotect (after the rebuild)           | reprotecting          | resumed                                |
//! | reprotect (before)                      | committed             | nothing to do: run it again            |
//! | test-failover                           | test-failover         | rolled back: the drill removed         |
//! | cleanup-test-failover                   | test-failover         | resumed                                |
//! | change-point                            | failed-over           | resumed (the new point is recorded)    |
//! | cancel                                  | failed-over, ready-to-complete | resumed                       |
//! | commit                                  | failed-over           | resumed                                |
//! | planned-failover --sync-first           | protected             | resumed (waits for ready-to-complete)  |
//! | machine start / stop                    | any                   | not redone; a running QEMU is adopted  |
//! | any other, or none, with a start owed   | any                   | the machine is started                 |
//!
//! A job stopped by a restart is recorded `interrupted`; the one that
//! resumes or rolls it back is a new job of the same kind whose origin
//! says so. A machine whose records say a job owed it a start
//! (`start_pending`: a cancelled failover had shut its source down) is
//! started. Before any of it, a replicated machine's splitters are adopted
//! or started again (their intent logs saying what to re-read), except
//! where the job taken up starts them itself in its own order.

use std::sync::Arc;

use standby_api::JobStarted;
use standby_lifecycle::job::{JobKind, JobOrigin, StepState};
use standby_lifecycle::{Command, State};

use super::engine::transition_of;
use super::failover::{CANCEL_STEPS, CHANGE_POINT_STEPS, CLEANUP_STEPS, COMMIT_STEPS, SYNC_FIRST_STEPS};
use super::protection::{PROTECT_STEPS, UNPROTECT_STEPS};
use super::Daemon;
use crate::error::ControlError;
use crate::machine::Machine;
use crate::points::MachinePoint;
use crate::records::{JobId, MachineRecords};
use crate::state::Job;

/// What a restarted daemon does about one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TakeUp {
    /// No job to finish or undo.
    Nothing,
    RollBackFailover,
    ResumeUnprotect,
    ResumeProtect,
    ResumeReprotect,
    RemoveDrill,
    ResumeCleanup,
    ResumeChangePoint(MachinePoint),
    ResumeCancel,
    ResumeCommit,
    ResumeSyncFirst,
    /// Start the machine, as job `JobId` owed it.
    OwedStart(JobId),
}

/// The table: what to do about a machine in `state` whose newest job, left
/// running by a dead daemon, was `interrupted`, given its records.
pub(super) fn take_up(state: State, interrupted: Option<JobKind>, records: &MachineRecords) -> TakeUp {
    use Command as C;
    use JobKind::Lifecycle as L;
    use State as S;
    let change_point = records.failover.as_ref().and_then(|failover| failover.change_point.as_ref());
    match (interrupted, state) {
        // Every failover (unplanned, planned, complete) is undone the same way.
        (_, S::FailoverInProgress) => TakeUp::RollBackFailover,
        (Some(L(C::Unprotect)), S::Enabling | S::Protected | S::Reprotecting) => TakeUp::ResumeUnprotect,
        (_, S::Enabling) => TakeUp::ResumeProtect,
        (_, S::Reprotecting) => TakeUp::ResumeReprotect,
        (Some(L(C::TestFailover)), S::TestFailover) => TakeUp::RemoveDrill,
        (Some(L(C::CleanupTestFailover)), S::TestFailover) => TakeUp::ResumeCleanup,
        (Some(L(C::ChangePoint)), S::FailedOver) if change_point.is_some() => {
            TakeUp::ResumeChangePoint(change_point.expect("matched").point.clone())
        }
        (Some(L(C::Cancel)), S::FailedOver | S::ReadyToComplete) => TakeUp::ResumeCancel,
        (Some(L(C::Commit)), S::FailedOver) => TakeUp::ResumeCommit,
        (Some(L(C::PlannedFailover { sync_first: true })), S::Protected) => TakeUp::ResumeSyncFirst,
        _ => match &records.start_pending {
            Some(owed) => TakeUp::OwedStart(owed.job),
            None => TakeUp::Nothing,
        },
    }
}

/// The kind of the newest job of machine `name` among `interrupted`.
fn interrupted_kind(interrupted: &[Job], name: &str) -> Option<JobKind> {
    // A group's job names the group: its machines' own parts are jobs of theirs.
    let of_machine = |job: &&Job| job.subject == standby_lifecycle::job::Subject::Machine(name.to_string());
    interrupted.iter().filter(of_machine).max_by_key(|job| job.id).map(|job| job.kind)
}

impl Daemon {
    /// At the daemon's start: every machine's splitters back, and the jobs
    /// `interrupted` resumed or rolled back; returns what it started, one
    /// line per job, and the machines it could not take up with why.
    pub(super) fn take_up_interrupted(self: &Arc<Self>, interrupted: &[Job]) -> (Vec<String>, Vec<String>) {
        let (mut started, mut failed) = (Vec::new(), Vec::new());
        let machines = match self.deployment().and_then(|deployment| deployment.state.machines()) {
            Ok(machines) => machines,
            Err(e) => return (started, vec![format!("the state could not be read ({e})")]),
        };
        for machine in machines {
            let name = machine.name().to_string();
            let kind = interrupted_kind(interrupted, &name);
            let action = take_up(machine.state, kind, &machine.details);
            match self.take_up_machine(machine, kind, action) {
                Ok(Some(job)) => started.push(format!("{}: {} (job {})", job.machine, job.command, job.job)),
                Ok(None) => {}
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
        (started, failed)
    }

    fn take_up_machine(
        self: &Arc<Self>,
        machine: Machine,
        interrupted: Option<JobKind>,
        action: TakeUp,
    ) -> Result<Option<JobStarted>, ControlError> {
        let deployment = self.deployment()?;
        let name = machine.name().to_string();
        self.restore_splitters(&deployment, &machine, &action)?;
        use JobKind::Lifecycle as L;
        use JobOrigin::{Resumed, RolledBack};
        let job = match action {
            TakeUp::Nothing => {
                self.restore_exports(&deployment, &machine)?;
                return Ok(None);
            }
            TakeUp::RollBackFailover => {
                let undone = transition_of(&machine, Command::Failover)?.undone;
                let kind = interrupted.unwrap_or(L(Command::Failover));
                let steps = ["roll back the interrupted failover"];
                self.spawn_job(&deployment, &name, kind, RolledBack, &steps, move |daemon, job| {
                    job.step(steps[0], StepState::Running, "")?;
                    let done = daemon.roll_back_failover(job.deployment, &machine, &machine.details, undone, job.id)?;
                    job.step(steps[0], StepState::Done, &done.join("; "))?;
                    Ok(())
                })?
            }
            TakeUp::ResumeUnprotect => self.spawn_job(
                &deployment,
                &name,
                L(Command::Unprotect),
                Resumed,
                &UNPROTECT_STEPS,
                move |daemon, job| daemon.unprotect_job(&machine, job),
            )?,
            TakeUp::ResumeProtect => {
                self.spawn_job(&deployment, &name, L(Command::Protect), Resumed, &PROTECT_STEPS, move |daemon, job| {
                    daemon.protect_or_roll_back(&machine, job)
                })?
            }
            TakeUp::ResumeReprotect => self.resume_reprotect(&deployment, machine, Resumed)?,
            TakeUp::RemoveDrill => self.spawn_job(
                &deployment,
                &name,
                L(Command::TestFailover),
                RolledBack,
                &CLEANUP_STEPS,
                move |daemon, job| daemon.cleanup_job(&machine, job),
            )?,
            TakeUp::ResumeCleanup => self.spawn_job(
                &deployment,
                &name,
                L(Command::CleanupTestFailover),
                Resumed,
                &CLEANUP_STEPS,
                move |daemon, job| daemon.cleanup_job(&machine, job),
            )?,
            TakeUp::ResumeChangePoint(point) => self.spawn_job(
                &deployment,
                &name,
                L(Command::ChangePoint),
                Resumed,
                &CHANGE_POINT_STEPS,
                move |daemon, job| daemon.change_point_job(&machine, &point, true, job),
            )?,
            TakeUp::ResumeCancel => {
                self.spawn_job(&deployment, &name, L(Command::Cancel), Resumed, &CANCEL_STEPS, move |daemon, job| {
                    daemon.cancel_job(&machine, job)
                })?
            }
            TakeUp::ResumeCommit => {
                self.spawn_job(&deployment, &name, L(Command::Commit), Resumed, &COMMIT_STEPS, move |daemon, job| {
                    daemon.commit_job(&machine, job)
                })?
            }
            TakeUp::ResumeSyncFirst => self.spawn_job(
                &deployment,
                &name,
                L(Command::PlannedFailover { sync_first: true }),
                Resumed,
                &SYNC_FIRST_STEPS,
                move |daemon, job| daemon.sync_first_job(&machine, job),
            )?,
            TakeUp::OwedStart(owed) => {
                let steps = ["start the machine"];
                self.spawn_job(&deployment, &name, JobKind::OwedStart, Resumed, &steps, move |daemon, job| {
                    job.step(steps[0], StepState::Running, &format!("owed by job {owed}"))?;
                    let done = daemon.start_pending(job.deployment, machine.name())?;
                    job.step(steps[0], StepState::Done, &done)?;
                    Ok(())
                })?
            }
        };
        Ok(Some(job))
    }

    /// The exports a machine runs on (from its failover point, or a
    /// drill's), adopted or started again on their overlays, so they are
    /// supervised like the ones this daemon starts. Only for a machine no
    /// job is taken up for (those jobs decide about its exports).
    fn restore_exports(
        &self,
        deployment: &crate::deployment::Deployment,
        machine: &Machine,
    ) -> Result<(), ControlError> {
        let name = machine.name();
        if machine.state.on_exports() {
            self.serve_point(deployment, machine, machine.details.failover_point(name)?, machine.active_site.into())?;
        }
        if let Some(drill) = &machine.details.drill {
            self.serve_point(deployment, machine, &drill.point, standby_lifecycle::Instance::Drill)?;
        }
        Ok(())
    }

    /// A replicated machine's splitters adopted or started again (their
    /// intent logs saying what to re-read), unless the job taken up starts
    /// them itself in its own order; a machine found running off them is
    /// moved back onto them, its disks re-read in full.
    fn restore_splitters(
        &self,
        deployment: &crate::deployment::Deployment,
        machine: &Machine,
        action: &TakeUp,
    ) -> Result<(), ControlError> {
        let own_splitters = matches!(action, TakeUp::ResumeUnprotect | TakeUp::ResumeReprotect);
        if !machine.state.replicating() || own_splitters {
            return Ok(());
        }
        // (An unprotect, or the roll-back of a failed protect, that a daemon
        // died in the middle of.)
        if self.reattach_splitters(deployment, machine)? {
            eprintln!(
                "standby: machine '{}' was running off its splitters: moved back onto them, its disks re-read in \
                 full",
                machine.name()
            );
        }
        // (An unfinished protect starts them itself, the guest paused.)
        if *action != TakeUp::ResumeProtect {
            self.ensure_splitters(deployment, machine)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ChangePointRecord, FailoverRecord, StartPending};
    use standby_lifecycle::{Site, STATES};

    fn point() -> MachinePoint {
        MachinePoint { asked: "latest".into(), time_micros: 1, time: "t".into(), described: "latest".into() }
    }

    /// Every state with every interrupted job (and none) has exactly one
    /// row, and the rows that act on a machine agree with the lifecycle: a
    /// resumed command is one the state accepts or is in flight in.
    #[test]
    fn the_table_covers_every_state_and_job_and_agrees_with_the_lifecycle() {
        let mut records = MachineRecords::default();
        let mut failover = FailoverRecord::new(3, Site::Primary, true);
        failover.change_point = Some(ChangePointRecord { job: 4, point: point() });
        records.failover = Some(failover);
        let kinds = standby_lifecycle::COMMANDS.map(JobKind::Lifecycle);
        for state in STATES {
            for interrupted in kinds.iter().copied().map(Some).chain([None, Some(JobKind::MachineStart)]) {
                let action = take_up(state, interrupted, &records);
                let command = match action {
                    TakeUp::RollBackFailover => Some(Command::Failover),
                    TakeUp::ResumeUnprotect => Some(Command::Unprotect),
                    TakeUp::ResumeProtect => Some(Command::Protect),
                    TakeUp::ResumeReprotect => Some(Command::Reprotect),
                    TakeUp::RemoveDrill | TakeUp::ResumeCleanup => Some(Command::CleanupTestFailover),
                    TakeUp::ResumeChangePoint(_) => Some(Command::ChangePoint),
                    TakeUp::ResumeCancel => Some(Command::Cancel),
                    TakeUp::ResumeCommit => Some(Command::Commit),
                    TakeUp::ResumeSyncFirst => Some(Command::PlannedFailover { sync_first: true }),
                    TakeUp::Nothing | TakeUp::OwedStart(_) => None,
                };
                if let Some(command) = command {
                    let accepted = standby_lifecycle::transition(state, command).is_ok()
                        || standby_lifecycle::in_flight(state, command).is_some();
                    assert!(accepted, "{state} with {interrupted:?} takes up {command:?}, which it cannot run");
                }
            }
        }
        assert_eq!(take_up(State::FailoverInProgress, None, &records), TakeUp::RollBackFailover);
        assert_eq!(take_up(State::Enabling, None, &records), TakeUp::ResumeProtect);
        let unprotect = Some(JobKind::Lifecycle(Command::Unprotect));
        assert_eq!(take_up(State::Enabling, unprotect, &records), TakeUp::ResumeUnprotect);
        let change = Some(JobKind::Lifecycle(Command::ChangePoint));
        assert_eq!(take_up(State::FailedOver, change, &records), TakeUp::ResumeChangePoint(point()));
        assert_eq!(take_up(State::Protected, None, &records), TakeUp::Nothing);
        records.start_pending = Some(StartPending { job: 9, why: "undone".into() });
        assert_eq!(take_up(State::Protected, None, &records), TakeUp::OwedStart(9));
    }
}
