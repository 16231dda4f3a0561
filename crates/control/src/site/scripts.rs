//! Plans' scripts, run at the control plane's host: with the plan's
//! environment, output captured (standard output and error together, as
//! they came), killed with everything they started once past their
//! timeout.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::ControlError;

/// How a script ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ScriptRun {
    pub succeeded: bool,
    /// `exit 0`, `exit 3`, `killed by signal 9`, `killed after its timeout of 60 s`.
    pub ended: String,
    pub seconds: f64,
    /// Its output (the last 64 KiB of it).
    pub output: String,
}

/// How much output is kept.
const OUTPUT_MAX: usize = 64 << 10;
/// How often a running script is looked at.
const POLL: Duration = Duration::from_millis(50);

/// Runs `path` with `environment` added, for at most `timeout`.
pub(crate) fn run_script(
    path: &Path,
    environment: &[(String, String)],
    timeout: Duration,
) -> Result<ScriptRun, ControlError> {
    run(path, &[], environment, timeout)
}

/// Runs `program` with `arguments` and `environment` added, for at most
/// `timeout` (see [`run_script`]).
pub(crate) fn run(
    program: &Path,
    arguments: &[&str],
    environment: &[(String, String)],
    timeout: Duration,
) -> Result<ScriptRun, ControlError> {
    let path = program;
    let failed = |e: std::io::Error| ControlError::Failed(format!("script {} could not run: {e}", path.display()));
    let (mut reader, writer) = std::io::pipe().map_err(failed)?;
    let mut command = Command::new(path);
    command
        .args(arguments)
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(writer.try_clone().map_err(failed)?)
        .stderr(writer);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let started = Instant::now();
    let mut child = command.spawn().map_err(failed)?;
    // The command holds the pipe's writing ends until it is dropped.
    drop(command);
    let (sender, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 8192];
        while let Ok(read) = reader.read(&mut buffer) {
            if read == 0 {
                break;
            }
            bytes.extend_from_slice(&buffer[..read]);
            if bytes.len() > 2 * OUTPUT_MAX {
                bytes.drain(..bytes.len() - OUTPUT_MAX);
            }
        }
        let _ = sender.send(bytes);
    });
    let group = child.id() as i32;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(failed)? {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            // SAFETY: a signal to the process group the script leads.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL);
    };
    let seconds = started.elapsed().as_secs_f64();
    // What it left running in its group goes with it.
    // SAFETY: as above; the group may be gone already.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let bytes = output.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(OUTPUT_MAX)..]).into_owned();
    let (succeeded, ended) = match status {
        None => (false, format!("killed after its timeout of {} s", timeout.as_secs())),
        Some(status) => match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
            (Some(code), _) => (code == 0, format!("exit {code}")),
            (None, Some(signal)) => (false, format!("killed by signal {signal}")),
            (None, None) => (false, "ended".to_string()),
        },
    };
    Ok(ScriptRun { succeeded, ended, seconds, output: text })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("step.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_script_runs_with_its_environment_and_says_how_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let environment = vec![("STANDBY_PLAN".to_string(), "shop".to_string())];
        let ran = run_script(
            &script(dir.path(), "echo plan $STANDBY_PLAN; echo oops >&2; exit 3"),
            &environment,
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(!ran.succeeded);
        assert_eq!(ran.ended, "exit 3");
        assert_eq!(ran.output, "plan shop\noops\n");
        let ran = run_script(&script(dir.path(), "true"), &[], Duration::from_secs(10)).unwrap();
        assert!(ran.succeeded && ran.ended == "exit 0", "{ran:?}");
    }

    /// A script past its timeout is killed with what it started, at once.
    #[test]
    fn a_script_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("left");
        let body = format!("echo started; (sleep 3; touch {}) & sleep 60", marker.display());
        let began = Instant::now();
        let ran = run_script(&script(dir.path(), &body), &[], Duration::from_secs(1)).unwrap();
        assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
        assert!(!ran.succeeded);
        assert_eq!(ran.ended, "killed after its timeout of 1 s");
        assert_eq!(ran.output, "started\n");
        std::thread::sleep(Duration::from_secs(4));
        assert!(!marker.exists(), "a child of the script outlived it");
    }
}
