//! The Site boundary: everything a job asks of the host that runs a site.
//!
//! A job decides; a site acts. Jobs (`daemon/*.rs`) never start QEMU or an
//! agent process, never speak QMP or a splitter's control protocol, and
//! never remove or move a file themselves: they call a [`SiteHost`]. What
//! a site holds is named by the job (machine instances by
//! [`instance`](crate::daemon) key `NAME@INSTANCE`, splitters by vault
//! disk, exports by `DISK@INSTANCE`, files by path); the host owns the
//! processes behind the names.
//!
//! - [`LocalHost`]: this host's QEMU processes, splitters and exports (the
//!   maps of what runs), adopted across daemon restarts. In the embedded
//!   default one local host runs both sites.
//! - [`SimulatedHost`]: machines that exist only in memory (no QEMU), with
//!   real in-process splitters writing the real vault, for job tests that
//!   run in seconds; it can be told to fail an act.
//!
//! - [`RemoteHost`]: the other site's host, in a deployment with a host
//!   per site: each act is carried out there (`site/remote.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use standby_api::{Runtime, SplitterStatus};
use standby_lifecycle::Site;

use crate::agent::{ExportSpec, SplitterSpec};
use crate::error::ControlError;
use crate::qemu::{Drive, QemuSpec, Stopped};
use crate::vaults::VaultAddress;
use disk_files::Ranges;

mod address_keeper;
pub(crate) mod disk_files;
pub(crate) mod local;
pub(crate) mod probes;
pub(crate) mod remote;
pub(crate) mod scripts;
#[cfg(test)]
pub(crate) mod simulated;

pub(crate) use local::LocalHost;
pub(crate) use remote::RemoteHost;
#[cfg(test)]
pub(crate) use simulated::SimulatedHost;

/// A machine a host just booted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Booted {
    pub pid: u32,
    pub console: PathBuf,
    pub accel: String,
}

/// A replication group's point as a site made it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct GroupPointMade {
    /// In every disk (a point of the group).
    pub made: bool,
    /// From the first hold asked to the last release answered.
    pub held_for_micros: u64,
    /// The disks that held it back, with why.
    pub held_back: Vec<(String, String)>,
}

impl GroupPointMade {
    /// Makes the point in the splitters on `sockets` (one per disk, in
    /// `disks`' order); a disk without a socket (its splitter is not
    /// running here) holds it back before anything is asked.
    pub(crate) fn make(
        disks: &[String],
        sockets: Vec<Option<PathBuf>>,
        label: &str,
        app_consistent: bool,
        within: Duration,
    ) -> GroupPointMade {
        let missing: Vec<(String, String)> = disks
            .iter()
            .zip(&sockets)
            .filter(|(_, socket)| socket.is_none())
            .map(|(disk, _)| (disk.clone(), "its splitter is not running".to_string()))
            .collect();
        if !missing.is_empty() {
            return GroupPointMade { made: false, held_for_micros: 0, held_back: missing };
        }
        let sockets: Vec<PathBuf> = sockets.into_iter().flatten().collect();
        let kind = if app_consistent {
            standby_format::PointKind::AppConsistent
        } else {
            standby_format::PointKind::CrashConsistent
        };
        let point = standby_splitter::group::make_point(&sockets, label, kind, within);
        let held_back = point
            .held_back()
            .map(|(socket, problem)| {
                let at = sockets.iter().position(|s| s == socket).expect("a member's socket");
                (disks[at].clone(), problem.to_string())
            })
            .collect();
        GroupPointMade {
            made: point.made,
            held_for_micros: point.held_for.as_micros().min(u64::MAX as u128) as u64,
            held_back,
        }
    }
}

/// What a running machine's disk is opened on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Opened {
    /// On its image file directly (not through an NBD server).
    pub on_file: bool,
    /// The file, or the NBD address naming the server's socket.
    pub filename: String,
}

/// How often the daemon looks for helpers that died.
pub(crate) const SUPERVISION_INTERVAL: Duration = Duration::from_millis(250);

