//! `export`: a recovery point served over NBD at once, without
//! materialising the disk. Reads come from the vault on demand (a
//! [`PointView`]); writes go to a local overlay file, so a drill or a
//! failover VM can boot and run while the vault stays untouched.
//!
//! Hydration ([`PointExport::hydrate`], `standby export --hydrate`): a
//! background pass copies the point into the overlay, region by region,
//! until the export no longer reads the vault at all. The overlay then
//! holds the whole disk; the ranges the guest wrote stay apart from the
//! ranges hydrated (`<overlay>.map` and `<overlay>.hydrated`), because the
//! written ones are what a reprotect ships. A region is copied under the
//! lock guest writes take to announce themselves, and only where no guest
//! write landed or is landing, so a hydration never puts the point's older
//! data over a newer write. Hydrated ranges are recorded only once their
//! data is durable. An export started again on its overlay hydrates from
//! the start: a write the guest never flushed may have landed in a
//! hydrated range before a crash, and only a fresh copy of the point
//! makes the overlay agree with the maps (and with what reprotect ships).

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
    /// `<overlay>.hydrated` and the header it starts with.
    hydrated_path: PathBuf,
    header: OverlayHeader,
}

#[derive(Default)]
struct Written {
    /// Ranges written through the export.
    ranges: Ranges,
    /// Ranges written since the last flush, not yet in the map file.
    unflushed: Vec<(u64, u64)>,
    /// Ranges copied from the point by hydration (durable ones and those
    /// waiting for the next sync): never overlapping.
    hydrated: Ranges,
    /// Guest writes under way (announced before their data lands).
    landing: Vec<(u64, u64)>,
}

