//! The job engine: every operation is a job (docs/cli.md), run here the
//! same way whatever it does.
//!
//! - A job first claims the machines it acts on ([`Claims`]): all of them
//!   at once or none, so two jobs never act on one machine and a job of
//!   several machines (a replication group, a recovery plan) holds them
//!   together. A refusal comes before anything is recorded.
//! - It is recorded with its kind, origin and named steps, all pending;
//!   [`JobSteps::run`] records a step running, then done with what it did,
//!   or failed with why; the outcome is recorded when the work returns.
//! - Someone may ask it to stop (a `cancel` of a failover, an `unprotect`
//!   during initial replication): [`JobSteps::stop_asked`] tells it at its
//!   own safe points, and it rolls itself back from there.
//! - Tests reach chosen moments of a job by name ([`TestHook`]), to kill
//!   the daemon there or hold the job while they act.
//!
//! What a restarted daemon does about the jobs a dead one left running is
//! `restart.rs`'s table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use standby_api::JobStarted;
use standby_lifecycle::job::{JobKind, JobOrigin, JobState, StepState, Subject};
use standby_lifecycle::{in_flight, transition, Command, Transition};

use super::{lock, Daemon};
use crate::deployment::Deployment;
use crate::error::ControlError;
use crate::machine::Machine;
use crate::records::JobId;

/// How often a request that stops a running job looks whether it ended.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The machines running jobs hold, each with the job and its stop flag.
#[derive(Default)]
pub(super) struct Claims {
    held: Mutex<HashMap<String, Held>>,
}

struct Held {
    /// 0 until the job is recorded.
    job: JobId,
    stop: Arc<AtomicBool>,
}

/// Machines claimed for one job; released when dropped.
pub(super) struct Claim {
    claims: Arc<Claims>,
    names: Vec<String>,
    stop: Arc<AtomicBool>,
}

impl Claims {
    /// Claims every machine of `names` for one job, or none of them,
    /// refusing with the job that holds one.
    pub(super) fn claim(self: &Arc<Self>, deployment: &Deployment, names: &[&str]) -> Result<Claim, ControlError> {
        let mut held = lock(&self.held);
        if let Some((name, holder)) = names.iter().find_map(|name| Some((name, held.get(*name)?))) {
            let id = holder.job;
            let command = deployment.state.job(id).map(|job| job.command).unwrap_or_default();
            return Err(ControlError::Conflict(format!("machine '{name}' is busy with job {id} ({command})"))
                .with_hint(standby_api::Hint::WatchJob { job: id }));
        }
        let stop = Arc::new(AtomicBool::new(false));
        for name in names {
            held.insert(name.to_string(), Held { job: 0, stop: stop.clone() });
        }
        Ok(Claim { claims: self.clone(), names: names.iter().map(|name| name.to_string()).collect(), stop })
    }

    /// The job holding machine `name`, if one does.
    pub(super) fn holder(&self, name: &str) -> Option<JobId> {
        lock(&self.held).get(name).map(|held| held.job)
    }

    /// Every held machine with its job.
    pub(super) fn held(&self) -> Vec<(String, JobId)> {
        lock(&self.held).iter().map(|(name, held)| (name.clone(), held.job)).collect()
    }

    /// Asks the job holding machine `name` to stop (it looks at its own
    /// safe points and rolls itself back) and waits up to `timeout` for it
    /// to end; whether it ended.
    pub(super) fn stop_and_wait(&self, name: &str, timeout: Duration) -> bool {
        match lock(&self.held).get(name) {
            Some(held) => held.stop.store(true, Ordering::SeqCst),
            None => return true,
        }
        let deadline = Instant::now() + timeout;
        while self.holder(name).is_some() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(STOP_POLL_INTERVAL);
        }
        true
    }
}