/// A helper process of a site.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) enum HelperName {
    /// The splitter of a vault disk.
    Splitter(String),
    /// An export, by `DISK@INSTANCE`.
    Export(String),
}

impl std::fmt::Display for HelperName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelperName::Splitter(disk) => write!(f, "the splitter of disk '{disk}'"),
            HelperName::Export(name) => write!(f, "the export {name}"),
        }
    }
}

/// A helper (splitter, export) found dead and started again, or not.
#[derive(Debug)]
pub(crate) struct Restart {
    pub helper: HelperName,
    /// The last line it logged.
    pub died: String,
    /// The new process, or why it could not start.
    pub outcome: Result<u32, ControlError>,
    /// How long the start took.
    pub took: Duration,
}

impl std::fmt::Display for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let died = if self.died.is_empty() { String::new() } else { format!(" ({})", self.died) };
        match &self.outcome {
            Ok(pid) => write!(
                f,
                "{} died{died} and was started again in {} ms (pid {pid})",
                self.helper,
                self.took.as_millis()
            ),
            Err(e) => write!(f, "{} died{died} and could not be started again: {e}", self.helper),
        }
    }
}

/// How a machine is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Shutdown {
    /// The power is cut at once.
    PowerCut,
    /// The ACPI power button, then forced off after the timeout.
    PowerDown(Duration),
}

/// When a mark request to a splitter is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum MarkWait {
    /// As soon as the splitter has its place in the change stream.
    Queued,
    /// Once the point is sealed in the vault; answered with its sequence.
    Sealed,
}

/// What a job asks of the host that runs a site (see the module's text).
/// Every method acts on this host only and says what it found; none waits
/// longer than the deadline it is given or names.
pub(crate) trait SiteHost: Send + Sync {
    // Machines: QEMU instances, by key `NAME@INSTANCE`.

    /// The accelerator a machine booting `kernel` runs with (`kvm`, `tcg`).
    fn accelerator(&self, kernel: Option<&Path>) -> &'static str;
    /// The accelerator machines run with, and why (for `health`).
    fn accelerator_reason(&self) -> (String, String);
    /// Boots `spec` (whose accelerator comes from [`Self::accelerator`]).
    fn launch(&self, spec: &QemuSpec) -> Result<Booted, ControlError>;
    /// Takes over instance `key` an earlier daemon left running in
    /// `run_dir`; says whether it runs.
    fn adopt_machine(&self, key: &str, run_dir: &Path) -> Result<bool, ControlError>;
    fn runtime(&self, key: &str) -> Runtime;
    /// The instances running here.
    fn running_machines(&self) -> Vec<String>;
    /// Stops instance `key`; `None` when it was not running.
    fn stop_machine(&self, key: &str, how: Shutdown) -> Result<Option<Stopped>, ControlError>;
    /// Pauses the guest of `key`; says whether it runs.
    fn pause(&self, key: &str) -> Result<bool, ControlError>;
    /// Resumes the guest of `key` when it runs.
    fn resume(&self, key: &str) -> Result<(), ControlError>;
    /// What disk `index` of running instance `key` is opened on, `None`
    /// when it does not run.
    fn drive(&self, key: &str, index: usize) -> Result<Option<Opened>, ControlError>;
    /// Moves disk `index` of running instance `key` onto `drive` (the
    /// guest's requests wait meanwhile).
    fn switch_drive(&self, key: &str, index: usize, drive: &Drive) -> Result<(), ControlError>;
    /// The internal snapshots of running instance `key`.
    fn snapshots(&self, key: &str) -> Result<Vec<String>, ControlError>;
    /// Freezes the guest's filesystems through its agent; how many.
    fn freeze(&self, key: &str, timeout: Duration) -> Result<u64, String>;
    fn thaw(&self, key: &str) -> Result<(), String>;
    /// Thaws every running guest that answers (a daemon that died between
    /// a freeze and its thaw left them frozen).
    fn thaw_all(&self);

    // Splitters, by vault disk.

