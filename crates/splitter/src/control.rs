//! The splitter's control socket, beside its NBD socket (`<socket>.control`):
//! one JSON request per connection, one JSON reply. `mark` records a
//! bookmark and answers once it is sealed into the vault, or, with
//! `"wait": "queued"`, as soon as it has its place in the change stream
//! (what an app-consistent point needs while the guest is frozen: the
//! freeze must not last as long as the vault takes); `status` reports the
//! lag.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::time::Duration;

use serde_json::{json, Value};
use standby_format::PointKind;

use crate::Shared;

pub fn control_path(socket: &Path) -> String {
    format!("{}.control", socket.display())
}

pub(crate) fn bind(socket: &Path) -> io::Result<UnixListener> {
    let listener = standby_nbd::server::bind_unix(Path::new(&control_path(socket)))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Answers each connection on its own thread: a `mark` waiting up to
/// 120 s for an unreachable vault must not hold up `status`, which the
/// operator needs most exactly then.
pub(crate) fn serve(listener: UnixListener, shared: &Shared, stop: &AtomicBool) {
    std::thread::scope(|scope| {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    scope.spawn(move || {
                        if let Err(e) = answer(stream, shared) {
                            tracing::debug!("control connection ended: {e}");
                        }
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for_connection(&listener),
                Err(e) => {
                    tracing::error!("control socket failed: {e}");
                    return;
                }
            }
        }
    });
}

/// Waits until a connection arrives, or 100 ms (to look at the stop flag):
/// a group point's hold and release must not wait for a polling sleep.
fn wait_for_connection(listener: &UnixListener) {
    use std::os::fd::AsRawFd;
    let mut descriptor = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd that lives across the call; a failure (EINTR) only
    // ends the wait early.
    unsafe { libc::poll(&mut descriptor, 1, 100) };
}

fn answer(stream: UnixStream, shared: &Shared) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(64 << 10)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Value>(&line) {
        Ok(request) => match request["op"].as_str() {
            Some("mark") => {
                let kind = if request["app_consistent"].as_bool() == Some(true) {
                    PointKind::AppConsistent
                } else {
                    PointKind::CrashConsistent
                };
                let label = request["label"].as_str().unwrap_or("");
                if label.len() > standby_format::LABEL_BYTES_MAX {
                    json!({"error": format!("label longer than {} bytes", standby_format::LABEL_BYTES_MAX)})
                } else if label.starts_with(standby_format::GROUP_LABEL_PREFIX) {
                    json!({"error": format!(
                        "labels beginning with '{}' are replication groups' points; choose another label",
                        standby_format::GROUP_LABEL_PREFIX
                    )})
                } else if request["wait"].as_str() == Some("queued") {
                    match shared.bookmark(kind, label, None) {
                        Ok(()) => json!({"queued": true, "kind": kind, "label": label}),
                        Err(problem) => json!({"error": problem}),
                    }
                } else {
                    let (sender, receiver) = channel();
                    let _ = shared.bookmark(kind, label, Some(sender));
                    match receiver.recv_timeout(Duration::from_secs(120)) {
                        Ok(Ok(sequence)) => json!({"point": sequence, "kind": kind, "label": label}),
                        Ok(Err(problem)) => json!({"error": problem}),
                        Err(_) => {
                            json!({"error": "the vault did not store the point within 120 s; see the splitter's status"})
                        }
                    }
                }
            }
            Some("status") => serde_json::to_value(crate::status(shared)).expect("status serialises"),
            Some("group-hold") => group_hold(shared, &request),
            Some("group-release") => {
                let label = request["label"].as_str().unwrap_or("");
                match shared.group_release(label, request["keep"].as_bool() == Some(true)) {
                    Ok(kept) => json!({"released": true, "kept": kept}),
                    Err(problem) => json!({"error": problem}),
                }
            }
            _ => json!({"error": "unknown request; expected {\"op\": \"mark\"} or {\"op\": \"status\"}"}),
        },
        Err(e) => json!({"error": format!("not JSON: {e}")}),
    };
    let mut stream = stream;
    stream.write_all(format!("{reply}\n").as_bytes())
}

/// Longest hold a coordinator may ask for: the guests' writes wait at
/// most this long for a group point.
const GROUP_HOLD_MAX: Duration = Duration::from_secs(2);

fn group_hold(shared: &Shared, request: &Value) -> Value {
    let label = request["label"].as_str().unwrap_or("");
    let kind = if request["app_consistent"].as_bool() == Some(true) {
        PointKind::AppConsistent
    } else {
        PointKind::CrashConsistent
    };
    let within = Duration::from_millis(request["within_ms"].as_u64().unwrap_or(0));
    let Some(group) = shared.options.group.as_deref() else {
        return json!({"error": "this disk is in no replication group (its splitter was started without --group)"});
    };
    match standby_format::parse_group_point_label(label) {
        Some((of, _)) if of == group => {}
        _ => return json!({"error": format!("'{label}' is not a point of group '{group}', the disk's group")}),
    }
    if within.is_zero() || within > GROUP_HOLD_MAX {
        return json!({"error": format!("within_ms must be 1 to {}", GROUP_HOLD_MAX.as_millis())});
    }
    match shared.group_hold(label, kind, within) {
        Ok(()) => json!({"held": true}),
        Err(problem) => json!({"error": problem}),
    }
}

/// How long a request may wait for its answer (a mark waits up to 120 s
/// for the vault).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(150);

/// How long a status request waits: the splitter answers it at once
/// (whatever its vault does), so a longer silence is a splitter in trouble.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request to a splitter's control socket and returns its reply.
pub fn request(socket: &Path, request: &Value) -> io::Result<Value> {
    request_within(socket, request, REQUEST_TIMEOUT)
}

/// The splitter's status report, waited for at most [`STATUS_TIMEOUT`].
pub fn status(socket: &Path) -> io::Result<Value> {
    request_within(socket, &json!({"op": "status"}), STATUS_TIMEOUT)
}

/// Like [`request`], waiting at most `timeout` for the reply.
pub(crate) fn request_within(socket: &Path, request: &Value, timeout: Duration) -> io::Result<Value> {
    let path = control_path(socket);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        io::Error::new(e.kind(), format!("no splitter is running on {} ({path}: {e})", socket.display()))
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the splitter on {} did not answer within {} s", socket.display(), timeout.as_secs_f64()),
        ),
        _ => e,
    })?;
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A splitter that takes the connection and never answers is given up
    /// on after the timeout, with an error naming the socket.
    #[test]
    fn a_silent_splitter_is_given_up_on_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let _silent = UnixListener::bind(control_path(&socket)).unwrap();
        let started = std::time::Instant::now();
        let error = request_within(&socket, &json!({"op": "status"}), Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(error.to_string().contains("d.sock did not answer within 0.3 s"), "{error}");
    }
}
