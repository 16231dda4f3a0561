//! Protection: `protect` (initial replication, then continuous),
//! `unprotect`, and `status` (health, RPO, latest points).
//!
//! A replicated machine has one splitter per disk at its active site,
//! running whether the machine runs or not (a stopped machine's splitter
//! is idle), and QEMU opens its disks on them. Protecting a running
//! machine moves its disks onto the splitters while it runs (a pause of
//! milliseconds, see [`Qemu::switch_drive`]); unprotecting moves them back.
//!
//! Invariant: whenever a disk's image is written without its splitter, its
//! intent log is gone, so the next splitter re-reads the whole image
//! instead of trusting a log that missed writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use standby_api::{BookmarkView, DiskStatus, HealthLevel, Hydration, JobStarted, MachineStatus, StatusList};
use standby_lifecycle::job::StepState;
use standby_lifecycle::{Command, Instance, State, Transition};

use super::board::Posted;
use super::engine::{check, transition_of};
use super::{instance, lock, Daemon, JobSteps};
use crate::agent::SplitterSpec;
use crate::deployment::Deployment;
use crate::error::ControlError;
use crate::machine::Machine;
use crate::qemu::Drive;
use crate::site::{HelperName, MarkWait, SiteHost};
use crate::state::Policy;
use standby_vault::journal::Bookmark;
use standby_vault::summary::JournalSummary;

/// Deletes the intent logs of `machine`'s disks at its active site: the
/// next splitter on them re-reads everything.
fn forget_change_tracking(host: &dyn SiteHost, machine: &Machine) -> Result<(), ControlError> {
    let logs: Vec<_> = machine.images().iter().map(|image| standby_splitter::default_intent_log(image)).collect();
    host.remove_files(&logs).map(|_| ())
}

/// How long `unprotect` waits for a protect job it stopped to roll back
/// (its splitters ship what they queued, the disks move back).
const INITIAL_REPLICATION_STOP_TIMEOUT: Duration = Duration::from_secs(180);

/// How long replication may go without the bytes left to read and ship
/// shrinking before a job waiting for it gives up.
pub(super) const REPLICATION_STALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often a job waiting for replication looks again.
const REPLICATION_POLL_INTERVAL: Duration = Duration::from_millis(300);

/// How long a job bears with a splitter that does not answer before it
/// reports it: one that died is started again by the supervision within a
/// second or two, backing off 1, 2, 4 s while a start fails (as when the
/// dying process still holds its socket). A wait that gave up at once
/// would fail over without the source's last writes, or fail a protect,
/// for a helper that is back a moment later.
pub(super) const SPLITTER_BACK_WITHIN: Duration = Duration::from_secs(15);

/// Since when the splitters have not answered a job's wait, if they have not.
#[derive(Default)]
pub(super) struct Unanswered(Option<Instant>);

impl Unanswered {
    /// `answer` when there is one; `None` while a splitter that does not
    /// answer may yet be started again; its error once it has not
    /// answered for [`SPLITTER_BACK_WITHIN`].
    pub(super) fn bear<T>(&mut self, answer: Result<T, ControlError>) -> Result<Option<T>, ControlError> {
        match answer {
            Ok(answer) => {
                self.0 = None;
                Ok(Some(answer))
            }
            Err(e) if self.0.get_or_insert_with(Instant::now).elapsed() > SPLITTER_BACK_WITHIN => Err(e),
            Err(_) => Ok(None),
        }
    }
}

/// Marks a point on `disk` and waits until it is sealed, bearing with a
/// splitter that does not answer while it may be started again.
pub(super) fn mark_sealed(host: &dyn SiteHost, disk: &str, label: &str) -> Result<Option<u64>, ControlError> {
    let mut unanswered = Unanswered::default();
    loop {
        if let Some(point) = unanswered.bear(host.mark(disk, false, label, MarkWait::Sealed))? {
            return Ok(point);
        }
        std::thread::sleep(REPLICATION_POLL_INTERVAL);
    }
}

/// How far a machine's replication is, over its disks.
pub(super) struct Replication {
    /// Every splitter has re-read what it had to and keeps up.
    pub(super) caught_up: bool,
    left_bytes: u64,
    queued_bytes: u64,
    /// The vault errors splitters report, by disk.
    problems: Vec<String>,
}

