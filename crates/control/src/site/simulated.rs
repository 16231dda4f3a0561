//! A simulated site host for job tests: machines exist only in memory (no
//! QEMU: they boot at once, write nothing, obey pause, switch and stop),
//! exports are names with a socket path, and splitters are the real
//! splitter running in this process, reading the real image and writing
//! the real vault, so points, status and marks are what a job would see.
//! Files are real (the test's folder). Like a real host, it outlives a
//! daemon: a test "kills" the daemon and a new one adopts what runs here.
//!
//! Any act can be told to fail ([`SimulatedHost::fail`]), and a guest to
//! ignore the power button, to drive a job's roll-back from the step it
//! chooses.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use standby_api::{Runtime, SplitterStatus};
use standby_splitter::{Splitter, SplitterOptions};

use super::{Booted, GroupPointMade, MarkWait, Opened, Restart, Shutdown, SiteHost};
use crate::agent::{ExportSpec, SplitterSpec};
use crate::error::ControlError;
use crate::qemu::{Drive, QemuSpec, Stopped};

/// An act of a site that a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Act {
    Launch,
    Stop,
    Pause,
    SwitchDrive,
    EnsureSplitter,
    ServeExport,
    Mark,
}

#[derive(Debug, Clone)]
pub(crate) struct SimulatedMachine {
    pub pid: u32,
    pub drives: Vec<Drive>,
    pub paused: bool,
}

#[derive(Default)]
pub(crate) struct SimulatedHost {
    machines: Mutex<HashMap<String, SimulatedMachine>>,
    /// Running splitters by disk, with their pid and socket.
    splitters: Mutex<HashMap<String, (Splitter, u32, PathBuf)>>,
    exports: Mutex<HashMap<String, PathBuf>>,
    /// Acts that fail: on the names holding the pattern, with why, once
    /// the given number of them passed.
    failing: Mutex<HashMap<Act, (String, String, usize)>>,
    ignores_power_button: Mutex<HashSet<String>>,
    next_pid: AtomicU32,
    /// Every act, in order, as `ACT KEY` (for tests that check an order).
    pub journal: Mutex<Vec<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimulatedHost {
    pub fn new() -> SimulatedHost {
        SimulatedHost { next_pid: AtomicU32::new(1000), ..SimulatedHost::default() }
    }

    /// Every later `act` on a name holding `on` (a machine's
    /// `NAME@INSTANCE`, a disk, an export; "" for all) fails with `why`,
    /// until [`Self::heal`].
    pub fn fail(&self, act: Act, on: &str, why: &str) {
        self.fail_after(act, on, why, 0);
    }

    /// Like [`SimulatedHost::fail`], once `passes` such acts succeeded.
    pub fn fail_after(&self, act: Act, on: &str, why: &str, passes: usize) {
        lock(&self.failing).insert(act, (on.to_string(), why.to_string(), passes));
    }

    pub fn heal(&self, act: Act) {
        lock(&self.failing).remove(&act);
    }

    /// The guest of `key` ignores the ACPI power button (a power-down ends
    /// forced).
    pub fn ignore_power_button(&self, key: &str) {
        lock(&self.ignores_power_button).insert(key.to_string());
    }

    /// Instance `key` as the host has it, if it runs.
    pub fn machine(&self, key: &str) -> Option<SimulatedMachine> {
        lock(&self.machines).get(key).cloned()
    }

    /// Instance `key` stops by itself (a crash of the guest, a power cut).
    pub fn crash_machine(&self, key: &str) {
        lock(&self.machines).remove(key);
    }

    pub fn splitters(&self) -> Vec<String> {
        let mut disks: Vec<String> = lock(&self.splitters).keys().cloned().collect();
        disks.sort();
        disks
    }

    pub fn exports(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.exports).keys().cloned().collect();
        names.sort();
        names
    }

    /// Stops every splitter (shipping what it queued), as a test's end.
    pub fn stop_all(&self) {
        let splitters: Vec<_> = lock(&self.splitters).drain().collect();
        for (_, (splitter, _, _)) in splitters {
            let _ = splitter.stop();
        }
    }

