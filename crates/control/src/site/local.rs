//! The host this daemon runs on: its QEMU processes, splitters and exports
//! (processes of their own, which outlive the daemon and are adopted by the
//! next one), and its files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use standby_api::{Runtime, SplitterStatus};

use super::address_keeper::AddressKeeper;
use super::{Booted, GroupPointMade, HelperName, MarkWait, Opened, Restart, Shutdown, SiteHost};
use crate::agent::{Agent, ExportSpec, SplitterSpec};
use crate::deployment::{Accel, Deployment};
use crate::error::ControlError;
use crate::guest_agent::GuestAgent;
use crate::qemu::{self, Drive, Qemu, QemuSpec, Stopped};

/// How long the KVM probe's child may take before KVM is taken for unusable.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a kernel has to boot under KVM before it is taken for unusable.
const KVM_BOOT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a guest agent that is not asked to freeze has to answer a thaw.
const THAW_ALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a guest agent has to answer a thaw after a freeze.
const THAW_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a thaw is tried again before the daemon gives up (and says so).
const THAW_PERSIST: Duration = Duration::from_secs(60);

pub(crate) struct LocalHost {
    /// This binary (the splitters' and exports' program, the KVM probe's).
    exe: PathBuf,
    /// Where the KVM boot probe keeps its files.
    run_dir: PathBuf,
    accel: Mutex<Accelerator>,
    /// Running QEMU instances, by `NAME@INSTANCE`.
    machines: Mutex<HashMap<String, Qemu>>,
    /// The splitters of protected machines, by vault disk name.
    splitters: Mutex<HashMap<String, Helper<SplitterSpec>>>,
    /// Exports of recovery points (failover, drill), by `DISK@INSTANCE`.
    exports: Mutex<HashMap<String, Helper<ExportSpec>>>,
    /// The static addresses of running instances, kept in their guests.
    keepers: Mutex<HashMap<String, AddressKeeper>>,
}

/// A helper process (splitter, export) with what it was started with, to
/// start it again when it dies ([`SiteHost::supervise`]).
struct Helper<S> {
    agent: Agent,
    spec: S,
    /// After a start that failed: when to try again, and the wait after that.
    retry: Option<(std::time::Instant, Duration)>,
}

/// The wait before a helper that could not be started again is tried
/// again, doubled after each failure up to [`RESTART_BACKOFF_MAX`].
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

struct Accelerator {
    chosen: &'static str,
    why: String,
    /// `auto` chose KVM: a kernel must still prove it boots under it.
    unproven_kvm: bool,
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

impl LocalHost {
    /// The host of `deployment`'s sites; `exe` is this binary.
    pub fn new(deployment: &Deployment, exe: &Path) -> Result<LocalHost, ControlError> {
        Ok(LocalHost {
            exe: exe.to_path_buf(),
            run_dir: deployment.run_dir(),
            accel: Mutex::new(Accelerator::resolve(deployment, exe)?),
            machines: Mutex::default(),
            splitters: Mutex::default(),
            exports: Mutex::default(),
            keepers: Mutex::default(),
        })
    }

    /// Takes over every machine an earlier daemon left running with its
    /// folder in `machines` (a joined host's agent, which has no list of
    /// them); returns their keys.
    pub fn adopt_left_running(&self, machines: &Path) -> Result<Vec<String>, ControlError> {
        let mut adopted = Vec::new();
        let Ok(entries) = std::fs::read_dir(machines) else { return Ok(adopted) };
        for entry in entries.flatten() {
            let key = entry.file_name().to_string_lossy().into_owned();
            match self.adopt_machine(&key, &entry.path()) {
                Ok(true) => adopted.push(key),
                Ok(false) => {}
                Err(e) => {
                    return Err(ControlError::Failed(format!(
                        "machine '{key}' seems to be running from an earlier daemon but cannot be reached ({e}); \
                         check its QEMU process before starting the daemon again"
                    )))
                }
            }
        }
        Ok(adopted)
    }

