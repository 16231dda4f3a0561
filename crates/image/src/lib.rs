//! Raw disk images on the local filesystem: opening them with clear errors,
//! positional reads and writes, zero detection, and [`resync`], which makes one
//! image equal to another while writing only the bytes that differ.
//!
//! This crate knows nothing about vaults or the network. It never writes to an
//! image it was asked only to read.

mod resync;

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

pub use resync::{resync, ResyncError, ResyncOptions, ResyncReport};
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("image {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("{} is a directory, not a disk image", path.display())]
    IsDirectory { path: PathBuf },
    #[error("{} is not a regular file or block device", path.display())]
    NotAnImage { path: PathBuf },
    #[error("cannot {operation} {}: {source}", path.display())]
    Io { operation: &'static str, path: PathBuf, source: io::Error },
}

impl ImageError {
    pub fn io(operation: &'static str, path: &Path, source: io::Error) -> Self {
        ImageError::Io { operation, path: path.to_path_buf(), source }
    }

    /// True when the operator named the wrong thing (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            ImageError::NotFound { .. } | ImageError::IsDirectory { .. } | ImageError::NotAnImage { .. } => true,
            ImageError::Io { source, .. } => source.kind() == io::ErrorKind::PermissionDenied,
        }
    }
}

/// An open raw image and its size in bytes.
#[derive(Debug)]
pub struct Image {
    pub file: File,
    pub path: PathBuf,
    pub bytes: u64,
}

impl Image {
    /// Opens an existing image for reading (and writing when `writable`).
    pub fn open(path: &Path, writable: bool) -> Result<Image, ImageError> {
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound { path: path.to_path_buf() })
            }
            Err(e) => return Err(ImageError::io("inspect", path, e)),
        };
        if metadata.is_dir() {
            return Err(ImageError::IsDirectory { path: path.to_path_buf() });
        }
        let file_type = metadata.file_type();
        if !file_type.is_file() && !file_type.is_block_device() {
            return Err(ImageError::NotAnImage { path: path.to_path_buf() });
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| ImageError::io("open", path, e))?;
        let bytes = if file_type.is_block_device() {
            use std::io::Seek;
            (&file).seek(io::SeekFrom::End(0)).map_err(|e| ImageError::io("measure", path, e))?
        } else {
            metadata.len()
        };
        Ok(Image { file, path: path.to_path_buf(), bytes })
    }

    /// Fills `buffer` from `offset`; past the end of the image reads zeros.
    /// Holes of a sparse file are zero-filled without being read.
    pub fn read_at(&self, buffer: &mut [u8], offset: u64) -> Result<(), ImageError> {
        let available = self.bytes.saturating_sub(offset).min(buffer.len() as u64) as usize;
        read_sparse(&self.file, &mut buffer[..available], offset).map_err(|e| ImageError::io("read", &self.path, e))?;
        buffer[available..].fill(0);
        Ok(())
    }

    pub fn write_at(&self, buffer: &[u8], offset: u64) -> Result<(), ImageError> {
        self.file.write_all_at(buffer, offset).map_err(|e| ImageError::io("write", &self.path, e))
    }

    pub fn sync(&self) -> Result<(), ImageError> {
        self.file.sync_all().map_err(|e| ImageError::io("flush", &self.path, e))
    }
}

/// True when every byte of `buffer` is zero. Word-at-a-time, so it runs at
/// memory speed.
pub fn is_zero(buffer: &[u8]) -> bool {
    let (head, words, tail) = unsafe {
        // SAFETY: every bit pattern is a valid u128; align_to only reinterprets
        // the aligned middle of an initialised byte slice.
        buffer.align_to::<u128>()
    };
    head.iter().all(|&b| b == 0) && tail.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0)
}

/// Makes `len` bytes at `offset` of `file` read as zeros: a punched hole
/// where the filesystem can, written zeros where it cannot.
pub fn zero_range(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    if punch_hole(file, offset, len).is_ok() {
        return Ok(());
    }
    write_zeros(file, offset, len)
}