impl std::fmt::Display for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} MiB left to read, {} MiB on the way to the vault",
            self.left_bytes >> 20,
            self.queued_bytes >> 20
        )?;
        if !self.problems.is_empty() {
            write!(f, "; the vault is failing ({})", self.problems.join("; "))?;
        }
        Ok(())
    }
}

/// A running guest's changes reach the vault within this: replication is
/// keeping up (a guest that writes all the time never leaves it empty).
const KEEPING_UP_SECONDS: f64 = 3.0;

pub(super) const PROTECT_STEPS: [&str; 4] =
    ["start the splitters", "move the running disks onto them", "initial replication", "first recovery point"];
pub(super) const UNPROTECT_STEPS: [&str; 3] = [
    "move the running disks off the splitters",
    "ship the last writes and stop the splitters",
    "forget change tracking",
];

impl Daemon {
    /// Starts the splitter of every disk of `machine` that is not running
    /// (adopting one an earlier daemon left running).
    /// Returns their pids.
    pub(super) fn ensure_splitters(
        &self,
        deployment: &Deployment,
        machine: &Machine,
    ) -> Result<Vec<u32>, ControlError> {
        let policy = self.policy_of(deployment, machine)?;
        // Replication goes to the vault at the other site (created there
        // the first time, for the primary site's).
        let target = machine.active_site.other();
        let vault = deployment.vault_at(target);
        let run_dir = splitters_dir(deployment);
        let host = self.site(machine.active_site);
        // Splitters wait out a vault outage by themselves, and start
        // without their vault (`serve-disk --wait-for-vault`): a machine
        // starts, and a roll-back starts its source, at once whatever the
        // vault's state. Only the first protect needs the vault: initial
        // replication waiting on a vault that never was is a mistake to
        // report, not an outage.
        if !machine.disks.iter().all(|disk| host.splitter_running(&disk.vault_disk, &run_dir)) {
            match deployment.open_vault_at(target) {
                Ok(_) => {}
                Err(e) if machine.state == State::Enabling => return Err(e),
                Err(e) => {
                    eprintln!("standby: {e}; the splitters of '{}' start and wait for it", machine.definition.name)
                }
            }
        }
        let mut pids = Vec::new();
        for (disk, image) in machine.disks.iter().zip(machine.images()) {
            pids.push(host.ensure_splitter(&SplitterSpec {
                disk: disk.vault_disk.clone(),
                image,
                vault: vault.clone(),
                bookmark_interval: Duration::from_secs(policy.bookmark_seconds),
                group: machine.group.clone(),
                run_dir: run_dir.clone(),
                netns: deployment.netns(machine.active_site),
            })?);
        }
        Ok(pids)
    }

    /// The drives QEMU opens for a replicated machine: its splitters.
    pub(super) fn splitter_drives(&self, deployment: &Deployment, machine: &Machine) -> Vec<Drive> {
        let run_dir = splitters_dir(deployment);
        machine
            .disks
            .iter()
            .map(|disk| Drive::Nbd {
                socket: crate::agent::files(&run_dir, &disk.vault_disk).0,
                export: disk.vault_disk.clone(),
            })
            .collect()
    }

    fn policy_of(&self, deployment: &Deployment, machine: &Machine) -> Result<Policy, ControlError> {
        deployment.state.policy(machine.policy.as_deref().unwrap_or("default"))
    }

    /// Moves the disks of `machine`, when it runs, onto `drives`.
    fn switch_running_drives(&self, machine: &Machine, drives: &[Drive]) -> Result<bool, ControlError> {
        let key = instance(&machine.definition.name, machine.active_site);
        let host = self.site(machine.active_site);
        for (index, drive) in drives.iter().enumerate() {
            let Some(opened) = host.drive(&key, index)? else { return Ok(false) };
            if opened.on_file != matches!(drive, Drive::File(_)) {
                host.switch_drive(&key, index, drive)?;
            }
        }
        Ok(host.runtime(&key).running)
    }

    pub(super) fn protect(
        self: &Arc<Self>,
        name: &str,
        policy: Option<String>,
        group: Option<String>,
    ) -> Result<JobStarted, ControlError> {
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        let step = check(&machine, Command::Protect)?;
        let policy = deployment.state.policy(policy.as_deref().unwrap_or("default"))?;
        if let Some(group) = &group {
            super::groups::check_joining(&deployment, &machine, group)?;
        }
        for image in machine.images() {
            if !self.site(machine.active_site).is_file(&image) {
                return Err(ControlError::Refused(format!(
                    "disk {} of machine '{name}' is missing; it cannot be protected",
                    image.display()
                )));
            }
        }
        self.spawn_command(&deployment, name, Command::Protect, &PROTECT_STEPS, move |daemon, job| {
            let name = &machine.definition.name;
            job.deployment.state.set_machine_protection(name, step.during, &policy.name, group.as_deref())?;
            let machine = job.deployment.state.machine(name)?;
            daemon.protect_or_roll_back(&machine, job)
        })
    }

