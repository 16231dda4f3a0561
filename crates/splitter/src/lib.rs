//! The splitter: stands between a VM and its disk image. QEMU opens the disk
//! over NBD; every write, zeroing and trim is applied to the image and,
//! in the same order, queued for the shipper thread, which appends it to
//! the disk's journal in the vault and seals a segment every
//! `seal_interval` (see `standby_vault::journal`).
//!
//! Order: a change waits for the changes in flight that overlap it, is
//! applied to the image and then queued, so the journal's order is the
//! image's order wherever it matters (see [`Shared::change`]).
//!
//! Falling behind: the queue holds at most `queue_bytes_max` of write data.
//! When it is full (the vault is slow or unreachable), guest writes still
//! complete: they are applied to the image and only their regions are
//! remembered ([`dirty`]); the journal gets a gap record. A catch-up
//! thread re-reads those regions from the image once there is room (each
//! read and queued under the lock, so it is the region's exact content at
//! its place in the stream) and then records that the journal is exact
//! again. Bookmarks are only recorded while it is exact.
//!
//! Restarts: an intent log beside the image says which regions may hold
//! changes the vault lacks (set durably before the image changes, cleared
//! once sealed). After a stop or a crash only those are re-read; without a
//! usable log, the whole image is.

mod control;
pub mod dirty;
pub mod export;
mod faults;
pub mod group;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use standby_format::PointKind;
use standby_nbd::{Export, FileExport, Server, ServerConfig};
use standby_vault::journal::{JournalWriter, PreparedWrite, SealJob, SealReport};
use standby_vault::{Vault, VaultError};

use crate::dirty::Regions;

pub use control::{control_path, request as control_request, status as control_status};

#[derive(Debug, Clone)]
pub struct SplitterOptions {
    pub disk: String,
    /// A crash-consistent bookmark this often.
    pub bookmark_interval: Duration,
    /// Unsealed records are sealed into a segment at least this often.
    pub seal_interval: Duration,
    /// Bytes of write data queued for the shipper; beyond it, guest writes
    /// are only tracked as dirty regions until the shipper catches up.
    pub queue_bytes_max: u64,
    /// The intent log (default: beside the image, `<image>.standby-dirty`).
    pub intent_log: Option<PathBuf>,
    /// The replication group of the disk's machine: its bookmarks are the
    /// group's points, which the control plane makes in every member at
    /// once ([`group`]), and no timer makes any of its own.
    pub group: Option<String>,
}

impl SplitterOptions {
    pub fn new(disk: &str) -> Self {
        SplitterOptions {
            disk: disk.to_string(),
            bookmark_interval: Duration::from_secs(5),
            seal_interval: Duration::from_secs(1),
            queue_bytes_max: 256 << 20,
            intent_log: None,
            group: None,
        }
    }
}

/// The intent log of `image` when none is given: `<image>.standby-dirty`.
/// Whoever writes the image without the splitter must delete it, so the
/// next splitter re-reads the whole image instead of trusting it.
pub fn default_intent_log(image: &Path) -> PathBuf {
    let mut name = image.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".standby-dirty");
    image.with_file_name(name)
}

fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

enum Entry {
    Write {
        offset: u64,
        data: Vec<u8>,
        time: i64,
    },
    Zero {
        offset: u64,
        length: u64,
        time: i64,
    },
    Size {
        bytes: u64,
        time: i64,
    },
    Gap {
        time: i64,
    },
    Exact {
        time: i64,
    },
    Bookmark {
        kind: PointKind,
        label: String,
        time: i64,
        reply: Option<Sender<Result<u64, String>>>,
    },
    /// A group point whose hold is not released yet: the shipper stops
    /// before it until the release makes it a bookmark or drops it
    /// ([`group`]).
    GroupPending {
        kind: PointKind,
        label: String,
        time: i64,
    },
}

impl Entry {
    /// The time of a change to the disk (bookmarks and sizes are not changes).
    fn change_time(&self) -> Option<i64> {
        match self {
            Entry::Write { time, .. } | Entry::Zero { time, .. } => Some(*time),
            Entry::Size { .. }
            | Entry::Bookmark { .. }
            | Entry::GroupPending { .. }
            | Entry::Gap { .. }
            | Entry::Exact { .. } => None,
        }
    }
}

struct Queue {
    entries: VecDeque<Entry>,
    bytes: u64,
    /// The journal can rebuild the disk exactly (no refresh is due).
    exact: bool,
    stopping: bool,
    regions: Regions,
    /// The journal was empty at start and the first catch-up is running:
    /// zero regions need no record.
    initial_pass: bool,
    /// The vault could not be opened yet, so whether the journal is empty
    /// (everything must be re-read) is not known: the journal is not
    /// called exact, and no bookmark is taken, until it is.
    journal_unknown: bool,
    /// Time of the oldest change queued or unsealed, for the lag.
    oldest_unsealed: Option<i64>,
    /// Ranges of guest changes being applied to the image (see
    /// [`Shared::change`]).
    applying: Vec<(u64, u64)>,
    /// The group point being made: changes queued after its bookmark are
    /// not acknowledged until it is released ([`group`]).
    hold: Option<group::Hold>,
    /// Counts holds, so a change waits only for the one it came after.
    holds_begun: u64,
}

