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

use standby_api::{AddMachine, Hint, MachineList, MachineView, Runtime, SetNics, Started};
use standby_lifecycle::job::{JobKind, StepState};
use standby_lifecycle::{Instance, Site, INSTANCES};
use standby_vault::summary::{summarize_journal, JournalSummary};

use self::engine::{Claims, JobSteps};
use crate::deployment::Deployment;
use crate::error::ControlError;
use crate::qemu::{Drive, QemuSpec, Stopped};
use crate::site::{LocalHost, RemoteHost, Shutdown, SiteHost, Sites};

mod access;
mod alerts;
mod board;
mod consistency;
mod console;
mod engine;
mod failover;
mod files;
mod group_jobs;
mod groups;
mod host_service;
mod http;
mod kept;
mod listener;
mod metrics;
mod operators;
mod plan_jobs;
mod protection;
mod reprotect;
mod restart;
mod retention;
mod rpo_history;
#[cfg(test)]
mod simulated;
mod sites;
mod vault_records;

pub use crate::deployment::SOCKET;
const PID_FILE: &str = "standby.pid";
/// How long a stopping daemon waits for running jobs.
const JOBS_AT_STOP: Duration = Duration::from_secs(60);
/// How often a stopping daemon looks whether its jobs ended.
const JOBS_AT_STOP_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a guest has to shut down after the ACPI request.
pub const POWER_DOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// A QEMU this daemon just started.
struct Launched {
    pid: u32,
    console: PathBuf,
    accel: String,
    instance: Instance,
    attachments: Vec<crate::network::Attachment>,
}

/// The key of `instance` of machine (or disk) `name`: its QEMU's `-name`,
/// its folder under `run/machines/` (or `run/exports/`), and its key in the
/// daemon's tables.
pub(crate) fn instance(name: &str, instance: impl Into<Instance>) -> String {
    format!("{name}@{}", instance.into())
}

fn already_running(name: &str, pid: u32) -> ControlError {
    ControlError::Conflict(format!("machine '{name}' is already running (pid {pid})"))
        .with_hint(Hint::StopMachine { machine: name.to_string(), site: None })
}

fn not_running(name: &str) -> ControlError {
    ControlError::Conflict(format!("machine '{name}' is not running"))
        .with_hint(Hint::StartMachine { machine: name.to_string() })
}

struct Daemon {
    home: PathBuf,
    exe: PathBuf,
    /// The hosts of the two sites: what jobs act through.
    sites: Sites,
    /// The machines running jobs hold: one job per machine at a time.
    claims: Arc<Claims>,
    /// App-consistent points: when each machine's next is due, how the last went.
    consistency: Mutex<HashMap<String, consistency::Consistency>>,
    /// Tests' moments to crash or hold a job at.
    hooks: engine::Hooks,
    /// The last time each helper was found dead, and what happened
    /// (`status` says it for [`RESTART_SHOWN_FOR`]).
    restarts: Mutex<HashMap<crate::site::HelperName, (std::time::Instant, String)>>,
    /// When this daemon started.
    started: jiff::Timestamp,
    /// Each disk's journal in brief, per site's vault, brought up to date
    /// by `status` and `points` (see [`Daemon::with_summary`]).
    summaries: kept::Kept<(Site, String), (std::time::Instant, JournalSummary)>,
    /// Every machine's status as last found (`board.rs`).
    board: board::Board,
    /// Every machine's RPO over the last hours, for the console.
    rpo_history: rpo_history::RpoHistory,
    /// Each replication group's points as the groups loop made them.
    groups: Mutex<HashMap<String, groups::Activity>>,
    /// Plans an operator resumed while their job waits at a manual step.
    plan_resumes: Mutex<std::collections::HashSet<String>>,
}

/// How long a journal summary is taken as it is: listing a week of
/// segments takes milliseconds, and a page asked by many at once need not
/// list them for each.
const SUMMARY_FRESH: Duration = Duration::from_secs(1);

