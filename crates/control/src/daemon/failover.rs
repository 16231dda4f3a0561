//! Drills and failovers: a machine booted at the recovery site, at once,
//! from a recovery point (each disk an export of the point with an overlay
//! taking its writes, so the boot does not wait for a restore and its
//! writes are tracked from the first one).
//!
//! - `test-failover` boots a drill copy (`NAME@drill`) whose NICs are on
//!   the site's isolated test network (`network`) while replication
//!   carries on;
//!   `cleanup-test-failover` removes the copy, its exports, overlays,
//!   sockets and logs, and lists them.
//! - `failover` (optionally shutting the source down first, then waiting
//!   for its last writes to reach the vault) boots `NAME@recovery`;
//!   `change-point` boots it again from another point; `cancel` stops it
//!   and returns the machine to its source, restarting the source when the
//!   failover had shut it down; `commit` makes the move final.
//!
//! Writes a recovery VM made are never deleted by these commands: a
//! change of point or a cancel sets its overlays aside in
//! `sites/recovery/set-aside/NAME-jobID/` and says so.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use standby_api::JobStarted;
use standby_lifecycle::job::{StepState, Subject};
use standby_lifecycle::{Command, Instance, Site, State, Transition};

use super::engine::{check, transition_of, Part};
use super::files::{overlay_path, site_folder};
use super::group_jobs::Agreement;
use super::protection::{mark_sealed, Unanswered, SPLITTER_BACK_WITHIN};
use super::{instance, Daemon, JobSteps, Launched, POWER_DOWN_TIMEOUT};
use crate::agent::ExportSpec;
use crate::deployment::Deployment;
use crate::error::ControlError;
use crate::machine::Machine;
use crate::points::{self, MachinePoint};
use crate::qemu::Drive;
use crate::records::{ChangePointRecord, DrillRecord, FailoverRecord, MachineRecords, StartPending};
use crate::site::Shutdown;

/// Where a site's exports keep their sockets, pid files and logs.
pub(super) fn exports_dir(deployment: &Deployment) -> PathBuf {
    deployment.run_dir().join("exports")
}

/// A failover forced by a disaster, or a planned move that loses nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Move {
    Unplanned { shutdown_source: bool },
    Planned,
}

pub(super) const TEST_FAILOVER_STEPS: [&str; 3] = ["choose the point", "serve the point", "boot the drill copy"];
pub(super) const CLEANUP_STEPS: [&str; 1] = ["remove the drill copy, its exports and overlays"];
pub(super) const SYNC_FIRST_STEPS: [&str; 1] = ["replicate until the remaining delta is small"];
pub(super) const CHANGE_POINT_STEPS: [&str; 4] =
    ["stop the recovery VM", "set its writes aside", "serve the new point", "boot at the recovery site"];
pub(super) const CANCEL_STEPS: [&str; 1] = ["return to the source"];
pub(super) const COMMIT_STEPS: [&str; 2] = ["stop replication from the old source", "commit"];

/// How long `cancel` waits for a failover it stopped to roll back: the
/// roll-back may wait for a guest's clean shutdown and start it again.
pub(super) const FAILOVER_STOP_TIMEOUT: Duration = Duration::from_secs(POWER_DOWN_TIMEOUT.as_secs() + 120);

/// How long a failover waits for the source's last writes to reach the vault.
const LAST_WRITES_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a failover asks the splitters whether the last writes are in.
const LAST_WRITES_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How often a roll-back looks whether a source on its way down stopped.
const SOURCE_DOWN_POLL_INTERVAL: Duration = Duration::from_millis(200);

impl Daemon {
    /// Starts (or adopts) an export of `point` for every disk of `machine`
    /// for `role` (a drill, or the instance at the site the machine fails
    /// over to) and returns the drives on them. The exports read the vault
    /// at the site the copy runs at.
    pub(super) fn serve_point(
        &self,
        deployment: &Deployment,
        machine: &Machine,
        point: &MachinePoint,
        role: Instance,
    ) -> Result<Vec<Drive>, ControlError> {
        let site = role.site(machine.active_site);
        let host = self.site(site);
        let run_dir = exports_dir(deployment);
        let vault = deployment.vault_at(site);
        let mut drives = Vec::new();
        for (index, disk) in machine.disks.iter().enumerate() {
            let name = instance(&disk.vault_disk, role);
            let overlay = overlay_path(deployment, machine, index, role);
            if let Some(parent) = overlay.parent() {
                host.create_dir(parent)?;
            }
            let socket = host.serve_export(&ExportSpec {
                name,
                disk: disk.vault_disk.clone(),
                vault: vault.clone(),
                point: point.time.clone(),
                overlay,
                run_dir: run_dir.clone(),
                netns: deployment.netns(site),
                // A failed-over machine's disk becomes local in the
                // background; a drill's is short-lived.
                hydrate: role != Instance::Drill,
            })?;
            drives.push(Drive::Nbd { socket, export: disk.vault_disk.clone() });
        }
        Ok(drives)
    }

    /// Stops the exports of `machine` for `role` (see [`Daemon::serve_point`]); returns the files they used.
    pub(super) fn stop_exports(
        &self,
        deployment: &Deployment,
        machine: &Machine,
        role: Instance,
    ) -> Result<Vec<PathBuf>, ControlError> {
        let run_dir = exports_dir(deployment);
        let host = self.host_of(machine, role);
        let mut removed = Vec::new();
        for disk in &machine.disks {
            removed.extend(host.stop_export(&instance(&disk.vault_disk, role), &run_dir)?);
        }
        Ok(removed)
    }