/// Whether two byte ranges share a byte.
fn overlap(a_offset: u64, a_length: u64, b_offset: u64, b_length: u64) -> bool {
    a_offset < b_offset + b_length && b_offset < a_offset + a_length
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
    /// Bytes of the image to re-read before the journal is exact again.
    pub catch_up_bytes: u64,
    pub segments_sealed: u64,
    pub bytes_shipped: u64,
    /// The last seal's error, while the vault is failing.
    pub error: Option<String>,
    /// Reads and writes of the image and syncs of the intent log that
    /// failed since the start (each failed to the client, or was retried).
    pub io_errors: u64,
    /// The last of them.
    pub last_io_error: Option<String>,
    /// Failed attempts to open the vault or store a segment in it since
    /// the start (each retried).
    pub vault_errors: u64,
    /// How long the guest's writes took, from the request to the answer
    /// (the image and the journal's queue; the vault is not waited for).
    pub write_latency: LatencyHistogram,
    /// The replication group whose points this disk's bookmarks are.
    pub group: Option<String>,
    /// Group points this splitter held writes for, and how many of them
    /// ended at their deadline instead of a release (no point made).
    pub group_holds: u64,
    pub group_holds_expired: u64,
    /// The longest any hold lasted, in seconds.
    pub group_hold_max_seconds: f64,
}