impl Claim {
    fn set_job(&self, id: JobId) {
        let mut held = lock(&self.claims.held);
        for name in &self.names {
            if let Some(entry) = held.get_mut(name) {
                entry.job = id;
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = lock(&self.claims.held);
        for name in &self.names {
            held.remove(name);
        }
    }
}

/// A running job's handle: its steps, its stop flag, its test hooks.
pub(super) struct JobSteps<'a> {
    pub(super) deployment: &'a Deployment,
    pub(super) id: JobId,
    hooks: Vec<TestHook>,
    stop: Arc<AtomicBool>,
}

impl<'a> JobSteps<'a> {
    fn new(
        deployment: &'a Deployment,
        id: JobId,
        hooks: &Hooks,
        command: &str,
        steps: &[&str],
        stop: Arc<AtomicBool>,
    ) -> Self {
        JobSteps { deployment, id, hooks: hooks.for_job(command, steps), stop }
    }

    /// Records step `name` in `state` with `detail`.
    pub(super) fn step(&self, name: &str, state: StepState, detail: &str) -> Result<(), ControlError> {
        self.deployment.state.job_step(self.id, name, state, detail)?;
        for hook in &self.hooks {
            hook.reached(name, &self.stop);
        }
        Ok(())
    }

    /// Runs step `name`: recorded running, then done with the detail `work`
    /// gives beside its value, or failed with its error (which goes on up).
    pub(super) fn run<T>(
        &self,
        name: &str,
        work: impl FnOnce() -> Result<(T, String), ControlError>,
    ) -> Result<T, ControlError> {
        self.step(name, StepState::Running, "")?;
        match work() {
            Ok((value, detail)) => {
                self.step(name, StepState::Done, &detail)?;
                Ok(value)
            }
            Err(e) => {
                // The error is the job's outcome; a failure to record it on
                // the step too must not hide it.
                let _ = self.step(name, StepState::Failed, &e.to_string());
                Err(e)
            }
        }
    }

    /// Like [`JobSteps::run`], but refuses to begin the step once a stop
    /// was asked: the error says `by` (how and who: "cancelled by `standby
    /// cancel`") and names the step.
    pub(super) fn run_unless_stopped<T>(
        &self,
        name: &str,
        by: &str,
        work: impl FnOnce() -> Result<(T, String), ControlError>,
    ) -> Result<T, ControlError> {
        self.run(name, || {
            self.check_stop(name, by)?;
            work()
        })
    }

    /// An error when a stop was asked, saying `by` and where it stopped.
    pub(super) fn check_stop(&self, at: &str, by: &str) -> Result<(), ControlError> {
        match self.stop_asked() {
            true => Err(ControlError::Failed(format!("{by} at '{at}'"))),
            false => Ok(()),
        }
    }

    /// Records step `name` done without running anything: `detail` says why.
    pub(super) fn skip(&self, name: &str, detail: &str) -> Result<(), ControlError> {
        self.step(name, StepState::Done, detail)
    }

    /// The job's stop flag, for threads of its own.
    pub(super) fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Whether someone asked this job to stop.
    pub(super) fn stop_asked(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// A named point inside a step, where a test may stop or kill the
    /// daemon (`COMMAND/@NAME/MS`); nothing is recorded.
    pub(super) fn moment(&self, name: &str) {
        for hook in &self.hooks {
            hook.reached(&format!("@{name}"), &self.stop);
        }
    }
}

/// Checks `command` against the lifecycle: where it leads, or a refusal
/// naming the machine's state and the commands it accepts.
pub(super) fn check(machine: &Machine, command: Command) -> Result<Transition, ControlError> {
    let name = &machine.definition.name;
    transition(machine.state, command).map_err(|refusal| ControlError::Transition { machine: name.clone(), refusal })
}

/// The transition a job of `command` makes on `machine` as it was when the
/// job began: the table's row from its state, or, for a job a restarted
/// daemon takes up after it recorded its `during` state, the row in flight.
/// A job records only the states this gives.
pub(super) fn transition_of(machine: &Machine, command: Command) -> Result<Transition, ControlError> {
    transition(machine.state, command).ok().or_else(|| in_flight(machine.state, command)).ok_or_else(|| {
        ControlError::Failed(format!(
            "machine '{}' is {}, where no {} job runs",
            machine.name(),
            machine.state,
            command.name()
        ))
        .with_hint(standby_api::Hint::Status { machine: machine.name().to_string() })
    })
}

impl Daemon {
    /// Runs `work` as a job of `kind` on machine `name` with these steps,
    /// on this thread: recorded before it starts, every step's progress as
    /// it goes, and the outcome; returns the job's id with what `work`
    /// gave. A refusal before any step started leaves no job behind.
    pub(super) fn job<T>(
        &self,
        deployment: &Deployment,
        name: &str,
        kind: JobKind,
        steps: &[&str],
        work: impl FnOnce(&JobSteps) -> Result<T, ControlError>,
    ) -> Result<(JobId, T), ControlError> {
        let claim = self.claims.claim(deployment, &[name])?;
        let subject = Subject::Machine(name.to_string());
        let id = deployment.state.create_job(&subject, kind, JobOrigin::Operator, steps)?;
        claim.set_job(id);
        let progress = JobSteps::new(deployment, id, &self.hooks, kind.name(), steps, claim.stop.clone());
        let outcome = work(&progress);
        record_outcome(deployment, id, &outcome);
        Ok((id, outcome?))
    }

