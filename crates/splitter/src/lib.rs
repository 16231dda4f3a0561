//! The splitter: stands between a VM and its disk image. QEMU opens the disk
//! over NBD; every write, zeroing and trim is applied to the image and,
//! in the same order, queued for the shipper thread, which appends it to
//! the disk's journal in the vault and seals a segment every
//! `seal_interval` (see `standby_vault::journal`).
//!
//! Order: a change is applied to the image and queued under one lock, so
//! the journal's order is the image's order even for overlapping writes.
//!
//! Start-up: the journal is brought level with the image by a refresh that
//! reads the image chunk by chunk (each chunk read and queued under the
//! lock, so it is the chunk's exact content at its place in the stream).
//! Bookmarks (every `bookmark_interval`, and on `mark`) are only recorded
//! once the refresh is complete: before that the journal cannot rebuild
//! the disk exactly.
//!
//! Known limits of this version (issue 3 continues): a restart refreshes
//! the whole image instead of only the regions written since the last
//! shipped write; when the queue is full, guest writes wait for the vault
//! instead of falling back to dirty-region tracking.

mod control;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use standby_format::PointKind;
use standby_nbd::{Export, FileExport, Server, ServerConfig};
use standby_vault::journal::JournalWriter;
use standby_vault::{Vault, VaultError};

pub use control::{control_path, request as control_request};

#[derive(Debug, Clone)]
pub struct SplitterOptions {
    pub disk: String,
    /// A crash-consistent bookmark this often.
    pub bookmark_interval: Duration,
    /// Unsealed records are sealed into a segment at least this often.
    pub seal_interval: Duration,
    /// Bytes of write data queued for the shipper before guest writes wait.
    pub queue_bytes_max: u64,
}

impl SplitterOptions {
    pub fn new(disk: &str) -> Self {
        SplitterOptions {
            disk: disk.to_string(),
            bookmark_interval: Duration::from_secs(5),
            seal_interval: Duration::from_secs(1),
            queue_bytes_max: 256 << 20,
        }
    }
}

fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

enum Entry {
    Write { offset: u64, data: Vec<u8>, time: i64 },
    Zero { offset: u64, length: u64, time: i64 },
    Size { bytes: u64, time: i64 },
    Gap { time: i64 },
    Exact { time: i64 },
    Bookmark { kind: PointKind, label: String, time: i64, reply: Option<Sender<Result<u64, String>>> },
}

impl Entry {
    /// The time of a change to the disk (bookmarks and sizes are not changes).
    fn change_time(&self) -> Option<i64> {
        match self {
            Entry::Write { time, .. } | Entry::Zero { time, .. } => Some(*time),
            Entry::Size { .. } | Entry::Bookmark { .. } | Entry::Gap { .. } | Entry::Exact { .. } => None,
        }
    }
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    bytes: u64,
    /// The journal can rebuild the disk exactly (the refresh has finished).
    exact: bool,
    stopping: bool,
}

/// What `standby mark`/status report about a running splitter.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub disk: String,
    pub refreshed: bool,
    /// Sequence of the last record sealed into the vault.
    pub sealed_sequence: u64,
    pub sealed_time: Option<String>,
    /// Seconds since the oldest change not yet in the vault (0 when none).
    pub lag_seconds: f64,
    /// Bytes of write data not yet in the vault.
    pub lag_bytes: u64,
    pub segments_sealed: u64,
    pub bytes_shipped: u64,
    /// The last seal's error, while the vault is failing.
    pub error: Option<String>,
}

struct Shared {
    image: FileExport,
    queue: Mutex<Queue>,
    /// Signalled when entries arrive (for the shipper) or leave (for writers).
    changed: Condvar,
    status: Mutex<Status>,
    /// Time of the oldest change queued or unsealed, for the lag.
    oldest_unsealed: Mutex<Option<i64>>,
    options: SplitterOptions,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an entry; guest writes wait while the queue is over budget.
    fn push(&self, mut queue: MutexGuard<'_, Queue>, entry: Entry, bytes: u64) {
        queue.bytes += bytes;
        if let Entry::Write { time, .. } | Entry::Zero { time, .. } = &entry {
            let mut oldest = self.oldest_unsealed.lock().unwrap_or_else(|p| p.into_inner());
            oldest.get_or_insert(*time);
        }
        queue.entries.push_back(entry);
        drop(queue);
        self.changed.notify_all();
    }

    fn wait_for_room(&self) -> MutexGuard<'_, Queue> {
        let mut queue = self.lock();
        while queue.bytes > self.options.queue_bytes_max && !queue.stopping {
            queue = self.changed.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
        queue
    }

    fn bookmark(&self, kind: PointKind, label: &str, reply: Option<Sender<Result<u64, String>>>) {
        let queue = self.lock();
        if !queue.exact {
            if let Some(reply) = reply {
                let _ = reply.send(Err("the splitter is still refreshing the journal from the image".into()));
            }
            return;
        }
        self.push(queue, Entry::Bookmark { kind, label: label.to_string(), time: now_micros(), reply }, 0);
    }
}