/// Upper bounds, in seconds, of the write latency histogram's buckets
/// (a last one, +Inf, holds the rest).
pub const WRITE_LATENCY_BOUNDS: [f64; 12] =
    [0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// A histogram as `status` reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencyHistogram {
    /// Each bucket's upper bound in seconds, the +Inf one left out.
    pub bounds_seconds: Vec<f64>,
    /// How many fell in each bucket (not cumulative), the +Inf one last.
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// The write latency histogram as writes fill it (no lock on the write path).
#[derive(Default)]
struct WriteLatency {
    buckets: [AtomicU64; WRITE_LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl WriteLatency {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket =
            WRITE_LATENCY_BOUNDS.iter().position(|bound| seconds <= *bound).unwrap_or(WRITE_LATENCY_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(took.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    fn histogram(&self) -> LatencyHistogram {
        let counts: Vec<u64> = self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).collect();
        LatencyHistogram {
            bounds_seconds: WRITE_LATENCY_BOUNDS.to_vec(),
            count: counts.iter().sum(),
            counts,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

struct Shared {
    image: FileExport,
    queue: Mutex<Queue>,
    /// Signalled when entries arrive (for the shipper) or leave (for writers).
    changed: Condvar,
    /// Signalled when a guest change has been applied to the image.
    applied: Condvar,
    /// Signalled when a group point's hold ends.
    released: Condvar,
    status: Mutex<Status>,
    options: SplitterOptions,
    /// Catch-up buffers the shipper is done with, for the next regions:
    /// a fresh MiB each time costs page faults and zeroing in the kernel.
    spare_buffers: Mutex<Vec<Vec<u8>>>,
    /// When the guest last changed the disk (µs since the epoch).
    guest_changed_micros: AtomicI64,
    write_latency: WriteLatency,
}

/// Spare catch-up buffers kept (each one region).
const SPARE_BUFFERS_MAX: usize = 8;

impl Shared {
    /// Reads the image (a guest's read or a catch-up's).
    fn read_image(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let read = faults::injected(faults::Fault::ImageRead).and_then(|()| self.image.read(offset, buffer));
        read.inspect_err(|e| self.io_failed("a read of the image", offset, e))
    }

    /// Counts a failed I/O of the image or the intent log for `status`.
    fn io_failed(&self, what: &str, offset: u64, error: &io::Error) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.io_errors += 1;
        status.last_io_error = Some(format!("{what} at byte {offset}: {error}"));
    }

    fn spare_buffer(&self) -> Vec<u8> {
        let spare = self.spare_buffers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        spare.unwrap_or_else(|| vec![0u8; dirty::REGION_BYTES as usize])
    }

    fn recycle(&self, buffer: Vec<u8>) {
        if buffer.len() == dirty::REGION_BYTES as usize {
            let mut spare = self.spare_buffers.lock().unwrap_or_else(|p| p.into_inner());
            if spare.len() < SPARE_BUFFERS_MAX {
                spare.push(buffer);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an entry.
    fn push(&self, mut queue: MutexGuard<'_, Queue>, entry: Entry, bytes: u64) {
        queue.bytes += bytes;
        if let Some(time) = entry.change_time() {
            queue.oldest_unsealed.get_or_insert(time);
        }
        queue.entries.push_back(entry);
        drop(queue);
        self.changed.notify_all();
    }

    /// Waits until `bytes` more fit in the queue (for the catch-up thread,
    /// never for guest writes).
    fn wait_for_room(&self, bytes: u64) -> MutexGuard<'_, Queue> {
        let mut queue = self.lock();
        while queue.bytes + bytes > self.options.queue_bytes_max && queue.bytes > 0 && !queue.stopping {
            queue = self.changed.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
        queue
    }

    /// Applies a guest change to the image and queues it, or, when the
    /// queue is full, only remembers its regions for the catch-up.
    ///
    /// The image is written without the lock, so the guest's writes to
    /// different places go on side by side (the lock is not held while the
    /// kernel throttles a writer, or while an intent is made durable).
    /// Overlapping changes wait for each other: each is applied and queued
    /// before the next starts, so the journal's order is the image's
    /// wherever the order matters. Non-overlapping ones may be queued in
    /// another order than they reached the image, which no point can tell
    /// apart: a change is queued before it is acknowledged, so one that
    /// was acknowledged before another began is queued before it.
    fn change(
        &self,
        offset: u64,
        length: u64,
        apply: impl FnOnce(&Entry) -> io::Result<()>,
        entry: Entry,
    ) -> io::Result<()> {
        if let Some(time) = entry.change_time() {
            self.guest_changed_micros.store(time, Ordering::Relaxed);
        }
        let bytes = if let Entry::Write { data, .. } = &entry { data.len() as u64 } else { 0 };
        let mut queue = self.lock();
        while queue.applying.iter().any(|&(o, l)| overlap(o, l, offset, length)) {
            queue = self.applied.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
        let intent = queue.regions.intend_later(offset, length)?;
        queue.applying.push((offset, length));
        // No sweep clears the intent while the change is on its way.
        queue.regions.hold(offset, length);
        drop(queue);
        let applied = match intent {
            Some(intent) => intent.wait().and_then(|()| apply(&entry)),
            None => apply(&entry),
        };
        let mut queue = self.lock();
        queue.regions.release(offset, length);
        let at = queue.applying.iter().position(|&range| range == (offset, length)).expect("registered above");
        queue.applying.swap_remove(at);
        self.applied.notify_all();
        // Done after a group point's bookmark: acknowledged after its release.
        let held = queue.hold.is_some().then_some(queue.holds_begun);
        if applied.is_ok() && queue.bytes + bytes <= self.options.queue_bytes_max && !queue.stopping {
            queue.regions.queued(offset, length);
            self.push(queue, entry, bytes);
        } else {
            // Not queued (no room, or the image may be half changed by a
            // failed write): the catch-up re-reads whatever is there.
            if queue.exact {
                queue.exact = false;
                queue.entries.push_back(Entry::Gap { time: now_micros() });
                match &applied {
                    Ok(()) => tracing::warn!("the vault is behind: tracking changed regions until it catches up"),
                    Err(e) => tracing::warn!("a change to the image failed ({e}): its range will be re-read"),
                }
            }
            queue.regions.need_refresh(offset, length);
            drop(queue);
            self.changed.notify_all();
        }
        if let Err(e) = &applied {
            self.io_failed("a change to the image", offset, e);
        }
        if let Some(hold) = held {
            self.wait_for_release(hold);
        }
        applied
    }

    /// Queues a bookmark at this place in the change stream; refused while
    /// the journal is not exact (the refusal is also sent to `reply`).
    fn bookmark(
        &self,
        kind: PointKind,
        label: &str,
        reply: Option<Sender<Result<u64, String>>>,
    ) -> Result<(), &'static str> {
        let queue = self.lock();
        if !queue.exact {
            let problem = "the journal is catching up with the image (after a start, a restart or a vault outage); \
                           try again when `standby splitter-status` says it has caught up";
            if let Some(reply) = reply {
                let _ = reply.send(Err(problem.into()));
            }
            return Err(problem);
        }
        self.push(queue, Entry::Bookmark { kind, label: label.to_string(), time: now_micros(), reply }, 0);
        Ok(())
    }
}

/// The NBD export of a splitter: the image, with every change queued.
struct SplitterExport {
    shared: Arc<Shared>,
}

impl SplitterExport {
    fn write_timed(&self, offset: u64, data: Vec<u8>, fua: bool) -> io::Result<()> {
        let length = data.len() as u64;
        let entry = Entry::Write { offset, data, time: now_micros() };
        let image = &self.shared.image;
        let apply = |entry: &Entry| match entry {
            Entry::Write { data, .. } => {
                image.write(offset, data, false).and_then(|()| faults::injected(faults::Fault::ImageWrite))
            }
            _ => unreachable!("a write entry"),
        };
        self.shared.change(offset, length, apply, entry)?;
        if fua {
            self.shared.image.flush()?;
        }
        Ok(())
    }

    fn write_zeroes_timed(&self, offset: u64, length: u64, may_trim: bool, fua: bool) -> io::Result<()> {
        let entry = Entry::Zero { offset, length, time: now_micros() };
        let image = &self.shared.image;
        self.shared.change(offset, length, |_| image.write_zeroes(offset, length, may_trim, false), entry)?;
        if fua {
            self.shared.image.flush()?;
        }
        Ok(())
    }
}

impl Export for SplitterExport {
    fn size(&self) -> u64 {
        self.shared.image.size()
    }

    fn read(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.shared.read_image(offset, buffer)
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.write_owned(offset, data.to_vec(), fua)
    }

    fn write_owned(&self, offset: u64, data: Vec<u8>, fua: bool) -> io::Result<()> {
        let began = Instant::now();
        let written = self.write_timed(offset, data, fua);
        self.shared.write_latency.observe(began.elapsed());
        written
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_trim: bool, fua: bool) -> io::Result<()> {
        let began = Instant::now();
        let written = self.write_zeroes_timed(offset, length, may_trim, fua);
        self.shared.write_latency.observe(began.elapsed());
        written
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

/// Where a splitter's journal goes.
// Made once per splitter and moved into its shipper: its size is no cost.
#[allow(clippy::large_enum_variant)]
pub enum VaultSource {
    /// A vault opened before the start: a splitter that cannot open its
    /// journal does not start.
    Open(Vault),
    /// A vault opened by the shipper, tried again every second until it
    /// opens: the splitter serves the guest at once whatever the vault's
    /// state (a host starting its machines while the other site is
    /// unreachable), queuing, then tracking, changes as in an outage.
    Later(Box<dyn FnMut() -> Result<Vault, VaultError> + Send>),
}

/// How often a splitter started with [`VaultSource::Later`] tries to open
/// its vault.
const VAULT_RETRY: Duration = Duration::from_secs(1);

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
        Splitter::start_from(VaultSource::Open(vault), image, socket, options)
    }

    /// Opens the image (and the journal, unless `vault` is opened later)
    /// and starts serving `socket`.
    pub fn start_from(
        vault: VaultSource,
        image: &Path,
        socket: &Path,
        options: SplitterOptions,
    ) -> Result<Splitter, VaultError> {
        keep_freed_memory();
        let export = FileExport::open(image, false).map_err(|source| VaultError::Io {
            operation: "open",
            path: image.display().to_string(),
            source,
        })?;
        // Fail now, not in the shipper, when the journal cannot be opened.
        let journal_empty = match &vault {
            VaultSource::Open(vault) => Some(JournalWriter::open(vault, &options.disk)?.next_sequence() == 1),
            VaultSource::Later(_) => None,
        };
        let intent_path = options.intent_log.clone().unwrap_or_else(|| default_intent_log(image));
        let (mut regions, previous) = Regions::open(&intent_path, export.size()).map_err(|source| VaultError::Io {
            operation: "open the intent log",
            path: intent_path.display().to_string(),
            source,
        })?;
        // What the journal may lack: everything on a first start or without
        // a usable intent log, else the regions the log names (and, should
        // a journal not known yet turn out empty, everything then).
        match previous.filter(|_| journal_empty != Some(true)) {
            Some(dirty) => dirty.into_iter().for_each(|region| regions.need_refresh_region(region)),
            None => (0..regions.region_count()).for_each(|region| regions.need_refresh_region(region)),
        }
        let time = now_micros();
        let queue = Queue {
            entries: VecDeque::from([Entry::Gap { time }, Entry::Size { bytes: export.size(), time }]),
            bytes: 0,
            exact: false,
            stopping: false,
            regions,
            initial_pass: journal_empty == Some(true),
            journal_unknown: journal_empty.is_none(),
            oldest_unsealed: None,
            applying: Vec::new(),
            hold: None,
            holds_begun: 0,
        };
        let shared = Arc::new(Shared {
            image: export,
            queue: Mutex::new(queue),
            changed: Condvar::new(),
            applied: Condvar::new(),
            released: Condvar::new(),
            status: Mutex::new(Status {
                disk: options.disk.clone(),
                group: options.group.clone(),
                ..Status::default()
            }),
            options,
            spare_buffers: Mutex::default(),
            guest_changed_micros: AtomicI64::new(0),
            write_latency: WriteLatency::default(),
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
            std::thread::spawn(move || match vault {
                VaultSource::Open(vault) => ship(&vault, &shared),
                VaultSource::Later(open) => match open_vault(open, &shared) {
                    Some(vault) => ship(&vault, &shared),
                    None => Err(VaultError::Io {
                        operation: "ship the changes of",
                        path: shared.options.disk.clone(),
                        source: io::Error::other(
                            "the splitter stopped before its vault could be opened (the intent log names \
                             the changes for the next start)",
                        ),
                    }),
                },
            })
        };
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(std::thread::spawn(move || catch_up(&shared, &stop)));
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
        {
            let mut queue = self.shared.lock();
            queue.stopping = true;
            // A point not released by now is none (its writes go on).
            self.shared.end_hold(&mut queue, false);
        }
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
    status.catch_up_bytes = queue.regions.refresh_bytes();
    status.write_latency = shared.write_latency.histogram();
    if let Some(oldest) = queue.oldest_unsealed {
        status.lag_seconds = (now_micros() - oldest).max(0) as f64 / 1e6;
    }
    status
}

/// Re-reads the regions whose changes were not queued, one at a time,
/// whenever the queue has room; records that the journal is exact again
/// when none is left.
fn catch_up(shared: &Shared, stop: &AtomicBool) {
    loop {
        let mut queue = shared.wait_for_room(dirty::REGION_BYTES);
        if stop.load(Ordering::Relaxed) || queue.stopping {
            return;
        }
        let Some(region) = queue.regions.take_refresh() else {
            if !queue.exact && !queue.journal_unknown {
                queue.exact = true;
                queue.initial_pass = false;
                shared.push(queue, Entry::Exact { time: now_micros() }, 0);
                let _ = shared.bookmark(PointKind::CrashConsistent, "caught up with the image", None);
                continue;
            }
            let timeout = Duration::from_millis(100);
            drop(shared.changed.wait_timeout(queue, timeout).unwrap_or_else(|p| p.into_inner()));
            continue;
        };
        let (offset, length) = queue.regions.range(region);
        // The region is read with no guest change to it half applied (and
        // none can start while the lock is held).
        while queue.applying.iter().any(|&(o, l)| overlap(o, l, offset, length)) {
            queue = shared.applied.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
        // A hole reads as zeros: nothing to read (a sparse image's first
        // pass costs next to nothing).
        let hole = shared.image.is_hole(offset, length).unwrap_or(false);
        let mut buffer = Vec::new();
        if !hole {
            buffer = shared.spare_buffer();
            buffer.truncate(length as usize);
            if let Err(e) = shared.read_image(offset, &mut buffer) {
                tracing::error!("catch-up could not read the image at {offset}: {e}");
                queue.regions.need_refresh_region(region);
                drop(queue);
                shared.recycle(buffer);
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        }
        let time = now_micros();
        if !hole && !standby_image::is_zero(&buffer) {
            queue.regions.queued(offset, length);
            shared.push(queue, Entry::Write { offset, data: buffer, time }, length);
            // The read is not worth keeping cached: it would crowd the
            // host's memory, and the guest's later writes into large cached
            // folios cost more than into cold ones.
            shared.image.forget_cached(offset, length);
            continue;
        }
        shared.recycle(buffer);
        if !hole {
            shared.image.forget_cached(offset, length);
        }
        if !queue.initial_pass {
            // The journal may hold data here from before.
            queue.regions.queued(offset, length);
            shared.push(queue, Entry::Zero { offset, length, time }, 0);
        } else {
            // An empty journal already reads zeros here: the region is level.
            queue.regions.queued(offset, length);
            queue.regions.sealed(offset, length);
        }
    }
}

/// Opens the vault of a splitter started without it, trying again every
/// [`VAULT_RETRY`] (the failure in `status` meanwhile) until it opens or the
/// splitter stops (`None`). Once open, a journal found empty makes every
/// region due for re-reading before the journal may be called exact.
fn open_vault(mut open: Box<dyn FnMut() -> Result<Vault, VaultError> + Send>, shared: &Shared) -> Option<Vault> {
    loop {
        let opened = open().and_then(|vault| {
            let empty = JournalWriter::open(&vault, &shared.options.disk)?.next_sequence() == 1;
            Ok((vault, empty))
        });
        match opened {
            Ok((vault, empty)) => {
                let mut queue = shared.lock();
                if empty {
                    (0..queue.regions.region_count()).for_each(|region| queue.regions.need_refresh_region(region));
                }
                queue.journal_unknown = false;
                drop(queue);
                shared.status.lock().unwrap_or_else(|p| p.into_inner()).error = None;
                shared.changed.notify_all();
                tracing::info!(
                    "the vault is open{}",
                    if empty { ": its journal is empty, re-reading all" } else { "" }
                );
                return Some(vault);
            }
            Err(e) => {
                let problem = format!("the vault cannot be opened (trying again every second): {e}");
                let mut status = shared.status.lock().unwrap_or_else(|p| p.into_inner());
                status.error = Some(problem);
                status.vault_errors += 1;
                drop(status);
                let queue = shared.lock();
                if queue.stopping {
                    return None;
                }
                drop(shared.changed.wait_timeout(queue, VAULT_RETRY).unwrap_or_else(|p| p.into_inner()));
            }
        }
    }
}

/// Bookmarks every `bookmark_interval`, unless the disk is in a group
/// (whose points are its bookmarks).
fn bookmarks(shared: &Shared, stop: &AtomicBool) {
    if shared.options.group.is_some() {
        return;
    }
    let mut next = Instant::now() + shared.options.bookmark_interval;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(shared.options.bookmark_interval));
        if Instant::now() >= next {
            let exact = shared.lock().exact;
            if exact {
                let _ = shared.bookmark(PointKind::CrashConsistent, "", None);
            }
            next = Instant::now() + shared.options.bookmark_interval;
        }
    }
}

/// A segment being stored by the sealer thread, and what waits for it.
struct Sealing {
    /// Ranges of its changes, released (intent log) once it is stored.
    ranges: Vec<(u64, u64)>,
    /// Marks answered once it is stored.
    replies: Vec<(u64, Sender<Result<u64, String>>)>,
    /// Back from a failed attempt, waiting to be retried.
    failed: Option<SealJob>,
}

/// Moves queued entries into the journal and seals segments: the shipper
/// compresses and appends while a sealer thread stores the previous
/// segment (one at a time, in order).
fn ship(vault: &Vault, shared: &Shared) -> Result<(), VaultError> {
    let (job_sender, jobs) = std::sync::mpsc::channel::<SealJob>();
    let (outcome_sender, outcomes) = std::sync::mpsc::channel::<(SealJob, Result<SealReport, VaultError>)>();
    replication_priority();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            replication_priority();
            for mut job in jobs {
                if let Some(delay) = faults::vault_delay() {
                    std::thread::sleep(delay);
                }
                let result = job.store(vault);
                if outcome_sender.send((job, result)).is_err() {
                    return;
                }
                shared.changed.notify_all();
            }
        });
        // Dropping the job sender (on any return) ends the sealer.
        ship_with(vault, shared, job_sender, &outcomes)
    })
}

fn ship_with(
    vault: &Vault,
    shared: &Shared,
    jobs: Sender<SealJob>,
    outcomes: &std::sync::mpsc::Receiver<(SealJob, Result<SealReport, VaultError>)>,
) -> Result<(), VaultError> {
    let mut shipper = Shipper {
        writer: JournalWriter::open(vault, &shared.options.disk)?,
        replies: Vec::new(),
        unsealed: Vec::new(),
        unsealed_since: None,
        open_since: None,
        sealing: None,
        retry_at: None,
    };
    let compressors = &compressor_pool();
    loop {
        let (entries, stopping, drained) = shipper.take_batch(shared);
        shared.changed.notify_all();
        shipper.append(shared, entries, compressors);
        let due = shipper.unsealed_since.is_some_and(|since| since.elapsed() >= shared.options.seal_interval)
            || shipper.writer.is_full()
            // A burst has ended: what it wrote need not wait for the interval.
            || (drained && shipper.writer.unsealed_bytes() >= BURST_SEAL_BYTES)
            || !shipper.replies.is_empty()
            || stopping;
        let may_try = shipper.retry_at.is_none_or(|at| Instant::now() >= at) || stopping;
        // The outcome of the segment being stored (waited for when stopping).
        let waiting = shipper.sealing.as_ref().is_some_and(|s| s.failed.is_none());
        let outcome = match (waiting, stopping) {
            (true, true) => outcomes.recv().ok(),
            (true, false) => outcomes.try_recv().ok(),
            (false, _) => None,
        };
        if let Some((job, result)) = outcome {
            match result {
                Ok(report) => shipper.sealed(shared, job, &report),
                Err(e) if stopping => return Err(e),
                Err(e) => shipper.seal_failed(shared, job, &e),
            }
        }
        shipper.seal(&jobs, due, may_try);
        if shipper.writer.unsealed_records() == 0 && shipper.sealing.is_none() {
            // Idle or just sealed: the collection bookkeeping of a long run.
            shipper.writer.maintain();
            if stopping {
                let mut queue = shared.lock();
                if queue.entries.is_empty() {
                    // A clean stop leaves only what truly may differ marked.
                    if let Err(e) = queue.regions.write_back(true) {
                        tracing::warn!("could not update the intent log: {e}");
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// The shipper's state between rounds: the journal writer with its open
/// segment, what that segment holds, and the segment being stored.
struct Shipper<'a> {
    writer: JournalWriter<'a>,
    /// Marks in the open segment, answered once it is stored.
    replies: Vec<(u64, Sender<Result<u64, String>>)>,
    /// Ranges of the changes in the open segment, released once it is sealed.
    unsealed: Vec<(u64, u64)>,
    unsealed_since: Option<Instant>,
    /// Time of the open segment's first change (for the lag).
    open_since: Option<i64>,
    sealing: Option<Sealing>,
    retry_at: Option<Instant>,
}

impl Shipper<'_> {
    /// The next batch of queued entries (unless the vault fails or the open
    /// segment is at its budget: then they stay queued, memory stays bounded
    /// and the queue fills, which turns guest writes into dirty-region
    /// tracking), whether the splitter is stopping, and whether the queue
    /// is now empty.
    fn take_batch(&self, shared: &Shared) -> (Vec<Entry>, bool, bool) {
        let mut queue = shared.lock();
        shared.expire_hold(&mut queue);
        let holding = self.retry_at.is_some_and(|at| Instant::now() < at)
            || self.writer.unsealed_bytes() >= shared.options.queue_bytes_max
            // The open pack is full and the last one is still being
            // stored: wait for it rather than grow the pack past its size.
            || (self.writer.is_full() && self.sealing.is_some());
        // A group point at the front waits for its release (or deadline).
        let pending = matches!(queue.entries.front(), Some(Entry::GroupPending { .. }));
        if (queue.entries.is_empty() || holding || pending) && !queue.stopping {
            let timeout = shared.options.seal_interval.min(Duration::from_millis(200));
            queue = shared.changed.wait_timeout(queue, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
        let mut entries: Vec<Entry> = Vec::new();
        if !holding || queue.stopping {
            // Batches of a few MiB: compressing one while the last one's
            // pack is sealed keeps packs near their target size.
            let mut room =
                shared.options.queue_bytes_max.saturating_sub(self.writer.unsealed_bytes()).min(BATCH_BYTES_MAX);
            while let Some(entry) = queue.entries.front() {
                if matches!(entry, Entry::GroupPending { .. }) && !queue.stopping {
                    // Its place is known, whether it is a point is not yet.
                    break;
                }
                let bytes = if let Entry::Write { data, .. } = entry { data.len() as u64 } else { 0 };
                if bytes > room && !entries.is_empty() {
                    break;
                }
                room = room.saturating_sub(bytes);
                queue.bytes -= bytes;
                entries.push(queue.entries.pop_front().expect("peeked"));
            }
        }
        (entries, queue.stopping, queue.entries.is_empty())
    }

    /// Appends `entries` to the open segment, in order; compression on
    /// every core only while the guest is quiet (on a small host, or
    /// hyperthreads, it slows the guest's own writes).
    fn append(&mut self, shared: &Shared, entries: Vec<Entry>, compressors: &rayon::ThreadPool) {
        let guest_quiet = now_micros() - shared.guest_changed_micros.load(Ordering::Relaxed) > GUEST_QUIET_MICROS;
        let prepared = prepare_writes(&self.writer, &entries, guest_quiet.then_some(compressors));
        for (entry, prepared) in entries.iter().zip(prepared) {
            match entry {
                Entry::Write { offset, data, time } => {
                    let prepared = prepared.expect("every write is prepared");
                    self.writer.append(prepared, *time);
                    self.unsealed.push((*offset, data.len() as u64));
                    self.open_since.get_or_insert(*time);
                }
                Entry::Zero { offset, length, time } => {
                    self.writer.zero(*offset, *length, *time);
                    self.unsealed.push((*offset, *length));
                    self.open_since.get_or_insert(*time);
                }
                Entry::Size { bytes, time } => {
                    self.writer.size(*bytes, *time);
                }
                Entry::Gap { time } => {
                    self.writer.gap(*time);
                }
                Entry::Exact { time } => {
                    self.writer.exact(*time);
                }
                Entry::Bookmark { kind, label, time, reply } => {
                    let sequence = self.writer.bookmark(*kind, label, *time);
                    if let Some(reply) = reply {
                        self.replies.push((sequence, reply.clone()));
                    }
                }
                // Only while stopping, when its hold was ended unreleased.
                Entry::GroupPending { .. } => {}
            }
            if self.writer.unsealed_records() > 0 && self.unsealed_since.is_none() {
                self.unsealed_since = Some(Instant::now());
            }
        }
        for entry in entries {
            if let Entry::Write { data, .. } = entry {
                shared.recycle(data);
            }
        }
        shared.status.lock().unwrap_or_else(|p| p.into_inner()).lag_bytes = self.writer.unsealed_bytes();
    }

    /// The segment being stored is in the vault: its changes leave the
    /// intent log, the lag restarts at the oldest change not sealed, its
    /// marks are answered.
    fn sealed(&mut self, shared: &Shared, job: SealJob, report: &SealReport) {
        self.writer.sealed(job);
        self.retry_at = None;
        let done = self.sealing.take().expect("a segment was being stored");
        {
            let mut queue = shared.lock();
            for (offset, length) in done.ranges {
                queue.regions.sealed(offset, length);
            }
            if let Err(e) = queue.regions.write_back(false) {
                tracing::warn!("could not update the intent log: {e}");
            }
            queue.oldest_unsealed = self.open_since.or_else(|| queue.entries.iter().find_map(Entry::change_time));
        }
        let mut status = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        status.sealed_sequence = report.last_sequence;
        status.sealed_time = Some(standby_vault::format_time(now_micros()));
        status.segments_sealed += 1;
        status.bytes_shipped += report.bytes_new;
        status.lag_bytes = self.writer.unsealed_bytes();
        status.error = None;
        drop(status);
        for (sequence, reply) in done.replies {
            let _ = reply.send(Ok(sequence));
        }
    }

    /// Storing the segment failed: reported, retried in a second, before
    /// any later segment.
    fn seal_failed(&mut self, shared: &Shared, job: SealJob, error: &VaultError) {
        tracing::warn!("sealing the journal failed, retrying: {error}");
        let mut status = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        status.error = Some(error.to_string());
        status.vault_errors += 1;
        drop(status);
        self.retry_at = Some(Instant::now() + Duration::from_secs(1));
        self.sealing.as_mut().expect("a segment was being stored").failed = Some(job);
    }

    /// Hands the sealer a failed segment again (once `may_try`), else the
    /// open segment when it is `due` and nothing is being stored.
    fn seal(&mut self, jobs: &Sender<SealJob>, due: bool, may_try: bool) {
        if let Some(current) = self.sealing.as_mut().filter(|s| s.failed.is_some()) {
            if may_try {
                let job = current.failed.take().expect("filtered");
                jobs.send(job).expect("the sealer runs as long as the shipper");
            }
        } else if self.sealing.is_none() && self.writer.unsealed_records() > 0 && due {
            let job = self.writer.take_seal().expect("records to seal");
            self.sealing = Some(Sealing {
                ranges: std::mem::take(&mut self.unsealed),
                replies: std::mem::take(&mut self.replies),
                failed: None,
            });
            self.unsealed_since = None;
            self.open_since = None;
            jobs.send(job).expect("the sealer runs as long as the shipper");
        }
    }
}

/// Every write's data passes through buffers of up to a few MiB (NBD
/// payloads, catch-up regions, frames, 16 MiB packs). glibc returns such
/// blocks to the kernel when freed, so the next one is faulted in and zeroed
/// again: a third of the shipper's CPU time in measurements. Keep them in
/// the process instead (memory stays bounded by the queue and the pack).
fn keep_freed_memory() {
    // SAFETY: mallopt only tunes glibc's allocator; failure keeps defaults.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// Write data the shipper takes from the queue at a time.
const BATCH_BYTES_MAX: u64 = 16 << 20;

/// An open segment holding this much write data is sealed as soon as the
/// queue runs dry, rather than at the next seal interval.
const BURST_SEAL_BYTES: u64 = 4 << 20;

/// Below this many bytes of writes in a batch, hashing and compressing on
/// the shipper's own thread is cheaper than handing them to the pool.
const PARALLEL_BYTES_MIN: usize = 256 << 10;
/// The guest counts as quiet when it has not written for this long.
const GUEST_QUIET_MICROS: i64 = 200_000;

/// Hashes and compresses the batch's writes: on the pool (every core) when
/// one is given and there is enough to share, else on this thread.
fn prepare_writes<'a>(
    writer: &JournalWriter,
    entries: &'a [Entry],
    compressors: Option<&rayon::ThreadPool>,
) -> Vec<Option<PreparedWrite<'a>>> {
    let prepare = |entry: &'a Entry| match entry {
        Entry::Write { offset, data, .. } => Some(writer.prepare(*offset, data)),
        _ => None,
    };
    let bytes: usize = entries.iter().map(|e| if let Entry::Write { data, .. } = e { data.len() } else { 0 }).sum();
    match compressors {
        Some(pool) if bytes >= PARALLEL_BYTES_MIN => {
            use rayon::prelude::*;
            pool.install(|| entries.par_iter().map(prepare).collect())
        }
        _ => entries.iter().map(prepare).collect(),
    }
}

/// Puts the calling thread (shipper, sealer, compressors) under
/// `SCHED_IDLE`: replication runs on CPU time the guest's writes do not
/// want. When the guest leaves none, the queue absorbs the backlog (and
/// beyond it, dirty-region tracking), and the lag says so.
fn replication_priority() {
    let parameters = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the calling thread's policy (Linux scheduling policies
    // are per thread); failure leaves the default policy.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &parameters) };
}

/// Threads that compress journal data, under `SCHED_IDLE`: they run on
/// CPU time nothing else wants, so the guest's writes never wait for
/// replication; when the guest leaves no CPU over, the queue absorbs the
/// backlog (and beyond it, dirty-region tracking).
fn compressor_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name(|i| format!("standby-compress-{i}"))
        .start_handler(|_| replication_priority())
        .build()
        .expect("a thread pool starts")
}