    /// A job an operator asked for: lifecycle command `command` on machine
    /// `name` (see [`Daemon::spawn_job`]).
    pub(super) fn spawn_command(
        self: &Arc<Self>,
        deployment: &Deployment,
        name: &str,
        command: Command,
        steps: &[&str],
        work: impl FnOnce(&Daemon, &JobSteps) -> Result<(), ControlError> + Send + 'static,
    ) -> Result<JobStarted, ControlError> {
        self.spawn_job(deployment, name, JobKind::Lifecycle(command), JobOrigin::Operator, steps, work)
    }

    /// Like [`Daemon::job`] for long work on machine `name`: the job runs
    /// on its own thread and the answer (its id) comes at once; `standby
    /// jobs ID --watch` follows it.
    pub(super) fn spawn_job(
        self: &Arc<Self>,
        deployment: &Deployment,
        name: &str,
        kind: JobKind,
        origin: JobOrigin,
        steps: &[&str],
        work: impl FnOnce(&Daemon, &JobSteps) -> Result<(), ControlError> + Send + 'static,
    ) -> Result<JobStarted, ControlError> {
        let subject = Subject::Machine(name.to_string());
        self.spawn_job_on(deployment, &subject, &[name], kind, origin, steps, work)
    }

    /// A job on `subject` (a machine, a group, a plan) claiming `machines`,
    /// all of them or none (see [`Daemon::spawn_job`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn_job_on(
        self: &Arc<Self>,
        deployment: &Deployment,
        subject: &Subject,
        machines: &[&str],
        kind: JobKind,
        origin: JobOrigin,
        steps: &[&str],
        work: impl FnOnce(&Daemon, &JobSteps) -> Result<(), ControlError> + Send + 'static,
    ) -> Result<JobStarted, ControlError> {
        let claim = self.claims.claim(deployment, machines)?;
        let id = deployment.state.create_job(subject, kind, origin, steps)?;
        claim.set_job(id);
        let daemon = self.clone();
        // As shown, and as tests' hooks name it (`COMMAND/STEP/MS`).
        let command = format!("{kind}{}", origin.suffix());
        let (job_command, steps): (String, Vec<String>) =
            (command.clone(), steps.iter().map(|s| s.to_string()).collect());
        std::thread::Builder::new()
            .name(format!("job {id}"))
            .spawn(move || {
                let stop = claim.stop.clone();
                let _claim = claim;
                match Deployment::open(&daemon.home) {
                    Ok(deployment) => {
                        let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
                        let job = JobSteps::new(&deployment, id, &daemon.hooks, &job_command, &steps, stop);
                        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&daemon, &job)));
                        match outcome {
                            Ok(outcome) => record_outcome(&deployment, id, &outcome),
                            // A simulated crash: nothing more of this job
                            // runs or is recorded, as after `kill -9`.
                            Err(payload) if payload.is::<SimulatedCrash>() => {}
                            Err(payload) => std::panic::resume_unwind(payload),
                        }
                    }
                    Err(e) => eprintln!("standby: job {id} could not open the deployment: {e}"),
                }
            })
            .map_err(|e| ControlError::Failed(format!("cannot start a thread for job {id}: {e}")))?;
        Ok(JobStarted { job: id, machine: subject.name().to_string(), command })
    }
}

