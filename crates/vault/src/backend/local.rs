//! A vault in a local directory. Objects are files; every write goes to a
//! temporary file that is fsynced and renamed into place (then the directory
//! is fsynced), so a crash or power loss leaves either the old or the new
//! object. Create-only writes use `link(2)`, which fails if the name exists.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{check_path, Backend, ObjectInfo, StorageError};

/// Temporary files carry this prefix; listings skip them.
const TEMPORARY_PREFIX: &str = ".standby-tmp-";

#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: PathBuf) -> Self {
        LocalBackend { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full_path(&self, path: &str) -> Result<PathBuf, StorageError> {
        check_path(path)?;
        Ok(self.root.join(path))
    }

    /// Writes a fsynced temporary file beside `target` and returns its path.
    /// Folders below the root are created as needed, and only in a vault:
    /// where the root holds the vault's config (the config itself, by
    /// `vault init`, aside). A vault folder that is gone, emptied, or an
    /// empty mount point whose filesystem is not mounted is an outage (every
    /// object lives in a subfolder, so every write there needs one), never
    /// a new folder on the host's filesystem that takes writes the vault
    /// will not have once it is back.
    fn write_temporary(&self, target: &Path, bytes: &[u8], path: &str) -> Result<PathBuf, StorageError> {
        let parent = target.parent().expect("object paths have a parent: the vault root");
        // Checked only when a folder is missing: no cost on the usual path.
        if !parent.is_dir() {
            if path != crate::vault::CONFIG_PATH && !self.root.join(crate::vault::CONFIG_PATH).is_file() {
                let detail = format!(
                    "the vault folder {} has no {} (moved, emptied, or its filesystem not mounted); nothing is \
                     written there until the vault is back",
                    self.root.display(),
                    crate::vault::CONFIG_PATH
                );
                return Err(failed_text("write", path, &detail));
            }
            ensure_directory(parent).map_err(|e| failed("create folder for", path, e))?;
        }
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).expect("the operating system's random source is available");
        let name = format!("{TEMPORARY_PREFIX}{}", suffix.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let temporary = parent.join(name);
        let result = (|| {
            let mut file = File::create_new(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&temporary);
            return Err(failed("write", path, e));
        }
        Ok(temporary)
    }
}

impl Backend for LocalBackend {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, path: &str, bytes: Bytes) -> Result<(), StorageError> {
        let target = self.full_path(path)?;
        let temporary = self.write_temporary(&target, &bytes, path)?;
        if let Err(e) = fs::rename(&temporary, &target) {
            let _ = fs::remove_file(&temporary);
            return Err(failed("rename into", path, e));
        }
        sync_directory(target.parent().expect("has parent")).map_err(|e| failed("sync folder of", path, e))
    }

    fn put_new(&self, path: &str, bytes: Bytes) -> Result<(), StorageError> {
        let target = self.full_path(path)?;
        let temporary = self.write_temporary(&target, &bytes, path)?;
        let linked = fs::hard_link(&temporary, &target);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                sync_directory(target.parent().expect("has parent")).map_err(|e| failed("sync folder of", path, e))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(StorageError::AlreadyExists { path: path.to_string() })
            }
            Err(e) => Err(failed("link", path, e)),
        }
    }

    fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        let full = self.full_path(path)?;
        match fs::read(&full) {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(e) => Err(map_read_error(path, e)),
        }
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let full = self.full_path(path)?;
        let mut file = File::open(&full).map_err(|e| map_read_error(path, e))?;
        let len = range.end.checked_sub(range.start).ok_or_else(|| failed_text("read", path, "inverted range"))?;
        let size = file.metadata().map_err(|e| failed("inspect", path, e))?.len();
        if range.end > size {
            return Err(failed_text("read", path, &format!("range {range:?} is past the end ({size} bytes)")));
        }
        let mut buffer = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(range.start)).map_err(|e| failed("seek", path, e))?;
        file.read_exact(&mut buffer).map_err(|e| failed("read", path, e))?;
        Ok(Bytes::from(buffer))
    }

    fn remove_abandoned_writes(&self, before: std::time::SystemTime) -> Result<(u64, u64), StorageError> {
        let (mut removed, mut bytes) = (0u64, 0u64);
        let mut pending = vec![self.root.clone()];
        while let Some(directory) = pending.pop() {
            let entries = match fs::read_dir(&directory) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed("list", &directory.display().to_string(), e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| failed("list", &directory.display().to_string(), e))?;
                let Ok(metadata) = entry.metadata() else { continue };
                if metadata.is_dir() {
                    pending.push(entry.path());
                    continue;
                }
                let abandoned = entry.file_name().to_str().is_some_and(|name| name.starts_with(TEMPORARY_PREFIX))
                    && metadata.modified().is_ok_and(|modified| modified < before);
                if abandoned {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => {
                            removed += 1;
                            bytes += metadata.len();
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(failed("remove", &entry.path().display().to_string(), e)),
                    }
                }
            }
        }
        Ok((removed, bytes))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        // The folder part of the prefix is walked; the rest filters names.
        let folder = match prefix.rfind('/') {
            Some(end) => &prefix[..end],
            None => "",
        };
        let start = if folder.is_empty() { self.root.clone() } else { self.full_path(folder)? };
        let mut found = Vec::new();
        let mut pending = vec![start];
        while let Some(directory) = pending.pop() {
            let entries = match fs::read_dir(&directory) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed("list", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| failed("list", prefix, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(TEMPORARY_PREFIX) {
                    continue;
                }
                let metadata = entry.metadata().map_err(|e| failed("list", prefix, e))?;
                if metadata.is_dir() {
                    pending.push(entry.path());
                    continue;
                }
                let relative = entry.path().strip_prefix(&self.root).expect("walk stays under the root").to_path_buf();
                let Some(relative) = relative.to_str() else { continue };
                if relative.starts_with(prefix) {
                    found.push(ObjectInfo {
                        path: relative.to_string(),
                        bytes: metadata.len(),
                        modified: metadata.modified().map_err(|e| failed("list", prefix, e))?,
                    });
                }
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }

    fn delete(&self, path: &str) -> Result<(), StorageError> {
        let full = self.full_path(path)?;
        match fs::remove_file(&full) {
            Ok(()) => sync_directory(full.parent().expect("has parent")).map_err(|e| failed("sync folder of", path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(failed("delete", path, e)),
        }
    }
}

/// Creates `directory` and any missing parents, fsyncing each new entry's parent
/// so the new folders survive a power loss.
fn ensure_directory(directory: &Path) -> io::Result<()> {
    // The parent of a relative one-part path is "": the current directory.
    if directory.as_os_str().is_empty() || directory.is_dir() {
        return Ok(());
    }
    if let Some(parent) = directory.parent() {
        ensure_directory(parent)?;
    }
    match fs::create_dir(directory) {
        Ok(()) => sync_directory(directory.parent().expect("created folder has a parent")),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_directory(directory: &Path) -> io::Result<()> {
    let directory = if directory.as_os_str().is_empty() { Path::new(".") } else { directory };
    File::open(directory)?.sync_all()
}

fn map_read_error(path: &str, e: io::Error) -> StorageError {
    if e.kind() == io::ErrorKind::NotFound {
        StorageError::NotFound { path: path.to_string() }
    } else {
        failed("read", path, e)
    }
}

fn failed(operation: &'static str, path: &str, e: io::Error) -> StorageError {
    StorageError::Failed { operation, path: path.to_string(), detail: e.to_string() }
}

fn failed_text(operation: &'static str, path: &str, detail: &str) -> StorageError {
    StorageError::Failed { operation, path: path.to_string(), detail: detail.to_string() }
}
