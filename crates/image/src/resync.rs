//! `resync`: make TARGET byte-identical to SOURCE, reading both once and
//! writing only the 4 KiB runs that differ. This is the engine of reprotect
//! when both copies of a disk exist and change tracking is not available.
//!
//! Both cores work: the disk is cut into segments that rayon workers compare
//! independently (segment order does not matter: every byte of TARGET is
//! written at most once, with SOURCE's bytes).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use thiserror::Error;

use crate::{Image, ImageError};

/// Bytes each worker compares at a time.
const SEGMENT_BYTES: usize = 4 << 20;
/// Granularity of writes: a differing run is widened to whole pages.
const PAGE_BYTES: usize = 4096;
const _: () = assert!(SEGMENT_BYTES.is_multiple_of(PAGE_BYTES));

#[derive(Debug, Default, Clone, Copy)]
pub struct ResyncOptions {
    /// Resize TARGET to SOURCE's size instead of refusing.
    pub allow_resize: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ResyncReport {
    pub source_bytes: u64,
    pub target_bytes_before: u64,
    /// Bytes of each image read and compared.
    pub bytes_compared: u64,
    pub bytes_written: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ResyncError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{} is {target_bytes} bytes but {} is {source_bytes}; pass --allow-resize to resize the target", target_path.display(), source_path.display())]
    SizeMismatch { source_path: PathBuf, source_bytes: u64, target_path: PathBuf, target_bytes: u64 },
    #[error("source and target are the same file ({})", path.display())]
    SameFile { path: PathBuf },
}

impl ResyncError {
    pub fn is_bad_input(&self) -> bool {
        match self {
            ResyncError::Image(e) => e.is_bad_input(),
            ResyncError::SizeMismatch { .. } | ResyncError::SameFile { .. } => true,
        }
    }
}

pub fn resync(
    source: &std::path::Path,
    target: &std::path::Path,
    options: ResyncOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ResyncReport, ResyncError> {
    let started = Instant::now();
    let source = Image::open(source, false)?;
    let target = Image::open(target, true)?;
    if same_file(&source, &target) {
        return Err(ResyncError::SameFile { path: target.path.clone() });
    }
    let target_bytes_before = target.bytes;
    if source.bytes != target.bytes {
        if !options.allow_resize {
            return Err(ResyncError::SizeMismatch {
                source_path: source.path.clone(),
                source_bytes: source.bytes,
                target_path: target.path.clone(),
                target_bytes: target.bytes,
            });
        }
        target.file.set_len(source.bytes).map_err(|e| ImageError::io("resize", &target.path, e))?;
    }

    let written = AtomicU64::new(0);
    let segments = source.bytes.div_ceil(SEGMENT_BYTES as u64);
    (0..segments).into_par_iter().try_for_each_init(
        || (vec![0u8; SEGMENT_BYTES], vec![0u8; SEGMENT_BYTES]),
        |(source_buffer, target_buffer), segment| -> Result<(), ResyncError> {
            let offset = segment * SEGMENT_BYTES as u64;
            let len = (source.bytes - offset).min(SEGMENT_BYTES as u64) as usize;
            source.read_at(&mut source_buffer[..len], offset)?;
            target.read_at(&mut target_buffer[..len], offset)?;
            if source_buffer[..len] != target_buffer[..len] {
                let bytes = write_differences(&target, &source_buffer[..len], &target_buffer[..len], offset)?;
                written.fetch_add(bytes, Ordering::Relaxed);
            }
            progress(len as u64);
            Ok(())
        },
    )?;
    target.sync()?;
    Ok(ResyncReport {
        source_bytes: source.bytes,
        target_bytes_before,
        bytes_compared: source.bytes,
        bytes_written: written.into_inner(),
        elapsed: started.elapsed(),
    })
}

/// Writes the differing pages of one segment, coalescing adjacent ones.
fn write_differences(target: &Image, source: &[u8], old: &[u8], offset: u64) -> Result<u64, ImageError> {
    let mut written = 0u64;
    let mut run_start: Option<usize> = None;
    let pages = source.len().div_ceil(PAGE_BYTES);
    for page in 0..=pages {
        let differs = page < pages && {
            let range = page * PAGE_BYTES..((page + 1) * PAGE_BYTES).min(source.len());
            source[range.clone()] != old[range]
        };
        match (differs, run_start) {
            (true, None) => run_start = Some(page * PAGE_BYTES),
            (false, Some(start)) => {
                let end = (page * PAGE_BYTES).min(source.len());
                target.write_at(&source[start..end], offset + start as u64)?;
                written += (end - start) as u64;
                run_start = None;
            }
            _ => {}
        }
    }
    Ok(written)
}

fn same_file(a: &Image, b: &Image) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.file.metadata(), b.file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// After resync the target equals the source, and only differing pages were written.
        #[test]
        fn resync_makes_target_equal(
            size in 1usize..(3 * SEGMENT_BYTES),
            writes in proptest::collection::vec((0usize..(3 * SEGMENT_BYTES), 1usize..20000, any::<u8>()), 0..20),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let source_path = dir.path().join("source");
            let target_path = dir.path().join("target");
            let mut source: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            std::fs::write(&target_path, &source).unwrap();
            for (at, len, value) in &writes {
                let at = at % size;
                let end = (at + len).min(size);
                source[at..end].fill(*value);
            }
            std::fs::write(&source_path, &source).unwrap();
            let differing_pages = source.chunks(PAGE_BYTES)
                .zip(std::fs::read(&target_path).unwrap().chunks(PAGE_BYTES))
                .filter(|(a, b)| a != b)
                .count() as u64;
            let report = resync(&source_path, &target_path, ResyncOptions::default(), &|_| {}).unwrap();
            prop_assert_eq!(std::fs::read(&target_path).unwrap(), source);
            prop_assert!(report.bytes_written <= differing_pages * PAGE_BYTES as u64);
            prop_assert!(report.bytes_written + (PAGE_BYTES as u64) > differing_pages * PAGE_BYTES as u64 || differing_pages == 0);
        }
    }

    #[test]
    fn size_mismatch_is_refused_without_flag_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let target = dir.path().join("target");
        std::fs::write(&source, vec![1u8; 10000]).unwrap();
        std::fs::write(&target, vec![2u8; 8192]).unwrap();
        let error = resync(&source, &target, ResyncOptions::default(), &|_| {}).unwrap_err();
        assert!(matches!(error, ResyncError::SizeMismatch { .. }));
        assert_eq!(std::fs::read(&target).unwrap(), vec![2u8; 8192]);
        resync(&source, &target, ResyncOptions { allow_resize: true }, &|_| {}).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), vec![1u8; 10000]);
    }
}