/// One machine's part of a job on several machines (a replication group's
/// lifecycle command, a recovery plan's group): a job of its own, with the
/// steps a job of that command has alone, run by [`Daemon::spawn_parts`].
pub(super) struct Part {
    pub(super) machine: String,
    pub(super) steps: Vec<String>,
    pub(super) work: PartWork,
}

/// How a part ended: its machine, its job (none when it could not be
/// recorded), its outcome.
pub(super) struct PartDone {
    pub(super) machine: String,
    pub(super) job: Option<JobId>,
    pub(super) outcome: Result<(), ControlError>,
}

/// What a part does, given the daemon and its job's handle.
pub(super) type PartWork = Box<dyn FnOnce(&Daemon, &JobSteps) -> Result<(), ControlError> + Send>;

impl Part {
    pub(super) fn new(
        machine: &str,
        steps: &[&str],
        work: impl FnOnce(&Daemon, &JobSteps) -> Result<(), ControlError> + Send + 'static,
    ) -> Part {
        Part {
            machine: machine.to_string(),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            work: Box::new(work),
        }
    }
}

impl Daemon {
    /// Runs `part` alone: a job of `command` on its machine.
    pub(super) fn spawn_part(
        self: &Arc<Self>,
        deployment: &Deployment,
        command: Command,
        part: Part,
    ) -> Result<JobStarted, ControlError> {
        let steps: Vec<&str> = part.steps.iter().map(String::as_str).collect();
        self.spawn_command(deployment, &part.machine, command, &steps, part.work)
    }

    /// One job of `command` on `subject` (a replication group) claiming
    /// every machine of `parts`: each part runs at once beside the others,
    /// as a job of its own machine (its steps, its outcome, taken up by a
    /// restarted daemon like any job of that machine); the subject's job
    /// has a step per machine saying which job it is and how it ended, and
    /// fails naming the machines whose part failed. A stop asked of any of
    /// the machines (a `cancel`) stops every part.
    pub(super) fn spawn_parts(
        self: &Arc<Self>,
        deployment: &Deployment,
        subject: &Subject,
        command: Command,
        parts: Vec<Part>,
    ) -> Result<JobStarted, ControlError> {
        let names: Vec<String> = parts.iter().map(|part| part.machine.clone()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let kind = JobKind::Lifecycle(command);
        self.spawn_job_on(deployment, subject, &names, kind, JobOrigin::Operator, &names, move |daemon, job| {
            let failed: Vec<String> = daemon
                .run_parts(kind, job, true, parts)
                .into_iter()
                .filter_map(|done| done.outcome.err().map(|e| format!("{}: {e}", done.machine)))
                .collect();
            match failed.is_empty() {
                true => Ok(()),
                false => Err(ControlError::Failed(failed.join("; "))),
            }
        })
    }

    /// Runs `parts` side by side for `job` (each a job of its machine, with
    /// `job`'s stop flag) and returns how each ended; with `noted`, the
    /// job's step of each machine says which job it is and how it ended.
    pub(super) fn run_parts(&self, kind: JobKind, job: &JobSteps, noted: bool, parts: Vec<Part>) -> Vec<PartDone> {
        let (parent, stop) = (job.id, job.stop.clone());
        std::thread::scope(|scope| {
            let running: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    let stop = stop.clone();
                    scope.spawn(move || self.run_part(kind, parent, noted, stop, part))
                })
                .collect();
            running.into_iter().map(|thread| thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        })
    }

