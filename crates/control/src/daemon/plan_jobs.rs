//! A recovery plan's jobs (docs/plans.md): every lifecycle command but
//! protect and unprotect at plan level (`standby plan failover shop`), as
//! one job of the plan (`Subject::Plan`) claiming every machine of it.
//!
//! The job's steps are the plan's, in order: for each group, its steps
//! before (scripts at the control plane, manual steps that wait for `plan
//! resume`), its machines (each machine's part a job of its own, run side
//! by side; the machines of one replication group from one point, as in
//! `group_jobs.rs`), its steps after. Commands that take machines down
//! (cleanup of a drill, cancel) go through the groups in reverse and run
//! no steps; commit, reprotect and the wait of a planned failover with
//! `--sync-first` run the groups in order without steps. Failback is the
//! same plan from the other site: the groups come back in the same order.
//!
//! A failed step stops the plan: the job fails saying which, the steps
//! after it stay pending. `plan resume` goes on with a new job that skips
//! every step an earlier run did, and every machine already where the
//! command leads; `plan cancel` stops a running plan (its parts roll back)
//! and undoes what its runs did, groups in reverse. A daemon that dies
//! during a plan's job takes each machine's part up as that machine's job
//! (a failover in flight rolls back) and then resumes the plan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use standby_api::JobStarted;
use standby_lifecycle::job::{JobKind, JobOrigin, JobState, StepState, Subject};
use standby_lifecycle::{Command, State};

use super::engine::{check, Part, PartDone};
use super::failover::Asked;
use super::group_jobs::Agreement;
use super::{lock, Daemon, JobSteps};
use crate::deployment::Deployment;
use crate::error::ControlError;
use crate::machine::Machine;
use crate::plans::{Plan, PlanStep};

/// How often a manual step looks whether the operator resumed the plan.
const RESUME_POLL: Duration = Duration::from_millis(200);
/// How often the drills loop looks whether a plan's drill is due.
const DRILL_TICK: Duration = Duration::from_secs(10);
/// The shortest interval between a plan's scheduled drills.
pub(super) const DRILL_EVERY_MIN: Duration = Duration::from_secs(60);
/// How often a probe is tried again.
const PROBE_RETRY: Duration = Duration::from_secs(1);
/// How much of a script's output its step keeps.
const OUTPUT_KEPT: usize = 2048;
const CANCELLED: &str = "cancelled by `standby plan cancel`";

/// One step of a plan's job.
#[derive(Debug, Clone, PartialEq)]
enum Stage {
    Script {
        group: usize,
        when: &'static str,
        index: usize,
        path: std::path::PathBuf,
        timeout: Duration,
    },
    Manual {
        group: usize,
        when: &'static str,
        index: usize,
        text: String,
    },
    Machines {
        group: usize,
    },
    /// The group's machines' health probes, side by side.
    Probes {
        group: usize,
    },
    /// The plan's RTO: from the job's start to its last probe passing.
    Rto,
    /// A drill's removal, group by group in reverse, once it is measured
    /// (even when it failed).
    Cleanup {
        group: usize,
    },
}

/// Whether `command` brings machines up at the other site or a drill (the
/// plan's steps run, groups in order).
fn brings_up(command: Command) -> bool {
    matches!(
        command,
        Command::TestFailover
            | Command::Failover
            | Command::PlannedFailover { sync_first: false }
            | Command::CompleteFailover
            | Command::ChangePoint
    )
}

/// The steps of a job of `command` on `plan`, in order; a drill's removal
/// after them with `cleanup` (a test failover's).
fn stages(plan: &Plan, command: Command, cleanup: bool) -> Vec<Stage> {
    let mut order: Vec<usize> = (0..plan.groups.len()).collect();
    if matches!(command, Command::Cancel | Command::CleanupTestFailover) {
        order.reverse();
    }
    let mut stages = Vec::new();
    for group in order {
        let steps = |when: &'static str, steps: &[PlanStep]| -> Vec<Stage> {
            steps
                .iter()
                .enumerate()
                .map(|(index, step)| match step {
                    PlanStep::Script { path, timeout } => {
                        Stage::Script { group, when, index, path: path.clone(), timeout: *timeout }
                    }
                    PlanStep::Manual { text } => Stage::Manual { group, when, index, text: text.clone() },
                })
                .collect()
        };
        let with_steps = brings_up(command);
        if with_steps {
            stages.extend(steps("before", &plan.groups[group].pre));
        }
        stages.push(Stage::Machines { group });
        let probed = plan.groups[group].machines.iter().any(|machine| plan.probes.contains_key(machine));
        if with_steps && probed {
            stages.push(Stage::Probes { group });
        }
        if with_steps {
            stages.extend(steps("after", &plan.groups[group].post));
        }
    }
    if brings_up(command) && !plan.probes.is_empty() {
        stages.push(Stage::Rto);
    }
    if cleanup && command == Command::TestFailover {
        stages.extend((0..plan.groups.len()).rev().map(|group| Stage::Cleanup { group }));
    }
    stages
}

