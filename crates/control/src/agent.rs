//! The site agents the daemon runs as processes of their own, like QEMU,
//! so a daemon that dies or restarts never takes a running guest's disk
//! with it (the next daemon adopts them):
//!
//! - a **splitter** (`standby serve-disk`) per disk of a protected machine,
//!   serving the disk's image to QEMU over NBD and replicating every write
//!   into the vault; files in `run/disks/`: `DISK.sock` (NBD),
//!   `DISK.sock.control` (status and mark requests), `DISK.pid`, `DISK.log`;
//! - an **export** (`standby export`) per disk of a machine running from a
//!   recovery point (failover, drill): the point's view over NBD with an
//!   overlay taking the writes; files in `run/exports/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::ControlError;
use crate::process::{last_line, Process};
use crate::vaults::VaultAddress;

/// How long a starting agent has to answer (a splitter opens its journal
/// in the vault first, which may be slow to answer).
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a starting agent is asked whether it answers.
const AGENT_START_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long a stopping splitter may take to ship what it has queued.
pub const SPLITTER_STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// What a splitter is started with (and started again with, should it die).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SplitterSpec {
    /// The disk's name in the vault.
    pub disk: String,
    pub image: PathBuf,
    pub vault: VaultAddress,
    pub bookmark_interval: Duration,
    /// The machine's replication group (`serve-disk --group`: the group's
    /// points instead of bookmarks of its own).
    #[serde(default)]
    pub group: Option<String>,
    /// `run/disks`.
    pub run_dir: PathBuf,
    /// The site's network namespace, if it has one.
    pub netns: Option<PathBuf>,
}

/// What an export of a recovery point is started with (and started again
/// with, should it die: it resumes its overlay).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExportSpec {
    /// The agent's name in `run_dir` (one per export).
    pub name: String,
    /// The disk's name in the vault (and the NBD export name).
    pub disk: String,
    pub vault: VaultAddress,
    /// The point, as `standby export --point` takes it.
    pub point: String,
    /// Where the writes go (resumed when it exists with its map).
    pub overlay: PathBuf,
    /// `run/exports`.
    pub run_dir: PathBuf,
    /// The site's network namespace, if it has one.
    pub netns: Option<PathBuf>,
    /// Copy the point into the overlay in the background (`--hydrate`).
    pub hydrate: bool,
}

/// A running agent: a splitter or an export.
pub struct Agent {
    process: Process,
    /// For a splitter, its disk; for an export, its name.
    pub disk: String,
    pub socket: PathBuf,
    pid_file: PathBuf,
    pub log: PathBuf,
}

pub(crate) fn files(run_dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    (run_dir.join(format!("{name}.sock")), run_dir.join(format!("{name}.pid")), run_dir.join(format!("{name}.log")))
}

impl Agent {
    /// Starts a splitter (`exe serve-disk`) and waits until it answers on
    /// its control socket.
    pub fn splitter(exe: &Path, spec: &SplitterSpec) -> Result<Agent, ControlError> {
        let socket = files(&spec.run_dir, &spec.disk).0;
        let mut command = Command::new(exe);
        command
            .arg("serve-disk")
            .arg(&spec.image)
            .arg("--socket")
            .arg(&socket)
            .args(spec.vault.args())
            .args(["--disk", &spec.disk, "--wait-for-vault"])
            .args(["--bookmark-interval", &format!("{}s", spec.bookmark_interval.as_secs().max(1))]);
        if let Some(group) = &spec.group {
            command.args(["--group", group]);
        }
        Agent::spawn(command, &spec.run_dir, spec.netns.as_deref(), &spec.disk, "the splitter", |socket| {
            standby_splitter::control_request(socket, &json!({"op": "status"})).is_ok()
        })
    }

    /// Starts an export of a recovery point (`exe export`) and waits
    /// until it serves.
    pub fn export(exe: &Path, spec: &ExportSpec) -> Result<Agent, ControlError> {
        let socket = files(&spec.run_dir, &spec.name).0;
        let mut command = Command::new(exe);
        command
            .arg("export")
            .args(spec.vault.args())
            .args(["--disk", &spec.disk, "--point", &spec.point])
            .arg("--socket")
            .arg(&socket)
            .arg("--overlay")
            .arg(&spec.overlay);
        if spec.hydrate {
            command.arg("--hydrate");
        }
        Agent::spawn(command, &spec.run_dir, spec.netns.as_deref(), &spec.name, "the export", |socket| {
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        })
    }

    fn spawn(
        mut command: Command,
        run_dir: &Path,
        netns: Option<&Path>,
        name: &str,
        what: &str,
        ready: impl Fn(&Path) -> bool,
    ) -> Result<Agent, ControlError> {
        std::fs::create_dir_all(run_dir).map_err(|e| ControlError::io(run_dir, e))?;
        let (socket, pid_file, log) = files(run_dir, name);
        crate::process::reserve_pid_file(&pid_file)?;
        let mut process = Process::spawn(&mut command, &log, what, netns).inspect_err(|_| {
            let _ = std::fs::remove_file(&pid_file);
        })?;
        std::fs::write(&pid_file, format!("{}\n", process.pid())).map_err(|e| ControlError::io(&pid_file, e))?;
        let deadline = Instant::now() + AGENT_START_TIMEOUT;
        loop {
            if ready(&socket) {
                break;
            }
            if process.exited() {
                let _ = std::fs::remove_file(&pid_file);
                return Err(ControlError::Failed(format!("{what} of '{name}' stopped at start: {}", last_line(&log))));
            }
            if Instant::now() > deadline {
                process.kill();
                let _ = std::fs::remove_file(&pid_file);
                return Err(ControlError::Failed(format!(
                    "{what} of '{name}' did not answer within {} s (its log: {})",
                    AGENT_START_TIMEOUT.as_secs(),
                    log.display()
                )));
            }
            std::thread::sleep(AGENT_START_POLL_INTERVAL);
        }
        Ok(Agent { process, disk: name.to_string(), socket, pid_file, log })
    }

