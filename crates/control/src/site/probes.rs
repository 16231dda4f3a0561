//! One attempt at a machine's health probe (a plan's, docs/plans.md): a
//! TCP connection accepted, a command that exits 0, or a line of its
//! serial console matching a pattern.

use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::error::ControlError;
use crate::plans::ProbeCheck;

/// How long one TCP attempt waits for the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command attempt may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of the end of a console is looked through.
const CONSOLE_TAIL: u64 = 1 << 20;

/// [`attempt`] from inside network namespace `netns` (a file like
/// `/run/netns/NAME`, the site's) when given: the machine's addresses are
/// that site's. A thread of its own enters it (and what a command starts
/// is born there); the daemon's other threads stay where they are.
pub(crate) fn attempt_in(
    netns: Option<&Path>,
    check: &ProbeCheck,
    console: Option<&Path>,
    environment: &[(String, String)],
) -> Result<bool, ControlError> {
    let Some(netns) = netns else { return attempt(check, console, environment) };
    let namespace = std::fs::File::open(netns).map_err(|e| {
        ControlError::Failed(format!("the probe cannot enter network namespace {}: {e}", netns.display()))
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                use std::os::fd::AsRawFd;
                // SAFETY: setns(2) on a file this thread holds open; it
                // changes this thread's namespace only.
                if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(ControlError::Failed(format!(
                        "the probe cannot enter network namespace {}: {e}",
                        netns.display()
                    )));
                }
                attempt(check, console, environment)
            })
            .join()
            .unwrap_or_else(|_| Err(ControlError::Failed("the probe's thread panicked".into())))
    })
}

/// Whether `check` passes now, for the machine whose serial console is
/// `console` (when it runs here), with `environment` for a command.
pub(crate) fn attempt(
    check: &ProbeCheck,
    console: Option<&Path>,
    environment: &[(String, String)],
) -> Result<bool, ControlError> {
    match check {
        ProbeCheck::Tcp(address) => {
            let addresses = address
                .to_socket_addrs()
                .map_err(|e| ControlError::Refused(format!("probe address {address} does not resolve ({e})")))?;
            Ok(addresses.into_iter().any(|address| TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).is_ok()))
        }
        ProbeCheck::Command(command) => {
            let ran = super::scripts::run(Path::new("/bin/sh"), &["-c", command], environment, COMMAND_TIMEOUT)?;
            Ok(ran.succeeded)
        }
        ProbeCheck::Console(pattern) => {
            let pattern = regex::Regex::new(pattern)
                .map_err(|e| ControlError::Refused(format!("console pattern {pattern:?}: {e}")))?;
            let Some(console) = console else { return Ok(false) };
            let Ok(mut file) = std::fs::File::open(console) else { return Ok(false) };
            let length = file.metadata().map(|m| m.len()).unwrap_or(0);
            let from = length.saturating_sub(CONSOLE_TAIL);
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(from))
                .and_then(|_| file.take(CONSOLE_TAIL).read_to_end(&mut bytes))
                .map_err(|e| ControlError::Failed(format!("console {}: {e}", console.display())))?;
            Ok(String::from_utf8_lossy(&bytes).lines().any(|line| pattern.is_match(line)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_probe_passes_only_when_its_check_does() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().to_string();
        assert!(attempt(&ProbeCheck::Tcp(open.clone()), None, &[]).unwrap());
        drop(listener);
        assert!(!attempt(&ProbeCheck::Tcp(open), None, &[]).unwrap());
        let environment = vec![("STANDBY_MACHINE".to_string(), "db".to_string())];
        assert!(attempt(&ProbeCheck::Command("test \"$STANDBY_MACHINE\" = db".into()), None, &environment).unwrap());
        assert!(!attempt(&ProbeCheck::Command("exit 1".into()), None, &environment).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console");
        std::fs::write(&console, "booting\nstandby-guest: ready\n").unwrap();
        let ready = ProbeCheck::Console("guest: re+ady$".into());
        assert!(attempt(&ready, Some(&console), &[]).unwrap());
        assert!(!attempt(&ProbeCheck::Console("login:".into()), Some(&console), &[]).unwrap());
        assert!(!attempt(&ready, None, &[]).unwrap(), "a machine not running here has no console");
    }
}