    /// Runs the protect job; when it fails, the machine goes back to where
    /// it was: unprotected, nothing running through a splitter (what the
    /// vault received stays).
    pub(super) fn protect_or_roll_back(&self, machine: &Machine, job: &JobSteps) -> Result<(), ControlError> {
        let step = transition_of(machine, Command::Protect)?;
        self.protect_job(machine, step, job).map_err(|e| {
            let name = &machine.definition.name;
            match self.unreplicate(job.deployment, machine, None) {
                Ok(()) => match job.deployment.state.set_machine_state(name, step.undone, Some(None)) {
                    Ok(()) => ControlError::Failed(format!("{e}; the machine is unprotected again")),
                    Err(recording) => ControlError::Failed(format!("{e}; recording the roll-back failed: {recording}")),
                },
                Err(rollback) => ControlError::Failed(format!(
                    "{e}; rolling back failed too ({rollback}): the machine stays enabling, `standby unprotect {name}` \
                     tries again"
                )),
            }
        })
    }

    /// The protect job, also run again by a restarted daemon for a machine
    /// it finds `enabling`: every step is safe to repeat.
    fn protect_job(&self, machine: &Machine, step: Transition, job: &JobSteps) -> Result<(), ControlError> {
        let name = &machine.definition.name;
        job.step(PROTECT_STEPS[0], StepState::Running, "")?;
        // A running guest is paused from before its splitters start until
        // its disks are on them: a write it made to an image directly after
        // the splitter had read that region would never reach the vault.
        let key = instance(name, machine.active_site);
        let host = self.site(machine.active_site);
        let paused_at = host.pause(&key)?.then(Instant::now);
        let moved = (|| {
            let pids = self.ensure_splitters(job.deployment, machine)?;
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            job.step(PROTECT_STEPS[0], StepState::Done, &format!("pid {}", pids.join(", ")))?;
            job.step(PROTECT_STEPS[1], StepState::Running, "")?;
            self.switch_running_drives(machine, &self.splitter_drives(job.deployment, machine))
        })();
        if let Some(paused_at) = paused_at {
            host.resume(&key)?;
            let paused = format!("moved while running (the guest paused for {} ms)", paused_at.elapsed().as_millis());
            moved?;
            job.step(PROTECT_STEPS[1], StepState::Done, &paused)?;
        } else {
            moved?;
            job.step(PROTECT_STEPS[1], StepState::Done, "the machine is stopped")?;
        }
        job.run(PROTECT_STEPS[2], || {
            let done = self.wait_until_keeping_up(machine, job, PROTECT_STEPS[2], "stopped by `standby unprotect`")?;
            Ok(((), done))
        })?;
        job.step(PROTECT_STEPS[3], StepState::Running, "")?;
        let mut points = Vec::new();
        for disk in &machine.disks {
            let point = mark_sealed(host, &disk.vault_disk, State::Protected.name())?;
            points.push(format!("{} point {}", disk.vault_disk, point.unwrap_or_default()));
        }
        job.step(PROTECT_STEPS[3], StepState::Done, &points.join(", "))?;
        job.deployment.state.set_machine_state(name, step.after, None)?;
        Ok(())
    }

    /// Whether every disk's splitter has re-read what it had to and keeps
    /// up, and a line saying how far they are. With `stopped` (the guest
    /// writes no more): whether each has queued every write and its vault
    /// is not failing, so a point marked now is sealed after all of them
    /// at once, without waiting for the periodic seal of what is queued.
    pub(super) fn replication(&self, machine: &Machine, stopped: bool) -> Result<Replication, ControlError> {
        let mut caught_up = true;
        let mut left = 0;
        let mut queued = 0;
        let mut problems = Vec::new();
        let host = self.site(machine.active_site);
        for disk in &machine.disks {
            let status = host.splitter_status(&disk.vault_disk)?;
            left += status.catch_up_bytes;
            queued += status.lag_bytes;
            let keeping_up = if stopped { status.error.is_none() } else { status.lag_seconds <= KEEPING_UP_SECONDS };
            caught_up &= status.refreshed && status.catch_up_bytes == 0 && keeping_up;
            if let Some(error) = &status.error {
                problems.push(format!("{}: {error}", disk.vault_disk));
            }
        }
        Ok(Replication { caught_up, left_bytes: left, queued_bytes: queued, problems })
    }

