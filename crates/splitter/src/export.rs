//! `export`: a recovery point served over NBD at once, without
//! materialising the disk. Reads come from the vault on demand (a
//! [`PointView`]); writes go to a local overlay file, so a drill or a
//! failover VM can boot and run while the vault stays untouched.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use standby_format::{encode_overlay_record, OverlayHeader, OverlayMap};
use standby_nbd::Export;
use standby_vault::view::PointView;

pub struct PointExport {
    view: PointView,
    overlay: File,
    /// `<overlay>.map`: the written ranges, appended at each flush.
    map: File,
    written: Mutex<Written>,
    /// Flushes one at a time: a flush answers for every write completed
    /// before it, including ranges another flush has taken but not yet stored.
    flushing: Mutex<()>,
}

#[derive(Default)]
struct Written {
    /// Ranges written through the export: start → end, never overlapping.
    ranges: BTreeMap<u64, u64>,
    /// Ranges written since the last flush, not yet in the map file.
    unflushed: Vec<(u64, u64)>,
}

/// Why an overlay could not be resumed.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("{0}")]
    Mismatch(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io(path: &Path) -> impl FnOnce(io::Error) -> OverlayError + '_ {
    move |source| OverlayError::Io { path: path.to_path_buf(), source }
}

/// The map file beside an overlay.
pub fn map_path(overlay: &Path) -> PathBuf {
    let mut name = overlay.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".map");
    overlay.with_file_name(name)
}

impl PointExport {
    /// Creates the overlay at `overlay` and its map (neither may exist yet).
    pub fn new(view: PointView, overlay: &Path, header: &OverlayHeader) -> Result<PointExport, OverlayError> {
        let map_path = map_path(overlay);
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(overlay).map_err(io(overlay))?;
        let created = (|| {
            file.set_len(view.size()).map_err(io(overlay))?;
            let mut map = OpenOptions::new().append(true).create_new(true).open(&map_path).map_err(io(&map_path))?;
            map.write_all(&header.encode()).map_err(io(&map_path))?;
            map.sync_all().map_err(io(&map_path))?;
            file.sync_all().map_err(io(overlay))?;
            if let Some(folder) = overlay.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(folder).and_then(|f| f.sync_all()).map_err(io(folder))?;
            }
            Ok(map)
        })();
        match created {
            Ok(map) => Ok(PointExport::with(view, file, map, Written::default())),
            Err(e) => {
                let _ = std::fs::remove_file(overlay);
                let _ = std::fs::remove_file(&map_path);
                Err(e)
            }
        }
    }

    /// Opens an overlay an earlier export of the same point left (stopped or
    /// killed): every write it flushed reads back.
    pub fn resume(view: PointView, overlay: &Path, header: &OverlayHeader) -> Result<PointExport, OverlayError> {
        let map_path = map_path(overlay);
        let bytes = std::fs::read(&map_path).map_err(io(&map_path))?;
        let decoded = OverlayMap::decode(&bytes).map_err(|e| {
            OverlayError::Mismatch(format!(
                "{} cannot be read ({e}); the overlay cannot be resumed",
                map_path.display()
            ))
        })?;
        if decoded.header != *header {
            return Err(OverlayError::Mismatch(format!(
                "the overlay {} holds writes to point {} of disk '{}'; export that point to resume it, or move the \
                 overlay and its .map away to start fresh",
                overlay.display(),
                decoded.header.point,
                decoded.header.disk
            )));
        }
        let file = OpenOptions::new().read(true).write(true).open(overlay).map_err(io(overlay))?;
        let length = file.metadata().map_err(io(overlay))?.len();
        if length != header.disk_bytes {
            return Err(OverlayError::Mismatch(format!(
                "the overlay {} is {length} bytes, not the disk's {}: it is not this export's overlay",
                overlay.display(),
                header.disk_bytes
            )));
        }
        let map = OpenOptions::new().append(true).open(&map_path).map_err(io(&map_path))?;
        if decoded.valid_bytes < bytes.len() {
            // The records of a flush that never completed.
            map.set_len(decoded.valid_bytes as u64).map_err(io(&map_path))?;
            map.sync_all().map_err(io(&map_path))?;
        }
        let mut written = Written::default();
        for (start, end) in decoded.ranges {
            written.insert(start, end);
        }
        Ok(PointExport::with(view, file, map, written))
    }

    fn with(view: PointView, overlay: File, map: File, written: Written) -> PointExport {
        PointExport { view, overlay, map, written: Mutex::new(written), flushing: Mutex::new(()) }
    }

    /// Bytes written through the export (and its earlier runs).
    pub fn written_bytes(&self) -> u64 {
        self.lock().ranges.iter().map(|(start, end)| end - start).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_written(&self, start: u64, end: u64) {
        let mut written = self.lock();
        written.insert(start, end);
        written.unflushed.push((start, end));
    }

    /// The parts of `[start, end)` that were written, in order.
    fn written_parts(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let written = self.lock();
        let first = written.ranges.range(..=start).next_back().map_or(start, |(&s, _)| s);
        written
            .ranges
            .range(first..end)
            .filter_map(|(&s, &e)| {
                let (from, to) = (s.max(start), e.min(end));
                (from < to).then_some((from, to))
            })
            .collect()
    }
}

impl Written {
    fn insert(&mut self, start: u64, end: u64) {
        let (mut start, mut end) = (start, end);
        // Merge with every range that touches [start, end].
        let touching: Vec<(u64, u64)> =
            self.ranges.range(..=end).rev().take_while(|(_, &e)| e >= start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }
}

fn vault_error(e: standby_vault::VaultError) -> io::Error {
    io::Error::other(e.to_string())
}

impl Export for PointExport {
    fn size(&self) -> u64 {
        self.view.size()
    }

    fn read(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let end = offset + buffer.len() as u64;
        let mut at = offset;
        for (from, to) in self.written_parts(offset, end).into_iter().chain([(end, end)]) {
            if at < from {
                self.view
                    .read(at, &mut buffer[(at - offset) as usize..(from - offset) as usize])
                    .map_err(vault_error)?;
            }
            if from < to {
                self.overlay.read_exact_at(&mut buffer[(from - offset) as usize..(to - offset) as usize], from)?;
            }
            at = to.max(at);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.overlay.write_all_at(data, offset)?;
        self.mark_written(offset, offset + data.len() as u64);
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, length: u64, _may_trim: bool, fua: bool) -> io::Result<()> {
        standby_image::zero_range(&self.overlay, offset, length)?;
        self.mark_written(offset, offset + length);
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    fn trim(&self, offset: u64, length: u64, fua: bool) -> io::Result<()> {
        self.write_zeroes(offset, length, true, fua)
    }

    /// The overlay's data first, then the ranges it holds: the map never
    /// names a range whose data is not durable.
    fn flush(&self) -> io::Result<()> {
        let _one_at_a_time = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let unflushed = std::mem::take(&mut self.lock().unflushed);
        let stored = (|| {
            self.overlay.sync_data()?;
            if unflushed.is_empty() {
                return Ok(());
            }
            let records: Vec<u8> =
                unflushed.iter().flat_map(|&(start, end)| encode_overlay_record(start, end)).collect();
            (&self.map).write_all(&records)?;
            self.map.sync_data()
        })();
        if stored.is_err() {
            // Try again at the next flush.
            let mut written = self.lock();
            let newer = std::mem::replace(&mut written.unflushed, unflushed);
            written.unflushed.extend(newer);
        }
        stored
    }
}