    /// Runs `act` on running instance `key`; `None` when it does not run.
    fn with_machine<T>(
        &self,
        key: &str,
        act: impl FnOnce(&mut Qemu) -> Result<T, ControlError>,
    ) -> Result<Option<T>, ControlError> {
        let mut machines = lock(&self.machines);
        match machines.get_mut(key).filter(|qemu| qemu.running()) {
            Some(qemu) => act(qemu).map(Some),
            None => Ok(None),
        }
    }

    /// Waits until every NBD server machine `key`'s disks are on answers:
    /// a pause flushes every disk, and one whose server is gone would wait
    /// out QEMU's reconnect delay. The supervision starts a dead splitter
    /// or export again within a second or so; one that is not back within
    /// [`SERVER_BACK_WITHIN`] fails the pause at once, naming it.
    fn wait_for_servers_of(&self, key: &str) -> Result<(), ControlError> {
        let sockets = self.with_machine(key, Qemu::nbd_sockets)?.unwrap_or_default();
        let deadline = std::time::Instant::now() + SERVER_BACK_WITHIN;
        for socket in sockets {
            while std::os::unix::net::UnixStream::connect(&socket).is_err() {
                if std::time::Instant::now() >= deadline {
                    return Err(server_gone(key, &socket));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    fn agent_socket(&self, key: &str) -> Option<PathBuf> {
        lock(&self.machines).get(key).filter(|qemu| qemu.running()).map(|qemu| qemu.agent_socket.clone())
    }

    fn splitter_control(&self, disk: &str) -> Result<crate::agent::SplitterControl, ControlError> {
        let mut splitters = lock(&self.splitters);
        let splitter = &mut splitters.get_mut(disk).ok_or_else(|| splitter_gone(disk))?.agent;
        if !splitter.running() {
            return Err(ControlError::Failed(format!(
                "the splitter of disk '{disk}' stopped: {}",
                crate::process::last_line(&splitter.log)
            )));
        }
        Ok(splitter.control())
    }
}

/// Starts `helper` again when its process died; says what happened.
fn restart_if_dead<S>(
    helper: &mut Helper<S>,
    what: HelperName,
    start: impl FnOnce(&S) -> Result<Agent, ControlError>,
) -> Option<Restart> {
    if helper.agent.running() || helper.retry.is_some_and(|(at, _)| std::time::Instant::now() < at) {
        return None;
    }
    let died = crate::process::last_line(&helper.agent.log);
    let started = std::time::Instant::now();
    let outcome = start(&helper.spec).map(|agent| {
        helper.agent = agent;
        helper.agent.pid()
    });
    helper.retry = match (&outcome, helper.retry) {
        (Ok(_), _) => None,
        (Err(_), None) => Some((std::time::Instant::now() + RESTART_BACKOFF, RESTART_BACKOFF * 2)),
        (Err(_), Some((_, wait))) => Some((std::time::Instant::now() + wait, (wait * 2).min(RESTART_BACKOFF_MAX))),
    };
    Some(Restart { helper: what, died, outcome, took: started.elapsed() })
}

/// How long a pause waits for a dead splitter or export to be started
/// again (the supervision's interval and a start, with room to spare).
const SERVER_BACK_WITHIN: Duration = Duration::from_secs(5);

/// Machine `key` cannot be paused: the NBD server at `socket` is gone.
fn server_gone(key: &str, socket: &Path) -> ControlError {
    let name = socket.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let helper = match socket.parent().and_then(Path::file_name).and_then(|f| f.to_str()) {
        Some("exports") => format!("the export {name}"),
        _ => format!("the splitter of disk '{name}'"),
    };
    let log = socket.with_file_name(format!("{name}.log"));
    let said = crate::process::last_line(&log);
    ControlError::Failed(format!(
        "machine '{key}' was not paused: {helper} is not serving and was not started again within {} s \
         (its log {}: {said}); pausing would wait {} s for it. `standby status` shows why it does not start",
        SERVER_BACK_WITHIN.as_secs(),
        log.display(),
        qemu::RECONNECT_DELAY.as_secs()
    ))
}

pub(crate) fn splitter_gone(disk: &str) -> ControlError {
    ControlError::Failed(format!("the splitter of disk '{disk}' is not running"))
}

impl SiteHost for LocalHost {
    fn accelerator(&self, kernel: Option<&Path>) -> &'static str {
        let mut accel = lock(&self.accel);
        if accel.unproven_kvm {
            if let Some(kernel) = kernel {
                match qemu::probe_kvm_boot(kernel, &self.run_dir, KVM_BOOT_PROBE_TIMEOUT) {
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

    fn accelerator_reason(&self) -> (String, String) {
        let accel = lock(&self.accel);
        (accel.chosen.to_string(), accel.why.clone())
    }

    fn launch(&self, spec: &QemuSpec) -> Result<Booted, ControlError> {
        {
            // A machine that stopped by itself leaves an entry behind; one
            // that runs is refused (jobs claim their machines: no two start
            // the same instance at once).
            let mut machines = lock(&self.machines);
            if let Some(qemu) = machines.get_mut(&spec.name) {
                if !qemu.exited() {
                    return Err(ControlError::Conflict(format!(
                        "machine '{}' is already running (pid {})",
                        spec.name,
                        qemu.pid()
                    )));
                }
                machines.remove(&spec.name);
            }
        }
        lock(&self.keepers).remove(&spec.name);
        // What the keeper keeps, for the next daemon that adopts the machine.
        let kept = addresses_file(&spec.run_dir, &spec.name);
        match &spec.addresses {
            Some(addresses) => {
                std::fs::create_dir_all(&spec.run_dir).map_err(|e| ControlError::io(&spec.run_dir, e))?;
                let text = serde_json::to_vec(addresses).expect("addresses serialise");
                std::fs::write(&kept, text).map_err(|e| ControlError::io(&kept, e))?;
            }
            None => {
                let _ = std::fs::remove_file(&kept);
            }
        }
        let qemu = Qemu::start(spec)?;
        let booted = Booted { pid: qemu.pid(), console: qemu.console.clone(), accel: qemu.accel.to_string() };
        if let Some(addresses) = &spec.addresses {
            let keeper = AddressKeeper::start(qemu.agent_socket.clone(), addresses.clone());
            lock(&self.keepers).insert(spec.name.clone(), keeper);
        }
        lock(&self.machines).insert(spec.name.clone(), qemu);
        Ok(booted)
    }

    fn adopt_machine(&self, key: &str, run_dir: &Path) -> Result<bool, ControlError> {
        match Qemu::adopt(run_dir, key)? {
            Some(qemu) => {
                let kept = std::fs::read(addresses_file(run_dir, key)).ok();
                if let Some(addresses) = kept.and_then(|text| serde_json::from_slice(&text).ok()) {
                    let keeper = AddressKeeper::start(qemu.agent_socket.clone(), addresses);
                    lock(&self.keepers).insert(key.to_string(), keeper);
                }
                lock(&self.machines).insert(key.to_string(), qemu);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn runtime(&self, key: &str) -> Runtime {
        match lock(&self.machines).get(key) {
            Some(qemu) if qemu.running() => Runtime {
                running: true,
                pid: Some(qemu.pid()),
                console: Some(qemu.console.clone()),
                accel: Some(qemu.accel.to_string()),
                addresses: lock(&self.keepers).get(key).map(AddressKeeper::state),
            },
            _ => Runtime::default(),
        }
    }

    fn running_machines(&self) -> Vec<String> {
        lock(&self.machines).iter().filter(|(_, qemu)| qemu.running()).map(|(key, _)| key.clone()).collect()
    }

    fn stop_machine(&self, key: &str, how: Shutdown) -> Result<Option<Stopped>, ControlError> {
        // Out of the map first: a power-down waits without the lock.
        let qemu = lock(&self.machines).remove(key);
        lock(&self.keepers).remove(key);
        let Some(mut qemu) = qemu.filter(|qemu| qemu.running()) else { return Ok(None) };
        match how {
            Shutdown::PowerCut => {
                qemu.kill();
                Ok(Some(Stopped::PowerCut))
            }
            Shutdown::PowerDown(timeout) => qemu.power_down(timeout).map(Some),
        }
    }

    fn pause(&self, key: &str) -> Result<bool, ControlError> {
        self.wait_for_servers_of(key)?;
        Ok(self.with_machine(key, Qemu::pause)?.is_some())
    }

    fn resume(&self, key: &str) -> Result<(), ControlError> {
        self.with_machine(key, Qemu::resume).map(|_| ())
    }

    fn drive(&self, key: &str, index: usize) -> Result<Option<Opened>, ControlError> {
        self.with_machine(key, |qemu| {
            let on_file = qemu.drive_kind(index)? == "file";
            Ok(Opened { on_file, filename: qemu.drive_filename(index)? })
        })
    }

    fn switch_drive(&self, key: &str, index: usize, drive: &Drive) -> Result<(), ControlError> {
        self.with_machine(key, |qemu| qemu.switch_drive(index, drive))?
            .ok_or_else(|| ControlError::Failed(format!("machine '{key}' stopped before its disk {index} was moved")))
    }

    fn snapshots(&self, key: &str) -> Result<Vec<String>, ControlError> {
        Ok(self.with_machine(key, Qemu::snapshots)?.unwrap_or_default())
    }

    fn freeze(&self, key: &str, timeout: Duration) -> Result<u64, String> {
        let socket = self.agent_socket(key).ok_or_else(|| "the machine is not running".to_string())?;
        let mut agent = GuestAgent::connect(&socket, timeout)?;
        let frozen = agent
            .execute("guest-fsfreeze-freeze", json!({}))
            .map_err(|e| format!("the guest agent could not freeze the filesystems ({e})"))?;
        frozen.as_u64().ok_or_else(|| format!("the guest agent answered the freeze with {frozen}, not a count"))
    }

    fn thaw(&self, key: &str) -> Result<(), String> {
        let socket = self.agent_socket(key).ok_or_else(|| "the machine is not running".to_string())?;
        // A guest left frozen hangs its applications: the thaw is tried
        // again (the agent's channel takes one client at a time, and
        // another may hold it for a moment) until it answers or
        // THAW_PERSIST passed.
        let deadline = std::time::Instant::now() + THAW_PERSIST;
        loop {
            let thawed = GuestAgent::connect(&socket, THAW_TIMEOUT).and_then(|mut agent| {
                agent.execute("guest-fsfreeze-thaw", json!({})).map(|_| ()).map_err(|e| e.to_string())
            });
            match thawed {
                Ok(()) => return Ok(()),
                Err(e) if std::time::Instant::now() >= deadline || self.agent_socket(key).is_none() => {
                    return Err(format!("{e} (tried for {} s)", THAW_PERSIST.as_secs()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn thaw_all(&self) {
        let sockets: Vec<_> = lock(&self.machines).values().map(|qemu| qemu.agent_socket.clone()).collect();
        for socket in sockets {
            if let Ok(mut agent) = GuestAgent::connect(&socket, THAW_ALL_TIMEOUT) {
                let _ = agent.execute("guest-fsfreeze-thaw", json!({}));
            }
        }
    }

    fn ensure_splitter(&self, spec: &SplitterSpec) -> Result<u32, ControlError> {
        let mut splitters = lock(&self.splitters);
        if let Some(splitter) = splitters.get_mut(&spec.disk) {
            if splitter.agent.running() {
                return Ok(splitter.agent.pid());
            }
            splitters.remove(&spec.disk);
        }
        let agent = match Agent::adopt(&spec.run_dir, &spec.disk) {
            Some(splitter) => splitter,
            None => Agent::splitter(&self.exe, spec)?,
        };
        let pid = agent.pid();
        splitters.insert(spec.disk.clone(), Helper { agent, spec: spec.clone(), retry: None });
        Ok(pid)
    }

    fn splitter_status(&self, disk: &str) -> Result<SplitterStatus, ControlError> {
        // Asked without holding the map: a splitter may take its time.
        self.splitter_control(disk)?.status()
    }

    fn splitter_running(&self, disk: &str, run_dir: &Path) -> bool {
        lock(&self.splitters).get_mut(disk).is_some_and(|splitter| splitter.agent.running())
            || Agent::adopt(run_dir, disk).is_some()
    }

    fn mark(&self, disk: &str, app_consistent: bool, label: &str, wait: MarkWait) -> Result<Option<u64>, ControlError> {
        let control = lock(&self.splitters).get(disk).map(|s| s.agent.control()).ok_or_else(|| splitter_gone(disk))?;
        match wait {
            MarkWait::Queued => control.mark_queued(app_consistent, label).map(|()| None),
            MarkWait::Sealed => control.mark(app_consistent, label).map(Some),
        }
    }

    fn group_point(
        &self,
        disks: &[String],
        label: &str,
        app_consistent: bool,
        within: Duration,
    ) -> Result<GroupPointMade, ControlError> {
        let sockets: Vec<Option<PathBuf>> = {
            let splitters = lock(&self.splitters);
            disks.iter().map(|disk| splitters.get(disk).map(|s| s.agent.socket.clone())).collect()
        };
        Ok(GroupPointMade::make(disks, sockets, label, app_consistent, within))
    }

    fn stop_splitter(&self, disk: &str, run_dir: &Path) -> Result<bool, ControlError> {
        let splitter = lock(&self.splitters).remove(disk).map(|s| s.agent).or_else(|| Agent::adopt(run_dir, disk));
        match splitter {
            Some(splitter) => splitter.stop().map(|()| true),
            None => Ok(false),
        }
    }

    fn serve_export(&self, spec: &ExportSpec) -> Result<PathBuf, ControlError> {
        let mut exports = lock(&self.exports);
        if let Some(export) = exports.get_mut(&spec.name) {
            if export.agent.running() {
                return Ok(export.agent.socket.clone());
            }
        }
        let agent = match Agent::adopt(&spec.run_dir, &spec.name) {
            Some(export) => export,
            None => Agent::export(&self.exe, spec)?,
        };
        let socket = agent.socket.clone();
        exports.insert(spec.name.clone(), Helper { agent, spec: spec.clone(), retry: None });
        Ok(socket)
    }

    fn stop_export(&self, name: &str, run_dir: &Path) -> Result<Vec<PathBuf>, ControlError> {
        let export = lock(&self.exports).remove(name).map(|e| e.agent).or_else(|| Agent::adopt(run_dir, name));
        let Some(export) = export else { return Ok(Vec::new()) };
        let (socket, log) = (export.socket.clone(), export.log.clone());
        export.stop()?;
        self.remove_files(&[socket, log])
    }

    fn supervise(&self) -> Vec<Restart> {
        let mut restarts = Vec::new();
        let mut splitters = lock(&self.splitters);
        for (disk, splitter) in splitters.iter_mut() {
            if let Some(restart) =
                restart_if_dead(splitter, HelperName::Splitter(disk.clone()), |spec| Agent::splitter(&self.exe, spec))
            {
                restarts.push(restart);
            }
        }
        drop(splitters);
        let mut exports = lock(&self.exports);
        for (name, export) in exports.iter_mut() {
            if let Some(restart) =
                restart_if_dead(export, HelperName::Export(name.clone()), |spec| Agent::export(&self.exe, spec))
            {
                restarts.push(restart);
            }
        }
        restarts
    }
}

/// Where a running instance's static addresses are kept beside its QEMU.
fn addresses_file(run_dir: &Path, key: &str) -> PathBuf {
    run_dir.join(format!("{key}.addresses"))
}