    /// Waits until every splitter of `machine` has re-read what it had to
    /// and keeps up, reporting how far they are on step `step` of `job`;
    /// says how long it took. Gives up when `job` is asked to stop (`by`
    /// names who asks) and when nothing moved for
    /// [`REPLICATION_STALL_TIMEOUT`] (the bytes left to read and to ship
    /// did not shrink): replication that cannot progress is reported, not
    /// waited for forever.
    pub(super) fn wait_until_keeping_up(
        &self,
        machine: &Machine,
        job: &JobSteps,
        step: &str,
        by: &str,
    ) -> Result<String, ControlError> {
        let started = Instant::now();
        let (mut least, mut moved_at) = (u64::MAX, Instant::now());
        let mut unanswered = Unanswered::default();
        loop {
            job.check_stop(step, by)?;
            let Some(replication) = unanswered.bear(self.replication(machine, false))? else {
                std::thread::sleep(REPLICATION_POLL_INTERVAL);
                continue;
            };
            if replication.caught_up {
                return Ok(format!("{replication}; in {:.1} s", started.elapsed().as_secs_f64()));
            }
            let remaining = replication.left_bytes + replication.queued_bytes;
            if remaining < least {
                (least, moved_at) = (remaining, Instant::now());
            } else if moved_at.elapsed() > REPLICATION_STALL_TIMEOUT {
                return Err(ControlError::Failed(format!(
                    "replication made no progress for {} s: {replication}",
                    REPLICATION_STALL_TIMEOUT.as_secs()
                )));
            }
            job.step(step, StepState::Running, &replication.to_string())?;
            std::thread::sleep(REPLICATION_POLL_INTERVAL);
        }
    }

