//! A site whose host is another machine (a host per site): the control
//! plane asks that host's daemon to act ([`RemoteHost`]), one [`Act`] per
//! [`SiteHost`] method, over the link (`POST /v1/host`, mutual TLS: only
//! the control plane's host is answered, see `daemon/host_service.rs`).
//!
//! Each host keeps its deployment in a folder of its own, so a path under
//! the sender's folder crosses the wire relative to it ([`HOME`]) and
//! lands under the receiver's; a vault of one of the two sites crosses as
//! that site's ([`VaultAddress::site`]) and the receiver opens it where it
//! reaches it (its own folder, or `standby://` at the other host).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use standby_api::{Runtime, SplitterStatus};
use standby_lifecycle::Site;
use standby_link::{HostCallError, HostClient, Identity};

use super::disk_files::Ranges;
use super::{Booted, GroupPointMade, HelperName, MarkWait, Opened, Restart, Shutdown, SiteHost};
use crate::agent::{ExportSpec, SplitterSpec};
use crate::error::ControlError;
use crate::qemu::{Drive, QemuSpec, Stopped};
use crate::vaults::VaultAddress;

/// What stands for the deployment's folder in a path on the wire.
pub(crate) const HOME: &str = "{home}";

/// How long an act that moves a disk's data may take (the link's
/// keep-alive finds a dead host long before).
const DATA_PATIENCE: Duration = Duration::from_secs(24 * 3600);
/// How long any other act may take.
const ACT_PATIENCE: Duration = Duration::from_secs(300);
/// How long the host has to take a probe's connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(900);
/// After the host did not answer supervision, how long until it is asked again.
const SUPERVISION_BACKOFF: Duration = Duration::from_secs(3);

/// A [`SiteHost`] method, as sent to the host that acts.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "act", rename_all = "snake_case")]
pub(crate) enum Act {
    Accelerator {
        kernel: Option<PathBuf>,
    },
    AcceleratorReason,
    Launch {
        spec: QemuSpec,
    },
    AdoptMachine {
        key: String,
        run_dir: PathBuf,
    },
    Runtime {
        key: String,
    },
    RunningMachines,
    StopMachine {
        key: String,
        how: Shutdown,
    },
    Pause {
        key: String,
    },
    Resume {
        key: String,
    },
    Drive {
        key: String,
        index: usize,
    },
    SwitchDrive {
        key: String,
        index: usize,
        drive: Drive,
    },
    Snapshots {
        key: String,
    },
    Freeze {
        key: String,
        timeout: Duration,
    },
    Thaw {
        key: String,
    },
    ThawAll,
    EnsureSplitter {
        spec: SplitterSpec,
    },
    SplitterStatus {
        disk: String,
    },
    SplitterRunning {
        disk: String,
        run_dir: PathBuf,
    },
    Mark {
        disk: String,
        app_consistent: bool,
        label: String,
        wait: MarkWait,
    },
    HealthProbe {
        check: crate::plans::ProbeCheck,
        key: String,
        environment: Vec<(String, String)>,
        #[serde(default)]
        netns: Option<PathBuf>,
    },
    GroupPoint {
        disks: Vec<String>,
        label: String,
        app_consistent: bool,
        within_ms: u64,
    },
    StopSplitter {
        disk: String,
        run_dir: PathBuf,
    },
    ServeExport {
        spec: ExportSpec,
    },
    StopExport {
        name: String,
        run_dir: PathBuf,
    },
    /// The helpers the host found dead and started again since it was last asked.
    Restarts,
    LocalBytes {
        overlay: PathBuf,
    },
    IntentLog {
        image: PathBuf,
    },
    SetIntentLog {
        image: PathBuf,
        ranges: Option<Ranges>,
    },
    OverlayRanges {
        overlay: PathBuf,
    },
    CopyRanges {
        from: PathBuf,
        to: PathBuf,
        ranges: Ranges,
    },
    SameFile {
        a: PathBuf,
        b: PathBuf,
    },
    TakeOverOverlay {
        overlay: PathBuf,
        image: PathBuf,
    },
    ImportDisk {
        source: PathBuf,
        target: PathBuf,
    },
    SeedJournal {
        vault: VaultAddress,
        disk: String,
        image: PathBuf,
    },
    RestoreJournal {
        vault: VaultAddress,
        disk: String,
        time_micros: i64,
        image: PathBuf,
    },
    RemoveFiles {
        files: Vec<PathBuf>,
    },
    RemoveDir {
        dir: PathBuf,
    },
    MoveInto {
        files: Vec<PathBuf>,
        folder: PathBuf,
    },
    CreateDir {
        dir: PathBuf,
    },
    IsFile {
        file: PathBuf,
    },
}

