//! The site agents the daemon runs for protected machines: one splitter
//! process (`standby serve-disk`) per disk, serving the disk's image to
//! QEMU over NBD and replicating every write into the vault. They are
//! processes of their own, like QEMU, so a daemon that dies or restarts
//! never takes a running guest's disk with it: the next daemon adopts them.
//!
//! Files, in `run/disks/`: `DISK.sock` (NBD), `DISK.sock.control` (the
//! splitter's status and mark requests), `DISK.pid`, `DISK.log`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::ControlError;
use crate::process::{last_line, Process};

/// How long a stopping splitter may take to ship what it has queued.
pub const SPLITTER_STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// What a splitter is started with.
pub struct SplitterSpec<'a> {
    /// This binary.
    pub exe: &'a Path,
    /// The disk's name in the vault.
    pub disk: &'a str,
    pub image: &'a Path,
    pub vault: &'a str,
    pub bookmark_interval: Duration,
    /// `run/disks`.
    pub run_dir: &'a Path,
}

/// A running splitter.
pub struct Splitter {
    process: Process,
    pub disk: String,
    pub socket: PathBuf,
    pid_file: PathBuf,
    pub log: PathBuf,
}

fn files(run_dir: &Path, disk: &str) -> (PathBuf, PathBuf, PathBuf) {
    (run_dir.join(format!("{disk}.sock")), run_dir.join(format!("{disk}.pid")), run_dir.join(format!("{disk}.log")))
}

impl Splitter {
    /// Starts a splitter and waits until it answers on its control socket.
    pub fn start(spec: &SplitterSpec) -> Result<Splitter, ControlError> {
        std::fs::create_dir_all(spec.run_dir).map_err(|e| ControlError::io(spec.run_dir, e))?;
        let (socket, pid_file, log) = files(spec.run_dir, spec.disk);
        let mut command = Command::new(spec.exe);
        command
            .arg("serve-disk")
            .arg(spec.image)
            .arg("--socket")
            .arg(&socket)
            .args(["--vault", spec.vault, "--disk", spec.disk])
            .args(["--bookmark-interval", &format!("{}s", spec.bookmark_interval.as_secs().max(1))]);
        let mut process = Process::spawn(&mut command, &log, "the splitter (standby serve-disk)")?;
        std::fs::write(&pid_file, format!("{}\n", process.pid())).map_err(|e| ControlError::io(&pid_file, e))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if standby_splitter::control_request(&socket, &json!({"op": "status"})).is_ok() {
                break;
            }
            if process.exited() {
                let _ = std::fs::remove_file(&pid_file);
                return Err(ControlError::Failed(format!(
                    "the splitter of disk '{}' stopped at start: {}",
                    spec.disk,
                    last_line(&log)
                )));
            }
            if Instant::now() > deadline {
                process.kill();
                let _ = std::fs::remove_file(&pid_file);
                return Err(ControlError::Failed(format!(
                    "the splitter of disk '{}' did not answer within 60 s (its log: {})",
                    spec.disk,
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Splitter { process, disk: spec.disk.to_string(), socket, pid_file, log })
    }

    /// The splitter an earlier daemon started for `disk`, if it still runs.
    pub fn adopt(run_dir: &Path, disk: &str) -> Option<Splitter> {
        let (socket, pid_file, log) = files(run_dir, disk);
        let process = Process::adopt(&pid_file, "--socket", socket.as_os_str())?;
        Some(Splitter { process, disk: disk.to_string(), socket, pid_file, log })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn running(&mut self) -> bool {
        !self.process.exited()
    }

    /// Stops the splitter after it shipped everything queued (SIGTERM);
    /// forced after [`SPLITTER_STOP_TIMEOUT`] (its intent log keeps what
    /// it could not ship known for the next start).
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
                "the splitter of disk '{}' did not finish shipping within {} s and was killed; its log: {}",
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

/// Requests to a running splitter (usable without holding the [`Splitter`]).
pub struct SplitterControl {
    pub disk: String,
    pub socket: PathBuf,
}

impl SplitterControl {
    /// The splitter's own report: caught up or not, lag, sealed sequence.
    pub fn status(&self) -> Result<Value, ControlError> {
        let reply = standby_splitter::control_request(&self.socket, &json!({"op": "status"}))
            .map_err(|e| ControlError::Failed(format!("the splitter of disk '{}' does not answer: {e}", self.disk)))?;
        Ok(reply)
    }

    /// Records a bookmark; returns its journal sequence once it is sealed
    /// in the vault.
    pub fn mark(&self, app_consistent: bool, label: &str) -> Result<u64, ControlError> {
        let request = json!({"op": "mark", "app_consistent": app_consistent, "label": label});
        let reply = standby_splitter::control_request(&self.socket, &request)
            .map_err(|e| ControlError::Failed(format!("the splitter of disk '{}' does not answer: {e}", self.disk)))?;
        match (reply["point"].as_u64(), reply["error"].as_str()) {
            (Some(point), _) => Ok(point),
            (None, Some(error)) => {
                Err(ControlError::Failed(format!("disk '{}' could not record a point: {error}", self.disk)))
            }
            (None, None) => Err(ControlError::Failed(format!("the splitter of disk '{}' answered {reply}", self.disk))),
        }
    }
}