    /// Takes `machine` off replication: its running disks back onto their
    /// images, the splitters stopped after shipping what they queued, their
    /// intent logs removed (the images will be written without them).
    fn unreplicate(
        &self,
        deployment: &Deployment,
        machine: &Machine,
        job: Option<&JobSteps>,
    ) -> Result<(), ControlError> {
        let step = |index: usize, state: StepState, detail: &str| match job {
            Some(job) => job.step(UNPROTECT_STEPS[index], state, detail),
            None => Ok(()),
        };
        step(0, StepState::Running, "")?;
        let files: Vec<Drive> = machine.images().into_iter().map(Drive::File).collect();
        let moved = self.switch_running_drives(machine, &files)?;
        step(0, StepState::Done, if moved { "moved while running" } else { "the machine is stopped" })?;
        step(1, StepState::Running, "")?;
        let run_dir = splitters_dir(deployment);
        let host = self.site(machine.active_site);
        let mut failures = Vec::new();
        for disk in &machine.disks {
            if let Err(e) = host.stop_splitter(&disk.vault_disk, &run_dir) {
                failures.push(e.to_string());
            }
        }
        step(1, StepState::Done, &format!("{} splitter(s) stopped", machine.disks.len()))?;
        step(2, StepState::Running, "")?;
        forget_change_tracking(host, machine)?;
        step(2, StepState::Done, "the next protect reads the whole disk")?;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ControlError::Failed(failures.join("; ")))
        }
    }

    pub(super) fn unprotect(self: &Arc<Self>, name: &str) -> Result<JobStarted, ControlError> {
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        check(&machine, Command::Unprotect)?;
        let protecting = self.claims.holder(name);
        if let (Some(protect_job), State::Enabling) = (protecting, machine.state) {
            return self.stop_initial_replication(&deployment, name, protect_job);
        }
        self.spawn_command(&deployment, name, Command::Unprotect, &UNPROTECT_STEPS, move |daemon, job| {
            daemon.unprotect_job(&machine, job)
        })
    }

    /// The unprotect job; run again by a restarted daemon that interrupted
    /// it (every step is safe to repeat).
    pub(super) fn unprotect_job(&self, machine: &Machine, job: &JobSteps) -> Result<(), ControlError> {
        let step = transition_of(machine, Command::Unprotect)?;
        self.unreplicate(job.deployment, machine, Some(job))?;
        job.deployment.state.set_machine_state(&machine.definition.name, step.after, Some(None))?;
        Ok(())
    }

    /// A replicated machine that runs with a disk on its image instead of
    /// its splitter (a daemon died between an unprotect moving the disks
    /// off and recording it) has written what no splitter saw: with the
    /// guest paused, the splitters are started again with no intent log
    /// (so they re-read everything) and the disks moved onto them. Says
    /// whether it had to.
    pub(super) fn reattach_splitters(&self, deployment: &Deployment, machine: &Machine) -> Result<bool, ControlError> {
        let key = instance(&machine.definition.name, machine.active_site);
        let host = self.site(machine.active_site);
        let mut off = false;
        for index in 0..machine.disks.len() {
            let Some(opened) = host.drive(&key, index)? else { return Ok(false) };
            off |= opened.on_file;
        }
        if !off || !host.pause(&key)? {
            return Ok(false);
        }
        let moved = (|| {
            self.stop_splitters_of(deployment, machine)?;
            forget_change_tracking(host, machine)?;
            self.ensure_splitters(deployment, machine)?;
            for (index, drive) in self.splitter_drives(deployment, machine).iter().enumerate() {
                host.switch_drive(&key, index, drive)?;
            }
            Ok::<(), ControlError>(())
        })();
        host.resume(&key)?;
        moved.map(|()| true)
    }

    /// `unprotect` during initial replication: the protect job is told to
    /// stop, and its own roll-back (disks back on their images, splitters
    /// stopped, intent logs removed) leaves the machine unprotected. The
    /// unprotect job follows it and says how it ended.
    fn stop_initial_replication(
        self: &Arc<Self>,
        deployment: &Deployment,
        name: &str,
        protect_job: i64,
    ) -> Result<JobStarted, ControlError> {
        self.claims.stop_and_wait(name, INITIAL_REPLICATION_STOP_TIMEOUT);
        let machine = deployment.state.machine(name)?;
        if machine.state != State::Unprotected {
            // The roll-back did not finish: a plain unprotect tries again.
            check(&machine, Command::Unprotect)?;
            return self.unprotect(name);
        }
        let steps = ["stop the initial replication"];
        self.spawn_command(deployment, name, Command::Unprotect, &steps, move |_, job| {
            let detail =
                format!("protect job {protect_job} stopped and rolled back: disks on their images, splitters stopped");
            job.step(steps[0], StepState::Done, &detail)?;
            Ok(())
        })
    }

    /// The named points of machine `name` (its first disk's notable points:
    /// every app-consistent or labelled point, crash-consistent ones
    /// [`CRASH_CONSISTENT_SPACING`](standby_vault::summary::CRASH_CONSISTENT_SPACING)
    /// apart and the newest) and the window of moments every disk can be
    /// restored at (any of them can be picked).
    pub(super) fn points(&self, name: &str) -> Result<standby_api::MachinePoints, ControlError> {
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        let mut listed = standby_api::MachinePoints { machine: name.into(), from: None, to: None, points: Vec::new() };
        if !machine.state.replicating() && machine.policy.is_none() {
            return Ok(listed);
        }
        let site = machine.active_site.other();
        let vault = deployment.open_vault_at(site)?;
        let (mut from, mut to): (Option<i64>, Option<i64>) = (None, None);
        for (index, disk) in machine.disks.iter().enumerate() {
            let window = self.with_summary(site, &vault, &disk.vault_disk, |summary| {
                if index == 0 {
                    listed.points = points_of(summary);
                }
                summary.first_time_micros.zip(summary.last_time_micros)
            })?;
            let Some((first, last)) = window else {
                return Ok(listed);
            };
            from = Some(from.map_or(first, |from| from.max(first)));
            to = Some(to.map_or(last, |to| to.min(last)));
        }
        listed.from = from.map(standby_vault::format_time);
        listed.to = to.map(standby_vault::format_time);
        Ok(listed)
    }

    /// Every machine's status, from the board (see `board.rs`).
    pub(super) fn statuses(&self) -> Result<Arc<Posted>, ControlError> {
        self.board.view(&self.home.join(crate::STATE_FILE), || self.status(None))
    }

    /// The state's version now: it changes with every change committed
    /// (what was made from the state before may no longer be true).
    pub(super) fn state_version(&self) -> Result<i64, ControlError> {
        self.board.data_version(&self.home.join(crate::STATE_FILE))
    }

    /// Finds every machine's status now and posts it on the board; their
    /// RPOs go into the console's charts.
    pub(super) fn refresh_statuses(&self) -> Result<Arc<Posted>, ControlError> {
        let posted = self.board.refresh(&self.home.join(crate::STATE_FILE), || self.status(None))?;
        self.rpo_history.record(&posted.list, jiff::Timestamp::now().as_second());
        Ok(posted)
    }

    /// `standby status`: every protected machine's (or one machine's)
    /// state, health, current RPO and latest points, found now.
    pub(super) fn status(&self, name: Option<&str>) -> Result<StatusList, ControlError> {
        let deployment = self.deployment()?;
        let machines = match name {
            Some(name) => vec![deployment.state.machine(name)?],
            None => deployment.state.machines()?,
        };
        let mut items = Vec::new();
        for machine in &machines {
            items.push(self.machine_status(&deployment, machine)?);
        }
        let plans = match name {
            Some(_) => Vec::new(),
            None => deployment.state.plans()?.iter().map(crate::plans::plan_status).collect(),
        };
        Ok(StatusList { machines: items, plans })
    }

    /// What `status` says of the exports of `machine` for `role` that died lately.
    fn exports_restarted(&self, machine: &Machine, role: Instance) -> Vec<String> {
        let name = |disk: &crate::DiskDefinition| HelperName::Export(instance(&disk.vault_disk, role));
        machine.disks.iter().filter_map(|disk| self.lately_restarted(&name(disk))).collect()
    }

    fn machine_status(&self, deployment: &Deployment, machine: &Machine) -> Result<MachineStatus, ControlError> {
        let name = machine.name();
        let running = self.runtime(machine, machine.active_site.into()).running;
        let mut status =
            MachineStatus::recorded(name, machine.state, machine.active_site, running, machine.policy.clone());
        if !machine.state.replicating() {
            if machine.state.on_exports() {
                status.hydration = Some(self.hydration(deployment, machine)?);
                let restarted = self.exports_restarted(machine, machine.active_site.into());
                status.problems = (!restarted.is_empty()).then_some(restarted);
            }
            return Ok(status);
        }
        let policy = self.policy_of(deployment, machine)?;
        let mut problems = Problems::default();
        // A vault that cannot be read is said, not a reason to say nothing:
        // the splitters' own reports still are (an outage is when status
        // matters most).
        let target = machine.active_site.other();
        let silent = self.site(target).reachable().filter(|(answers, _)| !answers);
        // A host that does not answer is not asked: it would hold status up.
        let vault = match silent.map_or_else(|| Ok(deployment.open_vault_at(target)), |(_, since)| Err(since)) {
            Err(since) => {
                problems.critical.push(format!(
                    "the {target} site's host does not answer (since {since}): replication into its vault waits \
                     here, the splitters keep what they could not ship in their intent logs; no point is listed"
                ));
                None
            }
            Ok(Ok(vault)) => Some(vault),
            Ok(Err(e)) => {
                problems.critical.push(format!("the vault cannot be read, so no point is listed: {e}"));
                None
            }
        };
        let mut rpo: f64 = 0.0;
        let mut disks = Vec::new();
        for disk in &machine.disks {
            let host = self.site(machine.active_site);
            let journal = match &vault {
                Some(vault) => self.with_summary(target, vault, &disk.vault_disk, JournalLatest::of)?,
                None => JournalLatest::default(),
            };
            let (disk_status, disk_rpo) = disk_status(host, journal, &disk.vault_disk, running, &mut problems);
            rpo = rpo.max(disk_rpo);
            disks.push(disk_status);
        }
        if machine.state == State::Enabling {
            problems.warnings.push("initial replication is running".to_string());
        }
        for disk in &machine.disks {
            if let Some(restart) = self.lately_restarted(&HelperName::Splitter(disk.vault_disk.clone())) {
                problems.warnings.push(restart);
            }
        }
        if machine.state == State::TestFailover {
            problems.warnings.extend(self.exports_restarted(machine, Instance::Drill));
        }
        let threshold = policy.rpo_threshold_seconds as f64;
        if rpo > threshold {
            problems.critical.push(format!("RPO {rpo:.0} s is over the policy's threshold of {threshold:.0} s"));
        } else if rpo > threshold / 2.0 {
            problems.warnings.push(format!("RPO {rpo:.0} s is over half the policy's threshold of {threshold:.0} s"));
        }
        status.health = Some(problems.health());
        status.replicates_to = Some(machine.active_site.other());
        let last = lock(&self.consistency).get(name).map(|consistency| consistency.last.clone());
        status.consistency = Some(consistency_line(last, &disks, policy.app_consistent_seconds));
        status.rpo_seconds = Some(rpo);
        status.rpo_threshold_seconds = Some(policy.rpo_threshold_seconds);
        status.problems = Some(problems.critical.into_iter().chain(problems.warnings).collect());
        status.disks = Some(disks);
        Ok(status)
    }
}

