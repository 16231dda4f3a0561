//! `sync`: one replication pass of a raw image into the vault, producing a
//! recovery point. The first pass of a disk stores everything; later passes
//! store only chunks the vault does not hold yet (found by content id, so
//! unchanged blocks, zeros and blocks shared with other disks cost nothing).
//!
//! Pipeline (three stages, bounded queues, so memory per sync is bounded):
//!
//! ```text
//! reader thread ──batches──▶ hash + compress (rayon, both cores) ──packs──▶ uploader thread
//! ```
//!
//! Commit order: every pack, then its index, then — after all uploads have
//! succeeded — the point manifest with a create-only put. A crash at any
//! moment leaves the previous points intact; leftovers are unreferenced packs
//! that `prune` collects.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use rayon::prelude::*;
use serde::Serialize;
use standby_format::{encode_frame, ChunkId, Codec, FrameKind, Keys, MapPage, PointKind, PointManifest};
use standby_image::{is_zero, Image};

use crate::backend::StorageError;
use crate::index::ChunkIndex;
use crate::lease::Lease;
use crate::packer::{store_pack, PackBuilder};
use crate::vault::{check_disk_name, point_path};
use crate::{format_time, Vault, VaultError};

/// Bytes of image read per batch.
const BATCH_BYTES: usize = 8 << 20;
/// Batches read ahead of the hashing stage.
const BATCHES_AHEAD: usize = 2;
/// New chunks adjacent on the disk are compressed together, as one frame,
/// up to this many raw bytes (docs/format.md: at level 2 this stores 2.5%
/// less than `zstd -1` of the whole image; single chunks store 3% more).
pub const FRAME_RAW_BYTES_TARGET: usize = 512 << 10;
/// Sealed packs queued for upload (plus those uploading).
const PACKS_QUEUED: usize = 1;
/// Packs uploaded at once: a put waits at least a round trip, so one at a
/// time leaves a distant vault's link idle for much of each (measured in
/// bench/hosts.py with a 50 ms round trip).
const UPLOADERS: usize = 3;
/// The zstd level of a batch compressed while uploaders wait for packs: the
/// CPU is the bottleneck then, and level 1 compresses a frame in 78% of
/// level 2's time for 4% more bytes (docs/format.md).
const CPU_BOUND_ZSTD_LEVEL: i32 = 1;

pub struct SyncOptions<'a> {
    pub kind: PointKind,
    pub label: String,
    /// Called with the number of image bytes just read.
    pub progress: &'a (dyn Fn(u64) + Sync),
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub disk: String,
    pub point: u64,
    pub time: String,
    pub kind: PointKind,
    pub label: String,
    pub first: bool,
    pub disk_bytes: u64,
    /// Size of the disk at the previous point, when it differs.
    pub disk_bytes_previous: Option<u64>,
    pub bytes_read: u64,
    /// Bytes of new objects written to the vault (packs, indexes, manifest).
    pub bytes_new: u64,
    pub chunks_total: u64,
    pub chunks_zero: u64,
    pub chunks_new: u64,
    pub packs_new: u64,
    pub elapsed_seconds: f64,
}