    /// Ends `role` of `machine`: ACPI power-down with the usual timeout, or
    /// at once. Returns how it ended, or `None` when it was not running.
    fn stop_instance(&self, machine: &Machine, role: Instance, at_once: bool) -> Result<Option<String>, ControlError> {
        let how = if at_once { Shutdown::PowerCut } else { Shutdown::PowerDown(POWER_DOWN_TIMEOUT) };
        let stopped = self.host_of(machine, role).stop_machine(&instance(machine.name(), role), how)?;
        Ok(stopped.map(|stopped| stopped.describe()))
    }

    /// Boots `instance` of `machine` on `drives`.
    fn boot(
        &self,
        deployment: &Deployment,
        machine: &Machine,
        instance: Instance,
        drives: Vec<Drive>,
    ) -> Result<Launched, ControlError> {
        let accel = self.host_of(machine, instance).accelerator(machine.definition.kernel.as_deref());
        self.launch(deployment, machine, instance, drives, accel)
    }

    pub(super) fn test_failover(
        self: &Arc<Self>,
        name: &str,
        point: Option<String>,
    ) -> Result<JobStarted, ControlError> {
        self.lifecycle(name, Command::TestFailover, point.as_deref(), |daemon, deployment, machine, point| {
            daemon.test_failover_part(deployment, machine, point)
        })
    }