/// The points `machine`'s timeline offers, oldest first (see [`Daemon::points`]).
fn points_of(summary: &JournalSummary) -> Vec<standby_api::PointView> {
    let newest = summary.newest_crash_consistent.as_ref().filter(|newest| !summary.notable.contains(newest));
    let mut points: Vec<&Bookmark> = summary.notable.iter().chain(newest).collect();
    points.sort_by_key(|point| point.sequence);
    points
        .into_iter()
        .map(|point| standby_api::PointView {
            sequence: point.sequence,
            time: point.time.clone(),
            kind: point.kind.name().into(),
            label: point.label.clone(),
        })
        .collect()
}

/// What `status` says of a disk's journal.
#[derive(Default)]
struct JournalLatest {
    last_time_micros: Option<i64>,
    crash_consistent: Option<BookmarkView>,
    app_consistent: Option<BookmarkView>,
}

impl JournalLatest {
    fn of(summary: &JournalSummary) -> JournalLatest {
        let view = |b: &Bookmark| BookmarkView { sequence: b.sequence, time: b.time.clone(), label: b.label.clone() };
        JournalLatest {
            last_time_micros: summary.last_time_micros,
            crash_consistent: summary.newest_crash_consistent.as_ref().map(view),
            app_consistent: summary.newest_app_consistent.as_ref().map(view),
        }
    }
}