/// A stage's step name in the job (unique within it).
fn stage_name(plan: &Plan, stage: &Stage) -> String {
    let group = |index: usize| format!("group {} ({})", index + 1, plan.groups[index].name);
    match stage {
        Stage::Script { group: g, when, index, path, .. } => {
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            format!("{} {when} {}: script {file}", group(*g), index + 1)
        }
        Stage::Manual { group: g, when, index, .. } => format!("{} {when} {}: manual step", group(*g), index + 1),
        Stage::Machines { group: g } => format!("{}: {}", group(*g), plan.groups[*g].machines.join(", ")),
        Stage::Probes { group: g } => format!("{}: health probes", group(*g)),
        Stage::Rto => "the plan's RTO".to_string(),
        Stage::Cleanup { group: g } => format!("remove the drill of {}", group(*g)),
    }
}

/// Whether `machine` is already where `command` leads (an earlier run of
/// the plan moved it): its part is skipped.
fn done_already(machine: &Machine, command: Command) -> bool {
    if check(machine, command).is_ok() {
        return false;
    }
    match command {
        Command::TestFailover => machine.state == State::TestFailover,
        Command::Failover | Command::PlannedFailover { sync_first: false } | Command::CompleteFailover => {
            machine.state == State::FailedOver
        }
        Command::PlannedFailover { sync_first: true } => machine.state == State::ReadyToComplete,
        Command::Commit => machine.state == State::Committed,
        Command::Reprotect | Command::CleanupTestFailover => machine.state == State::Protected,
        Command::Cancel => machine.state.replicating(),
        Command::ChangePoint | Command::Protect | Command::Unprotect => false,
    }
}

/// One run of a plan's job: what it runs and what it found.
struct Run {
    plan: Plan,
    command: Command,
    ask: PlanAsk,
    began: Instant,
    /// Seconds from the job's start to each machine's probe passing.
    rto: std::sync::Mutex<BTreeMap<String, f64>>,
}

/// What a plan's run was asked, besides its command (kept with the plan,
/// for `resume`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct PlanAsk {
    pub point: Option<String>,
    pub shutdown_source: bool,
    /// A test failover's drill removed once measured.
    #[serde(default)]
    pub cleanup: bool,
}

/// How parts ended, in a line after `said` (`MACHINE: job N VERB`, the
/// failures last): the line, or it as the error when a part failed.
fn said_of_parts(mut said: Vec<String>, outcomes: Vec<PartDone>, verb: &str) -> Result<String, String> {
    let mut failed = Vec::new();
    for done in outcomes {
        let job = done.job.map(|id| format!("job {id} ")).unwrap_or_default();
        match done.outcome {
            Ok(()) => said.push(format!("{}: {job}{verb}", done.machine)),
            Err(e) => failed.push(format!("{}: {job}failed: {e}", done.machine)),
        }
    }
    let failing = !failed.is_empty();
    said.extend(failed);
    match failing {
        false => Ok(said.join("; ")),
        true => Err(said.join("; ")),
    }
}

/// What plan `name`'s last job was asked.
fn plan_ask(deployment: &Deployment, name: &str) -> Result<PlanAsk, ControlError> {
    let run = deployment.state.plan(name)?.run;
    Ok(run.and_then(|run| serde_json::from_str(&run).ok()).unwrap_or_default())
}