/// Non-overlapping ranges, start → end.
#[derive(Default)]
struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    fn insert(&mut self, start: u64, end: u64) {
        let (mut start, mut end) = (start, end);
        let touching: Vec<(u64, u64)> =
            self.0.range(..=end).rev().take_while(|(_, &e)| e >= start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touching {
            self.0.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    /// The parts of `[start, end)` these ranges cover, in order.
    fn parts(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let first = self.0.range(..=start).next_back().map_or(start, |(&s, _)| s);
        self.0
            .range(first..end)
            .filter_map(|(&s, &e)| {
                let (from, to) = (s.max(start), e.min(end));
                (from < to).then_some((from, to))
            })
            .collect()
    }

    fn bytes(&self) -> u64 {
        self.0.iter().map(|(start, end)| end - start).sum()
    }
}

/// `parts` (sorted by start) with overlapping and touching ones joined.
fn merge(parts: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in parts {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// `[start, end)` minus `taken` (sorted, non-overlapping parts of it).
fn subtract(start: u64, end: u64, taken: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut free = Vec::new();
    let mut at = start;
    for &(from, to) in taken {
        if at < from {
            free.push((at, from));
        }
        at = at.max(to);
    }
    if at < end {
        free.push((at, end));
    }
    free
}

/// Bytes hydration copies at a time.
const HYDRATE_REGION: u64 = 4 << 20;
/// Regions between two syncs of hydrated data.
const HYDRATE_SYNC_EVERY: u64 = 16;

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

/// Whether the overlay at `overlay` holds the whole disk: its written and
/// hydrated ranges (as recorded, durable) cover all `disk_bytes`.
pub fn fully_hydrated(overlay: &Path) -> io::Result<bool> {
    Ok(local_bytes(overlay)?.is_some_and(|(local, disk)| local == disk))
}

/// How much of the disk the overlay at `overlay` holds (written or
/// hydrated, as recorded, durable) and the disk's size; `None` without
/// both maps.
pub fn local_bytes(overlay: &Path) -> io::Result<Option<(u64, u64)>> {
    let read = |path: PathBuf| -> io::Result<Option<OverlayMap>> {
        match std::fs::read(&path) {
            Ok(bytes) => Ok(OverlayMap::decode(&bytes).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    let (Some(written), Some(hydrated)) = (read(map_path(overlay))?, read(hydrated_path(overlay))?) else {
        return Ok(None);
    };
    if written.header != hydrated.header {
        return Ok(None);
    }
    let mut local = Ranges::default();
    for (start, end) in written.ranges.into_iter().chain(hydrated.ranges) {
        local.insert(start, end);
    }
    let disk = written.header.disk_bytes;
    Ok(Some((local.parts(0, disk).iter().map(|(start, end)| end - start).sum(), disk)))
}

/// Every file of an overlay: its map, its hydrated ranges, itself.
pub fn overlay_files(overlay: &Path) -> [PathBuf; 3] {
    [map_path(overlay), hydrated_path(overlay), overlay.to_path_buf()]
}

/// The hydrated-ranges file beside an overlay.
pub fn hydrated_path(overlay: &Path) -> PathBuf {
    let mut name = overlay.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".hydrated");
    overlay.with_file_name(name)
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
        // Left by an overlay set aside without it: it describes nothing here.
        let _ = std::fs::remove_file(hydrated_path(overlay));
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
            Ok(map) => Ok(PointExport::with(view, file, map, Written::default(), overlay, header)),
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
            written.ranges.insert(start, end);
        }
        // An earlier hydration is started over: a guest write that was
        // never flushed may have landed in a hydrated range, and only a
        // fresh copy of the point puts it back to what the maps say.
        let hydrated = hydrated_path(overlay);
        match std::fs::remove_file(&hydrated) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(&hydrated)(e)),
            _ => {}
        }
        Ok(PointExport::with(view, file, map, written, overlay, header))
    }

    fn with(
        view: PointView,
        overlay: File,
        map: File,
        written: Written,
        overlay_path: &Path,
        header: &OverlayHeader,
    ) -> PointExport {
        PointExport {
            view,
            overlay,
            map,
            written: Mutex::new(written),
            flushing: Mutex::new(()),
            hydrated_path: hydrated_path(overlay_path),
            header: header.clone(),
        }
    }

    /// Bytes of the disk held locally (written or hydrated), and its size.
    pub fn local_bytes(&self) -> (u64, u64) {
        let size = self.view.size();
        let local = self.lock().local(0, size).iter().map(|(start, end)| end - start).sum();
        (local, size)
    }

    /// Copies the point into the overlay until every byte is local (or
    /// `stop` is set), reporting progress as (local bytes, size) after each
    /// sync, waiting `pace` after each region (zero but in tests that watch
    /// a hydration under way). Guest I/O goes on meanwhile; see the
    /// module's notes.
    pub fn hydrate(
        &self,
        stop: &std::sync::atomic::AtomicBool,
        pace: std::time::Duration,
        mut progress: impl FnMut(u64, u64),
    ) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let size = self.view.size();
        let mut map = OpenOptions::new().append(true).create(true).open(&self.hydrated_path)?;
        if map.metadata()?.len() == 0 {
            map.write_all(&self.header.encode())?;
            map.sync_all()?;
        }
        let mut unsynced: Vec<(u64, u64)> = Vec::new();
        let mut buffer = vec![0u8; HYDRATE_REGION as usize];
        let mut regions = 0;
        let mut start = 0;
        while start < size && !stop.load(Ordering::Relaxed) {
            let end = (start + HYDRATE_REGION).min(size);
            let missing = subtract(start, end, &self.lock().local(start, end));
            if !missing.is_empty() {
                let region = &mut buffer[..(end - start) as usize];
                self.view.read(start, region).map_err(vault_error)?;
                let written = &mut *self.lock();
                // Again, under the lock: what the guest wrote or is writing
                // since is left alone.
                let mut taken = written.local(start, end);
                taken.extend(
                    written
                        .landing
                        .iter()
                        .filter(|(s, e)| *s < end && *e > start)
                        .map(|&(s, e)| (s.max(start), e.min(end))),
                );
                taken.sort_unstable();
                for (from, to) in subtract(start, end, &merge(taken)) {
                    let data = &region[(from - start) as usize..(to - start) as usize];
                    if standby_image::is_zero(data) {
                        // Stale bytes of a write never flushed may be there.
                        standby_image::zero_range(&self.overlay, from, to - from)?;
                    } else {
                        self.overlay.write_all_at(data, from)?;
                    }
                    written.hydrated.insert(from, to);
                    unsynced.push((from, to));
                }
            }
            start = end;
            regions += 1;
            std::thread::sleep(pace);
            if regions % HYDRATE_SYNC_EVERY == 0 || start >= size {
                self.sync_hydrated(&mut map, &mut unsynced)?;
                let (local, size) = self.local_bytes();
                progress(local, size);
            }
        }
        self.sync_hydrated(&mut map, &mut unsynced)
    }

    /// Makes hydrated data durable, then records its ranges.
    fn sync_hydrated(&self, map: &mut File, unsynced: &mut Vec<(u64, u64)>) -> io::Result<()> {
        if unsynced.is_empty() {
            return Ok(());
        }
        self.overlay.sync_data()?;
        let records: Vec<u8> = unsynced.iter().flat_map(|&(start, end)| encode_overlay_record(start, end)).collect();
        map.write_all(&records)?;
        map.sync_data()?;
        unsynced.clear();
        Ok(())
    }

    /// Bytes written through the export (and its earlier runs).
    pub fn written_bytes(&self) -> u64 {
        self.lock().ranges.bytes()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A guest write of `[start, end)`: announced (so hydration leaves the
    /// range alone), landed in the overlay, then marked written.
    fn landing(&self, start: u64, end: u64, land: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        self.lock().landing.push((start, end));
        let landed = land();
        let mut written = self.lock();
        if let Some(position) = written.landing.iter().position(|&range| range == (start, end)) {
            written.landing.swap_remove(position);
        }
        landed?;
        written.ranges.insert(start, end);
        written.unflushed.push((start, end));
        Ok(())
    }
}

impl Written {
    /// The parts of `[start, end)` held in the overlay (written or
    /// hydrated), in order, joined.
    fn local(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut parts = self.hydrated.parts(start, end);
        parts.extend(self.ranges.parts(start, end));
        parts.sort_unstable();
        merge(parts)
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
        let local = self.lock().local(offset, end);
        for (from, to) in local.into_iter().chain([(end, end)]) {
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
        self.landing(offset, offset + data.len() as u64, || self.overlay.write_all_at(data, offset))?;
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, length: u64, _may_trim: bool, fua: bool) -> io::Result<()> {
        self.landing(offset, offset + length, || standby_image::zero_range(&self.overlay, offset, length))?;
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
