//! `standby serve`: the daemon that runs a deployment's machines (both
//! sites' agents, in one process in the embedded default). Lifecycle
//! commands talk to it over HTTP on `run/standby.sock` (a unix socket, so
//! only users who can reach the deployment's folder can use it): the
//! routes and types of `standby-api` (`http.rs` is the edge), errors as
//! one JSON body with a stable code.
//!
//! The daemon restarts nothing behind the operator's back: a machine that
//! stops stays stopped. Machines outlive the daemon: when it stops (or
//! dies), they keep running, and the next daemon adopts them (pid file and
//! QMP socket in `run/machines/NAME`), so a machine is never started twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use standby_api::{AddMachine, MachineList, MachineView, Runtime, Started};
use standby_lifecycle::job::{JobKind, StepState};
use standby_lifecycle::{Instance, Site, INSTANCES};

use self::engine::{Claims, JobSteps};
use crate::agent::Agent;
use crate::deployment::{Accel, Deployment};
use crate::error::ControlError;
use crate::qemu::{self, Drive, Qemu, QemuSpec, Stopped};

mod consistency;
mod engine;
mod failover;
mod files;
mod http;
mod protection;
mod reprotect;
mod restart;
mod retention;

pub use crate::deployment::SOCKET;
const PID_FILE: &str = "standby.pid";
/// How long a stopping daemon waits for running jobs.
const JOBS_AT_STOP: Duration = Duration::from_secs(60);
/// How often a stopping daemon looks whether its jobs ended.
const JOBS_AT_STOP_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long the KVM probe's child may take before KVM is taken for unusable.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a guest has to shut down after the ACPI request.
pub const POWER_DOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// A QEMU this daemon just started.
struct Launched {
    pid: u32,
    console: PathBuf,
    accel: &'static str,
    instance: Instance,
    attachments: Vec<crate::network::Attachment>,
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
    ControlError::Conflict(format!(
        "machine '{name}' is already running (pid {pid}); `standby machine stop {name}` stops it"
    ))
}

