//! `standby serve`: the daemon that runs a deployment's machines (both
//! sites' agents, in one process in the embedded default). Lifecycle
//! commands talk to it over HTTP on `run/standby.sock` (a unix socket, so
//! only users who can reach the deployment's folder can use it):
//!
//! ```text
//! GET  /v1/health                     pid, home, accelerator and why
//! GET  /v1/machines                   every machine with its runtime (running or not, pid, console)
//! POST /v1/machines/NAME/start        boot it at its active site
//! POST /v1/machines/NAME/stop         ACPI power-down, then quit after a timeout (?force=true: at once)
//! POST /v1/machines/NAME/protect      ?policy=P: initial replication, then continuous (a job, answered at once)
//! POST /v1/machines/NAME/unprotect    back to its images, splitters stopped (a job, answered at once)
//! POST /v1/machines/NAME/test-failover          ?point=P: a drill copy at the recovery site, isolated
//! POST /v1/machines/NAME/cleanup-test-failover  removes the drill copy and every file it used
//! POST /v1/machines/NAME/failover               ?point=P&shutdown_source=BOOL
//! POST /v1/machines/NAME/planned-failover       ?sync_first=BOOL (with it: waits in ready-to-complete)
//! POST /v1/machines/NAME/complete-failover      stop, ship the last writes, start at the other site
//! POST /v1/machines/NAME/change-point           ?point=P (before commit)
//! POST /v1/machines/NAME/commit, …/cancel
//! POST /v1/machines/NAME/reprotect              ?alternate_location=BOOL&discard_source_writes=BOOL
//! GET  /v1/status, /v1/status/NAME    health, RPO and latest points of replicated machines
//! GET  /v1/jobs, /v1/jobs/ID          jobs with their steps (every operation is a job)
//! ```
//!
//! Errors are `{"error": MESSAGE, "bad_input": BOOL}` with status 409 for a
//! refused request and 500 for a failure. The daemon restarts nothing
//! behind the operator's back: a machine that stops stays stopped. Machines
//! outlive the daemon: when it stops (or dies), they keep running, and the
//! next daemon adopts them (pid file and QMP socket in `run/machines/NAME`),
//! so a machine is never started twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use standby_lifecycle::job::{JobState, StepState};
use standby_lifecycle::{Instance, Site, INSTANCES};

use crate::agent::Agent;
use crate::deployment::{Accel, Deployment};
use crate::error::ControlError;
use crate::qemu::{self, Drive, Qemu, QemuSpec, Stopped};

mod consistency;
mod failover;
mod protection;
mod reprotect;
mod restart;
mod retention;

pub const SOCKET: &str = "standby.sock";
const PID_FILE: &str = "standby.pid";
/// How long a stopping daemon waits for running jobs.
const JOBS_AT_STOP: Duration = Duration::from_secs(60);
/// How long a guest has to shut down after the ACPI request.
pub const POWER_DOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// A machine's runtime as the daemon sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Runtime {
    pub running: bool,
    pub pid: Option<u32>,
    pub console: Option<PathBuf>,
    pub accel: Option<&'static str>,
}

struct Running {
    qemu: Qemu,
}

/// The key of `instance` of machine (or disk) `name`: its QEMU's `-name`,
/// its folder under `run/machines/` (or `run/exports/`), and its key in the
/// daemon's tables.
pub(crate) fn instance(name: &str, instance: impl Into<Instance>) -> String {
    format!("{name}@{}", instance.into())
}

fn already_running(name: &str, pid: u32) -> ControlError {
    ControlError::Refused(format!(
        "machine '{name}' is already running (pid {pid}); `standby machine stop {name}` stops it"
    ))
}

fn not_running(name: &str) -> ControlError {
    ControlError::Refused(format!("machine '{name}' is not running; `standby machine start {name}` starts it"))
}

/// A running job's handle for recording its steps.
struct JobSteps<'a> {
    deployment: &'a Deployment,
    id: i64,
    hooks: Vec<TestHook>,
}

