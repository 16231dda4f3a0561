//! Processes the daemon starts that must outlive it: QEMU and the agents
//! (splitters, exports). Each runs in its own process group (a Ctrl-C meant
//! for the daemon must not reach it) with its output in a file (a pipe
//! would break when the daemon goes) and a pid file, so the next daemon can
//! adopt it after checking the pid is still that process.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::ControlError;

/// How long a process killed with SIGKILL is waited for.
const KILLED_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A process as this daemon knows it: its own child, or one a previous
/// daemon started.
pub(crate) enum Process {
    Child(Child),
    Adopted(u32),
}

impl Process {
    /// Starts `command` detached: own process group, stdin from /dev/null,
    /// stdout and stderr appended to `log`; in network namespace `netns`
    /// (a file like `/run/netns/NAME`) when given, the site's.
    pub(crate) fn spawn(
        command: &mut Command,
        log: &Path,
        what: &str,
        netns: Option<&Path>,
    ) -> Result<Process, ControlError> {
        let namespace = match netns {
            Some(path) => Some(std::fs::File::open(path).map_err(|e| {
                ControlError::Failed(format!(
                    "{what} could not start: network namespace {}: {e} (create it with `ip netns add`, or remove \
                     netns from the site in standby.toml)",
                    path.display()
                ))
            })?),
            None => None,
        };
        if let Some(namespace) = &namespace {
            use std::os::fd::AsRawFd;
            let fd = namespace.as_raw_fd();
            // SAFETY: setns(2) is async-signal-safe; the file stays open
            // until spawn returns.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let log_file = std::fs::File::create(log).map_err(|e| ControlError::io(log, e))?;
        let stdout = log_file.try_clone().map_err(|e| ControlError::io(log, e))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .map_err(|e| ControlError::Failed(format!("{what} could not start: {e}")))?;
        Ok(Process::Child(child))
    }

    /// The process a pid file names, if it is alive and its command line
    /// holds `argument` followed by `value` (so a recycled pid is never
    /// taken for it). A pid file that is there but empty was reserved by a
    /// daemon that died before its process wrote the pid (see
    /// [`reserve_pid_file`]): the process is looked for by `argument` and
    /// `value`, which must name it alone (a path of the deployment).
    pub(crate) fn adopt(pid_file: &Path, argument: &str, value: &OsStr) -> Option<Process> {
        let text = std::fs::read_to_string(pid_file).ok()?;
        let pid = match text.trim().parse::<u32>() {
            Ok(pid) => Some(pid).filter(|&pid| has_argument(pid, argument, value)),
            Err(_) => find_by_argument(argument, value),
        };
        match pid.filter(|&pid| alive(pid)) {
            Some(pid) => Some(Process::Adopted(pid)),
            None => {
                let _ = std::fs::remove_file(pid_file);
                None
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        match self {
            Process::Child(child) => child.id(),
            Process::Adopted(pid) => *pid,
        }
    }

    /// Whether the process has ended (reaping it when it is our child).
    pub(crate) fn exited(&mut self) -> bool {
        match self {
            Process::Child(child) => matches!(child.try_wait(), Ok(Some(_))),
            Process::Adopted(pid) => !alive(*pid),
        }
    }

    /// Waits up to `timeout` for the process to end.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.exited() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a pid this daemon started or checked to be the
        // process it adopted.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Ends the process at once and waits for it ([`KILLED_EXIT_TIMEOUT`]
    /// at most: a process in uninterruptible sleep ends when it wakes).
    pub(crate) fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(KILLED_EXIT_TIMEOUT);
    }
}

/// Creates `pid_file` empty, before the process that will own it starts:
/// a daemon that dies between the start and the pid being written leaves
/// it empty, and the next daemon then looks for the process by its command
/// line instead of starting a second one.
pub(crate) fn reserve_pid_file(pid_file: &Path) -> Result<(), ControlError> {
    std::fs::write(pid_file, b"").map_err(|e| ControlError::io(pid_file, e))
}

/// Whether the command line of process `pid` holds `argument` followed by `value`.
fn has_argument(pid: u32, argument: &str, value: &OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let arguments: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    arguments.windows(2).any(|pair| pair[0] == argument.as_bytes() && pair[1] == value.as_bytes())
}

/// The live process whose command line holds `argument` followed by
/// `value`, if there is one.
fn find_by_argument(argument: &str, value: &OsStr) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| pid != std::process::id() && has_argument(pid, argument, value) && alive(pid))
}

/// Whether `pid` is a live process (not a zombie waiting to be reaped).
pub(crate) fn alive(pid: u32) -> bool {
    // A zombie still answers kill(pid, 0); its state in /proc says Z. A
    // process killed with kill -9 can show its main thread a zombie while
    // its other threads are still going away, and those hold its files
    // (a splitter's listening socket) until the last one has: it is alive
    // while any of its threads is not a zombie.
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    threads.flatten().any(|thread| {
        std::fs::read_to_string(thread.path().join("stat"))
            .is_ok_and(|stat| !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
    })
}

/// The last non-empty line of a log, for an error message.
pub(crate) fn last_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon that died between starting a process and recording its pid
    /// left the reserved, empty pid file: the process is found by its
    /// command line and adopted, never started a second time.
    #[test]
    fn a_process_whose_pid_was_never_written_is_found_by_its_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("x.pid");
        let socket = dir.path().join("x.sock");
        reserve_pid_file(&pid_file).unwrap();
        // (`; :` keeps sh from exec'ing sleep, which would drop the arguments.)
        let mut child = Command::new("sh").args(["-c", "sleep 30; :", "sh", "--socket"]).arg(&socket).spawn().unwrap();
        // (Until the fork has exec'd sh, the child's command line is this test's.)
        let deadline = Instant::now() + Duration::from_secs(10);
        while !has_argument(child.id(), "--socket", socket.as_os_str()) {
            assert!(Instant::now() < deadline, "sh never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        let adopted = Process::adopt(&pid_file, "--socket", socket.as_os_str()).expect("found by its command line");
        assert_eq!(adopted.pid(), child.id());
        let other = dir.path().join("other.sock");
        reserve_pid_file(&pid_file).unwrap();
        assert!(Process::adopt(&pid_file, "--socket", other.as_os_str()).is_none());
        assert!(!pid_file.exists(), "an empty pid file no process claims is removed");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A process whose main thread has ended (a zombie) while another of
    /// its threads still runs holds its files: it is alive until the last
    /// thread ends, and an adopter must not start another in its place.
    #[test]
    fn a_process_is_alive_while_any_thread_of_it_runs() {
        let script = "import ctypes, threading, time\n\
                      threading.Thread(target=time.sleep, args=(2,)).start()\n\
                      ctypes.CDLL(None).pthread_exit(None)\n";
        let mut child = Command::new("/usr/bin/python3").args(["-c", script]).spawn().unwrap();
        let pid = child.id();
        let main_thread_ended = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !main_thread_ended() {
            assert!(Instant::now() < deadline, "the main thread of {pid} never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(alive(pid), "{pid} has a thread running");
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