pub fn sync_image(
    vault: &Vault,
    image_path: &Path,
    disk: &str,
    options: SyncOptions,
) -> Result<SyncReport, VaultError> {
    let started = Instant::now();
    check_disk_name(disk)?;
    if options.label.len() > standby_format::LABEL_BYTES_MAX {
        return Err(VaultError::InvalidDiskName {
            name: disk.to_string(),
            reason: format!("label longer than {} bytes", standby_format::LABEL_BYTES_MAX),
        });
    }
    let image = Image::open(image_path, false)?;
    if image.bytes > standby_format::DISK_BYTES_MAX {
        return Err(VaultError::Image(standby_image::ImageError::NotAnImage { path: image.path.clone() }));
    }
    let sequences = vault.point_sequences(disk)?;
    let previous = match sequences.last() {
        Some((_, path)) => Some(vault.read_point(path)?),
        None => None,
    };
    let sequence = sequences.last().map_or(1, |(sequence, _)| sequence + 1);

    let mut lease = Lease::acquire(vault, "sync", disk)?;
    let config = vault.config();
    let chunks_total = PointManifest::chunk_count(image.bytes, config.chunk_bytes);
    let read = |offset: u64, buffer: &mut [u8]| image.read_at(buffer, offset).map_err(VaultError::from);
    let stored = store_disk(vault, image.bytes, &read, &mut lease, options.progress)?;
    let time_micros = crate::lease::now_micros();

    let manifest = PointManifest {
        sequence,
        time_micros,
        kind: options.kind,
        disk: disk.to_string(),
        label: options.label.clone(),
        disk_bytes: image.bytes,
        chunk_bytes: config.chunk_bytes,
        page_entries: config.page_entries,
        bytes_read: image.bytes,
        bytes_new: stored.bytes_new,
        pages: stored.pages,
    };
    let sealed = manifest.seal(vault.keys());
    let manifest_bytes = sealed.len() as u64;
    match vault.backend().put_new(&point_path(disk, sequence), Bytes::from(sealed)) {
        Ok(()) => {}
        Err(StorageError::AlreadyExists { .. }) => {
            return Err(VaultError::ConcurrentSync { disk: disk.to_string(), sequence });
        }
        Err(e) => return Err(e.into()),
    }
    lease.release()?;

    Ok(SyncReport {
        disk: disk.to_string(),
        point: sequence,
        time: format_time(time_micros),
        kind: options.kind,
        label: options.label,
        first: previous.is_none(),
        disk_bytes: image.bytes,
        disk_bytes_previous: previous.map(|p| p.disk_bytes).filter(|&bytes| bytes != image.bytes),
        bytes_read: image.bytes,
        bytes_new: stored.bytes_new + manifest_bytes,
        chunks_total,
        chunks_zero: stored.chunks_zero,
        chunks_new: stored.chunks_new,
        packs_new: stored.packs_new,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Reads bytes of a disk at an offset, filling every byte of the buffer: an
/// image, or a point of the journal.
pub(crate) type ReadAt<'a> = dyn Fn(u64, &mut [u8]) -> Result<(), VaultError> + Sync + 'a;

/// A disk's chunks stored in the vault: the map pages a manifest lists.
pub(crate) struct StoredDisk {
    pub pages: Vec<ChunkId>,
    pub chunks_zero: u64,
    pub chunks_new: u64,
    pub packs_new: u64,
    /// Bytes of new packs and indexes.
    pub bytes_new: u64,
}

/// Reads a disk of `disk_bytes` through `read` (offset, buffer) and stores
/// every chunk the vault lacks, in packs, with the map pages listing them;
/// the caller publishes the manifest. Used by `sync` (reading an image) and
/// by journal compaction (reading a point of the journal).
pub(crate) fn store_disk(
    vault: &Vault,
    disk_bytes: u64,
    read: &ReadAt,
    lease: &mut Lease,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<StoredDisk, VaultError> {
    let excluded = crate::collection::collection_candidates(vault)?;
    let index = ChunkIndex::load(vault, &excluded)?;

    let config = vault.config();
    let chunk_bytes = config.chunk_bytes as usize;
    let chunks_total = PointManifest::chunk_count(disk_bytes, config.chunk_bytes);
    let batch_chunks = (BATCH_BYTES / chunk_bytes).max(1);

    let idle_uploaders = AtomicUsize::new(0);
    let mut state = Assembler {
        vault,
        keys: vault.keys().clone(),
        level: config.zstd_level,
        compression: Compression { configured: config.zstd_level, idle_uploaders: &idle_uploaders },
        index: &index,
        pending: HashSet::new(),
        pack: PackBuilder::new(vault.keys().encrypted()),
        page: Vec::with_capacity(config.page_entries as usize),
        pages: Vec::new(),
        chunks_zero: 0,
        chunks_new: 0,
    };
    let uploaded = Mutex::new(Uploaded::default());

    let (pack_sender, pack_receiver) = sync_channel::<PackBuilder>(PACKS_QUEUED);
    let pack_receiver = Mutex::new(Some(pack_receiver));
    let lease = Mutex::new(lease);
    std::thread::scope(|scope| -> Result<(), VaultError> {
        let (batch_sender, batch_receiver) = sync_channel::<Result<(u64, Vec<u8>), VaultError>>(BATCHES_AHEAD);
        let (recycle, recycled) = sync_channel::<Vec<u8>>(BATCHES_AHEAD + 1);
        scope.spawn(move || read_batches(read, disk_bytes, chunk_bytes, batch_chunks, batch_sender, recycled));
        let uploaders: Vec<_> = (0..UPLOADERS)
            .map(|_| scope.spawn(|| upload_packs(vault, &pack_receiver, &uploaded, &lease, &idle_uploaders)))
            .collect();

        let result = (|| -> Result<(), VaultError> {
            for batch in batch_receiver.iter() {
                let (first_chunk, buffer) = batch?;
                state.add_batch(first_chunk, &buffer, chunks_total, &pack_sender)?;
                progress(buffer.len() as u64);
                // The reader's next batch reuses it (fresh 8 MiB buffers cost
                // a zeroing or a page fault per 4 KiB).
                let _ = recycle.try_send(buffer);
            }
            state.finish_page(&pack_sender)?;
            let last = std::mem::replace(&mut state.pack, PackBuilder::new(vault.keys().encrypted()));
            if !last.entries.is_empty() {
                send_pack(&pack_sender, last)?;
            }
            Ok(())
        })();
        drop(pack_sender);
        let upload_results: Vec<_> =
            uploaders.into_iter().map(|uploader| uploader.join().expect("an uploader does not panic")).collect();
        // An upload failure is the root cause of any "uploader stopped" error.
        upload_results.into_iter().collect::<Result<(), _>>()?;
        result
    })?;
    let uploaded = uploaded.into_inner().expect("uploader finished");
    Ok(StoredDisk {
        pages: state.pages,
        chunks_zero: state.chunks_zero,
        chunks_new: state.chunks_new,
        packs_new: uploaded.packs,
        bytes_new: uploaded.bytes,
    })
}

/// Reads the disk in batches of whole chunks, in order, into buffers the
/// assembler hands back when it can.
fn read_batches(
    read: &ReadAt,
    disk_bytes: u64,
    chunk_bytes: usize,
    batch_chunks: usize,
    sender: SyncSender<Result<(u64, Vec<u8>), VaultError>>,
    recycled: Receiver<Vec<u8>>,
) {
    let batch_bytes = (chunk_bytes * batch_chunks) as u64;
    let mut offset = 0u64;
    while offset < disk_bytes {
        let len = (disk_bytes - offset).min(batch_bytes) as usize;
        let mut buffer = recycled.try_recv().unwrap_or_default();
        buffer.resize(len, 0);
        let result = read(offset, &mut buffer).map(|()| (offset / chunk_bytes as u64, buffer));
        let failed = result.is_err();
        if sender.send(result).is_err() || failed {
            return;
        }
        offset += len as u64;
    }
}

/// Collects chunk ids into pages and new frames into packs.
struct Assembler<'a> {
    vault: &'a Vault,
    keys: Keys,
    /// The vault's level, for map pages.
    level: i32,
    /// The level of data frames.
    compression: Compression<'a>,
    index: &'a ChunkIndex,
    /// Chunks stored by this sync so far.
    pending: HashSet<ChunkId>,
    pack: PackBuilder,
    page: Vec<ChunkId>,
    pages: Vec<ChunkId>,
    chunks_zero: u64,
    chunks_new: u64,
}

impl Assembler<'_> {
    fn add_batch(
        &mut self,
        first_chunk: u64,
        buffer: &[u8],
        chunks_total: u64,
        packs: &SyncSender<PackBuilder>,
    ) -> Result<(), VaultError> {
        let chunk_bytes = self.vault.config().chunk_bytes as usize;
        let keys = &self.keys;
        let ids: Vec<ChunkId> = buffer
            .par_chunks(chunk_bytes)
            .map(|chunk| if is_zero(chunk) { ChunkId::ZERO } else { keys.chunk_id(chunk) })
            .collect();
        debug_assert!(first_chunk + ids.len() as u64 <= chunks_total);
        let mut new: Vec<usize> = Vec::new();
        for (position, id) in ids.iter().enumerate() {
            if id.is_zero() {
                self.chunks_zero += 1;
            } else if !self.index.contains(id) && self.pending.insert(*id) {
                new.push(position);
            }
        }
        // Runs of new chunks adjacent on the disk become one frame each.
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        for position in new {
            match runs.last_mut() {
                Some(run) if run.end == position && (run.len() + 1) * chunk_bytes <= FRAME_RAW_BYTES_TARGET => {
                    run.end += 1;
                }
                _ => runs.push(position..position + 1),
            }
        }
        let level = self.compression.level();
        let raw_of =
            |run: &std::ops::Range<usize>| &buffer[run.start * chunk_bytes..(run.end * chunk_bytes).min(buffer.len())];
        let frames: Vec<(Vec<u8>, Codec)> = runs.par_iter().map(|run| encode_frame(raw_of(run), level, keys)).collect();
        let mut frames = runs.iter().zip(frames).peekable();
        for (position, id) in ids.iter().enumerate() {
            if frames.peek().is_some_and(|(run, _)| run.start == position) {
                let (run, (frame, codec)) = frames.next().expect("peeked");
                let chunks: Vec<(ChunkId, u32)> =
                    run.clone().map(|p| (ids[p], ((buffer.len() - p * chunk_bytes).min(chunk_bytes)) as u32)).collect();
                self.chunks_new += chunks.len() as u64;
                self.add_frame(&frame, codec, &chunks, FrameKind::Data, packs)?;
            }
            self.page.push(*id);
            if self.page.len() == self.vault.config().page_entries as usize {
                self.finish_page(packs)?;
            }
        }
        Ok(())
    }

    /// Adds a frame holding `chunks` (id, raw length), in order.
    fn add_frame(
        &mut self,
        frame: &[u8],
        codec: Codec,
        chunks: &[(ChunkId, u32)],
        kind: FrameKind,
        packs: &SyncSender<PackBuilder>,
    ) -> Result<(), VaultError> {
        if self.pack.would_overflow(frame.len()) {
            let full = std::mem::replace(&mut self.pack, PackBuilder::new(self.keys.encrypted()));
            send_pack(packs, full)?;
        }
        self.pack.add(frame, codec, chunks, kind);
        Ok(())
    }

    /// Closes the current page; the last page of a disk may be partial.
    fn finish_page(&mut self, packs: &SyncSender<PackBuilder>) -> Result<(), VaultError> {
        if self.page.is_empty() {
            return Ok(());
        }
        let page = MapPage { entries: std::mem::take(&mut self.page) };
        if page.is_all_zero() {
            self.pages.push(ChunkId::ZERO);
            return Ok(());
        }
        let encoded = page.encode();
        let id = self.keys.chunk_id(&encoded);
        if !self.index.contains(&id) && self.pending.insert(id) {
            let (frame, codec) = encode_frame(&encoded, self.level, &self.keys);
            self.add_frame(&frame, codec, &[(id, encoded.len() as u32)], FrameKind::Page, packs)?;
        }
        self.pages.push(id);
        Ok(())
    }
}

fn send_pack(sender: &SyncSender<PackBuilder>, pack: PackBuilder) -> Result<(), VaultError> {
    // The uploader only hangs up after an error, which it reports itself.
    sender.send(pack).map_err(|_| VaultError::damaged("upload", "the uploader stopped"))
}

#[derive(Default)]
struct Uploaded {
    packs: u64,
    bytes: u64,
}

/// Chooses the zstd level of each batch by where the bottleneck is, as
/// `zstd --adapt` does: while an uploader waits for a pack the vault keeps
/// up and compression is what the sync waits for, so a faster level moves
/// the image sooner; while every uploader is busy the link (or the vault's
/// disk) is the limit and the vault's own level stores fewer bytes for CPU
/// that would otherwise wait. Frames say nothing of their level: restore
/// reads both alike.
struct Compression<'a> {
    configured: i32,
    idle_uploaders: &'a AtomicUsize,
}

impl Compression<'_> {
    fn level(&self) -> i32 {
        if self.idle_uploaders.load(Ordering::Relaxed) > 0 {
            self.configured.min(CPU_BOUND_ZSTD_LEVEL)
        } else {
            self.configured
        }
    }
}