impl<'a> JobSteps<'a> {
    fn new(deployment: &'a Deployment, id: i64, command: &str, steps: &[&str]) -> JobSteps<'a> {
        JobSteps { deployment, id, hooks: TestHook::from_env(command, steps) }
    }

    fn step(&self, name: &str, state: StepState, detail: &str) -> Result<(), ControlError> {
        self.deployment.state.job_step(self.id, name, state, detail)?;
        for hook in &self.hooks {
            hook.reached(name);
        }
        Ok(())
    }

    /// A named point inside a step, where a test may stop or kill the
    /// daemon (`COMMAND/@NAME/MS`); nothing is recorded.
    fn moment(&self, name: &str) {
        for hook in &self.hooks {
            hook.reached(&format!("@{name}"));
        }
    }
}

/// Tests' way to reach a chosen moment of a job, `COMMAND/STEP/MS` (step
/// number from 0), acted on when the step of the first job of `COMMAND`
/// is first recorded (running or done), or `COMMAND/@MOMENT/MS`, acted on
/// when the job passes a named moment inside a step (`JobSteps::moment`):
///
/// - `STANDBY_TEST_CRASH_AT`: the daemon dies by SIGKILL (as `kill -9`)
///   MS ms later;
/// - `STANDBY_TEST_STALL_AT`: the job waits MS ms there (so a test can
///   act, a `cancel` say, while it is at that step).
///
/// Jobs of other commands are not affected; without the variables nothing
/// is checked.
struct TestHook {
    step: String,
    delay: Duration,
    crash: bool,
    fired: std::sync::atomic::AtomicBool,
}

impl TestHook {
    fn from_env(command: &str, steps: &[&str]) -> Vec<TestHook> {
        let parse = |variable: &str, crash: bool| -> Option<TestHook> {
            let spec = std::env::var(variable).ok()?;
            let mut fields = spec.rsplitn(3, '/');
            let delay = fields.next()?.parse().ok()?;
            let at = fields.next()?;
            if fields.next()? != command {
                return None;
            }
            let step = match at.strip_prefix('@') {
                Some(_) => at.to_string(),
                None => steps.get(at.parse::<usize>().ok()?)?.to_string(),
            };
            Some(TestHook { step, delay: Duration::from_millis(delay), crash, fired: Default::default() })
        };
        [parse("STANDBY_TEST_CRASH_AT", true), parse("STANDBY_TEST_STALL_AT", false)].into_iter().flatten().collect()
    }

