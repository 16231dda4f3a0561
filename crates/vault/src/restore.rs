//! `restore`: materialise a recovery point as a raw image. The image is
//! written to `<OUT>.standby-partial`, fsynced, and renamed to OUT only when
//! every chunk has been read and checked, so a failed restore leaves nothing
//! that looks like a disk. Zero blocks are holes (the file is sparse).
//!
//! Reads are grouped per pack and coalesced into ranged gets of up to
//! [`READ_BYTES_MAX`], decoded on both cores.

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use standby_format::{ChunkId, MapPage, PackId, PointManifest};

use crate::index::{read_pack_range, ChunkIndex, ChunkLocation};
use crate::lease::Lease;
use crate::{format_time, Vault, VaultError};

/// Largest single ranged get.
const READ_BYTES_MAX: u64 = 8 << 20;
/// Frames closer than this are fetched in one get (the gap is read and dropped).
const READ_GAP_BYTES_MAX: u64 = 256 << 10;
const _: () = assert!(READ_GAP_BYTES_MAX < READ_BYTES_MAX);
/// Map pages planned together (16 pages of 4096 64 KiB chunks: 4 GiB of
/// disk): bounds the plan's memory while giving both cores work across
/// page boundaries.
const WINDOW_PAGES: usize = 16;

pub struct RestoreOptions<'a> {
    /// Replace OUT if it exists.
    pub force: bool,
    /// Called with the number of disk bytes just restored.
    pub progress: &'a (dyn Fn(u64) + Sync),
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub disk: String,
    pub point: u64,
    pub time: String,
    pub output: String,
    pub disk_bytes: u64,
    /// Bytes of non-zero data written.
    pub bytes_written: u64,
    /// Bytes fetched from the vault.
    pub bytes_fetched: u64,
    pub elapsed_seconds: f64,
}