    /// Starts the splitter of `spec` unless it runs (adopting one an
    /// earlier daemon left running); returns its pid.
    fn ensure_splitter(&self, spec: &SplitterSpec) -> Result<u32, ControlError>;
    /// The splitter's own report; an error when it does not run.
    fn splitter_status(&self, disk: &str) -> Result<SplitterStatus, ControlError>;
    /// Whether the splitter of `disk` runs (ours or one an earlier daemon
    /// left in `run_dir`).
    fn splitter_running(&self, disk: &str, run_dir: &Path) -> bool;
    /// Records a bookmark; with [`MarkWait::Sealed`], its sequence.
    fn mark(&self, disk: &str, app_consistent: bool, label: &str, wait: MarkWait) -> Result<Option<u64>, ControlError>;
    /// Makes the replication group point `label` in the splitters of
    /// `disks` at once (`standby_splitter::group`): held in every one, then
    /// released, kept only when every one held within `within`.
    fn group_point(
        &self,
        disks: &[String],
        label: &str,
        app_consistent: bool,
        within: Duration,
    ) -> Result<GroupPointMade, ControlError>;
    /// Runs a recovery plan's script at this host (the control plane's):
    /// `path` with `environment` added, for at most `timeout`.
    fn run_script(
        &self,
        path: &Path,
        environment: &[(String, String)],
        timeout: Duration,
    ) -> Result<scripts::ScriptRun, ControlError> {
        scripts::run_script(path, environment, timeout)
    }
    /// One attempt at a health probe of machine instance `key` (its console
    /// read here, where it runs; a connection or command from the site's
    /// network namespace `netns`): whether it passes now.
    fn health_probe(
        &self,
        check: &crate::plans::ProbeCheck,
        key: &str,
        environment: &[(String, String)],
        netns: Option<&Path>,
    ) -> Result<bool, ControlError> {
        probes::attempt_in(netns, check, self.runtime(key).console.as_deref(), environment)
    }
    /// Stops the splitter of `disk` after it shipped what it queued; says
    /// whether one ran.
    fn stop_splitter(&self, disk: &str, run_dir: &Path) -> Result<bool, ControlError>;

    // Exports of recovery points, by `DISK@INSTANCE`.

    /// Serves `spec` unless it is served (adopting an earlier daemon's);
    /// returns its socket.
    fn serve_export(&self, spec: &ExportSpec) -> Result<PathBuf, ControlError>;
    /// Stops export `name`; returns the files it left that were removed.
    fn stop_export(&self, name: &str, run_dir: &Path) -> Result<Vec<PathBuf>, ControlError>;
    /// Starts again every splitter and export whose process died (with
    /// what it was started with: a splitter re-reads what its intent log
    /// names, an export resumes its overlay); says what it found. The
    /// daemon calls it every [`SUPERVISION_INTERVAL`]; a guest's requests
    /// to a helper wait meanwhile (QEMU reconnects), never QEMU's whole
    /// reconnect delay.
    fn supervise(&self) -> Vec<Restart>;
    /// How much of the disk behind `overlay` is local: (local, total)
    /// bytes, `None` before the overlay exists.
    fn local_bytes(&self, overlay: &Path) -> Result<Option<(u64, u64)>, ControlError> {
        disk_files::local_bytes(overlay)
    }

    // Disk files: images, their intent logs, overlays. By default on this
    // host's filesystem (`disk_files`), as the local and the simulated host
    // keep them; a remote host answers them itself.