    fn reached(&self, step: &str) {
        if step != self.step || self.fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let delay = self.delay;
        if !self.crash {
            eprintln!("standby: STANDBY_TEST_STALL_AT: waiting {} ms at step '{step}'", delay.as_millis());
            std::thread::sleep(delay);
            return;
        }
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

struct Daemon {
    home: PathBuf,
    exe: PathBuf,
    accel: Mutex<Accelerator>,
    machines: Mutex<HashMap<String, Running>>,
    /// The splitters of protected machines, by vault disk name.
    splitters: Mutex<HashMap<String, Agent>>,
    /// Exports of recovery points (failover, drill), by `DISK@SITE`.
    exports: Mutex<HashMap<String, Agent>>,
    /// Machines with a job running, and its id: one job per machine at a time.
    busy: Arc<Mutex<HashMap<String, i64>>>,
    /// Machines whose running job was asked to stop: an initial
    /// replication by `unprotect`, a failover by `cancel`.
    cancelling: Mutex<std::collections::HashSet<String>>,
    /// App-consistent points: when each machine's next is due, how the last went.
    consistency: Mutex<HashMap<String, consistency::Consistency>>,
}

/// A machine claimed for one job; released when dropped.
struct Claim {
    busy: Arc<Mutex<HashMap<String, i64>>>,
    name: String,
}

impl Claim {
    fn set_job(&self, id: i64) {
        lock(&self.busy).insert(self.name.clone(), id);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.busy).remove(&self.name);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

struct Accelerator {
    chosen: &'static str,
    why: String,
    /// `auto` chose KVM: a kernel must still prove it boots under it.
    unproven_kvm: bool,
}

impl Daemon {
    fn deployment(&self) -> Result<Deployment, ControlError> {
        Deployment::open(&self.home)
    }

    /// The accelerator for a machine that boots `kernel` (if any).
    fn accel_for(&self, kernel: Option<&Path>) -> &'static str {
        let mut accel = lock(&self.accel);
        if accel.unproven_kvm {
            if let Some(kernel) = kernel {
                match qemu::probe_kvm_boot(kernel, &self.home.join("run"), Duration::from_secs(10)) {
                    Ok(()) => accel.why = format!("{}; a kernel boots under it", accel.why),
                    Err(why) => {
                        accel.chosen = "tcg";
                        accel.why = format!("software emulation: {why}");
                    }
                }
                accel.unproven_kvm = false;
            }
        }
        accel.chosen
    }

    /// Claims machine `name` for one job, or refuses naming the job that
    /// holds it.
    fn claim(&self, deployment: &Deployment, name: &str) -> Result<Claim, ControlError> {
        let mut busy = lock(&self.busy);
        if let Some(id) = busy.get(name) {
            let command = deployment.state.job(*id).map(|job| job.command).unwrap_or_default();
            return Err(ControlError::Refused(format!(
                "machine '{name}' is busy with job {id} ({command}); follow it with `standby jobs {id} --watch`"
            )));
        }
        busy.insert(name.to_string(), 0);
        Ok(Claim { busy: self.busy.clone(), name: name.to_string() })
    }

    /// Asks the job running on machine `name` to stop (it checks
    /// `cancelling` at its own safe points and rolls itself back), and
    /// waits up to `timeout` for it to end.
    fn stop_running_job(&self, name: &str, timeout: Duration) {
        lock(&self.cancelling).insert(name.to_string());
        let deadline = std::time::Instant::now() + timeout;
        while lock(&self.busy).contains_key(name) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        lock(&self.cancelling).remove(name);
    }

    /// Whether the job running on machine `name` was asked to stop.
    fn stop_asked(&self, name: &str) -> bool {
        lock(&self.cancelling).contains(name)
    }

    /// Runs `work` as a job of `command` on machine `name` with these
    /// steps: recorded in the state before it starts, every step's progress
    /// as it goes, and the outcome. A refusal before any step started
    /// leaves no job behind.
    fn job(
        &self,
        deployment: &Deployment,
        name: &str,
        command: &str,
        steps: &[&str],
        work: impl FnOnce(&JobSteps) -> Result<Value, ControlError>,
    ) -> Result<Value, ControlError> {
        let claim = self.claim(deployment, name)?;
        let id = deployment.state.create_job(name, command, steps)?;
        claim.set_job(id);
        let progress = JobSteps::new(deployment, id, command, steps);
        let outcome = work(&progress);
        record_outcome(deployment, id, &outcome);
        let mut value = outcome?;
        value["job"] = json!(id);
        Ok(value)
    }

    /// Like [`Daemon::job`] for long work: the job runs on its own thread
    /// and the answer (its id) comes at once; `standby jobs ID --watch`
    /// follows it.
    fn spawn_job(
        self: &Arc<Self>,
        deployment: &Deployment,
        name: &str,
        command: &str,
        steps: &[&str],
        work: impl FnOnce(&Daemon, &JobSteps) -> Result<Value, ControlError> + Send + 'static,
    ) -> Result<Value, ControlError> {
        let claim = self.claim(deployment, name)?;
        let id = deployment.state.create_job(name, command, steps)?;
        claim.set_job(id);
        let daemon = self.clone();
        let (job_command, steps): (String, Vec<String>) =
            (command.to_string(), steps.iter().map(|s| s.to_string()).collect());
        std::thread::Builder::new()
            .name(format!("job {id}"))
            .spawn(move || {
                let _claim = claim;
                match Deployment::open(&daemon.home) {
                    Ok(deployment) => {
                        let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
                        let outcome = work(&daemon, &JobSteps::new(&deployment, id, &job_command, &steps));
                        record_outcome(&deployment, id, &outcome);
                    }
                    Err(e) => eprintln!("standby: job {id} could not open the deployment: {e}"),
                }
            })
            .map_err(|e| ControlError::Failed(format!("cannot start a thread for job {id}: {e}")))?;
        Ok(json!({"job": id, "machine": name, "command": command}))
    }

    fn start(&self, name: &str) -> Result<Value, ControlError> {
        // Refusals come before a job is recorded.
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        if let Some(pid) = self.runtime(&instance(name, machine.active_site)).pid {
            return Err(already_running(name, pid));
        }
        let steps = ["check the machine", "choose the accelerator", "start QEMU"];
        self.job(&deployment, name, "machine start", &steps, |job| self.start_job(&machine, job))
    }

    fn start_job(&self, machine: &crate::Machine, job: &JobSteps) -> Result<Value, ControlError> {
        let name = machine.definition.name.as_str();
        let key = instance(name, machine.active_site);
        let deployment = job.deployment;
        job.step("check the machine", StepState::Running, "")?;
        {
            // A machine that stopped by itself leaves an entry behind; one
            // started meanwhile by another request is refused.
            let mut machines = lock(&self.machines);
            if let Some(running) = machines.get_mut(&key) {
                if !running.qemu.exited() {
                    return Err(already_running(name, running.qemu.pid()));
                }
                machines.remove(&key);
            }
        }
        let (drives, how) = self.drives(deployment, machine)?;
        job.step(
            "check the machine",
            StepState::Done,
            &format!("{} disk(s) at the {} site, {how}", drives.len(), machine.active_site),
        )?;
        job.step("choose the accelerator", StepState::Running, "")?;
        let accel = self.accel_for(machine.definition.kernel.as_deref());
        job.step("choose the accelerator", StepState::Done, accel)?;
        job.step("start QEMU", StepState::Running, "")?;
        let runtime = self.launch(deployment, machine, machine.active_site.into(), drives, accel)?;
        job.step("start QEMU", StepState::Done, &format!("pid {}", runtime["pid"]))?;
        Ok(runtime)
    }

    /// The drives machine `machine` runs on at its active site, and how:
    /// its splitters when replicated, the exports of its failover point
    /// when it runs from one, else its images.
    fn drives(
        &self,
        deployment: &Deployment,
        machine: &crate::Machine,
    ) -> Result<(Vec<Drive>, &'static str), ControlError> {
        let name = &machine.definition.name;
        if machine.state.on_exports() {
            let point = machine.details.failover_point(name)?;
            let drives = self.serve_point(deployment, machine, point, machine.active_site.into())?;
            return Ok((drives, "from the failover point's exports"));
        }
        for image in machine.images() {
            if !image.is_file() {
                return Err(ControlError::Failed(format!("disk {} of machine '{name}' is missing", image.display())));
            }
        }
        if machine.state.replicating() {
            // Every write goes through the disks' splitters.
            self.ensure_splitters(deployment, machine)?;
            return Ok((self.splitter_drives(machine), "replicated"));
        }
        Ok((machine.images().into_iter().map(Drive::File).collect(), "not replicated"))
    }

    /// Starts QEMU for `instance` of `machine` on `drives`.
    fn launch(
        &self,
        deployment: &Deployment,
        machine: &crate::Machine,
        instance: Instance,
        drives: Vec<Drive>,
        accel: &'static str,
    ) -> Result<Value, ControlError> {
        let key = self::instance(machine.name(), instance);
        let config = &deployment.config;
        let nics = crate::network::nics(&machine.definition.nics, &machine.definition.name, config)?;
        let attachments = crate::network::attachments(&nics, instance, machine.active_site, config, &deployment.home);
        let site = instance.site(machine.active_site);
        let spec = QemuSpec {
            name: key.clone(),
            cpus: machine.definition.cpus,
            memory_mib: machine.definition.memory_mib,
            kernel: machine.definition.kernel.clone(),
            initrd: machine.definition.initrd.clone(),
            append: machine.definition.append.clone(),
            drives,
            network: crate::network::qemu_arguments(&attachments, &deployment.run_dir().join("machines").join(&key))?,
            accel,
            run_dir: deployment.run_dir().join("machines").join(&key),
            netns: deployment.netns(site),
        };
        let qemu = Qemu::start(&spec)?;
        let runtime = json!({"name": machine.definition.name, "pid": qemu.pid(), "console": qemu.console,
                             "accel": accel, "site": instance, "nics": attachments});
        lock(&self.machines).insert(key, Running { qemu });
        Ok(runtime)
    }

    fn stop(&self, name: &str, force: bool, site: Option<&str>) -> Result<Value, ControlError> {
        // Refusals come before a job is recorded.
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        let site = match site {
            Some(site) => site
                .parse::<Site>()
                .map_err(|_| ControlError::Refused(format!("--site {site:?}: use primary or recovery")))?,
            None => machine.active_site,
        };
        let key = instance(name, site);
        if !self.runtime(&key).running {
            return Err(not_running(name));
        }
        let steps: &[&str] = if force { &["cut the power"] } else { &["ACPI power-down", "wait for the guest"] };
        self.job(&deployment, name, "machine stop", steps, |job| self.stop_job(name, &key, force, job))
    }

    fn stop_job(&self, name: &str, key: &str, force: bool, job: &JobSteps) -> Result<Value, ControlError> {
        let running = lock(&self.machines).remove(key);
        let Some(mut running) = running.filter(|r| r.qemu.running()) else {
            return Err(not_running(name));
        };
        let stopped = if force {
            job.step("cut the power", StepState::Running, "")?;
            running.qemu.kill();
            job.step("cut the power", StepState::Done, "")?;
            "forced".to_string()
        } else {
            job.step("ACPI power-down", StepState::Done, "power button pressed")?;
            job.step("wait for the guest", StepState::Running, &format!("up to {} s", POWER_DOWN_TIMEOUT.as_secs()))?;
            let stopped = match running.qemu.power_down(POWER_DOWN_TIMEOUT)? {
                Stopped::Clean => "clean".to_string(),
                Stopped::Forced => "forced after the guest ignored the power button".to_string(),
                hung => hung.describe(),
            };
            job.step("wait for the guest", StepState::Done, &stopped)?;
            stopped
        };
        Ok(json!({"name": name, "stopped": stopped}))
    }

    /// The runtime of instance `key` (see [`instance`]).
    fn runtime(&self, key: &str) -> Runtime {
        let machines = lock(&self.machines);
        match machines.get(key) {
            Some(running) if running.qemu.running() => Runtime {
                running: true,
                pid: Some(running.qemu.pid()),
                console: Some(running.qemu.console.clone()),
                accel: Some(running.qemu.accel),
            },
            _ => Runtime { running: false, pid: None, console: None, accel: None },
        }
    }

    /// Takes over the machines a previous daemon left running.
    fn adopt_all(&self) -> Result<Vec<String>, ControlError> {
        let deployment = self.deployment()?;
        let mut adopted = Vec::new();
        for machine in deployment.state.machines()? {
            for site in INSTANCES {
                let key = instance(&machine.definition.name, site);
                let run_dir = deployment.run_dir().join("machines").join(&key);
                match Qemu::adopt(&run_dir, &key) {
                    Ok(Some(qemu)) => {
                        lock(&self.machines).insert(key.clone(), Running { qemu });
                        adopted.push(key);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // Running, but its QMP socket does not answer: refuse
                        // to go on rather than risk starting it a second time.
                        return Err(ControlError::Failed(format!(
                            "machine '{key}' seems to be running from an earlier daemon but cannot be reached \
                             ({e}); check its QEMU process before starting the daemon again"
                        )));
                    }
                }
            }
        }
        Ok(adopted)
    }
}

/// Runs the daemon for the deployment at `home` until SIGINT or SIGTERM.
/// `exe` is this binary (for the KVM probe child).
pub fn serve(home: &Path, exe: &Path) -> Result<(), ControlError> {
    let deployment = Deployment::open(home)?;
    let run = deployment.run_dir();
    std::fs::create_dir_all(&run).map_err(|e| ControlError::io(&run, e))?;
    let socket = run.join(SOCKET);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        let pid = std::fs::read_to_string(run.join(PID_FILE)).unwrap_or_default();
        return Err(ControlError::Refused(format!(
            "a daemon is already running for {} (pid {}); stop it first",
            deployment.home.display(),
            pid.trim()
        )));
    }
    let _ = std::fs::remove_file(&socket);
    let source = if std::env::var_os("STANDBY_ACCEL").is_some() { "STANDBY_ACCEL" } else { "the deployment's config" };
    let configured = match std::env::var("STANDBY_ACCEL").ok().as_deref() {
        Some("tcg") => Accel::Tcg,
        Some("kvm") => Accel::Kvm,
        Some("auto") | None => deployment.config.accel,
        Some(other) => {
            return Err(ControlError::Refused(format!("STANDBY_ACCEL={other:?}: use tcg, kvm or auto")));
        }
    };
    let (chosen, why) =
        qemu::resolve_accel(configured, source, || qemu::probe_kvm_in_child(exe, Duration::from_secs(5)));
    let unproven_kvm = configured == Accel::Auto && chosen == "kvm";
    let daemon = Arc::new(Daemon {
        home: deployment.home.clone(),
        exe: exe.to_path_buf(),
        accel: Mutex::new(Accelerator { chosen, why, unproven_kvm }),
        machines: Mutex::default(),
        splitters: Mutex::default(),
        exports: Mutex::default(),
        busy: Arc::default(),
        cancelling: Mutex::default(),
        consistency: Mutex::default(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ControlError::Failed(format!("cannot start the daemon's runtime: {e}")))?;
    let pid_file = run.join(PID_FILE);
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(|e| ControlError::io(&pid_file, e))?;
    let interrupted = deployment.state.interrupt_running_jobs(
        "the daemon stopped while the job ran; the next daemon resumed or rolled it back (see the jobs after it)",
    )?;
    if !interrupted.is_empty() {
        let ids: Vec<i64> = interrupted.iter().map(|job| job.id).collect();
        eprintln!("standby: jobs interrupted by the previous daemon: {ids:?}");
    }
    let adopted = match daemon.adopt_all() {
        Ok(adopted) => adopted,
        Err(e) => {
            let _ = std::fs::remove_file(&pid_file);
            return Err(e);
        }
    };
    if !adopted.is_empty() {
        eprintln!("standby: adopted running machines: {}", adopted.join(", "));
    }
    {
        let daemon = daemon.clone();
        std::thread::Builder::new()
            .name("app-consistency".into())
            .spawn(move || {
                daemon.thaw_all();
                daemon.consistency_loop();
            })
            .map_err(|e| ControlError::Failed(format!("cannot start the app-consistency thread: {e}")))?;
    }
    {
        let daemon = daemon.clone();
        std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || daemon.retention_loop())
            .map_err(|e| ControlError::Failed(format!("cannot start the retention thread: {e}")))?;
    }
    match daemon.roll_back_interrupted_failovers(&interrupted) {
        Ok(rolled) if !rolled.is_empty() => {
            eprintln!("standby: interrupted failovers rolled back: {}", rolled.join(", "))
        }
        Ok(_) => {}
        Err(e) => eprintln!("standby: interrupted failovers could not be rolled back ({e})"),
    }
    match daemon.resume_protection(&interrupted) {
        Ok(resumed) if !resumed.is_empty() => eprintln!("standby: protect jobs resumed: {}", resumed.join(", ")),
        Ok(_) => {}
        Err(e) => eprintln!("standby: protection could not be resumed ({e}); `standby status` shows what is missing"),
    }
    match daemon.resume_interrupted(&interrupted) {
        Ok(resumed) if !resumed.is_empty() => eprintln!("standby: interrupted jobs taken up: {}", resumed.join(", ")),
        Ok(_) => {}
        Err(e) => eprintln!("standby: interrupted jobs could not all be taken up ({e}); `standby jobs` shows them"),
    }
    let result = runtime.block_on(serve_http(daemon.clone(), &socket));
    // No new job can start now; running ones get a minute to finish (one
    // that does not is resumed or rolled back by the next daemon).
    let deadline = std::time::Instant::now() + JOBS_AT_STOP;
    let mut told = false;
    loop {
        let busy: Vec<String> = lock(&daemon.busy).iter().map(|(name, id)| format!("{name} (job {id})")).collect();
        if busy.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            eprintln!(
                "standby: stopping with jobs still running (the next daemon takes them over): {}",
                busy.join(", ")
            );
            break;
        }
        if !told {
            eprintln!("standby: waiting up to {} s for running jobs: {}", JOBS_AT_STOP.as_secs(), busy.join(", "));
            told = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let running: Vec<String> = lock(&daemon.machines).keys().cloned().collect();
    if !running.is_empty() {
        eprintln!("standby: machines left running (the next daemon adopts them): {}", running.join(", "));
    }
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&pid_file);
    result
}

async fn serve_http(daemon: Arc<Daemon>, socket: &Path) -> Result<(), ControlError> {
    let listener = tokio::net::UnixListener::bind(socket).map_err(|e| ControlError::io(socket, e))?;
    let app = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/machines", get(machines))
        .route("/v1/machines/{name}/start", post(start))
        .route("/v1/machines/{name}/stop", post(stop))
        .route("/v1/machines/{name}/protect", post(protect))
        .route("/v1/machines/{name}/unprotect", post(unprotect))
        .route("/v1/machines/{name}/test-failover", post(test_failover))
        .route("/v1/machines/{name}/cleanup-test-failover", post(cleanup_test_failover))
        .route("/v1/machines/{name}/failover", post(failover))
        .route("/v1/machines/{name}/planned-failover", post(planned_failover))
        .route("/v1/machines/{name}/complete-failover", post(complete_failover))
        .route("/v1/machines/{name}/change-point", post(change_point))
        .route("/v1/machines/{name}/commit", post(commit))
        .route("/v1/machines/{name}/cancel", post(cancel))
        .route("/v1/machines/{name}/reprotect", post(reprotect))
        .route("/v1/status", get(status_all))
        .route("/v1/status/{name}", get(status_one))
        .route("/v1/jobs", get(jobs))
        .route("/v1/jobs/{id}", get(job))
        .with_state(daemon.clone());
    {
        let accel = lock(&daemon.accel);
        eprintln!(
            "standby: serving {} on {} (accelerator: {}, {})",
            daemon.home.display(),
            socket.display(),
            accel.chosen,
            accel.why
        );
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler installs");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            eprintln!("standby: stopping");
        })
        .await
        .map_err(|e| ControlError::Failed(format!("the daemon's API failed: {e}")))
}

fn record_outcome(deployment: &Deployment, id: i64, outcome: &Result<Value, ControlError>) {
    let recorded = match outcome {
        Ok(_) => deployment.state.finish_job(id, JobState::Succeeded, None),
        Err(e) => deployment.state.finish_job(id, JobState::Failed, Some(&e.to_string())),
    };
    if let Err(e) = recorded {
        eprintln!("standby: the outcome of job {id} could not be recorded: {e}");
    }
}

struct ApiError(ControlError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let bad_input = self.0.is_bad_input();
        let status = if bad_input { StatusCode::CONFLICT } else { StatusCode::INTERNAL_SERVER_ERROR };
        (status, Json(json!({"error": self.0.to_string(), "bad_input": bad_input}))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

async fn blocking(work: impl FnOnce() -> Result<Value, ControlError> + Send + 'static) -> ApiResult {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(Json(value)),
        Ok(Err(e)) => Err(ApiError(e)),
        Err(e) => Err(ApiError(ControlError::Failed(format!("the request's worker failed: {e}")))),
    }
}

async fn health(AxumState(daemon): AxumState<Arc<Daemon>>) -> ApiResult {
    let accel = lock(&daemon.accel);
    Ok(Json(json!({
        "pid": std::process::id(),
        "home": daemon.home,
        "accel": accel.chosen,
        "accel_reason": accel.why,
        "exe": daemon.exe,
    })))
}

async fn machines(AxumState(daemon): AxumState<Arc<Daemon>>) -> ApiResult {
    blocking(move || {
        let deployment = daemon.deployment()?;
        let mut listed = Vec::new();
        for machine in deployment.state.machines()? {
            let runtime = daemon.runtime(&instance(&machine.definition.name, machine.active_site));
            let mut value = serde_json::to_value(&machine).expect("machines serialise");
            value["runtime"] = serde_json::to_value(runtime).expect("runtimes serialise");
            value["networks"] = crate::network::describe(&machine, &deployment.config, &deployment.home)?;
            if machine.state.on_exports() {
                // Until reprotect, its disks at this site are the failover
                // point's exports over these overlays (a plain raw image of
                // the whole disk once hydrated).
                let hydration = daemon.hydration(&deployment, &machine)?;
                for (index, disk) in hydration.as_array().into_iter().flatten().enumerate() {
                    value["disks"][index]["running_from"] = disk.clone();
                }
            }
            listed.push(value);
        }
        Ok(json!({"machines": listed}))
    })
    .await
}

async fn start(AxumState(daemon): AxumState<Arc<Daemon>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || daemon.start(&name)).await
}

#[derive(Deserialize)]
struct StopQuery {
    #[serde(default)]
    force: bool,
    /// An instance at another site than the active one (an old source).
    site: Option<String>,
}

async fn stop(
    AxumState(daemon): AxumState<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<StopQuery>,
) -> ApiResult {
    blocking(move || daemon.stop(&name, query.force, query.site.as_deref())).await
}

#[derive(Deserialize)]
struct ProtectQuery {
    policy: Option<String>,
}

async fn protect(
    AxumState(daemon): AxumState<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<ProtectQuery>,
) -> ApiResult {
    blocking(move || daemon.protect(&name, query.policy)).await
}

async fn unprotect(AxumState(daemon): AxumState<Arc<Daemon>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || daemon.unprotect(&name)).await
}

#[derive(Deserialize)]
struct FailoverQuery {
    point: Option<String>,
    #[serde(default)]
    shutdown_source: bool,
}

async fn test_failover(
    AxumState(daemon): AxumState<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<FailoverQuery>,
) -> ApiResult {
    blocking(move || daemon.test_failover(&name, query.point)).await
}

async fn cleanup_test_failover(AxumState(daemon): AxumState<Arc<Daemon>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || daemon.cleanup_test_failover(&name)).await
}