pub fn restore_point(
    vault: &Vault,
    point: &PointManifest,
    output: &Path,
    options: RestoreOptions,
) -> Result<RestoreReport, VaultError> {
    let started = Instant::now();
    if output.is_dir() {
        return Err(VaultError::OutputExists { path: format!("{} (a directory)", output.display()) });
    }
    if output.exists() && !options.force {
        return Err(VaultError::OutputExists { path: output.display().to_string() });
    }
    let partial = partial_path(output);
    let lease = Lease::acquire(vault, "restore", &point.disk)?;
    let result = restore_into(vault, point, &partial, &options);
    let outcome = result.and_then(|(written, fetched)| {
        std::fs::rename(&partial, output).map_err(|e| io_error("rename into place", output, e))?;
        if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("sync folder of", output, e))?;
        }
        Ok((written, fetched))
    });
    let (bytes_written, bytes_fetched) = match outcome {
        Ok(totals) => totals,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    lease.release()?;
    Ok(RestoreReport {
        disk: point.disk.clone(),
        point: point.sequence,
        time: format_time(point.time_micros),
        output: output.display().to_string(),
        disk_bytes: point.disk_bytes,
        bytes_written,
        bytes_fetched,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Creates (or empties) the partial file a restore writes into.
pub(crate) fn create_partial(partial: &Path) -> Result<std::fs::File, VaultError> {
    OpenOptions::new().write(true).create(true).truncate(true).open(partial).map_err(|e| io_error("create", partial, e))
}

pub(crate) fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".standby-partial");
    output.with_file_name(name)
}

pub(crate) fn io_error(operation: &'static str, path: &Path, source: std::io::Error) -> VaultError {
    VaultError::Io { operation, path: path.display().to_string(), source }
}

/// One chunk to put on the disk: its id, where it lives, and the disk
/// offsets it fills (a chunk may repeat on a disk).
type Placement = (ChunkId, ChunkLocation, Vec<u64>);

/// One ranged get: a run of frames of one pack, each with the chunks the
/// window needs from it.
struct Read {
    pack: PackId,
    start: u64,
    end: u64,
    frames: Vec<Vec<Placement>>,
}

fn restore_into(
    vault: &Vault,
    point: &PointManifest,
    partial: &Path,
    options: &RestoreOptions,
) -> Result<(u64, u64), VaultError> {
    let file = create_partial(partial)?;
    file.set_len(point.disk_bytes).map_err(|e| io_error("size", partial, e))?;
    let index = ChunkIndex::load(vault, &HashSet::new())?;
    let totals = write_point(vault, &index, point, &file, partial, options.progress)?;
    file.sync_all().map_err(|e| io_error("flush", partial, e))?;
    Ok(totals)
}

/// Writes the chunks of `point` into `file` (already sized; zero chunks are
/// left as they are); returns bytes written and bytes fetched.
pub(crate) fn write_point(
    vault: &Vault,
    index: &ChunkIndex,
    point: &PointManifest,
    file: &std::fs::File,
    partial: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(u64, u64), VaultError> {
    let chunk_bytes = u64::from(point.chunk_bytes);
    let mut written = 0u64;
    let mut fetched = 0u64;
    let what = format!("chunk of {} point {}", point.disk, point.sequence);
    let page_numbers: Vec<usize> = (0..point.pages.len()).collect();
    for window in page_numbers.chunks(WINDOW_PAGES) {
        // Pages of the window, read in parallel; all-zero pages are holes already.
        let pages: Vec<(usize, MapPage)> = window
            .par_iter()
            .filter(|&&number| !point.pages[number].is_zero())
            .map(|&number| {
                let page = index.read_page(vault, &point.pages[number], point.entries_in_page(number))?;
                Ok((number, page))
            })
            .collect::<Result<_, VaultError>>()?;
        // Every chunk of the window ordered by where it is stored, so each
        // frame is fetched and decoded once however often the disk repeats
        // its chunks.
        let mut by_location: BTreeMap<(PackId, u32, u32), Placement> = BTreeMap::new();
        for (number, page) in &pages {
            let first_chunk = *number as u64 * u64::from(point.page_entries);
            for (position, id) in page.entries.iter().enumerate() {
                if id.is_zero() {
                    continue;
                }
                let location = *index.locate(id, &what)?;
                let disk_offset = (first_chunk + position as u64) * chunk_bytes;
                by_location
                    .entry((location.pack, location.frame_offset, location.raw_offset))
                    .or_insert_with(|| (*id, location, Vec::new()))
                    .2
                    .push(disk_offset);
            }
        }
        let reads = plan_reads(by_location.into_values());
        let totals: Vec<(u64, u64)> = reads
            .par_iter()
            .map(|read| {
                let totals = execute_read(vault, read, file, partial)?;
                progress(totals.0);
                Ok(totals)
            })
            .collect::<Result<_, VaultError>>()?;
        let window_written: u64 = totals.iter().map(|t| t.0).sum();
        written += window_written;
        fetched += totals.iter().map(|t| t.1).sum::<u64>();
        // Zero chunks count as restored too.
        let window_bytes: u64 = window
            .iter()
            .map(|&number| {
                let first = number as u64 * u64::from(point.page_entries);
                (0..u64::from(point.entries_in_page(number)))
                    .map(|i| u64::from(point.chunk_len(first + i)))
                    .sum::<u64>()
            })
            .sum();
        progress(window_bytes.saturating_sub(window_written));
    }
    Ok((written, fetched))
}

fn plan_reads(chunks: impl Iterator<Item = Placement>) -> Vec<Read> {
    let mut reads: Vec<Read> = Vec::new();
    for placement in chunks {
        let location = placement.1;
        let start = u64::from(location.frame_offset);
        let end = start + u64::from(location.frame_len);
        if let Some(read) = reads.last_mut() {
            let frame = read.frames.last_mut().expect("a read has a frame");
            if read.pack == location.pack && frame[0].1.frame_offset == location.frame_offset {
                frame.push(placement);
                continue;
            }
            if read.pack == location.pack
                && start >= read.end
                && start - read.end <= READ_GAP_BYTES_MAX
                && end - read.start <= READ_BYTES_MAX
            {
                read.end = end;
                read.frames.push(vec![placement]);
                continue;
            }
        }
        reads.push(Read { pack: location.pack, start, end, frames: vec![vec![placement]] });
    }
    reads
}

fn execute_read(vault: &Vault, read: &Read, file: &std::fs::File, partial: &Path) -> Result<(u64, u64), VaultError> {
    let bytes = read_pack_range(vault, &read.pack, read.start..read.end)?;
    let mut written = 0u64;
    let (mut low, mut high) = (u64::MAX, 0u64);
    for chunks in &read.frames {
        let frame = &chunks[0].1;
        let from = (u64::from(frame.frame_offset) - read.start) as usize;
        let decoded = frame.decode_frame(&bytes[from..from + frame.frame_len as usize], vault)?;
        for (id, location, offsets) in chunks {
            let raw = location.chunk(&decoded, id, vault)?;
            for &offset in offsets {
                file.write_all_at(raw, offset).map_err(|e| io_error("write", partial, e))?;
                written += raw.len() as u64;
                low = low.min(offset);
                high = high.max(offset + raw.len() as u64);
            }
        }
    }
    // Writeback starts now rather than at the final fsync, so the disk works
    // while both cores decode.
    if low < high {
        standby_image::start_writeback(file, low, high - low);
    }
    Ok((written, read.end - read.start))
}