/// One replicated disk: its splitter's report and its journal's latest
/// points, the problems seen, and its part of the machine's RPO.
fn disk_status(
    host: &dyn SiteHost,
    journal: JournalLatest,
    disk: &str,
    running: bool,
    problems: &mut Problems,
) -> (DiskStatus, f64) {
    let splitter = host.splitter_status(disk).ok();
    let mut rpo = 0.0;
    match &splitter {
        Some(splitter) => {
            rpo = splitter.lag_seconds;
            if let Some(error) = &splitter.error {
                problems.warnings.push(format!("disk '{disk}': the vault is failing: {error}"));
            }
            if let Some(error) = splitter.last_io_error.as_ref().filter(|_| splitter.io_errors > 0) {
                problems.warnings.push(format!(
                    "disk '{disk}': {} failed I/O on its image or intent log since its splitter started \
                     (each failed to the guest or was retried), the last: {error}",
                    splitter.io_errors
                ));
            }
            if !splitter.refreshed {
                problems.warnings.push(format!(
                    "disk '{disk}': {} MiB still to read before every point is exact",
                    splitter.catch_up_bytes >> 20
                ));
            }
        }
        None => {
            problems.critical.push(format!(
                "disk '{disk}': its splitter is not running; the daemon starts it again at its next start"
            ));
            if running {
                let now = jiff::Timestamp::now().as_microsecond();
                let since = journal.last_time_micros.unwrap_or(now);
                rpo = (now - since) as f64 / 1e6;
            }
        }
    }
    let status = DiskStatus {
        disk: disk.to_string(),
        rpo_seconds: Some(rpo),
        splitter,
        latest: journal.last_time_micros.map(standby_vault::format_time),
        latest_processed: journal.crash_consistent,
        latest_app_consistent: journal.app_consistent,
    };
    (status, rpo)
}

/// `status`'s line on app-consistent points, agreeing with the disks'
/// lines: a point it names is the newest app-consistent point the vault
/// holds (what a `latest-app` restore gives); the daemon's own record of
/// its last attempt explains why there is none, or why the last one failed.
/// (Issue 14: it used to repeat the last attempt, which could name a point
/// the disk lines did not have: still on its way, or compacted away.)
fn consistency_line(last: Option<Result<String, String>>, disks: &[DiskStatus], every_seconds: u64) -> String {
    let newest = disks
        .iter()
        .filter_map(|disk| disk.latest_app_consistent.as_ref().map(|point| (&disk.disk, point)))
        .max_by(|a, b| a.1.time.cmp(&b.1.time));
    let in_vault = newest.map(|(disk, point)| format!("the latest point of {disk} at {}", point.time));
    match (last, in_vault) {
        (Some(Err(why)), Some(point)) => format!("crash-consistent only: {why}; in the vault, {point}"),
        (Some(Err(why)), None) => format!("crash-consistent only: {why}"),
        (_, Some(point)) => format!("app-consistent: {point}"),
        (Some(Ok(recorded)), None) => format!(
            "app-consistent points every {every_seconds} s through qemu-guest-agent; none in the vault's retention \
             window yet (the last, {recorded}, is on its way or was compacted away)"
        ),
        (None, None) => format!(
            "app-consistent points every {every_seconds} s through qemu-guest-agent; the first is taken once the \
             machine runs protected"
        ),
    }
}