impl Daemon {
    /// The API's plan operation `operation` (a lifecycle command's name,
    /// or `resume`) on plan `name`.
    pub(super) fn plan_operation(
        self: &Arc<Self>,
        name: &str,
        operation: &str,
        request: standby_api::PlanJobRequest,
    ) -> Result<JobStarted, ControlError> {
        if operation == standby_api::routes::RESUME {
            return self.plan_resume(name);
        }
        let command = standby_lifecycle::COMMANDS
            .into_iter()
            .map(|command| match command {
                Command::PlannedFailover { .. } => Command::PlannedFailover { sync_first: request.sync_first },
                command => command,
            })
            .find(|command| standby_api::routes::operation(*command) == operation)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "no plan operation '{operation}': use test-failover, cleanup-test-failover, failover, \
                     planned-failover, complete-failover, change-point, commit, cancel, reprotect or resume"
                ))
            })?;
        if command == Command::ChangePoint && request.point.is_none() {
            return Err(ControlError::Refused("change-point needs the point to change to (--point P)".into()));
        }
        let ask = PlanAsk { point: request.point, shutdown_source: request.shutdown_source, cleanup: request.cleanup };
        self.plan_command(name, command, ask)
    }

    /// Starts a job of lifecycle command `command` on plan `name` (see the
    /// module's docs). Every machine is checked first: a refusal names it
    /// and records nothing.
    pub(super) fn plan_command(
        self: &Arc<Self>,
        name: &str,
        command: Command,
        ask: PlanAsk,
    ) -> Result<JobStarted, ControlError> {
        if matches!(command, Command::Protect | Command::Unprotect) {
            return Err(ControlError::Refused(format!(
                "{} is each machine's own: `standby {} NAME`",
                command.name(),
                command.name()
            )));
        }
        let deployment = self.deployment()?;
        let plan = self.checked_plan(&deployment, name)?;
        if command == Command::Cancel {
            return self.cancel_plan(&deployment, &plan);
        }
        for machine in self.plan_machines(&deployment, &plan)? {
            check(&machine, command)?;
        }
        self.spawn_plan(&deployment, plan, command, ask, JobOrigin::Operator, BTreeSet::new())
    }

    /// `plan resume NAME`: a plan waiting at a manual step goes on; a plan
    /// whose last job failed or was interrupted goes on from where it
    /// stopped, with a new job.
    pub(super) fn plan_resume(self: &Arc<Self>, name: &str) -> Result<JobStarted, ControlError> {
        let deployment = self.deployment()?;
        let plan = self.checked_plan(&deployment, name)?;
        let subject = Subject::Plan(name.to_string());
        let last = deployment.state.jobs()?.into_iter().find(|job| job.subject == subject);
        let Some(last) = last else {
            return Err(ControlError::Refused(format!("plan '{name}' has not run yet: nothing to resume")));
        };
        match last.state {
            JobState::Running => {
                let waiting = last
                    .steps
                    .iter()
                    .any(|step| step.state == StepState::Running && step.name.ends_with("manual step"));
                if !waiting {
                    return Err(ControlError::Conflict(format!(
                        "plan '{name}' runs (job {}) and waits for no manual step; `standby jobs {} --watch` \
                         follows it",
                        last.id, last.id
                    )));
                }
                lock(&self.plan_resumes).insert(name.to_string());
                Ok(JobStarted { job: last.id, machine: name.to_string(), command: last.command })
            }
            JobState::Failed | JobState::Interrupted => {
                let JobKind::Lifecycle(command) = last.kind else {
                    return Err(ControlError::Failed(format!("job {} of plan '{name}' is no lifecycle job", last.id)));
                };
                let done: BTreeSet<String> = last
                    .steps
                    .iter()
                    .filter(|step| step.state == StepState::Done)
                    .map(|step| step.name.clone())
                    .collect();
                let ask = plan_ask(&deployment, name)?;
                self.spawn_plan(&deployment, plan, command, ask, JobOrigin::Resumed, done)
            }
            JobState::Succeeded => Err(ControlError::Refused(format!(
                "plan '{name}' has nothing to resume: its last job {} ({}) succeeded",
                last.id, last.command
            ))),
        }
    }

    /// `plan drill NAME --every DUR` (or, with none, no more drills by the
    /// daemon): the plan as it is then.
    pub(super) fn schedule_drills(
        &self,
        name: &str,
        schedule: standby_api::PlanSchedule,
    ) -> Result<standby_api::PlanView, ControlError> {
        let deployment = self.deployment()?;
        if let Some(every) = schedule.every_seconds {
            if every < DRILL_EVERY_MIN.as_secs() {
                return Err(ControlError::Refused(format!(
                    "--every {every} s is shorter than a drill may be apart ({} s)",
                    DRILL_EVERY_MIN.as_secs()
                )));
            }
        }
        deployment.state.set_plan_drill_every(name, schedule.every_seconds)?;
        Ok(crate::plans::stored_view(&deployment.state.plan(name)?, &deployment.state.machines()?, &deployment.config))
    }

    /// Runs forever: starts each plan's drill (a test failover with its
    /// probes, removed once measured) when its schedule says it is due.
    pub(super) fn drills_loop(self: Arc<Self>) {
        loop {
            std::thread::sleep(DRILL_TICK);
            let Ok(deployment) = self.deployment() else { continue };
            let Ok(plans) = deployment.state.plans() else { continue };
            for stored in plans {
                let Some(every) = stored.drill_every else { continue };
                let last = crate::plans::last_drill(&stored);
                let since = last.as_ref().and_then(|drill| drill.at.parse::<jiff::Timestamp>().ok());
                let due = since.is_none_or(|at| {
                    jiff::Timestamp::now().as_second() - at.as_second() >= every.min(i64::MAX as u64) as i64
                });
                if !due || self.plan_running(&deployment, &stored.name) {
                    continue;
                }
                let ask = PlanAsk { cleanup: true, ..PlanAsk::default() };
                match self.plan_command(&stored.name, Command::TestFailover, ask) {
                    Ok(job) => {
                        eprintln!("standby: scheduled drill of plan '{}' started (job {})", stored.name, job.job)
                    }
                    Err(e) => {
                        eprintln!("standby: the scheduled drill of plan '{}' could not start: {e}", stored.name);
                        let drill = standby_api::PlanDrill {
                            job: 0,
                            at: jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                            passed: false,
                            rto_seconds: None,
                            machines: Vec::new(),
                            error: Some(format!("the scheduled drill could not start: {e}")),
                        };
                        let recorded = serde_json::to_string(&drill).expect("a drill serialises");
                        let _ = deployment.state.set_plan_last_drill(&stored.name, &recorded);
                    }
                }
            }
        }
    }

    /// Whether a job of plan `name` runs.
    fn plan_running(&self, deployment: &Deployment, name: &str) -> bool {
        let subject = Subject::Plan(name.to_string());
        deployment
            .state
            .jobs()
            .map(|jobs| jobs.iter().any(|job| job.subject == subject && job.state == JobState::Running))
            .unwrap_or(true)
    }

    /// At the daemon's start: each plan whose job the dead daemon left
    /// running goes on (its machines' parts were taken up as their own
    /// jobs first; the plan waits for those to end).
    pub(super) fn resume_interrupted_plans(self: &Arc<Self>, interrupted: &[crate::Job]) {
        let plans: BTreeSet<String> = interrupted
            .iter()
            .filter_map(|job| match &job.subject {
                Subject::Plan(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        for name in plans {
            let daemon = self.clone();
            std::thread::spawn(move || {
                let machines = daemon
                    .deployment()
                    .and_then(|deployment| {
                        let plan = daemon.checked_plan(&deployment, &name)?;
                        daemon.plan_machines(&deployment, &plan)
                    })
                    .unwrap_or_default();
                while machines.iter().any(|machine| daemon.claims.holder(machine.name()).is_some()) {
                    std::thread::sleep(RESUME_POLL);
                }
                match daemon.plan_resume(&name) {
                    Ok(job) => eprintln!("standby: plan '{name}' resumed (job {})", job.job),
                    Err(e) => {
                        eprintln!("standby: plan '{name}' could not be resumed: {e}; `standby plan resume {name}`")
                    }
                }
            });
        }
    }

    /// The plan kept as `name`, checked against the deployment as it is.
    fn checked_plan(&self, deployment: &Deployment, name: &str) -> Result<Plan, ControlError> {
        let stored = deployment.state.plan(name)?;
        crate::plans::check_plan(&stored.source, &stored.file, &stored.base, &deployment.state.machines()?)
            .map_err(|e| ControlError::Refused(format!("plan '{name}' no longer holds: {e}")))
    }

    fn plan_machines(&self, deployment: &Deployment, plan: &Plan) -> Result<Vec<Machine>, ControlError> {
        plan.groups.iter().flat_map(|g| &g.machines).map(|name| deployment.state.machine(name)).collect()
    }

    /// Starts the job of `command` on `plan`, skipping the steps in `done`.
    fn spawn_plan(
        self: &Arc<Self>,
        deployment: &Deployment,
        plan: Plan,
        command: Command,
        ask: PlanAsk,
        origin: JobOrigin,
        done: BTreeSet<String>,
    ) -> Result<JobStarted, ControlError> {
        let stages = stages(&plan, command, ask.cleanup);
        let names: Vec<String> = stages.iter().map(|stage| stage_name(&plan, stage)).collect();
        let steps: Vec<String> = names.clone();
        let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
        let machines: Vec<String> = plan.groups.iter().flat_map(|g| g.machines.clone()).collect();
        let machines: Vec<&str> = machines.iter().map(String::as_str).collect();
        let subject = Subject::Plan(plan.name.clone());
        let run = serde_json::to_string(&ask).expect("a plan's ask serialises");
        deployment.state.set_plan_run(&plan.name, &run)?;
        lock(&self.plan_resumes).remove(&plan.name);
        let kind = JobKind::Lifecycle(command);
        self.spawn_job_on(deployment, &subject, &machines, kind, origin, &steps, move |daemon, job| {
            let run = Run { plan, command, ask, began: Instant::now(), rto: Default::default() };
            let mut failed = None;
            for (stage, name) in stages.iter().zip(&names) {
                let cleanup = matches!(stage, Stage::Cleanup { .. });
                if done.contains(name) {
                    job.skip(name, "done by an earlier run of the plan")?;
                    continue;
                }
                // After a failure only a drill's removal runs.
                if failed.is_some() && !cleanup {
                    continue;
                }
                let ran = match cleanup {
                    true => job.run(name, || daemon.run_stage(&run, stage, name, job)),
                    false => job.run_unless_stopped(name, CANCELLED, || daemon.run_stage(&run, stage, name, job)),
                };
                if let Err(e) = ran {
                    failed.get_or_insert(e);
                }
            }
            if command == Command::TestFailover {
                daemon.record_drill(job, &run, failed.as_ref());
            }
            failed.map_or(Ok(()), Err)
        })
    }

    /// Keeps how a plan's drill went with the plan (`plan show`, `status`;
    /// a failed one raises an alert).
    fn record_drill(&self, job: &JobSteps, run: &Run, failed: Option<&ControlError>) {
        let rto = lock(&run.rto);
        let machines: Vec<standby_api::MachineRto> = rto
            .iter()
            .map(|(machine, seconds)| standby_api::MachineRto { machine: machine.clone(), rto_seconds: *seconds })
            .collect();
        let probed = run.plan.probes.len();
        let drill = standby_api::PlanDrill {
            job: job.id,
            at: jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            passed: failed.is_none(),
            rto_seconds: (failed.is_none() && probed > 0).then(|| rto.values().copied().fold(0.0, f64::max)),
            machines,
            error: failed.map(ToString::to_string),
        };
        let recorded = serde_json::to_string(&drill).expect("a drill serialises");
        if let Err(e) = job.deployment.state.set_plan_last_drill(&run.plan.name, &recorded) {
            eprintln!("standby: the drill of plan '{}' could not be recorded: {e}", run.plan.name);
        }
    }

    fn run_stage(&self, run: &Run, stage: &Stage, name: &str, job: &JobSteps) -> Result<((), String), ControlError> {
        let (plan, command, ask) = (&run.plan, run.command, &run.ask);
        match stage {
            Stage::Script { group, when, path, timeout, .. } => {
                let environment = self.script_environment(job.deployment, plan, *group, when, command)?;
                let ran = self.control_host(job.deployment).run_script(path, &environment, *timeout)?;
                let output = ran.output.trim_end();
                let output = &output[output.len().saturating_sub(OUTPUT_KEPT)..];
                let said = format!(
                    "{} in {:.1} s{}",
                    ran.ended,
                    ran.seconds,
                    if output.is_empty() { String::new() } else { format!(": {output}") }
                );
                match ran.succeeded {
                    true => Ok(((), said)),
                    false => Err(ControlError::Failed(format!(
                        "script {} {said}; fix it and `standby plan resume {}`",
                        path.display(),
                        plan.name
                    ))),
                }
            }
            Stage::Manual { text, .. } => {
                let waiting = format!("waiting for `standby plan resume {}`: {text}", plan.name);
                job.step(name, StepState::Running, &waiting)?;
                let since = Instant::now();
                loop {
                    if lock(&self.plan_resumes).remove(&plan.name) {
                        return Ok((
                            (),
                            format!("resumed by the operator after {} s: {text}", since.elapsed().as_secs()),
                        ));
                    }
                    job.check_stop(name, CANCELLED)?;
                    std::thread::sleep(RESUME_POLL);
                }
            }
            Stage::Machines { group } => self.run_plan_group(plan, *group, command, ask, job),
            Stage::Probes { group } => self.run_probes(run, *group, job),
            Stage::Cleanup { group } => self.remove_drills(plan, *group, job),
            Stage::Rto => {
                let rto = lock(&run.rto);
                let each: Vec<String> =
                    rto.iter().map(|(machine, seconds)| format!("{machine} {seconds:.1} s")).collect();
                let plan_rto = rto.values().copied().fold(0.0, f64::max);
                Ok(((), format!("RTO {plan_rto:.1} s: every probe passed ({})", each.join(", "))))
            }
        }
    }

    /// Removes the drills of group `group`'s machines that have one.
    fn remove_drills(&self, plan: &Plan, group: usize, job: &JobSteps) -> Result<((), String), ControlError> {
        let mut parts = Vec::new();
        let mut said = Vec::new();
        for name in &plan.groups[group].machines {
            let machine = job.deployment.state.machine(name)?;
            match machine.state {
                State::TestFailover => parts.push(self.part_for(
                    job.deployment,
                    machine,
                    Command::CleanupTestFailover,
                    &Asked::default(),
                )?),
                _ => said.push(format!("{name}: no drill")),
            }
        }
        let outcomes = self.run_parts(JobKind::Lifecycle(Command::CleanupTestFailover), job, false, parts);
        said_of_parts(said, outcomes, "removed").map(|said| ((), said)).map_err(ControlError::Failed)
    }

    /// Waits for the health probe of every machine of group `group` that
    /// has one, side by side; notes each one's RTO (from the job's start).
    fn run_probes(&self, run: &Run, group: usize, job: &JobSteps) -> Result<((), String), ControlError> {
        let mut probed = Vec::new();
        for name in run.plan.groups[group].machines.iter().filter(|m| run.plan.probes.contains_key(*m)) {
            let machine = job.deployment.state.machine(name)?;
            let instance = match run.command {
                Command::TestFailover => standby_lifecycle::Instance::Drill,
                _ => machine.active_site.into(),
            };
            // Every probe is tried where the machine runs, from its site's
            // network: at the addresses it has there.
            let place = Place {
                netns: job.deployment.netns(instance.site(machine.active_site)),
                address: crate::network::static_ip(&machine, instance, &job.deployment.config),
            };
            probed.push((machine, instance, place));
        }
        let stop = job.stop_flag();
        let outcomes: Vec<(String, Result<f64, String>)> = std::thread::scope(|scope| {
            let waiting: Vec<_> = probed
                .iter()
                .map(|(machine, instance, place)| {
                    let probe = &run.plan.probes[machine.name()];
                    let stop = &stop;
                    scope.spawn(move || {
                        let probed = self.wait_for_probe(run, machine, *instance, place, probe, stop);
                        (machine.name().to_string(), probed)
                    })
                })
                .collect();
            waiting.into_iter().map(|thread| thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        });
        let mut said = Vec::new();
        let mut failed = false;
        for (machine, outcome) in outcomes {
            match outcome {
                Ok(rto) => {
                    lock(&run.rto).insert(machine.clone(), rto);
                    said.push(format!("{machine}: passed, RTO {rto:.1} s"));
                }
                Err(why) => {
                    failed = true;
                    said.push(format!("{machine}: {why}"));
                }
            }
        }
        match failed {
            false => Ok(((), said.join("; "))),
            true => Err(ControlError::Failed(format!(
                "{}; `standby plan resume {}` probes again",
                said.join("; "),
                run.plan.name
            ))),
        }
    }

    /// Tries `probe` of `machine` every second until it passes (the
    /// seconds since the job began) or its timeout passes.
    fn wait_for_probe(
        &self,
        run: &Run,
        machine: &Machine,
        instance: standby_lifecycle::Instance,
        place: &Place,
        probe: &crate::plans::Probe,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<f64, String> {
        let key = super::instance(machine.name(), instance);
        let host = self.host_of(machine, instance);
        let check = probe.check.at(place.address).map_err(|e| e.to_string())?;
        let mut environment = vec![
            ("STANDBY_PLAN".to_string(), run.plan.name.clone()),
            ("STANDBY_MACHINE".to_string(), machine.name().to_string()),
            ("STANDBY_INSTANCE".to_string(), key.clone()),
        ];
        if let Some(address) = place.address {
            environment.push(("STANDBY_ADDRESS".to_string(), address.to_string()));
        }
        let started = Instant::now();
        let mut last_error = None;
        loop {
            match host.health_probe(&check, &key, &environment, place.netns.as_deref()) {
                Ok(true) => return Ok(run.began.elapsed().as_secs_f64()),
                Ok(false) => {}
                Err(e) => last_error = Some(e.to_string()),
            }
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(CANCELLED.to_string());
            }
            if started.elapsed() >= probe.timeout {
                let why = last_error.map(|e| format!(" (last: {e})")).unwrap_or_default();
                return Err(format!("its probe did not pass within {} s{why}", probe.timeout.as_secs()));
            }
            std::thread::sleep(PROBE_RETRY);
        }
    }

    /// The environment a plan's script runs with: the plan, the group, its
    /// machines, the command and its direction.
    fn script_environment(
        &self,
        deployment: &Deployment,
        plan: &Plan,
        group: usize,
        when: &str,
        command: Command,
    ) -> Result<Vec<(String, String)>, ControlError> {
        let machines = &plan.groups[group].machines;
        let first = deployment.state.machine(&machines[0])?;
        let (from, to) = match first.state {
            State::FailedOver | State::Committed => (first.active_site.other(), first.active_site),
            _ => (first.active_site, first.active_site.other()),
        };
        Ok(vec![
            ("STANDBY_PLAN".into(), plan.name.clone()),
            ("STANDBY_GROUP".into(), plan.groups[group].name.clone()),
            ("STANDBY_GROUP_INDEX".into(), (group + 1).to_string()),
            ("STANDBY_MACHINES".into(), machines.join(" ")),
            ("STANDBY_COMMAND".into(), command.name().to_string()),
            ("STANDBY_STEP".into(), when.to_string()),
            ("STANDBY_DIRECTION".into(), format!("{from}-to-{to}")),
        ])
    }

    /// Runs the parts of group `group`'s machines side by side: each
    /// replication group among them from one point, machines already where
    /// `command` leads skipped.
    fn run_plan_group(
        &self,
        plan: &Plan,
        group: usize,
        command: Command,
        ask: &PlanAsk,
        job: &JobSteps,
    ) -> Result<((), String), ControlError> {
        let deployment = job.deployment;
        let mut skipped = Vec::new();
        let mut pending: Vec<Machine> = Vec::new();
        for name in &plan.groups[group].machines {
            let machine = deployment.state.machine(name)?;
            match done_already(&machine, command) {
                true => skipped.push(name.clone()),
                false => pending.push(machine),
            }
        }
        let mut by_replication: BTreeMap<Option<String>, Vec<Machine>> = BTreeMap::new();
        for machine in pending {
            by_replication.entry(machine.group.clone()).or_default().push(machine);
        }
        let mut parts: Vec<Part> = Vec::new();
        for (replication, machines) in by_replication {
            let moves = matches!(
                command,
                Command::Failover | Command::PlannedFailover { sync_first: false } | Command::CompleteFailover
            );
            let point = match (&replication, command) {
                (Some(replication), Command::TestFailover | Command::ChangePoint) => {
                    Some(self.group_point_text(deployment, replication, &machines, ask.point.as_deref())?)
                }
                _ => ask.point.clone(),
            };
            let agreement = match (&replication, moves) {
                (Some(replication), true) => Some(Arc::new(Agreement::new(
                    replication,
                    machines.clone(),
                    ask.point.clone(),
                    command != Command::Failover,
                ))),
                _ => None,
            };
            for machine in machines {
                let asked =
                    Asked { point: point.clone(), shutdown_source: ask.shutdown_source, agreement: agreement.clone() };
                parts.push(self.part_for(deployment, machine, command, &asked)?);
            }
        }
        let outcomes = self.run_parts(JobKind::Lifecycle(command), job, false, parts);
        let said: Vec<String> = skipped.iter().map(|name| format!("{name}: already done")).collect();
        match said_of_parts(said, outcomes, "succeeded") {
            Ok(said) => Ok(((), said)),
            Err(said) => Err(ControlError::Failed(format!(
                "{said}; fix what failed and `standby plan resume {}`, or `standby plan cancel {}`",
                plan.name, plan.name
            ))),
        }
    }

    /// `plan cancel NAME`: stops the plan's running job (its parts roll
    /// back), then undoes what its runs did, groups in reverse: failovers
    /// cancelled, drills removed.
    fn cancel_plan(self: &Arc<Self>, deployment: &Deployment, plan: &Plan) -> Result<JobStarted, ControlError> {
        let machines = self.plan_machines(deployment, plan)?;
        let subject = Subject::Plan(plan.name.clone());
        if let Some(running) = machines.iter().find_map(|m| self.claims.holder(m.name())) {
            let holder = deployment.state.job(running)?;
            if holder.subject == subject {
                self.claims.stop_and_wait(machines[0].name(), super::failover::FAILOVER_STOP_TIMEOUT);
            }
        }
        let mut order: Vec<usize> = (0..plan.groups.len()).collect();
        order.reverse();
        let names: Vec<String> = order.iter().map(|g| stage_name(plan, &Stage::Machines { group: *g })).collect();
        let steps: Vec<String> = names.clone();
        let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
        let members: Vec<&str> = machines.iter().map(Machine::name).collect();
        let plan = plan.clone();
        let kind = JobKind::Lifecycle(Command::Cancel);
        self.spawn_job_on(deployment, &subject, &members, kind, JobOrigin::Operator, &steps, move |daemon, job| {
            for (group, name) in order.iter().zip(&names) {
                job.run(name, || {
                    let mut parts = Vec::new();
                    let mut said = Vec::new();
                    for machine in &plan.groups[*group].machines {
                        let machine = job.deployment.state.machine(machine)?;
                        let undo = match machine.state {
                            State::FailedOver | State::ReadyToComplete => Command::Cancel,
                            State::TestFailover => Command::CleanupTestFailover,
                            state => {
                                said.push(format!("{}: nothing to undo ({state})", machine.name()));
                                continue;
                            }
                        };
                        parts.push(daemon.part_for(job.deployment, machine, undo, &Asked::default())?);
                    }
                    let outcomes = daemon.run_parts(kind, job, false, parts);
                    said_of_parts(said, outcomes, "undone").map(|said| ((), said)).map_err(ControlError::Failed)
                })?;
            }
            Ok(())
        })
    }
}

/// Where a machine's probe is tried from: its site's network namespace,
/// and its static address there.
struct Place {
    netns: Option<std::path::PathBuf>,
    address: Option<std::net::IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::PlanGroup;

    fn plan() -> Plan {
        let script = PlanStep::Script { path: "/srv/fence.sh".into(), timeout: Duration::from_secs(60) };
        Plan {
            name: "shop".into(),
            description: String::new(),
            groups: vec![
                PlanGroup { name: "db".into(), machines: vec!["db".into()], pre: vec![script], post: vec![] },
                PlanGroup {
                    name: "app".into(),
                    machines: vec!["web1".into(), "web2".into()],
                    pre: vec![],
                    post: vec![PlanStep::Manual { text: "check".into() }],
                },
            ],
            probes: BTreeMap::new(),
        }
    }

    #[test]
    fn a_plans_steps_come_in_order_up_and_in_reverse_down() {
        let plan = plan();
        let up: Vec<String> = stages(&plan, Command::Failover, false).iter().map(|s| stage_name(&plan, s)).collect();
        assert_eq!(
            up,
            vec![
                "group 1 (db) before 1: script fence.sh",
                "group 1 (db): db",
                "group 2 (app): web1, web2",
                "group 2 (app) after 1: manual step",
            ]
        );
        let down: Vec<String> =
            stages(&plan, Command::CleanupTestFailover, false).iter().map(|s| stage_name(&plan, s)).collect();
        assert_eq!(down, vec!["group 2 (app): web1, web2", "group 1 (db): db"]);
        let commit: Vec<String> = stages(&plan, Command::Commit, false).iter().map(|s| stage_name(&plan, s)).collect();
        assert_eq!(commit, vec!["group 1 (db): db", "group 2 (app): web1, web2"]);
    }
}
