//! `export`: a recovery point served over NBD at once, without
//! materialising the disk. Reads come from the vault on demand (a
//! [`PointView`]); writes go to a local overlay file, so a drill or a
//! failover VM can boot and run while the vault stays untouched.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use standby_nbd::Export;
use standby_vault::view::PointView;

pub struct PointExport {
    view: PointView,
    overlay: File,
    /// Ranges written through the export: start → end, never overlapping.
    written: Mutex<BTreeMap<u64, u64>>,
}

impl PointExport {
    /// Creates the overlay at `overlay` (which must not exist yet).
    pub fn new(view: PointView, overlay: &Path) -> io::Result<PointExport> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(overlay)?;
        file.set_len(view.size())?;
        Ok(PointExport { view, overlay: file, written: Mutex::default() })
    }

    fn mark_written(&self, start: u64, end: u64) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let (mut start, mut end) = (start, end);
        // Merge with every range that touches [start, end].
        let touching: Vec<(u64, u64)> =
            written.range(..=end).rev().take_while(|(_, &e)| e >= start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touching {
            written.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        written.insert(start, end);
    }

    /// The parts of `[start, end)` that were written, in order.
    fn written_parts(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let first = written.range(..=start).next_back().map_or(start, |(&s, _)| s);
        written
            .range(first..end)
            .filter_map(|(&s, &e)| {
                let (from, to) = (s.max(start), e.min(end));
                (from < to).then_some((from, to))
            })
            .collect()
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
            self.overlay.sync_data()?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, length: u64, _may_trim: bool, fua: bool) -> io::Result<()> {
        standby_image::zero_range(&self.overlay, offset, length)?;
        self.mark_written(offset, offset + length);
        if fua {
            self.overlay.sync_data()?;
        }
        Ok(())
    }

    fn trim(&self, offset: u64, length: u64, fua: bool) -> io::Result<()> {
        self.write_zeroes(offset, length, true, fua)
    }

    fn flush(&self) -> io::Result<()> {
        self.overlay.sync_data()
    }
}