/// How long `status` mentions a helper that died and was started again.
const RESTART_SHOWN_FOR: Duration = Duration::from_secs(3600);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Daemon {
    fn deployment(&self) -> Result<Deployment, ControlError> {
        Deployment::open(&self.home)
    }

    /// Calls `read` with the summary of `disk`'s journal in `site`'s
    /// `vault`, brought up to date (unless it was less than
    /// [`SUMMARY_FRESH`] ago): only the segments stored since are read (a
    /// disk's callers wait for each other rather than read them twice).
    fn with_summary<T>(
        &self,
        site: Site,
        vault: &standby_vault::Vault,
        disk: &str,
        read: impl FnOnce(&JournalSummary) -> T,
    ) -> Result<T, ControlError> {
        self.summaries.with(
            &(site, disk.to_string()),
            |(when, _)| when.elapsed() < SUMMARY_FRESH,
            |kept| {
                let now = std::time::Instant::now();
                Ok((now, summarize_journal(vault, disk, kept.map(|(_, summary)| summary))?))
            },
            |(_, summary)| read(summary),
        )
    }

    /// The host of `site`.
    fn site(&self, site: Site) -> &dyn SiteHost {
        self.sites.at(site)
    }

    /// The host of the control plane's own site (where plans' scripts
    /// run): its site in a deployment with a host per site, else this host.
    fn control_host(&self, deployment: &Deployment) -> &dyn SiteHost {
        self.site(deployment.config.host.as_ref().map_or(Site::Primary, |host| host.site))
    }

    /// The host instance `instance` of `machine` runs on.
    fn host_of(&self, machine: &crate::Machine, instance: Instance) -> &dyn SiteHost {
        self.site(instance.site(machine.active_site))
    }

    fn start(&self, name: &str) -> Result<Started, ControlError> {
        // Refusals come before a job is recorded.
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        if let Some(pid) = self.runtime(&machine, machine.active_site.into()).pid {
            return Err(already_running(name, pid));
        }
        let steps = ["check the machine", "choose the accelerator", "start QEMU"];
        let (job, launched) =
            self.job(&deployment, name, JobKind::MachineStart, &steps, |job| self.start_job(&machine, job))?;
        Ok(Started {
            name: name.to_string(),
            pid: launched.pid,
            console: launched.console,
            accel: launched.accel,
            site: launched.instance,
            nics: launched.attachments,
            job,
        })
    }

    fn start_job(&self, machine: &crate::Machine, job: &JobSteps) -> Result<Launched, ControlError> {
        let name = machine.definition.name.as_str();
        let key = instance(name, machine.active_site);
        let deployment = job.deployment;
        job.step("check the machine", StepState::Running, "")?;
        if let Some(pid) = self.site(machine.active_site).runtime(&key).pid {
            return Err(already_running(name, pid));
        }
        let (drives, how) = self.drives(deployment, machine)?;
        job.step(
            "check the machine",
            StepState::Done,
            &format!("{} disk(s) at the {} site, {how}", drives.len(), machine.active_site),
        )?;
        job.step("choose the accelerator", StepState::Running, "")?;
        let host = self.site(machine.active_site);
        let accel = host.accelerator(machine.definition.kernel.as_deref());
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
            if !self.site(machine.active_site).is_file(&image) {
                return Err(ControlError::Failed(format!("disk {} of machine '{name}' is missing", image.display())));
            }
        }
        if machine.state.replicating() {
            // Every write goes through the disks' splitters.
            self.ensure_splitters(deployment, machine)?;
            return Ok((self.splitter_drives(deployment, machine), "replicated"));
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
            addresses: crate::network::guest_addresses(&nics, instance, &key),
            accel: accel.to_string(),
            run_dir: deployment.run_dir().join("machines").join(&key),
            netns: deployment.netns(site),
        };
        let booted = self.site(site).launch(&spec)?;
        Ok(Launched { pid: booted.pid, console: booted.console, accel: booted.accel, instance, attachments })
    }

    fn stop(&self, name: &str, force: bool, site: Option<Site>) -> Result<standby_api::Stopped, ControlError> {
        // Refusals come before a job is recorded.
        let deployment = self.deployment()?;
        let machine = deployment.state.machine(name)?;
        let site = site.unwrap_or(machine.active_site);
        let key = instance(name, site);
        if !self.site(site).runtime(&key).running {
            return Err(not_running(name));
        }
        let steps: &[&str] = if force { &["cut the power"] } else { &["ACPI power-down", "wait for the guest"] };
        let host = self.site(site);
        let (job, stopped) =
            self.job(&deployment, name, JobKind::MachineStop, steps, |job| stop_job(host, name, &key, force, job))?;
        Ok(standby_api::Stopped { name: name.to_string(), stopped, job })
    }

    /// Every machine with its runtime, where its NICs are plugged in and,
    /// running from a failover point, how much of each disk is local.
    fn machine_list(&self) -> Result<MachineList, ControlError> {
        let deployment = self.deployment()?;
        let mut machines = Vec::new();
        for machine in deployment.state.machines()? {
            machines.push(self.machine_view(&deployment, &machine)?);
        }
        Ok(MachineList { machines })
    }

    /// `machine` as `machine list` shows it, with its runtime and NICs.
    fn machine_view(&self, deployment: &Deployment, machine: &crate::Machine) -> Result<MachineView, ControlError> {
        let mut view = machine.view();
        view.runtime = Some(self.runtime(machine, machine.active_site.into()));
        view.networks = Some(crate::network::describe(machine, &deployment.config, &deployment.home)?);
        if machine.state.on_exports() {
            // Until reprotect, its disks at this site are the failover
            // point's exports over these overlays (a plain raw image of
            // the whole disk once hydrated).
            for (disk, hydration) in view.disks.iter_mut().zip(self.hydration(deployment, machine)?) {
                disk.running_from = Some(hydration);
            }
        }
        Ok(view)
    }

    /// Replaces a machine's NICs (`standby machine set-nics`): its next
    /// boot anywhere has them.
    fn set_nics(&self, name: &str, request: &SetNics) -> Result<MachineView, ControlError> {
        let deployment = self.deployment()?;
        let machine = deployment.set_nics(name, &request.nics)?;
        self.machine_view(&deployment, &machine)
    }

    /// Defines a machine (`standby machine add` through the daemon): its
    /// disks imported by the host of its site (the primary unless asked).
    fn add_machine(&self, request: &AddMachine) -> Result<MachineView, ControlError> {
        let mut deployment = self.deployment()?;
        let site = request.site.unwrap_or(Site::Primary);
        Ok(deployment.add_machine_at(&request.definition, &request.disks, site, Some(self.site(site)))?.view())
    }

    /// The runtime of `instance` of `machine`.
    fn runtime(&self, machine: &crate::Machine, instance: Instance) -> Runtime {
        self.host_of(machine, instance).runtime(&self::instance(machine.name(), instance))
    }

    /// Takes over the machines a previous daemon left running.
    fn adopt_all(&self) -> Result<Vec<String>, ControlError> {
        let deployment = self.deployment()?;
        let mut adopted = Vec::new();
        for machine in deployment.state.machines()? {
            for role in INSTANCES {
                let key = instance(&machine.definition.name, role);
                let run_dir = deployment.run_dir().join("machines").join(&key);
                let host = self.host_of(&machine, role);
                match host.adopt_machine(&key, &run_dir) {
                    Ok(true) => adopted.push(key),
                    Ok(false) => {}
                    Err(e) if host.is_remote() => {
                        // That host's own daemon adopts what runs there.
                        eprintln!("standby: machine '{key}': {e}");
                    }
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

/// What `standby serve` serves beside its unix socket.
#[derive(Debug, Clone, Default)]
pub struct Serving {
    /// The operators' listener: the API over TLS (`--listen ADDR`).
    pub listen: Option<String>,
    /// `/metrics` alone over TLS, without a token (`--metrics-listen ADDR`).
    pub metrics_listen: Option<String>,
}

/// Runs the daemon for the deployment at `home` until SIGINT or SIGTERM.
/// `exe` is this binary (for the KVM probe child).
pub fn serve(home: &Path, exe: &Path, serving: &Serving) -> Result<(), ControlError> {
    let listen = serving.listen.as_deref().map(|text| operators::listen_address("--listen", text)).transpose()?;
    let metrics_listen = serving
        .metrics_listen
        .as_deref()
        .map(|text| operators::listen_address("--metrics-listen", text))
        .transpose()?;
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
    if let Some(host) = &deployment.config.host {
        // Splitters and exports this daemon starts reach a vault at the
        // other host with this host's identity (set before any thread).
        std::env::set_var(standby_link::remote::TLS_DIR_ENV, deployment.home.join(standby_link::identity::TLS_DIR));
        if host.control.is_some() {
            if let Some(listen) = listen.or(metrics_listen) {
                return Err(ControlError::Refused(format!(
                    "--listen {listen}: this host runs the {} site's agent; operators reach the control plane's host",
                    host.site
                )));
            }
            return serve_agent(&deployment, host, exe, &socket);
        }
    }
    let local: Arc<dyn SiteHost> = Arc::new(LocalHost::new(&deployment, exe)?);
    let sites = match &deployment.config.host {
        None => Sites::one(local),
        Some(host) => {
            let remote: Arc<dyn SiteHost> = Arc::new(RemoteHost::new(host.site.other(), &deployment.home));
            match host.site {
                Site::Primary => Sites { primary: local, recovery: remote },
                Site::Recovery => Sites { primary: remote, recovery: local },
            }
        }
    };
    let daemon = Daemon::new(&deployment, exe, sites, engine::Hooks::from_env());
    let runtime = runtime()?;
    let pid_file = run.join(PID_FILE);
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(|e| ControlError::io(&pid_file, e))?;
    if let Err(e) = daemon.take_over(&deployment) {
        let _ = std::fs::remove_file(&pid_file);
        return Err(e);
    }
    daemon.start_loops()?;
    let result = runtime.block_on(async {
        if let Some(host) = &deployment.config.host {
            let control = listener::control_routes(&deployment, http::routes(daemon.clone()));
            let serving = listener::bind(&deployment, host, control).await?;
            tokio::spawn(serving);
        }
        if let Some(listen) = listen {
            let api = access::with_tokens(http::routes(daemon.clone()), deployment.home.clone());
            let app = console::routes(daemon.clone(), http::routes(daemon.clone())).merge(api);
            let serving = operators::bind(&deployment, operators::Listener::Api, listen, app).await?;
            tokio::spawn(serving);
        }
        if let Some(listen) = metrics_listen {
            let metrics = http::metrics_routes(daemon.clone());
            let serving = operators::bind(&deployment, operators::Listener::Metrics, listen, metrics).await?;
            tokio::spawn(serving);
        }
        http::serve_http(daemon.clone(), &socket).await
    });
    daemon.let_jobs_finish();
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&pid_file);
    result
}

fn runtime() -> Result<tokio::runtime::Runtime, ControlError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ControlError::Failed(format!("cannot start the daemon's runtime: {e}")))
}

/// Runs a joined host's agent (`host_service.rs`) until SIGINT or SIGTERM.
fn serve_agent(
    deployment: &Deployment,
    host: &crate::config::HostConfig,
    exe: &Path,
    socket: &Path,
) -> Result<(), ControlError> {
    let service = host_service::HostService::new(deployment, host, exe)?;
    let supervised = service.clone();
    spawn_loop("supervision", move || supervised.supervise_loop())?;
    let pid_file = deployment.run_dir().join(PID_FILE);
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(|e| ControlError::io(&pid_file, e))?;
    let result = runtime()?.block_on(async {
        let serving = listener::bind(deployment, host, host_service::routes(service.clone())).await?;
        tokio::spawn(serving);
        http::serve_router(host_service::elsewhere(host), socket, &format!("the {} site's agent", host.site)).await
    });
    let running = service.running_machines();
    if !running.is_empty() {
        eprintln!("standby: machines left running (the next daemon adopts them): {}", running.join(", "));
    }
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(&pid_file);
    result
}

impl Daemon {
    fn new(deployment: &Deployment, exe: &Path, sites: Sites, hooks: engine::Hooks) -> Arc<Daemon> {
        Arc::new(Daemon {
            home: deployment.home.clone(),
            exe: exe.to_path_buf(),
            sites,
            claims: Arc::default(),
            consistency: Mutex::default(),
            hooks,
            restarts: Mutex::default(),
            started: jiff::Timestamp::now(),
            summaries: kept::Kept::default(),
            board: board::Board::default(),
            rpo_history: rpo_history::RpoHistory::default(),
            groups: Mutex::default(),
            plan_resumes: Mutex::default(),
        })
    }

    /// Takes over from the daemon before: its running jobs recorded
    /// interrupted, its machines adopted, the interrupted jobs resumed or
    /// rolled back (`restart.rs`).
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
        let (taken_up, failed) = self.take_up_interrupted(&interrupted);
        if !taken_up.is_empty() {
            eprintln!("standby: interrupted jobs taken up: {}", taken_up.join(", "));
        }
        for failure in failed {
            eprintln!("standby: could not take up {failure}; `standby status` and `standby jobs` show what is missing");
        }
        self.resume_interrupted_plans(&interrupted);
        Ok(())
    }

    /// Starts the background loops: app-consistent points (after thawing
    /// what a dead daemon left frozen), retention, and the supervision of
    /// the sites' helpers.
    fn start_loops(self: &Arc<Self>) -> Result<(), ControlError> {
        let daemon = self.clone();
        spawn_loop("app-consistency", move || {
            daemon.thaw_all();
            daemon.consistency_loop();
        })?;
        let daemon = self.clone();
        spawn_loop("groups", move || daemon.groups_loop())?;
        let daemon = self.clone();
        spawn_loop("drills", move || daemon.drills_loop())?;
        let daemon = self.clone();
        spawn_loop("retention", move || daemon.retention_loop())?;
        let daemon = self.clone();
        spawn_loop("sites", move || daemon.probe_loop())?;
        let daemon = self.clone();
        spawn_loop("control-records", move || daemon.records_loop())?;
        let daemon = self.clone();
        spawn_loop("alerts", move || daemon.alerts_loop())?;
        let daemon = self.clone();
        spawn_loop("supervision", move || loop {
            daemon.supervise();
            std::thread::sleep(crate::site::SUPERVISION_INTERVAL);
        })
    }

    /// Starts again the helpers that died, on every host; says so.
    fn supervise(&self) {
        for host in self.sites.hosts() {
            for restart in host.supervise() {
                eprintln!("standby: {restart}");
                let said = format!("{restart} at {}", jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"));
                lock(&self.restarts).insert(restart.helper, (std::time::Instant::now(), said));
            }
        }
    }

    /// What `status` says about `helper` dying lately, if it did.
    fn lately_restarted(&self, helper: &crate::site::HelperName) -> Option<String> {
        let restarts = lock(&self.restarts);
        let (when, said) = restarts.get(helper)?;
        (when.elapsed() < RESTART_SHOWN_FOR).then(|| said.clone())
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
        let running: Vec<String> = self.sites.hosts().iter().flat_map(|host| host.running_machines()).collect();
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

/// Stops instance `key` on `host`; says how it stopped.
fn stop_job(host: &dyn SiteHost, name: &str, key: &str, force: bool, job: &JobSteps) -> Result<String, ControlError> {
    if force {
        job.step("cut the power", StepState::Running, "")?;
        host.stop_machine(key, Shutdown::PowerCut)?.ok_or_else(|| not_running(name))?;
        job.step("cut the power", StepState::Done, "")?;
        return Ok("forced".to_string());
    }
    if !host.runtime(key).running {
        return Err(not_running(name));
    }
    job.step("ACPI power-down", StepState::Done, "power button pressed")?;
    job.step("wait for the guest", StepState::Running, &format!("up to {} s", POWER_DOWN_TIMEOUT.as_secs()))?;
    let stopped = match host.stop_machine(key, Shutdown::PowerDown(POWER_DOWN_TIMEOUT))? {
        Some(Stopped::Clean) => "clean".to_string(),
        Some(Stopped::Forced) => "forced after the guest ignored the power button".to_string(),
        Some(other) => other.describe(),
        None => return Err(not_running(name)),
    };
    job.step("wait for the guest", StepState::Done, &stopped)?;
    Ok(stopped)
}