    /// The drill of `machine` at `point`, checked, as a job's part.
    fn test_failover_part(
        &self,
        deployment: &Deployment,
        machine: Machine,
        point: Option<&str>,
    ) -> Result<Part, ControlError> {
        const STEPS: [&str; 3] = TEST_FAILOVER_STEPS;
        let step = check(&machine, Command::TestFailover)?;
        let point = self.resolve_point(deployment, &machine, point)?;
        Ok(Part::new(&machine.definition.name.clone(), &STEPS, move |daemon, job| {
            let deployment = job.deployment;
            let mut details = machine.details.clone();
            details.drill = Some(DrillRecord { point: point.clone(), job: job.id });
            deployment.state.set_machine_placement(
                name_of(&machine),
                step.during,
                machine.active_site,
                machine.generation,
                &details,
            )?;
            job.step(STEPS[0], StepState::Done, &point.described)?;
            let booted = (|| {
                // Leftovers of a drill a crash interrupted are not resumed.
                daemon.remove_drill(deployment, &machine)?;
                let drives = job.run(STEPS[1], || {
                    let drives = daemon.serve_point(deployment, &machine, &point, Instance::Drill)?;
                    let detail = format!("{} disk(s) exported", drives.len());
                    Ok((drives, detail))
                })?;
                job.run(STEPS[2], || {
                    let launched = daemon.boot(deployment, &machine, Instance::Drill, drives)?;
                    let network = match launched.attachments.first() {
                        Some(nic) => format!("on the isolated network {}", nic.network),
                        None => "no network device".to_string(),
                    };
                    Ok(((), format!("pid {}, {network}", launched.pid)))
                })
            })();
            match booted {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Nothing of a half-started drill stays behind.
                    let _ = daemon.remove_drill(deployment, &machine);
                    deployment.state.set_machine_placement(
                        name_of(&machine),
                        step.undone,
                        machine.active_site,
                        machine.generation,
                        &machine.details,
                    )?;
                    Err(e)
                }
            }
        }))
    }

    /// Stops the drill copy and its exports and removes every file they
    /// used; returns what it removed.
    fn remove_drill(&self, deployment: &Deployment, machine: &Machine) -> Result<Vec<PathBuf>, ControlError> {
        let key = instance(name_of(machine), Instance::Drill);
        let host = self.host_of(machine, Instance::Drill);
        let mut removed = Vec::new();
        self.stop_instance(machine, Instance::Drill, true)?;
        let run_dir = deployment.run_dir().join("machines").join(&key);
        if host.remove_dir(&run_dir)? {
            removed.push(run_dir);
        }
        removed.extend(self.stop_exports(deployment, machine, Instance::Drill)?);
        for index in 0..machine.disks.len() {
            let overlay = overlay_path(deployment, machine, index, Instance::Drill);
            removed.extend(host.remove_files(&standby_splitter::export::overlay_files(&overlay))?);
        }
        Ok(removed)
    }

    pub(super) fn cleanup_test_failover(self: &Arc<Self>, name: &str) -> Result<JobStarted, ControlError> {
        self.lifecycle(name, Command::CleanupTestFailover, None, |daemon, deployment, machine, _| {
            daemon.part_for(deployment, machine, Command::CleanupTestFailover, &Asked::default())
        })
    }

    /// The part of lifecycle command `command` for `machine`, checked (a
    /// refusal before anything is recorded): what a job of it does alone,
    /// in its replication group's job, or in a plan's.
    pub(super) fn part_for(
        &self,
        deployment: &Deployment,
        machine: Machine,
        command: Command,
        asked: &Asked,
    ) -> Result<Part, ControlError> {
        let name = machine.definition.name.clone();
        let choice = || match &asked.agreement {
            Some(agreement) => PointChoice::Agreed(agreement.clone()),
            None => PointChoice::Asked(asked.point.clone()),
        };
        match command {
            Command::TestFailover => self.test_failover_part(deployment, machine, asked.point.as_deref()),
            Command::Failover => {
                let kind = Move::Unplanned { shutdown_source: asked.shutdown_source };
                self.move_part(deployment, machine, command, choice(), kind)
            }
            Command::PlannedFailover { sync_first: false } | Command::CompleteFailover => {
                self.move_part(deployment, machine, command, choice(), Move::Planned)
            }
            Command::Reprotect => self.reprotect_part(deployment, machine, false, false),
            Command::Cancel => cancel_part(self, deployment, machine, None),
            Command::ChangePoint => {
                check(&machine, command)?;
                let point = asked.point.as_deref().ok_or_else(|| {
                    ControlError::Refused("change-point needs the point to change to (--point P)".into())
                })?;
                let chosen = self.resolve_point(deployment, &machine, Some(point))?;
                Ok(Part::new(&name, &CHANGE_POINT_STEPS, move |daemon, job| {
                    daemon.change_point_job(&machine, &chosen, false, job)
                }))
            }
            Command::CleanupTestFailover => {
                check(&machine, command)?;
                Ok(Part::new(&name, &CLEANUP_STEPS, move |daemon, job| daemon.cleanup_job(&machine, job)))
            }
            Command::PlannedFailover { sync_first: true } => {
                check(&machine, command)?;
                Ok(Part::new(&name, &SYNC_FIRST_STEPS, move |daemon, job| daemon.sync_first_job(&machine, job)))
            }
            Command::Commit => {
                check(&machine, command)?;
                Ok(Part::new(&name, &COMMIT_STEPS, move |daemon, job| daemon.commit_job(&machine, job)))
            }
            Command::Protect | Command::Unprotect => Err(ControlError::Refused(format!(
                "{} is a machine's own: `standby {} {name}`",
                command.name(),
                command.name()
            ))),
        }
    }

    /// The cleanup job; also how a restarted daemon ends a drill whose
    /// test-failover or cleanup job it interrupted (every step is safe to
    /// repeat).
    pub(super) fn cleanup_job(&self, machine: &Machine, job: &JobSteps) -> Result<(), ControlError> {
        let step = transition_of(machine, Command::CleanupTestFailover)?;
        job.step(CLEANUP_STEPS[0], StepState::Running, "")?;
        let removed = self.remove_drill(job.deployment, machine)?;
        let mut details = machine.details.clone();
        details.drill = None;
        job.deployment.state.set_machine_placement(
            name_of(machine),
            step.after,
            machine.active_site,
            machine.generation,
            &details,
        )?;
        let listed: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
        let detail =
            if listed.is_empty() { "nothing was left".to_string() } else { format!("removed {}", listed.join(", ")) };
        job.step(CLEANUP_STEPS[0], StepState::Done, &detail)?;
        Ok(())
    }

    /// Resolves the operator's point (default `latest`) for `machine`.
    pub(super) fn resolve_point(
        &self,
        deployment: &Deployment,
        machine: &Machine,
        point: Option<&str>,
    ) -> Result<MachinePoint, ControlError> {
        // A machine running from a point reads the vault where it runs; a
        // replicated one is restored from the vault it replicates into.
        let site = if machine.state.on_exports() { machine.active_site } else { machine.active_site.other() };
        let vault = deployment.open_vault_at(site)?;
        let disks: Vec<String> = machine.disks.iter().map(|d| d.vault_disk.clone()).collect();
        let text = point.unwrap_or("latest");
        let want = match machine.group.as_deref() {
            Some(group) => points::group_want(group, text)?,
            None if points::group_selector(text).is_some() || text.starts_with(standby_format::GROUP_LABEL_PREFIX) => {
                return Err(ControlError::Refused(format!(
                    "machine '{}' is in no replication group: '{text}' is a group's point; use latest or latest-app",
                    machine.name()
                )))
            }
            None => None,
        };
        let (Some(want), Some(group)) = (want, machine.group.as_deref()) else {
            return points::resolve(&vault, &disks, text);
        };
        let group_disks: Vec<String> = super::group_jobs::members(deployment, group)?
            .into_iter()
            .flat_map(|m| m.disks.into_iter().map(|d| d.vault_disk))
            .collect();
        points::resolve_group(&vault, group, &group_disks, &disks, want)
    }

    pub(super) fn failover(
        self: &Arc<Self>,
        name: &str,
        point: Option<String>,
        shutdown_source: bool,
    ) -> Result<JobStarted, ControlError> {
        self.move_machine(name, Command::Failover, point, Move::Unplanned { shutdown_source })
    }

    /// `planned-failover`: with `sync_first`, a job that waits until
    /// replication keeps up and leaves the machine `ready-to-complete`
    /// (running, replicating; `complete-failover` moves it); without, the
    /// move at once: shut down, last writes shipped, started at the other
    /// site, no data lost.
    pub(super) fn planned_failover(self: &Arc<Self>, name: &str, sync_first: bool) -> Result<JobStarted, ControlError> {
        if !sync_first {
            return self.move_machine(name, Command::PlannedFailover { sync_first }, None, Move::Planned);
        }
        self.lifecycle(name, Command::PlannedFailover { sync_first }, None, |daemon, deployment, machine, _| {
            daemon.part_for(deployment, machine, Command::PlannedFailover { sync_first }, &Asked::default())
        })
    }

    /// Waits until replication keeps up, then leaves the machine
    /// `ready-to-complete`; run again by a restarted daemon that
    /// interrupted it.
    pub(super) fn sync_first_job(&self, machine: &Machine, job: &JobSteps) -> Result<(), ControlError> {
        let step = transition_of(machine, Command::PlannedFailover { sync_first: true })?;
        let name = name_of(machine);
        job.run(SYNC_FIRST_STEPS[0], || {
            let done =
                self.wait_until_keeping_up(machine, job, SYNC_FIRST_STEPS[0], "cancelled by `standby cancel`")?;
            Ok(((), format!("{done}; run `standby complete-failover {name}`")))
        })?;
        job.deployment.state.set_machine_state(name, step.after, None)?;
        Ok(())
    }

    pub(super) fn complete_failover(self: &Arc<Self>, name: &str) -> Result<JobStarted, ControlError> {
        self.move_machine(name, Command::CompleteFailover, None, Move::Planned)
    }

    /// Moves a machine to its other site from a recovery point: the
    /// failover job, planned or not; a machine of a replication group moves
    /// with its whole group, from one point (`group_jobs.rs`).
    fn move_machine(
        self: &Arc<Self>,
        name: &str,
        command: Command,
        point: Option<String>,
        kind: Move,
    ) -> Result<JobStarted, ControlError> {
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        let Some((group, members)) = self.group_for(&deployment, &machine, command)? else {
            let part = self.move_part(&deployment, machine, command, PointChoice::Asked(point), kind)?;
            return self.spawn_part(&deployment, command, part);
        };
        // An explicit point is checked now; the group's is chosen once every
        // source's last writes arrived.
        if let Some(point) = &point {
            self.group_point_text(&deployment, &group, &members, Some(point))?;
        }
        let agreement = Arc::new(Agreement::new(&group, members.clone(), point, kind == Move::Planned));
        let parts: Result<Vec<Part>, ControlError> = members
            .into_iter()
            .map(|member| self.move_part(&deployment, member, command, PointChoice::Agreed(agreement.clone()), kind))
            .collect();
        self.spawn_parts(&deployment, &Subject::Group(group), command, parts?)
    }

    /// The move of `machine`, checked, as a job's part.
    fn move_part(
        &self,
        deployment: &Deployment,
        machine: Machine,
        command: Command,
        point: PointChoice,
        kind: Move,
    ) -> Result<Part, ControlError> {
        let step = check(&machine, command)?;
        // An explicit point is checked now; `latest` is chosen after the
        // source's last writes arrived.
        if let PointChoice::Asked(Some(point)) = &point {
            self.resolve_point(deployment, &machine, Some(point))?;
        }
        let name = machine.definition.name.clone();
        Ok(Part::new(&name, &MOVE_STEPS, move |daemon, job| daemon.failover_job(&machine, step, kind, &point, job)))
    }

    /// The failover job: the machine recorded in flight, the steps, then
    /// recorded failed over, or rolled back to where it came from.
    fn failover_job(
        &self,
        machine: &Machine,
        step: Transition,
        kind: Move,
        point: &PointChoice,
        job: &JobSteps,
    ) -> Result<(), ControlError> {
        let name = machine.name();
        let mut moving = Moving { details: machine.details.clone(), step, machine };
        moving.record(job.deployment)?;
        match self.move_steps(&mut moving, kind, point, job) {
            Ok(downtime) => {
                let downtime_ms = downtime.map(|d| d.as_millis() as u64);
                recorded(&mut moving.details).downtime_ms = downtime_ms;
                let to_site = machine.active_site.other();
                let generation = machine.generation + 1;
                job.deployment.state.set_machine_placement(name, step.after, to_site, generation, &moving.details)?;
                Ok(())
            }
            Err(e) => {
                // The group's other parts do not wait for this one.
                if let PointChoice::Agreed(agreement) = point {
                    agreement.failed(name, &e);
                }
                let rolled = self.roll_back_failover(job.deployment, machine, &moving.details, step.undone, job.id);
                Err(match rolled {
                    Ok(_) => ControlError::Failed(format!("{e}; the machine is back at its source, protected")),
                    Err(rollback) => ControlError::Failed(format!("{e}; rolling back failed too: {rollback}")),
                })
            }
        }
    }

    /// The steps of a failover, each begun only when no `cancel` came; the
    /// records a roll-back needs are written before each act they undo.
    /// Returns, with the source shut down, the downtime.
    fn move_steps(
        &self,
        moving: &mut Moving,
        kind: Move,
        point: &PointChoice,
        job: &JobSteps,
    ) -> Result<Option<Duration>, ControlError> {
        const BY: &str = "cancelled by `standby cancel`";
        let (deployment, machine) = (job.deployment, moving.machine);
        let to_site = machine.active_site.other();
        if machine.state == State::TestFailover {
            job.run_unless_stopped(MOVE_STEPS[0], BY, || {
                self.remove_drill(deployment, machine)?;
                Ok(((), "the drill copy is gone".to_string()))
            })?;
        } else {
            job.skip(MOVE_STEPS[0], "no drill was running")?;
        }
        let shut_down = job.run_unless_stopped(MOVE_STEPS[1], BY, || self.stop_source(moving, kind, job))?;
        let stopped_at = Instant::now();
        let drained = job.run_unless_stopped(MOVE_STEPS[2], BY, || {
            let (drained, waited) = match self.source_host_silent(machine) {
                Some(silent) => (false, format!("not waited for: {silent}")),
                None => {
                    let source_stopped = shut_down || !self.runtime(machine, machine.active_site.into()).running;
                    self.wait_for_last_writes(machine, source_stopped, job)
                }
            };
            job.check_stop(MOVE_STEPS[2], BY)?;
            if kind == Move::Planned && !drained {
                return Err(ControlError::Failed(format!(
                    "a planned failover loses no write, and the source's last writes are not all in the vault: \
                     {waited}"
                )));
            }
            Ok((drained, waited))
        })?;
        let chosen = job.run_unless_stopped(MOVE_STEPS[3], BY, || {
            let point = match point {
                PointChoice::Asked(point) => point.clone(),
                PointChoice::Agreed(agreement) => {
                    Some(agreement.agree(name_of(machine), drained, |group, members, asked| {
                        self.group_point_text(deployment, group, members, asked)
                    })?)
                }
            };
            let chosen = self.resolve_point(deployment, machine, point.as_deref())?;
            let described = chosen.described.clone();
            Ok((chosen, described))
        })?;
        recorded(&mut moving.details).point = Some(chosen.clone());
        // Recorded before the boot: a daemon that dies from here on finds
        // the point to roll back from or run on.
        moving.record(deployment)?;
        let drives = job.run_unless_stopped(MOVE_STEPS[4], BY, || {
            // Overlays of an earlier failover are never resumed at another point.
            self.set_aside(deployment, machine, to_site, job.id)?;
            let drives = self.serve_point(deployment, machine, &chosen, to_site.into())?;
            let detail = format!("{} disk(s) exported", drives.len());
            Ok((drives, detail))
        })?;
        job.run_unless_stopped(MOVE_STEPS[5], BY, || {
            let started = Instant::now();
            // From here on the copies diverge: a write the old source makes
            // later is a split brain.
            recorded(&mut moving.details).diverged = Some(jiff::Timestamp::now().as_microsecond());
            let launched = self.boot(deployment, machine, to_site.into(), drives)?;
            let downtime = shut_down.then(|| stopped_at.elapsed());
            let mut detail = format!("pid {} in {} ms", launched.pid, started.elapsed().as_millis());
            if let Some(downtime) = downtime {
                detail.push_str(&format!("; downtime {} ms (source stopped to target started)", downtime.as_millis()));
            }
            Ok((downtime, detail))
        })
    }

    /// The failover's source step: whether the source ran is recorded
    /// before anything is stopped (a roll-back, even by a daemon that
    /// restarts after this one died, starts it again when it ran), then it
    /// is shut down when the move asks for it, and what happened recorded
    /// at once. Says whether it was shut down, with what happened.
    fn stop_source(&self, moving: &mut Moving, kind: Move, job: &JobSteps) -> Result<(bool, String), ControlError> {
        let machine = moving.machine;
        // Asked afresh (within the probe's 0.9 s): the probe loop may not
        // have come round since a host died a moment ago, and a call to a
        // dead host waits until it does.
        self.site(machine.active_site).probe();
        if let Some(silent) = self.source_host_silent(machine) {
            // A host that is gone is not waited for (a disaster), nor asked
            // what runs there; a planned move needs the source down, so it
            // cannot go on.
            moving.details.failover = Some(FailoverRecord::new(job.id, machine.active_site, false));
            let detail = format!(
                "{silent}: the source could not be asked to shut down and may still run there (its host starts \
                 nothing of its own accord when it returns)"
            );
            recorded(&mut moving.details).source = Some(detail.clone());
            recorded(&mut moving.details).source_shut_down = Some(false);
            moving.record(job.deployment)?;
            if kind == Move::Planned {
                return Err(ControlError::Failed(format!("{detail}; a planned failover needs the source shut down")));
            }
            return Ok((false, detail));
        }
        let source_was_running = self.runtime(machine, machine.active_site.into()).running;
        moving.details.failover = Some(FailoverRecord::new(job.id, machine.active_site, source_was_running));
        moving.record(job.deployment)?;
        let shutdown_source = match kind {
            Move::Planned => true,
            Move::Unplanned { shutdown_source } => shutdown_source,
        };
        let (detail, shut_down) = if !source_was_running {
            ("the source was not running".to_string(), false)
        } else if shutdown_source {
            match self.stop_instance(machine, machine.active_site.into(), false) {
                Ok(Some(how)) => (format!("the source {how}"), true),
                Ok(None) => ("the source stopped by itself".to_string(), false),
                // A planned move needs the source down; a disaster does not
                // wait for it: carry on, saying why. Either way what
                // happened is recorded: the roll-back then knows the
                // source is not on its way down.
                Err(e) if kind == Move::Planned => {
                    recorded(&mut moving.details).source = Some(format!("could not be shut down ({e})"));
                    recorded(&mut moving.details).source_shut_down = Some(false);
                    moving.record(job.deployment)?;
                    return Err(e);
                }
                Err(e) => (format!("the source could not be shut down ({e}); it may still be running"), false),
            }
        } else {
            let detail = "the source is left running (no --shutdown-source): its writes after the point are not in \
                          the recovery VM";
            (detail.to_string(), false)
        };
        recorded(&mut moving.details).source = Some(detail.clone());
        recorded(&mut moving.details).source_shut_down = Some(shut_down);
        moving.record(job.deployment)?;
        Ok((shut_down, detail))
    }

    /// When the host of `machine`'s active site is another machine that
    /// does not answer: saying so and since when.
    fn source_host_silent(&self, machine: &Machine) -> Option<String> {
        match self.site(machine.active_site).reachable() {
            Some((false, since)) => {
                Some(format!("the {} site's host does not answer (since {since})", machine.active_site))
            }
            _ => None,
        }
    }

    /// Waits until the splitters shipped everything, when the source is
    /// stopped (else there is no "last" write): until each has queued every
    /// write, then marks a point on every disk, which seals them. Says
    /// whether they did, and what it found.
    fn wait_for_last_writes(&self, machine: &Machine, source_stopped: bool, job: &JobSteps) -> (bool, String) {
        if !source_stopped {
            return (false, "not waited for: the source runs".to_string());
        }
        let deadline = Instant::now() + LAST_WRITES_TIMEOUT;
        // A splitter that died is started again by the supervision: the
        // source's last writes are in its image and intent log.
        let mut unanswered = Unanswered::default();
        loop {
            if job.stop_asked() {
                return (false, "not waited for: cancelled".to_string());
            }
            match unanswered.bear(self.replication(machine, true)) {
                Ok(None) => std::thread::sleep(LAST_WRITES_POLL_INTERVAL),
                Ok(Some(replication)) if replication.caught_up => {
                    // Every write is queued: a point on every disk, queued
                    // after them and answered once sealed, ships them now
                    // (not at the next periodic seal) and keeps them in
                    // `latest`, the newest moment every disk reached (an
                    // idle disk's newest record, a bookmark, may be seconds
                    // older than a busy disk's last write).
                    return match self.mark_every_disk(machine, "the source stopped") {
                        Ok(()) => (true, "every write of the source is in the vault".to_string()),
                        Err(e) => (false, format!("the closing point could not be marked ({e})")),
                    };
                }
                Ok(Some(replication)) if Instant::now() > deadline => {
                    return (false, format!("gave up after {} s: {replication}", LAST_WRITES_TIMEOUT.as_secs()));
                }
                Err(e) => {
                    return (
                        false,
                        format!(
                            "the splitters cannot tell ({e}; for {} s); failing over with what the vault has",
                            SPLITTER_BACK_WITHIN.as_secs()
                        ),
                    );
                }
                Ok(Some(_)) => std::thread::sleep(LAST_WRITES_POLL_INTERVAL),
            }
        }
    }

    /// Marks a crash-consistent point labelled `label` on every disk of
    /// `machine` (each answered once stored in the vault).
    fn mark_every_disk(&self, machine: &Machine, label: &str) -> Result<(), ControlError> {
        let host = self.site(machine.active_site);
        for disk in &machine.disks {
            mark_sealed(host, &disk.vault_disk, label)?;
        }
        Ok(())
    }

    /// Undoes a failover: the recovery VM stopped, its writes set aside,
    /// the exports stopped, the source started again when it ran before
    /// the failover and does not now; the machine `undone` (protected) at
    /// its source. Returns what it did.
    pub(super) fn roll_back_failover(
        &self,
        deployment: &Deployment,
        machine: &Machine,
        details: &MachineRecords,
        undone: State,
        job: i64,
    ) -> Result<Vec<String>, ControlError> {
        let name = name_of(machine);
        // A failover that failed before it recorded anything stopped nothing.
        let failover = details.failover.clone();
        let source_site = failover.as_ref().map_or(machine.active_site, |failover| failover.from_site);
        let to_site = source_site.other();
        let mut done = Vec::new();
        let (source_host, target_host) = (self.site(source_site), self.site(to_site));
        if let Some(stopped) = target_host.stop_machine(&instance(name, to_site), Shutdown::PowerCut)? {
            done.push(format!("the recovery VM was {}", stopped.describe()));
        }
        self.stop_exports(deployment, machine, to_site.into())?;
        if let Some(folder) = self.set_aside(deployment, machine, to_site, job)? {
            done.push(format!("its writes are set aside in {}", folder.display()));
        }
        let mut details = details.clone();
        let was_running = failover.as_ref().is_some_and(|failover| failover.source_was_running);
        let source = instance(name, source_site);
        if was_running && failover.as_ref().is_some_and(|failover| failover.source.is_none()) {
            // A daemon died while shutting the source down: the guest may
            // still be on its way down. Let it finish (or ignore the power
            // button) before deciding whether to start it again.
            let deadline = Instant::now() + POWER_DOWN_TIMEOUT;
            while source_host.runtime(&source).running && Instant::now() < deadline {
                std::thread::sleep(SOURCE_DOWN_POLL_INTERVAL);
            }
        }
        details.failover = None;
        let restart = was_running && !source_host.runtime(&source).running;
        if restart {
            // Until it runs: a daemon that dies before starts it (see `start_pending`).
            details.start_pending =
                Some(StartPending { job, why: "the failover it stopped it for was undone".to_string() });
        }
        let generation = if machine.active_site == source_site { machine.generation } else { machine.generation + 1 };
        deployment.state.set_machine_placement(name, undone, source_site, generation, &details)?;
        // Replicating again: its splitters (kept running through the
        // failover; adopted when an earlier daemon started them).
        self.ensure_splitters(deployment, &deployment.state.machine(name)?)?;
        if restart {
            done.push(self.start_pending(deployment, name)?);
        }
        Ok(done)
    }

    /// Starts a machine whose details say a job stopped it and owes it a
    /// start (`details.start_pending`), unless it runs; then forgets the
    /// debt. Says what it did.
    pub(super) fn start_pending(&self, deployment: &Deployment, name: &str) -> Result<String, ControlError> {
        let machine = deployment.state.machine(name)?;
        let done = match self.runtime(&machine, machine.active_site.into()).pid {
            Some(pid) => format!("the source runs (pid {pid})"),
            None => {
                let (drives, _) = self.drives(deployment, &machine)?;
                let launched = self.boot(deployment, &machine, machine.active_site.into(), drives)?;
                format!("the source was started again (pid {})", launched.pid)
            }
        };
        let mut details = machine.details.clone();
        details.start_pending = None;
        deployment.state.set_machine_placement(
            name,
            machine.state,
            machine.active_site,
            machine.generation,
            &details,
        )?;
        Ok(done)
    }

    /// Moves the overlays of `machine` at `site` (the writes a VM running
    /// there from a point made) to `SITE/set-aside/NAME-jobID/`; returns
    /// the folder when there was anything to move.
    fn set_aside(
        &self,
        deployment: &Deployment,
        machine: &Machine,
        site: Site,
        job: i64,
    ) -> Result<Option<PathBuf>, ControlError> {
        let folder = site_folder(deployment, site).join("set-aside").join(format!("{}-job{job}", name_of(machine)));
        let mut files = Vec::new();
        for index in 0..machine.disks.len() {
            let overlay = overlay_path(deployment, machine, index, site.into());
            files.extend(standby_splitter::export::overlay_files(&overlay));
        }
        Ok(self.site(site).move_into(&files, &folder)?.then_some(folder))
    }

    pub(super) fn change_point(self: &Arc<Self>, name: &str, point: String) -> Result<JobStarted, ControlError> {
        self.lifecycle(name, Command::ChangePoint, Some(&point), |daemon, deployment, machine, point| {
            let asked = Asked { point: point.map(str::to_string), ..Asked::default() };
            daemon.part_for(deployment, machine, Command::ChangePoint, &asked)
        })
    }

    /// The change-point job. The change is recorded first
    /// (`details.failover.change_point`), so a restarted daemon runs it
    /// again (`resumed`); then what an earlier attempt already did is not
    /// redone: a copy already on the new point keeps its overlays (its
    /// writes) and, when it runs, keeps running.
    pub(super) fn change_point_job(
        &self,
        machine: &Machine,
        chosen: &MachinePoint,
        resumed: bool,
        job: &JobSteps,
    ) -> Result<(), ControlError> {
        const STEPS: [&str; 4] = CHANGE_POINT_STEPS;
        let step = transition_of(machine, Command::ChangePoint)?;
        let deployment = job.deployment;
        let name = name_of(machine);
        let site = machine.active_site;
        let mut details = machine.details.clone();
        let already = resumed && details.failover_point(name)? == chosen;
        details.failover_mut(name)?.change_point = Some(ChangePointRecord { job: job.id, point: chosen.clone() });
        deployment.state.set_machine_placement(name, step.during, site, machine.generation, &details)?;
        if already {
            job.step(STEPS[0], StepState::Done, "an earlier attempt stopped it")?;
            job.step(STEPS[1], StepState::Done, "an earlier attempt set them aside")?;
        } else {
            job.step(STEPS[0], StepState::Running, "")?;
            let how = self.stop_instance(machine, site.into(), true)?;
            self.stop_exports(deployment, machine, site.into())?;
            job.step(STEPS[0], StepState::Done, how.as_deref().unwrap_or("it was not running"))?;
            job.step(STEPS[1], StepState::Running, "")?;
            let folder = self.set_aside(deployment, machine, site, job.id)?;
            let aside = folder.map(|f| format!("in {}", f.display())).unwrap_or_else(|| "it wrote nothing".into());
            job.step(STEPS[1], StepState::Done, &aside)?;
            details.failover_mut(name)?.point = Some(chosen.clone());
            deployment.state.set_machine_placement(name, step.during, site, machine.generation, &details)?;
        }
        job.step(STEPS[2], StepState::Running, "")?;
        let drives = self.serve_point(deployment, machine, chosen, site.into())?;
        job.step(STEPS[2], StepState::Done, &chosen.described)?;
        job.step(STEPS[3], StepState::Running, "")?;
        let pid = match self.runtime(machine, site.into()).pid {
            Some(pid) => pid,
            None => self.boot(deployment, machine, site.into(), drives)?.pid,
        };
        details.failover_mut(name)?.change_point = None;
        deployment.state.set_machine_placement(name, step.after, site, machine.generation, &details)?;
        job.step(STEPS[3], StepState::Done, &format!("pid {pid}"))?;
        Ok(())
    }

    pub(super) fn cancel(self: &Arc<Self>, name: &str) -> Result<JobStarted, ControlError> {
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        check(&machine, Command::Cancel)?;
        let running = self.claims.holder(name);
        if let (Some(failover_job), State::FailoverInProgress) = (running, machine.state) {
            return self.stop_failover(&deployment, name, failover_job);
        }
        self.lifecycle(name, Command::Cancel, None, cancel_part)
    }

    /// `cancel` while the failover job runs: the job is told to stop, rolls
    /// itself back at the start of its next step (or as soon as its wait
    /// for the source's last writes notices), and the cancel job says how
    /// it ended. A failover that finished first is cancelled as usual.
    fn stop_failover(
        self: &Arc<Self>,
        deployment: &Deployment,
        name: &str,
        failover_job: i64,
    ) -> Result<JobStarted, ControlError> {
        // The roll-back may wait for a guest's clean shutdown (a minute at most) and restart it.
        self.claims.stop_and_wait(name, FAILOVER_STOP_TIMEOUT);
        let machine = deployment.state.machine(name)?;
        match machine.state {
            State::Protected => {
                let outcome = deployment.state.job(failover_job)?;
                let detail = format!(
                    "failover job {failover_job} stopped and rolled back: {}",
                    outcome.error.as_deref().unwrap_or("it ended")
                );
                self.spawn_command(deployment, name, Command::Cancel, &CANCEL_STEPS, move |_, job| {
                    job.step(CANCEL_STEPS[0], StepState::Done, &detail)?;
                    Ok(())
                })
            }
            _ => self.lifecycle(name, Command::Cancel, None, cancel_part),
        }
    }

    /// The cancel job; run again by a restarted daemon that interrupted it.
    pub(super) fn cancel_job(&self, machine: &Machine, job: &JobSteps) -> Result<(), ControlError> {
        let step = transition_of(machine, Command::Cancel)?;
        if machine.state == State::ReadyToComplete {
            // Nothing moved yet: the machine just stops waiting.
            job.deployment.state.set_machine_state(name_of(machine), step.after, None)?;
            job.step(CANCEL_STEPS[0], StepState::Done, "the planned failover is called off; replication carries on")?;
            return Ok(());
        }
        job.step(CANCEL_STEPS[0], StepState::Running, "")?;
        let done = self.roll_back_failover(job.deployment, machine, &machine.details, step.after, job.id)?;
        job.step(CANCEL_STEPS[0], StepState::Done, &done.join("; "))?;
        Ok(())
    }

    pub(super) fn commit(self: &Arc<Self>, name: &str) -> Result<JobStarted, ControlError> {
        self.lifecycle(name, Command::Commit, None, |daemon, deployment, machine, _| {
            daemon.part_for(deployment, machine, Command::Commit, &Asked::default())
        })
    }

    /// The commit job; run again by a restarted daemon that interrupted it.
    pub(super) fn commit_job(&self, machine: &Machine, job: &JobSteps) -> Result<(), ControlError> {
        const STEPS: [&str; 2] = COMMIT_STEPS;
        let step = transition_of(machine, Command::Commit)?;
        let name = name_of(machine);
        let source_site = machine.details.failover.as_ref().map_or(machine.active_site.other(), |f| f.from_site);
        job.step(STEPS[0], StepState::Running, "")?;
        // The old source's splitters ship what they have and stop (one an
        // earlier daemon left running too); their intent logs stay
        // (reprotect reads what they never shipped).
        let source_running = self.site(source_site).runtime(&instance(name, source_site)).running;
        let detail = if source_running {
            "the old source still runs: its splitters keep tracking its writes".to_string()
        } else {
            let stopped = self.stop_splitters_of(job.deployment, machine)?;
            format!("{stopped} splitter(s) stopped after shipping")
        };
        job.step(STEPS[0], StepState::Done, &detail)?;
        job.step(STEPS[1], StepState::Running, "")?;
        let mut details = machine.details.clone();
        details.failover_mut(name)?.committed = Some(jiff::Timestamp::now().to_string());
        job.deployment.state.set_machine_placement(
            name,
            step.after,
            machine.active_site,
            machine.generation,
            &details,
        )?;
        job.step(
            STEPS[1],
            StepState::Done,
            &format!("the machine runs at the {} site for good; reprotect replicates it back", machine.active_site),
        )?;
        Ok(())
    }
}

