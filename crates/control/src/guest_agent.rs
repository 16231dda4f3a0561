//! qemu-guest-agent, spoken to over the machine's agent channel (QEMU's
//! chardev socket for the `org.qemu.guest_agent.0` port): one JSON command
//! per line, one reply per line. A guest that runs no agent never answers;
//! every exchange has a timeout so that costs seconds, not a hang.
//!
//! Used for app-consistent points: `guest-fsfreeze-freeze` flushes and
//! freezes the guest's filesystems, the splitters record the point, and
//! `guest-fsfreeze-thaw` lets the guest go on. And for a NIC's static
//! address (`site/address_keeper.rs`): commands run in the guest
//! (`guest-exec`, [`GuestAgent::exec`]) and a file written.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;

use serde_json::{json, Value};

use crate::error::ControlError;

/// A connection to a guest's agent.
pub struct GuestAgent {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl GuestAgent {
    /// Connects and synchronises (`guest-sync`): fails when no agent
    /// answers within `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<GuestAgent, String> {
        let stream = UnixStream::connect(socket).map_err(|e| format!("its agent channel cannot be opened ({e})"))?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut agent = GuestAgent { reader: BufReader::new(stream), writer };
        let id = u64::from(std::process::id()) << 20 | u64::from(jiff::Timestamp::now().subsec_microsecond() as u32);
        agent.send("guest-sync", json!({"id": id}))?;
        // Replies to an earlier client's commands may still be queued:
        // read until the one that answers this sync.
        loop {
            let reply = agent
                .read()
                .map_err(|e| format!("no qemu-guest-agent answered within {} s ({e})", timeout.as_secs_f64()))?;
            if reply["return"] == json!(id) {
                return Ok(agent);
            }
        }
    }

    fn send(&mut self, command: &str, arguments: Value) -> Result<(), String> {
        let mut line = serde_json::to_vec(&json!({"execute": command, "arguments": arguments})).expect("JSON");
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| format!("the agent channel broke ({e})"))
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the agent channel closed".into());
        }
        serde_json::from_str(line.trim_start_matches('\u{ff}')).map_err(|e| format!("the agent sent {line:?} ({e})"))
    }

    /// Runs a command; its `return` value or its error.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, ControlError> {
        let failed = |e: String| ControlError::Failed(format!("qemu-guest-agent {command}: {e}"));
        self.send(command, arguments).map_err(failed)?;
        let reply = self.read().map_err(failed)?;
        match (reply.get("return"), reply.get("error")) {
            (Some(value), _) => Ok(value.clone()),
            (None, Some(error)) => Err(failed(error["desc"].as_str().unwrap_or("no description").to_string())),
            _ => Err(failed(format!("unexpected reply {reply}"))),
        }
    }

    /// Runs `path` with `arguments` in the guest (`guest-exec`) and waits
    /// for it to end, at most `timeout`.
    pub fn exec(&mut self, path: &str, arguments: &[&str], timeout: Duration) -> Result<Exited, ControlError> {
        let started = self.execute("guest-exec", json!({"path": path, "arg": arguments, "capture-output": true}))?;
        let pid = started["pid"]
            .as_i64()
            .ok_or_else(|| ControlError::Failed(format!("qemu-guest-agent guest-exec answered {started}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.execute("guest-exec-status", json!({"pid": pid}))?;
            if status["exited"].as_bool() == Some(true) {
                let output = |key: &str| {
                    status[key]
                        .as_str()
                        .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
                        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                        .unwrap_or_default()
                };
                return Ok(Exited {
                    code: status["exitcode"].as_i64(),
                    stdout: output("out-data"),
                    stderr: output("err-data"),
                });
            }
            if Instant::now() > deadline {
                return Err(ControlError::Failed(format!(
                    "{path} in the guest did not end within {} s",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(EXEC_POLL);
        }
    }
}

/// How often [`GuestAgent::exec`] asks whether the command ended.
const EXEC_POLL: Duration = Duration::from_millis(20);

/// How a command run in the guest ended.
#[derive(Debug)]
pub struct Exited {
    /// Its exit code (`None`: ended by a signal).
    pub code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
}