/// Frees `len` bytes at `offset` of `file` (they read as zeros after), or
/// fails where the filesystem cannot.
pub fn punch_hole(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a valid descriptor; failure is reported as -1.
    let result = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether `len` bytes at `offset` of `file` are all a hole (read as zeros
/// without being stored), as `lseek(SEEK_DATA)` says: the filesystem counts
/// changes still in the page cache as data. `false` when it cannot tell
/// (filesystems without the call treat the whole file as data).
pub fn is_hole(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<bool> {
    match seek(file, offset, libc::SEEK_DATA) {
        Ok(Some(data)) => Ok(data >= offset + len),
        // No data from `offset` to the end of the file.
        Ok(None) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `lseek(SEEK_DATA)` or `lseek(SEEK_HOLE)` from `from`; `None` when there
/// is no data from there to the end of the file (ENXIO).
fn seek(file: &std::fs::File, from: u64, whence: libc::c_int) -> std::io::Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on a valid descriptor; failure is reported as -1.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, whence) };
    if at >= 0 {
        return Ok(Some(at as u64));
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        _ => Err(error),
    }
}

/// Fills `buffer` from `offset` of `file`, reading only where the file
/// holds data (`lseek(SEEK_DATA/SEEK_HOLE)`) and zero-filling its holes:
/// reading a hole costs a page of cache for every 4 KiB of zeros. Where the
/// filesystem cannot tell (or for a block device), everything is read.
pub fn read_sparse(file: &std::fs::File, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let end = offset + buffer.len() as u64;
    let mut at = offset;
    while at < end {
        let data = match seek(file, at, libc::SEEK_DATA) {
            Ok(Some(data)) => data.min(end),
            // No data from here to the end of the file.
            Ok(None) => end,
            // Unsupported: read it all.
            Err(_) => return file.read_exact_at(&mut buffer[(at - offset) as usize..], at),
        };
        buffer[(at - offset) as usize..(data - offset) as usize].fill(0);
        if data == end {
            break;
        }
        let hole = match seek(file, data, libc::SEEK_HOLE) {
            Ok(Some(hole)) => hole.clamp(data + 1, end),
            Ok(None) | Err(_) => end,
        };
        file.read_exact_at(&mut buffer[(data - offset) as usize..(hole - offset) as usize], data)?;
        at = hole;
    }
    Ok(())
}

/// Drops the clean pages of a range from the page cache (a hint: pages
/// still dirty are left, their writeback started), so that reading a
/// whole image once does not fill the host's memory with it.
pub fn forget_cached(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise on a valid descriptor; it only advises.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset as libc::off_t, len as libc::off_t, libc::POSIX_FADV_DONTNEED)
    };
}

/// Writes `len` zero bytes at `offset` of `file` (allocating them).
pub fn write_zeros(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to
/// disk without waiting for it (Linux `sync_file_range`). Durability still
/// comes from a later fsync; this only moves the work earlier, so a long
/// write ends with a short flush. Does nothing where unsupported.
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on a valid descriptor; failure only loses a hint.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_sees_every_byte() {
        let mut buffer = vec![0u8; 4099];
        assert!(is_zero(&buffer[1..]));
        for position in 0..buffer.len() {
            buffer[position] = 1;
            assert!(!is_zero(&buffer), "byte {position}");
            buffer[position] = 0;
        }
    }

    #[test]
    fn holes_are_told_apart_from_data_even_before_writeback() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.set_len(8 << 20).unwrap();
        assert!(is_hole(&file, 0, 8 << 20).unwrap());
        // Written and still only in the page cache: data.
        file.write_all_at(&[1u8; 4096], 3 << 20).unwrap();
        assert!(!is_hole(&file, 2 << 20, 2 << 20).unwrap());
        assert!(!is_hole(&file, (3 << 20) + 4095, 1).unwrap());
        assert!(is_hole(&file, 0, 2 << 20).unwrap());
        assert!(is_hole(&file, 4 << 20, 4 << 20).unwrap(), "past the last data");
        // Zeros that are written are data too (the caller reads them).
        file.write_all_at(&[0u8; 4096], 6 << 20).unwrap();
        assert!(!is_hole(&file, 6 << 20, 1 << 20).unwrap());
    }

    #[test]
    fn a_sparse_read_equals_a_plain_one() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        file.set_len(16 << 20).unwrap();
        let mut random = 0x9e3779b97f4a7c15u64;
        for (at, len) in [(0u64, 100u64), (1 << 20, 8192), ((3 << 20) + 7, 70000), ((16 << 20) - 4096, 4096)] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    random ^= random << 13;
                    random ^= random >> 7;
                    random ^= random << 17;
                    random as u8 | 1
                })
                .collect();
            file.write_all_at(&data, at).unwrap();
        }
        let whole = std::fs::read(&path).unwrap();
        for (offset, len) in
            [(0u64, 16usize << 20), (50, 1 << 20), ((1 << 20) + 4000, 300_000), ((15 << 20) + 5, 1 << 20)]
        {
            let len = len.min((16 << 20) - offset as usize);
            let mut buffer = vec![0xAAu8; len];
            read_sparse(&file, &mut buffer, offset).unwrap();
            assert!(buffer == whole[offset as usize..offset as usize + len], "at {offset} for {len}");
        }
    }

    #[test]
    fn open_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(Image::open(&dir.path().join("missing"), false), Err(ImageError::NotFound { .. })));
        assert!(matches!(Image::open(dir.path(), false), Err(ImageError::IsDirectory { .. })));
    }
}