/// Uploads packs in order as the assembler seals them, counted in `idle`
/// while waiting for one.
fn upload_packs(
    vault: &Vault,
    receiver: &Mutex<Option<Receiver<PackBuilder>>>,
    uploaded: &Mutex<Uploaded>,
    lease: &Mutex<&mut Lease>,
    idle: &AtomicUsize,
) -> Result<(), VaultError> {
    loop {
        idle.fetch_add(1, Ordering::Relaxed);
        let next = receiver.lock().expect("not poisoned").as_ref().map(|receiver| receiver.recv());
        idle.fetch_sub(1, Ordering::Relaxed);
        let Some(Ok(pack)) = next else { return Ok(()) };
        let stored = store_pack(vault, &pack).and_then(|bytes| {
            let mut totals = uploaded.lock().expect("not poisoned");
            totals.packs += 1;
            totals.bytes += bytes;
            drop(totals);
            lease.lock().expect("not poisoned").refresh_if_due()
        });
        if let Err(e) = stored {
            // The reader stops at its next pack, the other uploaders too.
            receiver.lock().expect("not poisoned").take();
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_compressed_faster_only_while_an_uploader_waits() {
        let idle = AtomicUsize::new(0);
        let compression = Compression { configured: 3, idle_uploaders: &idle };
        assert_eq!(compression.level(), 3, "every uploader busy: the vault's level");
        idle.store(2, Ordering::Relaxed);
        assert_eq!(compression.level(), CPU_BOUND_ZSTD_LEVEL);
        idle.store(0, Ordering::Relaxed);
        assert_eq!(compression.level(), 3);

        let negative = Compression { configured: -2, idle_uploaders: &AtomicUsize::new(1) };
        assert_eq!(negative.level(), -2, "a level already faster is kept");
    }
}