impl Act {
    /// How long the host may take to answer.
    fn patience(&self) -> Duration {
        match self {
            Act::SeedJournal { .. } | Act::RestoreJournal { .. } | Act::CopyRanges { .. } => DATA_PATIENCE,
            Act::TakeOverOverlay { .. } | Act::ImportDisk { .. } => DATA_PATIENCE,
            Act::StopMachine { how: Shutdown::PowerDown(timeout), .. } => *timeout + ACT_PATIENCE,
            Act::StopSplitter { .. } => crate::agent::SPLITTER_STOP_TIMEOUT + ACT_PATIENCE,
            _ => ACT_PATIENCE,
        }
    }

    /// The vaults it names.
    pub(crate) fn vaults_mut(&mut self) -> Vec<&mut VaultAddress> {
        match self {
            Act::EnsureSplitter { spec } => vec![&mut spec.vault],
            Act::ServeExport { spec } => vec![&mut spec.vault],
            Act::SeedJournal { vault, .. } | Act::RestoreJournal { vault, .. } => vec![vault],
            _ => Vec::new(),
        }
    }
}

/// An act's outcome on the wire: its answer, or why it failed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Done(Value),
    Failed { kind: FailureKind, message: String },
}

/// Which kind of [`ControlError`] a failure was (the operator's mistake or
/// not), so the control plane answers it as if the act had run there.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FailureKind {
    Refused,
    NotFound,
    Conflict,
    Failed,
}

impl Outcome {
    pub(crate) fn of<T: Serialize>(result: Result<T, ControlError>) -> Outcome {
        match result {
            Ok(answer) => match serde_json::to_value(answer) {
                Ok(value) => Outcome::Done(value),
                Err(e) => Outcome::Failed { kind: FailureKind::Failed, message: format!("an answer: {e}") },
            },
            Err(e) => {
                let kind = match &e {
                    ControlError::NotFound(_) => FailureKind::NotFound,
                    ControlError::Conflict(_) => FailureKind::Conflict,
                    e if e.is_bad_input() => FailureKind::Refused,
                    _ => FailureKind::Failed,
                };
                Outcome::Failed { kind, message: e.to_string() }
            }
        }
    }

    pub(crate) fn into_result(self) -> Result<Value, ControlError> {
        match self {
            Outcome::Done(value) => Ok(value),
            Outcome::Failed { kind: FailureKind::Refused, message } => Err(ControlError::Refused(message)),
            Outcome::Failed { kind: FailureKind::NotFound, message } => Err(ControlError::NotFound(message)),
            Outcome::Failed { kind: FailureKind::Conflict, message } => Err(ControlError::Conflict(message)),
            Outcome::Failed { kind: FailureKind::Failed, message } => Err(ControlError::Failed(message)),
        }
    }
}

/// A restart as the wire carries it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireRestart {
    pub helper: HelperName,
    pub died: String,
    pub outcome: Result<u32, String>,
    pub took: Duration,
}

impl From<Restart> for WireRestart {
    fn from(restart: Restart) -> WireRestart {
        WireRestart {
            helper: restart.helper,
            died: restart.died,
            outcome: restart.outcome.map_err(|e| e.to_string()),
            took: restart.took,
        }
    }
}

/// Every path under `home` in `value` (a string that is one, or an NBD
/// address naming a socket under it), made relative to [`HOME`].
/// The act in `body` (as the wire has it), its paths placed under `home`;
/// what is wrong with it when it is not one.
pub(crate) fn read_act(mut body: Value, home: &Path) -> Result<Act, String> {
    paths_from_wire(&mut body, home);
    serde_json::from_value(body).map_err(|e| format!("not an act: {e}"))
}

pub(crate) fn paths_to_wire(value: &mut Value, home: &Path) {
    let home = home.display().to_string();
    rewrite_strings(value, &|text| replace_home(text, &home, HOME));
}