/// What `status` found wrong with a machine, worst first.
#[derive(Default)]
struct Problems {
    critical: Vec<String>,
    warnings: Vec<String>,
}

impl Problems {
    fn health(&self) -> HealthLevel {
        if !self.critical.is_empty() {
            HealthLevel::Critical
        } else if !self.warnings.is_empty() {
            HealthLevel::Warning
        } else {
            HealthLevel::Healthy
        }
    }
}

impl Daemon {
    /// How much of each disk of a machine running from its failover
    /// point's exports is local (hydrated or written since), per disk.
    pub(super) fn hydration(&self, deployment: &Deployment, machine: &Machine) -> Result<Vec<Hydration>, ControlError> {
        let mut disks = Vec::new();
        for (index, disk) in machine.disks.iter().enumerate() {
            let overlay = super::files::overlay_path(deployment, machine, index, machine.active_site.into());
            let local = self.site(machine.active_site).local_bytes(&overlay)?;
            let (local_bytes, disk_bytes) = match local {
                Some((local, total)) => (Some(local), Some(total)),
                None => (None, None),
            };
            let complete = local_bytes.is_some() && local_bytes == disk_bytes;
            disks.push(Hydration { disk: disk.vault_disk.clone(), overlay, local_bytes, disk_bytes, complete });
        }
        Ok(disks)
    }
}

/// Where a site's splitters keep their sockets, pid files and logs.
pub(super) fn splitters_dir(deployment: &Deployment) -> std::path::PathBuf {
    deployment.run_dir().join("disks")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, app: Option<&str>) -> DiskStatus {
        let point = app.map(|time| BookmarkView { sequence: 1, time: time.to_string(), label: "app".into() });
        DiskStatus {
            disk: name.to_string(),
            rpo_seconds: None,
            splitter: None,
            latest: None,
            latest_processed: None,
            latest_app_consistent: point,
        }
    }

    /// The points line names only what the disk lines show (issue 14).
    #[test]
    fn the_consistency_line_agrees_with_the_disks() {
        let disks = [disk("a", Some("2026-12-04T10:00:00Z")), disk("b", Some("2026-12-04T11:00:00Z"))];
        let recorded = Some(Ok("point of a, b at 2026-12-04T12:00:00Z".to_string()));
        let line = consistency_line(recorded.clone(), &disks, 60);
        assert_eq!(line, "app-consistent: the latest point of b at 2026-12-04T11:00:00Z");
        let none = [disk("a", None)];
        let line = consistency_line(recorded, &none, 60);
        assert!(line.contains("none in the vault's retention window") && !line.contains("the latest point"), "{line}");
        let failed = Some(Err("the guest agent could not freeze".to_string()));
        let line = consistency_line(failed.clone(), &disks, 60);
        assert!(line.starts_with("crash-consistent only: the guest agent could not freeze; in the vault,"), "{line}");
        assert_eq!(consistency_line(failed, &none, 60), "crash-consistent only: the guest agent could not freeze");
        assert!(consistency_line(None, &none, 60).contains("the first is taken once the machine runs protected"));
    }

    #[test]
    fn a_wait_bears_with_a_splitter_that_does_not_answer_for_a_while() {
        let gone = || Err::<u32, _>(ControlError::Failed("the splitter of disk 'd' is not running".into()));
        let mut unanswered = Unanswered::default();
        assert_eq!(unanswered.bear(gone()).unwrap(), None);
        assert_eq!(unanswered.bear(Ok(7)).unwrap(), Some(7));
        // An answer starts the count again.
        assert_eq!(unanswered.0, None);
        let mut unanswered = Unanswered(Some(Instant::now() - SPLITTER_BACK_WITHIN - Duration::from_secs(1)));
        let error = unanswered.bear(gone()).unwrap_err();
        assert!(error.to_string().contains("not running"), "{error}");
    }
}