async fn failover(
    AxumState(daemon): AxumState<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<FailoverQuery>,
) -> ApiResult {
    blocking(move || daemon.failover(&name, query.point, query.shutdown_source)).await
}

#[derive(Deserialize)]
struct PlannedQuery {
    #[serde(default)]
    sync_first: bool,
}

async fn planned_failover(
    AxumState(daemon): AxumState<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<PlannedQuery>,
) -> ApiResult {
    blocking(move || daemon.planned_failover(&name, query.sync_first)).await
}

async fn complete_failover(AxumState(daemon): AxumState<Arc<Daemon>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || daemon.complete_failover(&name)).await
}

async fn change_point(
    AxumState(daemon): AxumState<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<FailoverQuery>,
) -> ApiResult {
    blocking(move || match query.point {
        Some(point) => daemon.change_point(&name, point),
        None => Err(ControlError::Refused("change-point needs --point P".into())),
    })
    .await
}

async fn commit(AxumState(daemon): AxumState<Arc<Daemon>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || daemon.commit(&name)).await
}

async fn cancel(AxumState(daemon): AxumState<Arc<Daemon>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || daemon.cancel(&name)).await
}

#[derive(Deserialize)]
struct ReprotectQuery {
    #[serde(default)]
    alternate_location: bool,
    #[serde(default)]
    discard_source_writes: bool,
}

async fn reprotect(
    AxumState(daemon): AxumState<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<ReprotectQuery>,
) -> ApiResult {
    blocking(move || daemon.reprotect(&name, query.alternate_location, query.discard_source_writes)).await
}

async fn status_all(AxumState(daemon): AxumState<Arc<Daemon>>) -> ApiResult {
    blocking(move || daemon.status(None)).await
}

async fn status_one(AxumState(daemon): AxumState<Arc<Daemon>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || daemon.status(Some(&name))).await
}

async fn jobs(AxumState(daemon): AxumState<Arc<Daemon>>) -> ApiResult {
    blocking(move || Ok(json!({"jobs": daemon.deployment()?.state.jobs()?}))).await
}

async fn job(AxumState(daemon): AxumState<Arc<Daemon>>, UrlPath(id): UrlPath<i64>) -> ApiResult {
    blocking(move || Ok(serde_json::to_value(daemon.deployment()?.state.job(id)?).expect("jobs serialise"))).await
}
