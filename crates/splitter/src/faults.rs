//! I/O errors injected by tests, to prove what the splitter does with the
//! errors real disks have. Off unless the test-only setting
//! `STANDBY_TEST_IO_FAULTS=FILE` is in the splitter's environment; then
//! before each image read, image write and intent-log sync it reads FILE,
//! and a line `KIND N` there (`image-read`, `image-write`, `intent-sync`)
//! fails the next N operations of that kind with EIO (N counts down in the
//! file). An image write fails after its data reached the image: the worst
//! case, where the image changed and the client was told it did not.
//! A line `vault-delay MS` makes each store of a segment wait MS first (a
//! slow vault; not counted down).

use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// An operation an error can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    ImageRead,
    ImageWrite,
    IntentSync,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::ImageRead => "image-read",
            Fault::ImageWrite => "image-write",
            Fault::IntentSync => "intent-sync",
        }
    }
}

fn file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| std::env::var_os("STANDBY_TEST_IO_FAULTS").map(PathBuf::from)).as_ref()
}

/// An injected error for `fault`, when the test asked for one.
pub fn injected(fault: Fault) -> io::Result<()> {
    let Some(file) = file() else { return Ok(()) };
    static LOCK: Mutex<()> = Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(text) = std::fs::read_to_string(file) else { return Ok(()) };
    let mut hit = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| match line.split_once(' ') {
            Some((kind, count)) if kind == fault.name() && !hit => match count.trim().parse::<u64>() {
                Ok(count) if count > 0 => {
                    hit = true;
                    format!("{kind} {}", count - 1)
                }
                _ => line.to_string(),
            },
            _ => line.to_string(),
        })
        .collect();
    if !hit {
        return Ok(());
    }
    std::fs::write(file, lines.join("\n") + "\n")?;
    Err(io::Error::other(format!("{} failed: Input/output error (injected by a test)", fault.name())))
}

/// How long each store of a segment waits first, when the test asked for
/// a slow vault.
pub fn vault_delay() -> Option<std::time::Duration> {
    let text = std::fs::read_to_string(file()?).ok()?;
    let millis = text.lines().find_map(|line| line.strip_prefix("vault-delay "))?.trim().parse().ok()?;
    Some(std::time::Duration::from_millis(millis))
}