    /// The agent an earlier daemon started as `name`, if it still runs.
    pub fn adopt(run_dir: &Path, name: &str) -> Option<Agent> {
        let (socket, pid_file, log) = files(run_dir, name);
        let process = Process::adopt(&pid_file, "--socket", socket.as_os_str())?;
        Some(Agent { process, disk: name.to_string(), socket, pid_file, log })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn running(&mut self) -> bool {
        !self.process.exited()
    }

    /// Stops the agent (SIGTERM): a splitter ships everything queued
    /// first, an export flushes its overlay. Forced after
    /// [`SPLITTER_STOP_TIMEOUT`] (a splitter's intent log keeps what it
    /// could not ship known for the next start).
    pub fn stop(mut self) -> Result<(), ControlError> {
        self.process.signal(libc::SIGTERM);
        let shipped = self.process.wait_exit(SPLITTER_STOP_TIMEOUT);
        if !shipped {
            self.process.kill();
        }
        let _ = std::fs::remove_file(&self.pid_file);
        if shipped {
            Ok(())
        } else {
            Err(ControlError::Failed(format!(
                "the agent '{}' did not stop within {} s and was killed; its log: {}",
                self.disk,
                SPLITTER_STOP_TIMEOUT.as_secs(),
                self.log.display()
            )))
        }
    }

    /// A handle on the splitter's control socket.
    pub fn control(&self) -> SplitterControl {
        SplitterControl { disk: self.disk.clone(), socket: self.socket.clone() }
    }
}

/// Requests to a running splitter (usable without holding its [`Agent`]).
pub struct SplitterControl {
    pub disk: String,
    pub socket: PathBuf,
}

impl SplitterControl {
    /// The splitter's own report: caught up or not, lag, sealed sequence.
    pub fn status(&self) -> Result<standby_api::SplitterStatus, ControlError> {
        let reply = standby_splitter::control_status(&self.socket)
            .map_err(|e| ControlError::Failed(format!("the splitter of disk '{}' does not answer: {e}", self.disk)))?;
        serde_json::from_value(reply.clone()).map_err(|e| {
            ControlError::Failed(format!(
                "the splitter of disk '{}' answered {reply}, which is not a status ({e})",
                self.disk
            ))
        })
    }

    /// Records a bookmark at this place in the disk's change stream,
    /// answered as soon as it has that place (it reaches the vault with the
    /// writes before it). For a guest that is frozen meanwhile.
    pub fn mark_queued(&self, app_consistent: bool, label: &str) -> Result<(), ControlError> {
        let request = json!({"op": "mark", "app_consistent": app_consistent, "label": label, "wait": "queued"});
        self.request_mark(&request, "queued").map(|_| ())
    }

    /// Records a bookmark; returns its journal sequence once it is sealed
    /// in the vault.
    pub fn mark(&self, app_consistent: bool, label: &str) -> Result<u64, ControlError> {
        let request = json!({"op": "mark", "app_consistent": app_consistent, "label": label});
        let reply = self.request_mark(&request, "point")?;
        reply["point"]
            .as_u64()
            .ok_or_else(|| ControlError::Failed(format!("the splitter of disk '{}' answered {reply}", self.disk)))
    }

    /// Sends a mark request; the reply when it holds `expected`, else the
    /// splitter's refusal as an error.
    fn request_mark(&self, request: &Value, expected: &str) -> Result<Value, ControlError> {
        let reply = standby_splitter::control_request(&self.socket, request)
            .map_err(|e| ControlError::Failed(format!("the splitter of disk '{}' does not answer: {e}", self.disk)))?;
        match (reply.get(expected), reply["error"].as_str()) {
            (Some(_), _) => Ok(reply),
            (None, Some(error)) => {
                Err(ControlError::Failed(format!("disk '{}' could not record a point: {error}", self.disk)))
            }
            (None, None) => Err(ControlError::Failed(format!("the splitter of disk '{}' answered {reply}", self.disk))),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The API's `SplitterStatus` mirrors the splitter's own `Status` (the
    /// API crate does not depend on the splitter): every field the splitter
    /// reports reads back whole, so a renamed field fails here instead of
    /// reading as its default.
    #[test]
    fn the_api_reads_every_field_a_splitter_reports() {
        let status = standby_splitter::Status {
            disk: "web.disk0".into(),
            refreshed: true,
            sealed_sequence: 7,
            sealed_time: Some("2026-12-04T10:00:00Z".into()),
            lag_seconds: 1.5,
            lag_bytes: 2,
            catch_up_bytes: 3,
            segments_sealed: 4,
            bytes_shipped: 5,
            error: Some("vault failing".into()),
            io_errors: 6,
            last_io_error: Some("a read of the image at byte 0: Input/output error".into()),
            vault_errors: 7,
            write_latency: standby_splitter::LatencyHistogram {
                bounds_seconds: vec![0.001, 0.01],
                counts: vec![1, 2, 3],
                sum_seconds: 0.5,
                count: 6,
            },
            group: Some("shop".into()),
            group_holds: 8,
            group_holds_expired: 1,
            group_hold_max_seconds: 0.002,
        };
        let sent = serde_json::to_value(&status).unwrap();
        let read: standby_api::SplitterStatus = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(serde_json::to_value(&read).unwrap(), sent);
    }
}