/// Every path relative to [`HOME`] in `value`, placed under `home`.
pub(crate) fn paths_from_wire(value: &mut Value, home: &Path) {
    let home = home.display().to_string();
    rewrite_strings(value, &|text| replace_home(text, HOME, &home));
}

fn rewrite_strings(value: &mut Value, rewrite: &dyn Fn(&str) -> Option<String>) {
    match value {
        Value::String(text) => {
            if let Some(new) = rewrite(text) {
                *text = new;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_strings(item, rewrite)),
        Value::Object(fields) => fields.values_mut().for_each(|field| rewrite_strings(field, rewrite)),
        _ => {}
    }
}

/// `text` with the folder `from` (the whole string, a path under it, or
/// an NBD address's `socket=` under it) named `to`; `None` when it names
/// none.
fn replace_home(text: &str, from: &str, to: &str) -> Option<String> {
    if text == from {
        return Some(to.to_string());
    }
    if let Some(rest) = text.strip_prefix(from).filter(|rest| rest.starts_with('/')) {
        return Some(format!("{to}{rest}"));
    }
    let socket = format!("socket={from}/");
    text.contains(&socket).then(|| text.replace(&socket, &format!("socket={to}/")))
}

/// The host of the site this control plane does not run: each method is
/// an [`Act`] it carries out and answers.
pub(crate) struct RemoteHost {
    site: Site,
    /// This host's deployment folder and identity.
    home: PathBuf,
    /// A client once the host's address is known (it joins after the
    /// control plane starts).
    client: Mutex<Option<std::sync::Arc<HostClient>>>,
    /// When supervision may ask again after the host did not answer.
    quiet_until: Mutex<Option<Instant>>,
    /// Whether the host answered when last asked, and since when (calls
    /// in flight give up when it is found dead).
    reach: tokio::sync::watch::Sender<Option<(bool, jiff::Timestamp)>>,
    /// Since when the probes found no host joined for the site (acts still
    /// try: the host may join at any moment).
    unjoined: Mutex<Option<jiff::Timestamp>>,
    /// The host's address once it joined (it does not change after: a
    /// site's host joins once), so that probes do not read the state.
    address: std::sync::OnceLock<std::net::SocketAddr>,
}

impl RemoteHost {
    pub(crate) fn new(site: Site, home: &Path) -> RemoteHost {
        RemoteHost {
            site,
            home: home.to_path_buf(),
            client: Mutex::default(),
            quiet_until: Mutex::default(),
            reach: tokio::sync::watch::Sender::new(None),
            unjoined: Mutex::default(),
            address: std::sync::OnceLock::new(),
        }
    }

    /// Records whether the host answered; says so when that changes.
    fn record(&self, answers: bool) {
        let changed = self.reach.send_if_modified(|reach| {
            let changed = reach.is_none_or(|(did, _)| did != answers);
            if changed {
                *reach = Some((answers, jiff::Timestamp::now()));
            }
            changed
        });
        if changed {
            let now = if answers { "answers" } else { "does not answer" };
            eprintln!("standby: the {} site's host {now}", self.site);
        }
    }

    /// Completes when the host is found dead.
    fn found_dead(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut reach = self.reach.subscribe();
        async move {
            let _ = reach.wait_for(|reach| matches!(reach, Some((false, _)))).await;
        }
    }

    /// The address of the host, once it joined.
    fn address(&self) -> Result<std::net::SocketAddr, ControlError> {
        if let Some(address) = self.address.get() {
            return Ok(*address);
        }
        let deployment = crate::Deployment::open(&self.home)?;
        match deployment.other_host {
            Some((site, address)) if site == self.site => Ok(*self.address.get_or_init(|| address)),
            _ => Err(ControlError::Failed(format!(
                "no host has joined for the {} site yet: run `standby join` on it",
                self.site
            ))),
        }
    }

    fn client(&self) -> Result<std::sync::Arc<HostClient>, ControlError> {
        let mut client = super::local::lock(&self.client);
        if let Some(client) = &*client {
            return Ok(client.clone());
        }
        let address = self.address()?;
        let identity = Identity::load(&self.home.join(standby_link::identity::TLS_DIR))
            .map_err(|e| ControlError::Failed(e.to_string()))?;
        let made =
            std::sync::Arc::new(HostClient::new(address, self.site.name(), &identity).map_err(ControlError::Failed)?);
        *client = Some(made.clone());
        Ok(made)
    }

    /// Has the host carry out `act`; its answer. A host known not to
    /// answer is not waited for: the act fails at once, saying since when.
    fn act<T: DeserializeOwned>(&self, mut act: Act) -> Result<T, ControlError> {
        if let Some((false, since)) = *self.reach.borrow() {
            return Err(ControlError::Failed(format!("the {} site's host does not answer (since {since})", self.site)));
        }
        for vault in act.vaults_mut() {
            if vault.site.is_some() {
                // The host finds a site's vault by its own address for it.
                vault.key_file = None;
            }
        }
        let patience = act.patience();
        let mut body = serde_json::to_value(&act).map_err(|e| ControlError::Failed(format!("an act: {e}")))?;
        paths_to_wire(&mut body, &self.home);
        let answer = self.client()?.call(&body, patience, self.found_dead()).map_err(|e| match e {
            HostCallError::Unreachable(e) => {
                self.record(false);
                ControlError::Failed(format!("the {} site's host does not answer ({e})", self.site))
            }
            HostCallError::Answered { code, message } => {
                ControlError::Failed(format!("the {} site's host refused: {message} ({code})", self.site))
            }
        })?;
        let outcome: Outcome = serde_json::from_value(answer).map_err(|e| self.unreadable(e))?;
        let mut value = outcome.into_result()?;
        paths_from_wire(&mut value, &self.home);
        serde_json::from_value(value).map_err(|e| self.unreadable(e))
    }

    fn unreadable(&self, e: serde_json::Error) -> ControlError {
        ControlError::Failed(format!("the {} site's host answered what this standby cannot read: {e}", self.site))
    }
}

impl SiteHost for RemoteHost {
    fn accelerator(&self, kernel: Option<&Path>) -> &'static str {
        let name: Result<String, _> = self.act(Act::Accelerator { kernel: kernel.map(Path::to_path_buf) });
        // A host that does not answer cannot boot anything; the launch says so.
        name.ok().and_then(|name| crate::qemu::static_accelerator(&name)).unwrap_or("tcg")
    }

    fn accelerator_reason(&self) -> (String, String) {
        self.act(Act::AcceleratorReason)
            .unwrap_or_else(|e| ("unknown".to_string(), format!("the {} site's host: {e}", self.site)))
    }

    fn launch(&self, spec: &QemuSpec) -> Result<Booted, ControlError> {
        self.act(Act::Launch { spec: spec.clone() })
    }

    fn adopt_machine(&self, key: &str, run_dir: &Path) -> Result<bool, ControlError> {
        self.act(Act::AdoptMachine { key: key.to_string(), run_dir: run_dir.to_path_buf() })
    }

    fn runtime(&self, key: &str) -> Runtime {
        self.act(Act::Runtime { key: key.to_string() }).unwrap_or_default()
    }

    fn running_machines(&self) -> Vec<String> {
        self.act(Act::RunningMachines).unwrap_or_default()
    }

    fn stop_machine(&self, key: &str, how: Shutdown) -> Result<Option<Stopped>, ControlError> {
        self.act(Act::StopMachine { key: key.to_string(), how })
    }

    fn pause(&self, key: &str) -> Result<bool, ControlError> {
        self.act(Act::Pause { key: key.to_string() })
    }

    fn resume(&self, key: &str) -> Result<(), ControlError> {
        self.act(Act::Resume { key: key.to_string() })
    }

    fn drive(&self, key: &str, index: usize) -> Result<Option<Opened>, ControlError> {
        self.act(Act::Drive { key: key.to_string(), index })
    }

    fn switch_drive(&self, key: &str, index: usize, drive: &Drive) -> Result<(), ControlError> {
        self.act(Act::SwitchDrive { key: key.to_string(), index, drive: drive.clone() })
    }

    fn snapshots(&self, key: &str) -> Result<Vec<String>, ControlError> {
        self.act(Act::Snapshots { key: key.to_string() })
    }

    fn freeze(&self, key: &str, timeout: Duration) -> Result<u64, String> {
        let answer: Result<Result<u64, String>, ControlError> = self.act(Act::Freeze { key: key.to_string(), timeout });
        answer.map_err(|e| e.to_string())?
    }

    fn thaw(&self, key: &str) -> Result<(), String> {
        let answer: Result<Result<(), String>, ControlError> = self.act(Act::Thaw { key: key.to_string() });
        answer.map_err(|e| e.to_string())?
    }

    fn thaw_all(&self) {
        if self.address().is_err() {
            return; // Not joined yet: nothing runs there.
        }
        if let Err(e) = self.act::<()>(Act::ThawAll) {
            eprintln!("standby: could not thaw the {} site's guests: {e}", self.site);
        }
    }

    fn ensure_splitter(&self, spec: &SplitterSpec) -> Result<u32, ControlError> {
        self.act(Act::EnsureSplitter { spec: spec.clone() })
    }

    fn splitter_status(&self, disk: &str) -> Result<SplitterStatus, ControlError> {
        self.act(Act::SplitterStatus { disk: disk.to_string() })
    }

    fn splitter_running(&self, disk: &str, run_dir: &Path) -> bool {
        self.act(Act::SplitterRunning { disk: disk.to_string(), run_dir: run_dir.to_path_buf() }).unwrap_or(false)
    }

    fn mark(&self, disk: &str, app_consistent: bool, label: &str, wait: MarkWait) -> Result<Option<u64>, ControlError> {
        self.act(Act::Mark { disk: disk.to_string(), app_consistent, label: label.to_string(), wait })
    }

    fn group_point(
        &self,
        disks: &[String],
        label: &str,
        app_consistent: bool,
        within: Duration,
    ) -> Result<GroupPointMade, ControlError> {
        let within_ms = within.as_millis().min(u64::MAX as u128) as u64;
        self.act(Act::GroupPoint { disks: disks.to_vec(), label: label.to_string(), app_consistent, within_ms })
    }

    fn health_probe(
        &self,
        check: &crate::plans::ProbeCheck,
        key: &str,
        environment: &[(String, String)],
        netns: Option<&Path>,
    ) -> Result<bool, ControlError> {
        self.act(Act::HealthProbe {
            check: check.clone(),
            key: key.to_string(),
            environment: environment.to_vec(),
            netns: netns.map(Path::to_path_buf),
        })
    }

    fn run_script(
        &self,
        path: &Path,
        _environment: &[(String, String)],
        _timeout: Duration,
    ) -> Result<super::scripts::ScriptRun, ControlError> {
        Err(ControlError::Refused(format!(
            "plans' scripts run at the control plane's host, not at the other site's ({})",
            path.display()
        )))
    }

    fn stop_splitter(&self, disk: &str, run_dir: &Path) -> Result<bool, ControlError> {
        self.act(Act::StopSplitter { disk: disk.to_string(), run_dir: run_dir.to_path_buf() })
    }

    fn serve_export(&self, spec: &ExportSpec) -> Result<PathBuf, ControlError> {
        self.act(Act::ServeExport { spec: spec.clone() })
    }

    fn stop_export(&self, name: &str, run_dir: &Path) -> Result<Vec<PathBuf>, ControlError> {
        self.act(Act::StopExport { name: name.to_string(), run_dir: run_dir.to_path_buf() })
    }

    fn supervise(&self) -> Vec<Restart> {
        if super::local::lock(&self.quiet_until).is_some_and(|until| Instant::now() < until) {
            return Vec::new();
        }
        match self.act::<Vec<WireRestart>>(Act::Restarts) {
            Ok(restarts) => restarts
                .into_iter()
                .map(|restart| Restart {
                    helper: restart.helper,
                    died: restart.died,
                    outcome: restart.outcome.map_err(ControlError::Failed),
                    took: restart.took,
                })
                .collect(),
            Err(_) => {
                *super::local::lock(&self.quiet_until) = Some(Instant::now() + SUPERVISION_BACKOFF);
                Vec::new()
            }
        }
    }

    fn local_bytes(&self, overlay: &Path) -> Result<Option<(u64, u64)>, ControlError> {
        self.act(Act::LocalBytes { overlay: overlay.to_path_buf() })
    }

    fn intent_log(&self, image: &Path) -> Result<Option<Ranges>, ControlError> {
        self.act(Act::IntentLog { image: image.to_path_buf() })
    }

    fn set_intent_log(&self, image: &Path, ranges: Option<&[(u64, u64)]>) -> Result<(), ControlError> {
        self.act(Act::SetIntentLog { image: image.to_path_buf(), ranges: ranges.map(<[(u64, u64)]>::to_vec) })
    }

    fn overlay_ranges(&self, overlay: &Path) -> Result<Option<Ranges>, ControlError> {
        self.act(Act::OverlayRanges { overlay: overlay.to_path_buf() })
    }

    fn copy_ranges(&self, from: &Path, to: &Path, ranges: &[(u64, u64)]) -> Result<(), ControlError> {
        self.act(Act::CopyRanges { from: from.to_path_buf(), to: to.to_path_buf(), ranges: ranges.to_vec() })
    }

    fn same_file(&self, a: &Path, b: &Path) -> bool {
        self.act(Act::SameFile { a: a.to_path_buf(), b: b.to_path_buf() }).unwrap_or(false)
    }

    fn take_over_overlay(&self, overlay: &Path, image: &Path) -> Result<(), ControlError> {
        self.act(Act::TakeOverOverlay { overlay: overlay.to_path_buf(), image: image.to_path_buf() })
    }

    fn import_disk(&self, source: &Path, target: &Path) -> Result<(), ControlError> {
        self.act(Act::ImportDisk { source: source.to_path_buf(), target: target.to_path_buf() })
    }

    fn seed_journal(&self, vault: &VaultAddress, disk: &str, image: &Path) -> Result<u64, ControlError> {
        self.act(Act::SeedJournal { vault: vault.clone(), disk: disk.to_string(), image: image.to_path_buf() })
    }

    fn restore_journal(
        &self,
        vault: &VaultAddress,
        disk: &str,
        time_micros: i64,
        image: &Path,
    ) -> Result<(), ControlError> {
        let (vault, disk, image) = (vault.clone(), disk.to_string(), image.to_path_buf());
        self.act(Act::RestoreJournal { vault, disk, time_micros, image })
    }

    fn remove_files(&self, files: &[PathBuf]) -> Result<Vec<PathBuf>, ControlError> {
        self.act(Act::RemoveFiles { files: files.to_vec() })
    }

    fn remove_dir(&self, dir: &Path) -> Result<bool, ControlError> {
        self.act(Act::RemoveDir { dir: dir.to_path_buf() })
    }

    fn move_into(&self, files: &[PathBuf], folder: &Path) -> Result<bool, ControlError> {
        self.act(Act::MoveInto { files: files.to_vec(), folder: folder.to_path_buf() })
    }

    fn create_dir(&self, dir: &Path) -> Result<(), ControlError> {
        self.act(Act::CreateDir { dir: dir.to_path_buf() })
    }

    fn is_file(&self, file: &Path) -> bool {
        self.act(Act::IsFile { file: file.to_path_buf() }).unwrap_or(false)
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn reachable(&self) -> Option<(bool, jiff::Timestamp)> {
        // No host for that site (not joined yet, or lost with the control
        // plane recovered here): nothing answers.
        let unjoined = *super::local::lock(&self.unjoined);
        unjoined.map(|since| (false, since)).or(*self.reach.borrow())
    }

    fn probe(&self) {
        let address = self.address();
        {
            let mut unjoined = super::local::lock(&self.unjoined);
            match (&address, *unjoined) {
                (Err(_), None) => *unjoined = Some(jiff::Timestamp::now()),
                (Ok(_), Some(_)) => *unjoined = None,
                _ => {}
            }
        }
        let Ok(address) = address else { return };
        let answers = std::net::TcpStream::connect_timeout(&address, PROBE_TIMEOUT).is_ok();
        self.record(answers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_the_folder_cross_relative_to_it_and_land_under_the_other() {
        let mut value = serde_json::json!({
            "image": "/a/primary/sites/primary/disks/web-disk0.raw",
            "home": "/a/primary",
            "kernel": "/a/primaryx/vmlinuz",
            "nbd": "nbd+unix:///web.disk0?socket=/a/primary/run/disks/web.disk0.sock",
            "label": "hourly",
            "list": ["/a/primary/run", "/elsewhere"],
        });
        paths_to_wire(&mut value, Path::new("/a/primary"));
        assert_eq!(value["image"], "{home}/sites/primary/disks/web-disk0.raw");
        assert_eq!(value["home"], "{home}");
        assert_eq!(value["kernel"], "/a/primaryx/vmlinuz", "a folder beside it is not under it");
        assert_eq!(value["nbd"], "nbd+unix:///web.disk0?socket={home}/run/disks/web.disk0.sock");
        assert_eq!(value["list"], serde_json::json!(["{home}/run", "/elsewhere"]));
        paths_from_wire(&mut value, Path::new("/b/recovery"));
        assert_eq!(value["image"], "/b/recovery/sites/primary/disks/web-disk0.raw");
        assert_eq!(value["nbd"], "nbd+unix:///web.disk0?socket=/b/recovery/run/disks/web.disk0.sock");
        assert_eq!(value["label"], "hourly");
    }

    #[test]
    fn failures_keep_their_kind_across_the_wire() {
        let sent = Outcome::of::<()>(Err(ControlError::Conflict("machine 'web' is already running".into())));
        let read: Outcome = serde_json::from_value(serde_json::to_value(&sent).unwrap()).unwrap();
        let error = read.into_result().unwrap_err();
        assert!(matches!(error, ControlError::Conflict(ref m) if m == "machine 'web' is already running"), "{error:?}");
        let sent = Outcome::of(Ok(Some(Opened { on_file: true, filename: "/x".into() })));
        let read: Outcome = serde_json::from_value(serde_json::to_value(&sent).unwrap()).unwrap();
        let opened: Option<Opened> = serde_json::from_value(read.into_result().unwrap()).unwrap();
        assert_eq!(opened, Some(Opened { on_file: true, filename: "/x".into() }));
    }

    /// Names of acts, to make inputs that get past the tag.
    const ACTS: &[&str] = &[
        "launch",
        "stop_machine",
        "switch_drive",
        "ensure_splitter",
        "mark",
        "serve_export",
        "copy_ranges",
        "set_intent_log",
        "seed_journal",
        "restore_journal",
        "remove_files",
        "import_disk",
    ];

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "(\\{home\\}|/x)?[a-z/={}?&.]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// What an agent reads from the wire: any bytes, any JSON, any
        /// act's name with any fields, is an act or an error, never a panic.
        #[test]
        fn acts_are_read_or_refused_never_a_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            act in proptest::sample::select(ACTS),
            fields in proptest::collection::btree_map("[a-z_]{1,10}", json_value(), 0..8),
        ) {
            if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
                let _ = read_act(value, Path::new("/b/recovery"));
            }
            let mut body: serde_json::Map<String, Value> = fields.into_iter().collect();
            body.insert("act".into(), Value::from(act));
            let _ = read_act(Value::Object(body), Path::new("/b/recovery"));
        }

        /// Paths of an act that is one land under the receiver's folder,
        /// whatever else they hold.
        #[test]
        fn an_acts_paths_land_under_the_receivers_folder(
            names in proptest::collection::vec("(\\{home\\}/)?[a-zé/=?&.]{0,12}", 0..6),
        ) {
            let files: Vec<Value> = names.iter().map(|name| Value::from(name.as_str())).collect();
            let body = serde_json::json!({"act": "remove_files", "files": files});
            let Ok(Act::RemoveFiles { files }) = read_act(body, Path::new("/b/recovery")) else {
                panic!("remove_files of {names:?} is not read");
            };
            for (name, file) in names.iter().zip(&files) {
                match name.strip_prefix("{home}/") {
                    Some(rest) => proptest::prop_assert_eq!(file, &PathBuf::from(format!("/b/recovery/{rest}"))),
                    None => proptest::prop_assert_eq!(file, Path::new(name)),
                }
            }
        }

        /// What the control plane reads from an agent's answer, likewise.
        #[test]
        fn outcomes_are_read_or_refused_never_a_panic(value in json_value()) {
            if let Ok(outcome) = serde_json::from_value::<Outcome>(value) {
                if let Ok(mut value) = outcome.into_result() {
                    paths_from_wire(&mut value, Path::new("/a/primary"));
                    let _ = serde_json::from_value::<Option<Opened>>(value);
                }
            }
        }
    }
}