    fn act(&self, act: Act, key: &str) -> Result<(), ControlError> {
        lock(&self.journal).push(format!("{act:?} {key}"));
        match lock(&self.failing).get_mut(&act) {
            Some((on, _, passes)) if key.contains(on.as_str()) && *passes > 0 => {
                *passes -= 1;
                Ok(())
            }
            Some((on, why, _)) if key.contains(on.as_str()) => {
                Err(ControlError::Failed(format!("simulated: {act:?} {key}: {why}")))
            }
            _ => Ok(()),
        }
    }

    fn pid(&self) -> u32 {
        self.next_pid.fetch_add(1, Ordering::SeqCst)
    }

    fn with_machine<T>(&self, key: &str, act: impl FnOnce(&mut SimulatedMachine) -> T) -> Option<T> {
        lock(&self.machines).get_mut(key).map(act)
    }
}

fn not_running(key: &str) -> ControlError {
    ControlError::Failed(format!("machine '{key}' is not running"))
}

impl SiteHost for SimulatedHost {
    fn accelerator(&self, _kernel: Option<&Path>) -> &'static str {
        "tcg"
    }

    fn accelerator_reason(&self) -> (String, String) {
        ("tcg".into(), "simulated".into())
    }

    fn launch(&self, spec: &QemuSpec) -> Result<Booted, ControlError> {
        self.act(Act::Launch, &spec.name)?;
        let mut machines = lock(&self.machines);
        if let Some(running) = machines.get(&spec.name) {
            return Err(ControlError::Conflict(format!(
                "machine '{}' is already running (pid {})",
                spec.name, running.pid
            )));
        }
        let pid = self.pid();
        machines.insert(spec.name.clone(), SimulatedMachine { pid, drives: spec.drives.clone(), paused: false });
        Ok(Booted { pid, console: spec.run_dir.join("console"), accel: spec.accel.to_string() })
    }

    fn adopt_machine(&self, key: &str, _run_dir: &Path) -> Result<bool, ControlError> {
        Ok(lock(&self.machines).contains_key(key))
    }

    fn runtime(&self, key: &str) -> Runtime {
        match lock(&self.machines).get(key) {
            Some(machine) => Runtime {
                running: true,
                pid: Some(machine.pid),
                console: None,
                accel: Some("tcg".to_string()),
                addresses: None,
            },
            None => Runtime::default(),
        }
    }

    fn running_machines(&self) -> Vec<String> {
        lock(&self.machines).keys().cloned().collect()
    }

    fn stop_machine(&self, key: &str, how: Shutdown) -> Result<Option<Stopped>, ControlError> {
        self.act(Act::Stop, key)?;
        if lock(&self.machines).remove(key).is_none() {
            return Ok(None);
        }
        Ok(Some(match how {
            Shutdown::PowerCut => Stopped::PowerCut,
            Shutdown::PowerDown(_) if lock(&self.ignores_power_button).contains(key) => Stopped::Forced,
            Shutdown::PowerDown(_) => Stopped::Clean,
        }))
    }

    fn pause(&self, key: &str) -> Result<bool, ControlError> {
        self.act(Act::Pause, key)?;
        Ok(self.with_machine(key, |machine| machine.paused = true).is_some())
    }

    fn resume(&self, key: &str) -> Result<(), ControlError> {
        lock(&self.journal).push(format!("Resume {key}"));
        self.with_machine(key, |machine| machine.paused = false);
        Ok(())
    }

    fn drive(&self, key: &str, index: usize) -> Result<Option<Opened>, ControlError> {
        let Some(drive) = self.with_machine(key, |machine| machine.drives.get(index).cloned()) else {
            return Ok(None);
        };
        let drive = drive.ok_or_else(|| ControlError::Failed(format!("machine '{key}' has no disk {index}")))?;
        Ok(Some(match drive {
            Drive::File(path) => Opened { on_file: true, filename: path.display().to_string() },
            Drive::Nbd { socket, export } => {
                Opened { on_file: false, filename: format!("nbd+unix:///{export}?socket={}", socket.display()) }
            }
        }))
    }

    fn switch_drive(&self, key: &str, index: usize, drive: &Drive) -> Result<(), ControlError> {
        self.act(Act::SwitchDrive, key)?;
        self.with_machine(key, |machine| match machine.drives.get_mut(index) {
            Some(slot) => {
                *slot = drive.clone();
                Ok(())
            }
            None => Err(ControlError::Failed(format!("machine '{key}' has no disk {index}"))),
        })
        .ok_or_else(|| not_running(key))?
    }

    fn snapshots(&self, _key: &str) -> Result<Vec<String>, ControlError> {
        Ok(Vec::new())
    }

    fn freeze(&self, _key: &str, _timeout: Duration) -> Result<u64, String> {
        Err("the simulated guest has no agent".to_string())
    }

    fn thaw(&self, _key: &str) -> Result<(), String> {
        Ok(())
    }

    fn thaw_all(&self) {}

    fn ensure_splitter(&self, spec: &SplitterSpec) -> Result<u32, ControlError> {
        let mut splitters = lock(&self.splitters);
        if let Some((_, pid, _)) = splitters.get(&spec.disk) {
            return Ok(*pid);
        }
        self.act(Act::EnsureSplitter, &spec.disk)?;
        let vault = spec.vault.open()?;
        std::fs::create_dir_all(&spec.run_dir).map_err(|e| ControlError::io(&spec.run_dir, e))?;
        let socket = crate::agent::files(&spec.run_dir, &spec.disk).0;
        let options = SplitterOptions {
            bookmark_interval: spec.bookmark_interval,
            group: spec.group.clone(),
            ..SplitterOptions::new(&spec.disk)
        };
        let splitter = Splitter::start(vault, &spec.image, &socket, options)?;
        let pid = self.pid();
        splitters.insert(spec.disk.clone(), (splitter, pid, socket));
        Ok(pid)
    }

    fn splitter_status(&self, disk: &str) -> Result<SplitterStatus, ControlError> {
        let splitters = lock(&self.splitters);
        let (splitter, _, _) = splitters.get(disk).ok_or_else(|| super::local::splitter_gone(disk))?;
        let status = serde_json::to_value(splitter.status()).expect("a status serialises");
        Ok(serde_json::from_value(status).expect("the API reads a splitter's status"))
    }

    fn splitter_running(&self, disk: &str, _run_dir: &Path) -> bool {
        lock(&self.splitters).contains_key(disk)
    }

    fn mark(&self, disk: &str, app_consistent: bool, label: &str, wait: MarkWait) -> Result<Option<u64>, ControlError> {
        self.act(Act::Mark, disk)?;
        let socket = {
            let splitters = lock(&self.splitters);
            let (_, _, socket) = splitters.get(disk).ok_or_else(|| super::local::splitter_gone(disk))?;
            socket.clone()
        };
        // Through the splitter's own control socket, as the daemon's agents do.
        let control = crate::agent::SplitterControl { disk: disk.to_string(), socket };
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
            disks.iter().map(|disk| splitters.get(disk).map(|(_, _, socket)| socket.clone())).collect()
        };
        Ok(GroupPointMade::make(disks, sockets, label, app_consistent, within))
    }

    fn stop_splitter(&self, disk: &str, _run_dir: &Path) -> Result<bool, ControlError> {
        let splitter = lock(&self.splitters).remove(disk);
        match splitter {
            Some((splitter, _, _)) => splitter.stop().map(|_| true).map_err(ControlError::from),
            None => Ok(false),
        }
    }

    fn serve_export(&self, spec: &ExportSpec) -> Result<PathBuf, ControlError> {
        let mut exports = lock(&self.exports);
        if let Some(socket) = exports.get(&spec.name) {
            return Ok(socket.clone());
        }
        self.act(Act::ServeExport, &spec.name)?;
        let socket = crate::agent::files(&spec.run_dir, &spec.name).0;
        exports.insert(spec.name.clone(), socket.clone());
        Ok(socket)
    }

    fn stop_export(&self, name: &str, _run_dir: &Path) -> Result<Vec<PathBuf>, ControlError> {
        lock(&self.exports).remove(name);
        Ok(Vec::new())
    }

    fn supervise(&self) -> Vec<Restart> {
        // In-process splitters and named exports do not die by themselves.
        Vec::new()
    }
}