/// The NBD export of a splitter: the image, with every change queued.
struct SplitterExport {
    shared: Arc<Shared>,
}

impl Export for SplitterExport {
    fn size(&self) -> u64 {
        self.shared.image.size()
    }

    fn read(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.shared.image.read(offset, buffer)
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        let queue = self.shared.wait_for_room();
        self.shared.image.write(offset, data, false)?;
        let entry = Entry::Write { offset, data: data.to_vec(), time: now_micros() };
        self.shared.push(queue, entry, data.len() as u64);
        if fua {
            self.shared.image.flush()?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_trim: bool, fua: bool) -> io::Result<()> {
        let queue = self.shared.wait_for_room();
        self.shared.image.write_zeroes(offset, length, may_trim, false)?;
        self.shared.push(queue, Entry::Zero { offset, length, time: now_micros() }, 0);
        if fua {
            self.shared.image.flush()?;
        }
        Ok(())
    }

    fn trim(&self, offset: u64, length: u64, fua: bool) -> io::Result<()> {
        // A trimmed range reads as zeros here, so that the journal and the
        // image agree whatever the filesystem does with the hole.
        self.write_zeroes(offset, length, true, fua)
    }

    fn flush(&self) -> io::Result<()> {
        self.shared.image.flush()
    }
}

/// A running splitter: NBD server, shipper, bookmark timer, control socket.
pub struct Splitter {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    server_stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    shipper: Option<JoinHandle<Result<(), VaultError>>>,
    socket: PathBuf,
}

impl Splitter {
    /// Opens the image and the journal, and starts serving `socket`.
    pub fn start(vault: Vault, image: &Path, socket: &Path, options: SplitterOptions) -> Result<Splitter, VaultError> {
        let export = FileExport::open(image, false).map_err(|source| VaultError::Io {
            operation: "open",
            path: image.display().to_string(),
            source,
        })?;
        // Fail now, not in the shipper, when the journal cannot be opened.
        let next_sequence = JournalWriter::open(&vault, &options.disk)?.next_sequence();
        let shared = Arc::new(Shared {
            image: export,
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            status: Mutex::new(Status { disk: options.disk.clone(), ..Status::default() }),
            oldest_unsealed: Mutex::new(None),
            options,
        });
        let listener = standby_nbd::server::bind_unix(socket).map_err(|source| VaultError::Io {
            operation: "listen on",
            path: socket.display().to_string(),
            source,
        })?;
        let control = control::bind(socket).map_err(|source| VaultError::Io {
            operation: "listen on",
            path: control_path(socket),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server::new(
            Arc::new(SplitterExport { shared: shared.clone() }),
            ServerConfig { name: shared.options.disk.clone(), ..ServerConfig::default() },
        );
        let server_stop = server.stopper();
        let mut threads = Vec::new();
        threads.push(std::thread::spawn(move || {
            if let Err(e) = server.serve_listener(listener) {
                tracing::error!("NBD server stopped: {e}");
            }
        }));
        let shipper = {
            let shared = shared.clone();
            std::thread::spawn(move || ship(&vault, &shared))
        };
        {
            let shared = shared.clone();
            let first_start = next_sequence == 1;
            threads.push(std::thread::spawn(move || refresh(&shared, first_start)));
        }
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(std::thread::spawn(move || bookmarks(&shared, &stop)));
        }
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(std::thread::spawn(move || control::serve(control, &shared, &stop)));
        }
        Ok(Splitter { shared, stop, server_stop, threads, shipper: Some(shipper), socket: socket.to_path_buf() })
    }

    pub fn status(&self) -> Status {
        status(&self.shared)
    }

