//! What a site does with its disk files, on a local filesystem: intent
//! logs, overlays' maps, copies of ranges, an overlay becoming the disk,
//! a journal seeded from or restored into an image, files removed or set
//! aside. The hosts whose files are local ([`LocalHost`](super::LocalHost),
//! the simulated one) act through these.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::ControlError;
use crate::vaults::VaultAddress;

/// Byte ranges of a disk, as (offset, length).
pub(crate) type Ranges = Vec<(u64, u64)>;

/// Removes the files that exist among `files`; returns them.
pub(crate) fn remove_files(files: &[PathBuf]) -> Result<Vec<PathBuf>, ControlError> {
    let mut removed = Vec::new();
    for file in files {
        match std::fs::remove_file(file) {
            Ok(()) => removed.push(file.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ControlError::io(file, e)),
        }
    }
    Ok(removed)
}

/// Removes folder `dir` with what it holds; says whether it existed.
pub(crate) fn remove_dir(dir: &Path) -> Result<bool, ControlError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ControlError::io(dir, e)),
    }
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), ControlError> {
    std::fs::create_dir_all(dir).map_err(|e| ControlError::io(dir, e))
}

/// Moves the files that exist among `files` into `folder`; says whether any did.
pub(crate) fn move_into(files: &[PathBuf], folder: &Path) -> Result<bool, ControlError> {
    let mut moved = false;
    for file in files.iter().filter(|file| file.exists()) {
        std::fs::create_dir_all(folder).map_err(|e| ControlError::io(folder, e))?;
        let target = folder.join(file.file_name().expect("moved files have names"));
        std::fs::rename(file, &target).map_err(|e| ControlError::io(file, e))?;
        moved = true;
    }
    Ok(moved)
}

/// How much of the disk behind `overlay` is local: (local, total) bytes,
/// `None` before the overlay exists.
pub(crate) fn local_bytes(overlay: &Path) -> Result<Option<(u64, u64)>, ControlError> {
    standby_splitter::export::local_bytes(overlay).map_err(|e| ControlError::io(overlay, e))
}

fn image_size(image: &Path) -> Result<u64, ControlError> {
    Ok(std::fs::metadata(image).map_err(|e| ControlError::io(image, e))?.len())
}

/// The regions the intent log of `image` names, `None` without a usable one.
pub(crate) fn intent_log(image: &Path) -> Result<Option<Ranges>, ControlError> {
    let intent = standby_splitter::default_intent_log(image);
    standby_splitter::dirty::read_intent_log(&intent, image_size(image)?).map_err(|e| ControlError::io(&intent, e))
}

/// Writes the intent log of `image` naming `ranges`, or removes it (`None`:
/// the next splitter on the image reads all of it).
pub(crate) fn set_intent_log(image: &Path, ranges: Option<&[(u64, u64)]>) -> Result<(), ControlError> {
    let intent = standby_splitter::default_intent_log(image);
    match ranges {
        Some(ranges) => standby_splitter::dirty::write_intent_log(&intent, image_size(image)?, ranges)
            .map_err(|e| ControlError::io(&intent, e)),
        None => remove_files(&[intent]).map(|_| ()),
    }
}

/// Makes `image` the base of disk `disk`'s journal in the vault at
/// `vault`; returns the bytes that vault did not have.
pub(crate) fn seed_journal(vault: &VaultAddress, disk: &str, image: &Path) -> Result<u64, ControlError> {
    Ok(standby_vault::compact::seed_journal(&vault.open()?, disk, image)?.bytes_new)
}

/// Writes disk `disk` as it was at `time_micros` (from the journal in the
/// vault at `vault`) over `image`.
pub(crate) fn restore_journal(
    vault: &VaultAddress,
    disk: &str,
    time_micros: i64,
    image: &Path,
) -> Result<(), ControlError> {
    let target = standby_vault::journal::JournalTarget::Time(time_micros);
    standby_vault::journal::restore_journal(&vault.open()?, disk, target, image, true).map(|_| ())?;
    Ok(())
}

/// The ranges an overlay's map says were written, or `None` without a map.
pub(crate) fn overlay_ranges(overlay: &Path) -> Result<Option<Ranges>, ControlError> {
    let map = standby_splitter::export::map_path(overlay);
    let bytes = match std::fs::read(&map) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ControlError::io(&map, e)),
    };
    let decoded = standby_format::OverlayMap::decode(&bytes)
        .map_err(|e| ControlError::Failed(format!("{} cannot be read: {e}", map.display())))?;
    Ok(Some(decoded.ranges.into_iter().map(|(start, end)| (start, end - start)).collect()))
}

/// Whether `a` and `b` name the same file.
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Makes the fully hydrated overlay at `overlay` the disk image `image`:
/// a hard link (no copy; the export keeps writing the same file), or a
/// sparse copy when they are on different filesystems. Whatever `image`
/// was before goes.
pub(crate) fn take_over_overlay(overlay: &Path, image: &Path) -> Result<(), ControlError> {
    if same_file(overlay, image) {
        return Ok(());
    }
    remove_files(&[image.to_path_buf()])?;
    match std::fs::hard_link(overlay, image) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => copy_sparse(overlay, image),
        Err(e) => Err(ControlError::io(image, e)),
    }
}

/// Makes `to` a copy of `from` (sparse: zero blocks are not written), then
/// fsyncs it.
fn copy_sparse(from: &Path, to: &Path) -> Result<(), ControlError> {
    let source = std::fs::File::open(from).map_err(|e| ControlError::io(from, e))?;
    let size = source.metadata().map_err(|e| ControlError::io(from, e))?.len();
    let target = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(to)
        .map_err(|e| ControlError::io(to, e))?;
    target.set_len(size).map_err(|e| ControlError::io(to, e))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(buffer.len() as u64) as usize;
        source.read_exact_at(&mut buffer[..n], offset).map_err(|e| ControlError::io(from, e))?;
        if !standby_image::is_zero(&buffer[..n]) {
            target.write_all_at(&buffer[..n], offset).map_err(|e| ControlError::io(to, e))?;
        }
        offset += n as u64;
    }
    target.sync_all().map_err(|e| ControlError::io(to, e))
}

/// Copies `ranges` of `from` into `to` at the same offsets, then fsyncs.
pub(crate) fn copy_ranges(from: &Path, to: &Path, ranges: &[(u64, u64)]) -> Result<(), ControlError> {
    let source = std::fs::File::open(from).map_err(|e| ControlError::io(from, e))?;
    let target = std::fs::OpenOptions::new().write(true).open(to).map_err(|e| ControlError::io(to, e))?;
    let mut buffer = vec![0u8; 1 << 20];
    for &(offset, length) in ranges {
        let mut done = 0;
        while done < length {
            let n = (length - done).min(buffer.len() as u64) as usize;
            source.read_exact_at(&mut buffer[..n], offset + done).map_err(|e| ControlError::io(from, e))?;
            target.write_all_at(&buffer[..n], offset + done).map_err(|e| ControlError::io(to, e))?;
            done += n as u64;
        }
    }
    target.sync_all().map_err(|e| ControlError::io(to, e))
}