    /// The regions the intent log of `image` names, `None` without a
    /// usable one.
    fn intent_log(&self, image: &Path) -> Result<Option<Ranges>, ControlError> {
        disk_files::intent_log(image)
    }
    /// Writes the intent log of `image` naming `ranges`, or removes it
    /// (`None`: the next splitter on the image reads all of it).
    fn set_intent_log(&self, image: &Path, ranges: Option<&[(u64, u64)]>) -> Result<(), ControlError> {
        disk_files::set_intent_log(image, ranges)
    }
    /// The ranges an overlay's map says were written, `None` without a map.
    fn overlay_ranges(&self, overlay: &Path) -> Result<Option<Ranges>, ControlError> {
        disk_files::overlay_ranges(overlay)
    }
    /// Copies `ranges` of `from` into `to` at the same offsets, durably.
    fn copy_ranges(&self, from: &Path, to: &Path, ranges: &[(u64, u64)]) -> Result<(), ControlError> {
        disk_files::copy_ranges(from, to, ranges)
    }
    fn same_file(&self, a: &Path, b: &Path) -> bool {
        disk_files::same_file(a, b)
    }
    /// Makes the whole overlay `overlay` the disk image `image`.
    fn take_over_overlay(&self, overlay: &Path, image: &Path) -> Result<(), ControlError> {
        disk_files::take_over_overlay(overlay, image)
    }
    /// Makes `image` the base of `disk`'s journal in the vault at `vault`
    /// (read here, stored there); returns the bytes that vault lacked.
    fn seed_journal(&self, vault: &VaultAddress, disk: &str, image: &Path) -> Result<u64, ControlError> {
        disk_files::seed_journal(vault, disk, image)
    }
    /// Writes `disk` as it was at `time_micros`, from its journal in the
    /// vault at `vault`, over `image`.
    fn restore_journal(
        &self,
        vault: &VaultAddress,
        disk: &str,
        time_micros: i64,
        image: &Path,
    ) -> Result<(), ControlError> {
        disk_files::restore_journal(vault, disk, time_micros, image)
    }

    /// Imports the disk image `source` (any format `qemu-img` reads) as
    /// the raw image `target`.
    fn import_disk(&self, source: &Path, target: &Path) -> Result<(), ControlError> {
        crate::import_disk(source, target).map(|_| ())
    }

    // Files.

    /// Removes the files that exist among `files`; returns them.
    fn remove_files(&self, files: &[PathBuf]) -> Result<Vec<PathBuf>, ControlError> {
        disk_files::remove_files(files)
    }
    /// Removes folder `dir` with what it holds; says whether it existed.
    fn remove_dir(&self, dir: &Path) -> Result<bool, ControlError> {
        disk_files::remove_dir(dir)
    }
    /// Moves the files that exist among `files` into `folder` (created
    /// when anything moves); says whether any did.
    fn move_into(&self, files: &[PathBuf], folder: &Path) -> Result<bool, ControlError> {
        disk_files::move_into(files, folder)
    }
    fn create_dir(&self, dir: &Path) -> Result<(), ControlError> {
        disk_files::create_dir(dir)
    }
    fn is_file(&self, file: &Path) -> bool {
        file.is_file()
    }

    /// Whether it is another machine (which may not answer).
    fn is_remote(&self) -> bool {
        false
    }

    /// For another machine: whether it answered when last asked, and since
    /// when that holds; `None` before it was asked (and for this host,
    /// which answers as long as the daemon runs).
    fn reachable(&self) -> Option<(bool, jiff::Timestamp)> {
        None
    }

    /// Asks another machine whether it answers (a connection to it); the
    /// daemon does every [`PROBE_INTERVAL`].
    fn probe(&self) {}
}

/// How often the daemon asks the other site's host whether it answers.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The hosts of the two sites (the same one, in the embedded default).
#[derive(Clone)]
pub(crate) struct Sites {
    pub primary: std::sync::Arc<dyn SiteHost>,
    pub recovery: std::sync::Arc<dyn SiteHost>,
}

impl Sites {
    /// One host running both sites.
    pub fn one(host: std::sync::Arc<dyn SiteHost>) -> Sites {
        Sites { primary: host.clone(), recovery: host }
    }

    pub fn at(&self, site: Site) -> &dyn SiteHost {
        match site {
            Site::Primary => &*self.primary,
            Site::Recovery => &*self.recovery,
        }
    }

    /// Each distinct host once.
    pub fn hosts(&self) -> Vec<&dyn SiteHost> {
        if std::sync::Arc::ptr_eq(&self.primary, &self.recovery) {
            vec![&*self.primary]
        } else {
            vec![&*self.primary, &*self.recovery]
        }
    }
}