    /// Runs `part` as a job of its machine for job `parent`, on this thread,
    /// with the parent's stop flag; with `noted`, the parent's step of that
    /// machine says which job it is, then how it ended.
    fn run_part(&self, kind: JobKind, parent: JobId, noted: bool, stop: Arc<AtomicBool>, part: Part) -> PartDone {
        let name = part.machine.clone();
        let (job, outcome) = match self.run_part_job(kind, parent, noted, stop, part) {
            Ok((job, outcome)) => (Some(job), outcome),
            Err(e) => (None, Err(e)),
        };
        PartDone { machine: name, job, outcome }
    }

    fn run_part_job(
        &self,
        kind: JobKind,
        parent: JobId,
        noted: bool,
        stop: Arc<AtomicBool>,
        part: Part,
    ) -> Result<(JobId, Result<(), ControlError>), ControlError> {
        let deployment = Deployment::open(&self.home)?;
        let name = part.machine.clone();
        let steps: Vec<&str> = part.steps.iter().map(String::as_str).collect();
        let id = match deployment.state.create_job(&Subject::Machine(name.clone()), kind, JobOrigin::Operator, &steps) {
            Ok(id) => id,
            Err(e) => {
                if noted {
                    let _ = deployment.state.job_step(parent, &name, StepState::Failed, &e.to_string());
                }
                return Err(e);
            }
        };
        if noted {
            deployment.state.job_step(parent, &name, StepState::Running, &format!("job {id}"))?;
        }
        let command = format!("{kind}{}", JobOrigin::Operator.suffix());
        let job = JobSteps::new(&deployment, id, &self.hooks, &command, &steps, stop);
        let outcome = (part.work)(self, &job);
        record_outcome(&deployment, id, &outcome);
        if noted {
            let (state, detail) = match &outcome {
                Ok(()) => (StepState::Done, format!("job {id} succeeded")),
                Err(e) => (StepState::Failed, format!("job {id} failed: {e}")),
            };
            deployment.state.job_step(parent, &name, state, &detail)?;
        }
        Ok((id, outcome))
    }
}

fn record_outcome<T>(deployment: &Deployment, id: JobId, outcome: &Result<T, ControlError>) {
    let recorded = match outcome {
        Ok(_) => deployment.state.finish_job(id, JobState::Succeeded, None),
        Err(e) => deployment.state.finish_job(id, JobState::Failed, Some(&e.to_string())),
    };
    if let Err(e) = recorded {
        eprintln!("standby: the outcome of job {id} could not be recorded: {e}");
    }
}

/// Tests' way to reach a chosen moment of a job, `COMMAND/STEP/MS` (step
/// number from 0), acted on when the step of a job of `COMMAND` is first
/// recorded (running or done), or `COMMAND/@MOMENT/MS`, acted on when the
/// job passes a named moment inside a step (`JobSteps::moment`). A daemon
/// reads them from its environment when it starts:
///
/// - `STANDBY_TEST_CRASH_AT`: the daemon dies by SIGKILL (as `kill -9`)
///   MS ms later;
/// - `STANDBY_TEST_STALL_AT`: the job waits MS ms there (so a test can
///   act, a `cancel` say, while it is at that step), or less: until the
///   job is asked to stop, or, with `STANDBY_TEST_STALL_UNTIL=FILE`, until
///   FILE exists: a test holds the window open until what it waits for has
///   happened, whatever the machine's speed.
///
/// Jobs of other commands are not affected; without them nothing is
/// checked. Tests of the job engine in this process crash a job instead
/// ([`Crash::Unwind`]): it ends where it is, recording nothing more.
#[derive(Debug, Clone, Default)]
pub(super) struct Hooks {
    pub crash_at: Option<String>,
    pub stall_at: Option<String>,
    pub stall_until: Option<std::path::PathBuf>,
    pub crash: Crash,
}

/// How a crash hook crashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Crash {
    /// The process dies by SIGKILL.
    #[default]
    Kill,
    /// The job's thread unwinds with [`SimulatedCrash`] and records
    /// nothing more (tests in this process, on a simulated site).
    #[cfg_attr(not(test), allow(dead_code))]
    Unwind,
}

/// The payload of a simulated crash.
pub(super) struct SimulatedCrash;