/// The steps of a failover (planned or not, and complete-failover).
const MOVE_STEPS: [&str; 6] = [
    "remove the drill",
    "shut down the source",
    "wait for the source's last writes",
    "choose the point",
    "serve the point",
    "boot at the other site",
];

/// A failover in flight: the machine as it was, the transition it makes,
/// and the records a roll-back needs, written as they grow.
struct Moving<'a> {
    machine: &'a Machine,
    step: Transition,
    details: MachineRecords,
}

impl Moving<'_> {
    /// Records the machine in flight with the records so far.
    fn record(&self, deployment: &Deployment) -> Result<(), ControlError> {
        let machine = self.machine;
        let (name, site, generation) = (machine.name(), machine.active_site, machine.generation);
        deployment.state.set_machine_placement(name, self.step.during, site, generation, &self.details)
    }
}

/// The failover record a failover job wrote before it touched the source.
fn recorded(details: &mut MachineRecords) -> &mut FailoverRecord {
    details.failover.as_mut().expect("recorded before the source is touched")
}

fn name_of(machine: &Machine) -> &str {
    &machine.definition.name
}

/// The cancel of `machine`, checked, as a job's part.
fn cancel_part(_: &Daemon, _: &Deployment, machine: Machine, _: Option<&str>) -> Result<Part, ControlError> {
    check(&machine, Command::Cancel)?;
    let name = machine.definition.name.clone();
    Ok(Part::new(&name, &CANCEL_STEPS, move |daemon, job| daemon.cancel_job(&machine, job)))
}

/// What the operator asked of a lifecycle command besides it: the point
/// (for a group's or a plan's machines, one made the same for all), the
/// failover's `--shutdown-source`, and where a group's failover meets.
#[derive(Default)]
pub(super) struct Asked {
    pub(super) point: Option<String>,
    pub(super) shutdown_source: bool,
    pub(super) agreement: Option<Arc<Agreement>>,
}

/// Where a failover's point comes from.
pub(super) enum PointChoice {
    /// The operator's (default `latest`, chosen after the last writes).
    Asked(Option<String>),
    /// The group's, chosen once all its machines' last writes arrived.
    Agreed(Arc<Agreement>),
}