    /// Stops serving, ships every queued change, seals, and returns.
    pub fn stop(mut self) -> Result<Status, VaultError> {
        self.server_stop.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let result = self.shipper.take().expect("shipper runs until stop").join().expect("the shipper does not panic");
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(control_path(&self.socket));
        result.map(|()| status(&self.shared))
    }
}

fn status(shared: &Shared) -> Status {
    let mut status = shared.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let queue = shared.lock();
    status.refreshed = queue.exact;
    status.lag_bytes += queue.bytes;
    drop(queue);
    if let Some(oldest) = *shared.oldest_unsealed.lock().unwrap_or_else(|p| p.into_inner()) {
        status.lag_seconds = (now_micros() - oldest).max(0) as f64 / 1e6;
    }
    status
}

/// Brings the journal level with the image, chunk by chunk.
fn refresh(shared: &Shared, first_start: bool) {
    let size = shared.image.size();
    let chunk = 1u64 << 20;
    {
        // Until the refresh ends, the journal does not describe the disk.
        let queue = shared.wait_for_room();
        shared.push(queue, Entry::Gap { time: now_micros() }, 0);
        let queue = shared.wait_for_room();
        shared.push(queue, Entry::Size { bytes: size, time: now_micros() }, 0);
    }
    let mut offset = 0u64;
    let mut buffer = vec![0u8; chunk as usize];
    while offset < size {
        let len = (size - offset).min(chunk);
        let queue = shared.wait_for_room();
        if queue.stopping {
            return;
        }
        let buffer = &mut buffer[..len as usize];
        if let Err(e) = shared.image.read(offset, buffer) {
            tracing::error!("refresh could not read the image at {offset}: {e}");
            return;
        }
        let time = now_micros();
        if !standby_image::is_zero(buffer) {
            shared.push(queue, Entry::Write { offset, data: buffer.to_vec(), time }, len);
        } else if !first_start {
            // The journal may hold data here from before the restart.
            shared.push(queue, Entry::Zero { offset, length: len, time }, 0);
        } else {
            drop(queue);
        }
        offset += len;
    }
    let mut queue = shared.lock();
    queue.exact = true;
    shared.push(queue, Entry::Exact { time: now_micros() }, 0);
    shared.bookmark(PointKind::CrashConsistent, "caught up with the image", None);
}

fn bookmarks(shared: &Shared, stop: &AtomicBool) {
    let mut next = Instant::now() + shared.options.bookmark_interval;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(shared.options.bookmark_interval));
        if Instant::now() >= next {
            let exact = shared.lock().exact;
            if exact {
                shared.bookmark(PointKind::CrashConsistent, "", None);
            }
            next = Instant::now() + shared.options.bookmark_interval;
        }
    }
}

/// Moves queued entries into the journal and seals segments.
fn ship(vault: &Vault, shared: &Shared) -> Result<(), VaultError> {
    let mut writer = JournalWriter::open(vault, &shared.options.disk)?;
    let mut replies: Vec<(u64, Sender<Result<u64, String>>)> = Vec::new();
    let mut unsealed_since: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    loop {
        let (entries, stopping) = {
            let mut queue = shared.lock();
            if queue.entries.is_empty() && !queue.stopping {
                let timeout = shared.options.seal_interval.min(Duration::from_millis(200));
                queue = shared.changed.wait_timeout(queue, timeout).unwrap_or_else(|p| p.into_inner()).0;
            }
            let entries: Vec<Entry> = queue.entries.drain(..).collect();
            queue.bytes = 0;
            (entries, queue.stopping)
        };
        shared.changed.notify_all();
        for entry in entries {
            match entry {
                Entry::Write { offset, data, time } => {
                    writer.write(offset, &data, time);
                }
                Entry::Zero { offset, length, time } => {
                    writer.zero(offset, length, time);
                }
                Entry::Size { bytes, time } => {
                    writer.size(bytes, time);
                }
                Entry::Gap { time } => {
                    writer.gap(time);
                }
                Entry::Exact { time } => {
                    writer.exact(time);
                }
                Entry::Bookmark { kind, label, time, reply } => {
                    let sequence = writer.bookmark(kind, &label, time);
                    if let Some(reply) = reply {
                        replies.push((sequence, reply));
                    }
                }
            }
            if writer.unsealed_records() > 0 && unsealed_since.is_none() {
                unsealed_since = Some(Instant::now());
            }
        }
        shared.status.lock().unwrap_or_else(|p| p.into_inner()).lag_bytes = writer.unsealed_bytes();
        let due = unsealed_since.is_some_and(|since| since.elapsed() >= shared.options.seal_interval)
            || writer.is_full()
            || !replies.is_empty()
            || stopping;
        let may_try = retry_at.is_none_or(|at| Instant::now() >= at) || stopping;
        if writer.unsealed_records() > 0 && due && may_try {
            match writer.seal() {
                Ok(Some(report)) => {
                    unsealed_since = None;
                    retry_at = None;
                    {
                        // The lag restarts at the oldest change still queued.
                        let queue = shared.lock();
                        *shared.oldest_unsealed.lock().unwrap_or_else(|p| p.into_inner()) =
                            queue.entries.iter().find_map(Entry::change_time);
                    }
                    let mut status = shared.status.lock().unwrap_or_else(|p| p.into_inner());
                    status.sealed_sequence = report.last_sequence;
                    status.sealed_time = Some(standby_vault::format_time(now_micros()));
                    status.segments_sealed += 1;
                    status.bytes_shipped += report.bytes_new;
                    status.lag_bytes = 0;
                    status.error = None;
                    drop(status);
                    for (sequence, reply) in replies.drain(..) {
                        let _ = reply.send(Ok(sequence));
                    }
                }
                Ok(None) => {}
                Err(e) if stopping => return Err(e),
                Err(e) => {
                    tracing::warn!("sealing the journal failed, retrying: {e}");
                    shared.status.lock().unwrap_or_else(|p| p.into_inner()).error = Some(e.to_string());
                    retry_at = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        if stopping && writer.unsealed_records() == 0 && shared.lock().entries.is_empty() {
            return Ok(());
        }
    }
}