impl Hooks {
    pub(super) fn from_env() -> Hooks {
        Hooks {
            crash_at: std::env::var("STANDBY_TEST_CRASH_AT").ok(),
            stall_at: std::env::var("STANDBY_TEST_STALL_AT").ok(),
            stall_until: std::env::var_os("STANDBY_TEST_STALL_UNTIL").map(std::path::PathBuf::from),
            crash: Crash::Kill,
        }
    }

    fn for_job(&self, command: &str, steps: &[&str]) -> Vec<TestHook> {
        let parse = |spec: &Option<String>, crash: Option<Crash>| -> Option<TestHook> {
            let mut fields = spec.as_deref()?.rsplitn(3, '/');
            let delay = fields.next()?.parse().ok()?;
            let at = fields.next()?;
            if fields.next()? != command {
                return None;
            }
            let step = match at.strip_prefix('@') {
                Some(_) => at.to_string(),
                None => steps.get(at.parse::<usize>().ok()?)?.to_string(),
            };
            let until = self.stall_until.clone();
            Some(TestHook { step, delay: Duration::from_millis(delay), crash, until, fired: Default::default() })
        };
        [parse(&self.crash_at, Some(self.crash)), parse(&self.stall_at, None)].into_iter().flatten().collect()
    }
}

/// One hook of one job.
pub(super) struct TestHook {
    step: String,
    delay: Duration,
    /// `None`: a stall.
    crash: Option<Crash>,
    until: Option<std::path::PathBuf>,
    fired: std::sync::atomic::AtomicBool,
}

impl TestHook {
    fn reached(&self, step: &str, stop: &AtomicBool) {
        if step != self.step || self.fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let delay = self.delay;
        match self.crash {
            None => {
                eprintln!("standby: STANDBY_TEST_STALL_AT: waiting {} ms at most at step '{step}'", delay.as_millis());
                let deadline = Instant::now() + delay;
                while Instant::now() < deadline
                    && !stop.load(Ordering::SeqCst)
                    && !self.until.as_ref().is_some_and(|file| file.exists())
                {
                    std::thread::sleep(STOP_POLL_INTERVAL);
                }
            }
            Some(Crash::Unwind) => {
                std::thread::sleep(delay);
                std::panic::panic_any(SimulatedCrash);
            }
            Some(Crash::Kill) => {
                eprintln!("standby: STANDBY_TEST_CRASH_AT: dying {} ms into step '{step}'", delay.as_millis());
                let die = move || {
                    std::thread::sleep(delay);
                    // SAFETY: kill(2) on our own pid with a valid signal.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                };
                if delay.is_zero() {
                    die();
                } else {
                    std::thread::spawn(die);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job of several machines holds them all or none; a second job on
    /// any of them is refused naming the holder; a stop asked of one
    /// machine reaches the job holding it; dropping the claim frees all.
    #[test]
    fn claims_are_all_or_none_and_carry_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let deployment = Deployment::init(&dir.path().join("d")).unwrap();
        let claims = Arc::new(Claims::default());
        let group = claims.claim(&deployment, &["db", "app"]).unwrap();
        group.set_job(7);
        let refused = claims.claim(&deployment, &["web", "app"]).err().expect("app is held");
        assert!(refused.to_string().contains("machine 'app' is busy with job 7"), "{refused}");
        assert_eq!(claims.holder("web"), None, "a refused claim holds nothing");
        let web = claims.claim(&deployment, &["web"]).unwrap();
        assert!(!group.stop.load(Ordering::SeqCst));
        assert!(!claims.stop_and_wait("db", Duration::from_millis(10)), "the group's job has not ended");
        assert!(group.stop.load(Ordering::SeqCst) && !web.stop.load(Ordering::SeqCst));
        drop(group);
        assert_eq!((claims.holder("db"), claims.holder("app")), (None, None));
        assert!(claims.stop_and_wait("app", Duration::from_millis(10)), "nothing holds it");
        assert_eq!(claims.held(), vec![("web".to_string(), 0)]);
    }
}
