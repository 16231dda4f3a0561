//! A raw image file as an NBD export.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::server::Export;

pub struct FileExport {
    file: File,
    size: u64,
    read_only: bool,
}

impl FileExport {
    pub fn open(path: &Path, read_only: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a file", path.display())));
        }
        Ok(FileExport { file, size: metadata.len(), read_only })
    }

    /// Whether the range is a hole in the file (see [`standby_image::is_hole`]).
    pub fn is_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        standby_image::is_hole(&self.file, offset, len)
    }

    /// Drops the range's clean pages from the page cache.
    pub fn forget_cached(&self, offset: u64, len: u64) {
        standby_image::forget_cached(&self.file, offset, len)
    }

    fn sync_if(&self, fua: bool) -> io::Result<()> {
        if fua {
            self.file.sync_data()
        } else {
            Ok(())
        }
    }
}

impl Export for FileExport {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buffer, offset)
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.file.write_all_at(data, offset)?;
        self.sync_if(fua)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool, fua: bool) -> io::Result<()> {
        if may_trim {
            standby_image::zero_range(&self.file, offset, len)?;
        } else {
            standby_image::write_zeros(&self.file, offset, len)?;
        }
        self.sync_if(fua)
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        // Trim is advisory: a filesystem that cannot punch keeps the data.
        let _ = standby_image::punch_hole(&self.file, offset, len);
        self.sync_if(fua)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}