fn not_running(name: &str) -> ControlError {
    ControlError::Conflict(format!("machine '{name}' is not running; `standby machine start {name}` starts it"))
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
    /// The machines running jobs hold: one job per machine at a time.
    claims: Arc<Claims>,
    /// App-consistent points: when each machine's next is due, how the last went.
    consistency: Mutex<HashMap<String, consistency::Consistency>>,
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

    fn start(&self, name: &str) -> Result<Started, ControlError> {
        // Refusals come before a job is recorded.
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        if let Some(pid) = self.runtime(&instance(name, machine.active_site)).pid {
            return Err(already_running(name, pid));
        }
        let steps = ["check the machine", "choose the accelerator", "start QEMU"];
        let (job, launched) =
            self.job(&deployment, name, JobKind::MachineStart, &steps, |job| self.start_job(&machine, job))?;
        Ok(Started {
            name: name.to_string(),
            pid: launched.pid,
            console: launched.console,
            accel: launched.accel.to_string(),
            site: launched.instance,
            nics: serde_json::to_value(&launched.attachments).expect("attachments serialise"),
            job,
        })
    }

    fn start_job(&self, machine: &crate::Machine, job: &JobSteps) -> Result<Launched, ControlError> {
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
        let launched = self.launch(deployment, machine, machine.active_site.into(), drives, accel)?;
        job.step("start QEMU", StepState::Done, &format!("pid {}", launched.pid))?;
        Ok(launched)
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
    ) -> Result<Launched, ControlError> {
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
        let launched = Launched { pid: qemu.pid(), console: qemu.console.clone(), accel, instance, attachments };
        lock(&self.machines).insert(key, Running { qemu });
        Ok(launched)
    }

    fn stop(&self, name: &str, force: bool, site: Option<Site>) -> Result<standby_api::Stopped, ControlError> {
        // Refusals come before a job is recorded.
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        let site = site.unwrap_or(machine.active_site);
        let key = instance(name, site);
        if !self.runtime(&key).running {
            return Err(not_running(name));
        }
        let steps: &[&str] = if force { &["cut the power"] } else { &["ACPI power-down", "wait for the guest"] };
        let (job, stopped) =
            self.job(&deployment, name, JobKind::MachineStop, steps, |job| self.stop_job(name, &key, force, job))?;
        Ok(standby_api::Stopped { name: name.to_string(), stopped, job })
    }

    /// Stops instance `key`; says how it stopped.
    fn stop_job(&self, name: &str, key: &str, force: bool, job: &JobSteps) -> Result<String, ControlError> {
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
        Ok(stopped)
    }

    /// Every machine with its runtime, where its NICs are plugged in and,
    /// running from a failover point, how much of each disk is local.
    fn machine_list(&self) -> Result<MachineList, ControlError> {
        let deployment = self.deployment()?;
        let mut machines = Vec::new();
        for machine in deployment.state.machines()? {
            let mut view = machine.view();
            view.runtime = Some(self.runtime(&instance(machine.name(), machine.active_site)));
            view.networks = Some(crate::network::describe(&machine, &deployment.config, &deployment.home)?);
            if machine.state.on_exports() {
                // Until reprotect, its disks at this site are the failover
                // point's exports over these overlays (a plain raw image of
                // the whole disk once hydrated).
                for (disk, hydration) in view.disks.iter_mut().zip(self.hydration(&deployment, &machine)?) {
                    disk.running_from = Some(hydration);
                }
            }
            machines.push(view);
        }
        Ok(MachineList { machines })
    }

    /// Defines a machine (`standby machine add` through the daemon): its
    /// disks imported at the primary site.
    fn add_machine(&self, request: &AddMachine) -> Result<MachineView, ControlError> {
        let mut deployment = self.deployment()?;
        Ok(deployment.add_machine(&request.definition, &request.disks)?.view())
    }

    /// The runtime of instance `key` (see [`instance`]).
    fn runtime(&self, key: &str) -> Runtime {
        let machines = lock(&self.machines);
        match machines.get(key) {
            Some(running) if running.qemu.running() => Runtime {
                running: true,
                pid: Some(running.qemu.pid()),
                console: Some(running.qemu.console.clone()),
                accel: Some(running.qemu.accel.to_string()),
            },
            _ => Runtime::default(),
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
        return Err(ControlError::Conflict(format!(
            "a daemon is already running for {} (pid {}); stop it first",
            deployment.home.display(),
            pid.trim()
        )));
    }
    let _ = std::fs::remove_file(&socket);
    let daemon = Arc::new(Daemon {
        home: deployment.home.clone(),
        exe: exe.to_path_buf(),
        accel: Mutex::new(Accelerator::resolve(&deployment, exe)?),
        machines: Mutex::default(),
        splitters: Mutex::default(),
        exports: Mutex::default(),
        claims: Arc::default(),
        consistency: Mutex::default(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ControlError::Failed(format!("cannot start the daemon's runtime: {e}")))?;
    let pid_file = run.join(PID_FILE);
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(|e| ControlError::io(&pid_file, e))?;
    if let Err(e) = daemon.take_over(&deployment) {
        let _ = std::fs::remove_file(&pid_file);
        return Err(e);
    }
    let result = runtime.block_on(http::serve_http(daemon.clone(), &socket));
    daemon.let_jobs_finish();
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&pid_file);
    result
}

impl Accelerator {
    /// The accelerator machines run with: `STANDBY_ACCEL`, else the
    /// deployment's config; `auto` probes KVM in a child process.
    fn resolve(deployment: &Deployment, exe: &Path) -> Result<Accelerator, ControlError> {
        let source =
            if std::env::var_os("STANDBY_ACCEL").is_some() { "STANDBY_ACCEL" } else { "the deployment's config" };
        let configured = match std::env::var("STANDBY_ACCEL").ok().as_deref() {
            Some("tcg") => Accel::Tcg,
            Some("kvm") => Accel::Kvm,
            Some("auto") | None => deployment.config.accel,
            Some(other) => {
                return Err(ControlError::Refused(format!("STANDBY_ACCEL={other:?}: use tcg, kvm or auto")));
            }
        };
        let (chosen, why) =
            qemu::resolve_accel(configured, source, || qemu::probe_kvm_in_child(exe, KVM_PROBE_TIMEOUT));
        let unproven_kvm = configured == Accel::Auto && chosen == "kvm";
        Ok(Accelerator { chosen, why, unproven_kvm })
    }
}

impl Daemon {
    /// Takes over from the daemon before: its running jobs recorded
    /// interrupted, its machines adopted, the background loops started, the
    /// interrupted jobs resumed or rolled back (`restart.rs`).
    fn take_over(self: &Arc<Self>, deployment: &Deployment) -> Result<(), ControlError> {
        let interrupted = deployment.state.interrupt_running_jobs(
            "the daemon stopped while the job ran; the next daemon resumed or rolled it back (see the jobs after it)",
        )?;
        if !interrupted.is_empty() {
            let ids: Vec<i64> = interrupted.iter().map(|job| job.id).collect();
            eprintln!("standby: jobs interrupted by the previous daemon: {ids:?}");
        }
        let adopted = self.adopt_all()?;
        if !adopted.is_empty() {
            eprintln!("standby: adopted running machines: {}", adopted.join(", "));
        }
        let daemon = self.clone();
        spawn_loop("app-consistency", move || {
            daemon.thaw_all();
            daemon.consistency_loop();
        })?;
        let daemon = self.clone();
        spawn_loop("retention", move || daemon.retention_loop())?;
        let (taken_up, failed) = self.take_up_interrupted(&interrupted);
        if !taken_up.is_empty() {
            eprintln!("standby: interrupted jobs taken up: {}", taken_up.join(", "));
        }
        for failure in failed {
            eprintln!("standby: could not take up {failure}; `standby status` and `standby jobs` show what is missing");
        }
        Ok(())
    }

    /// Once the API is closed no new job starts; running ones get
    /// [`JOBS_AT_STOP`] to finish (one that does not is resumed or rolled
    /// back by the next daemon). Machines keep running for the next daemon.
    fn let_jobs_finish(&self) {
        let deadline = std::time::Instant::now() + JOBS_AT_STOP;
        let mut told = false;
        loop {
            let held = self.claims.held();
            let busy: Vec<String> = held.iter().map(|(name, id)| format!("{name} (job {id})")).collect();
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
            std::thread::sleep(JOBS_AT_STOP_POLL_INTERVAL);
        }
        let running: Vec<String> = lock(&self.machines).keys().cloned().collect();
        if !running.is_empty() {
            eprintln!("standby: machines left running (the next daemon adopts them): {}", running.join(", "));
        }
    }
}

/// Starts one of the daemon's background loops on a thread of its own.
fn spawn_loop(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), ControlError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(body)
        .map(|_| ())
        .map_err(|e| ControlError::Failed(format!("cannot start the {name} thread: {e}")))
}
