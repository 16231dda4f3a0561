//! A Linux kernel for the test guest, and the modules it needs.
//!
//! Debian builds virtio and ext4 as modules, so a kernel is a `vmlinuz` plus
//! its `lib/modules/<version>` tree. [`Kernel::debian`] fetches Debian's
//! current `linux-image-amd64` once into a cache directory (`apt-get
//! download` + `dpkg -x`); [`Kernel::at`] takes an operator's own.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

#[derive(Clone, Debug)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>`: holds `kernel/**/<name>.ko`.
    pub modules: PathBuf,
}

/// One loadable module, in the order it must be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: PathBuf,
}

impl Kernel {
    pub fn at(vmlinuz: &Path, modules: &Path) -> Result<Kernel, Error> {
        if !vmlinuz.is_file() {
            return Err(Error::Kernel(format!("{} is not a kernel image file", vmlinuz.display())));
        }
        if !modules.join("kernel").is_dir() {
            return Err(Error::Kernel(format!(
                "{} is not a kernel modules directory (lib/modules/<version>, with kernel/ in it)",
                modules.display()
            )));
        }
        Ok(Kernel { vmlinuz: vmlinuz.to_path_buf(), modules: modules.to_path_buf() })
    }

    /// Debian's current amd64 kernel, fetched into `cache` the first time
    /// (about 70 MB from the Debian mirror this host's apt uses). Safe to
    /// call from several processes at once: the first one fetches, the
    /// others wait for it.
    pub fn debian(cache: &Path) -> Result<Kernel, Error> {
        fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
        let lock_path = cache.join(".lock");
        let lock = fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;

        let root = cache.join("debian-kernel");
        if !root.join("ready").exists() {
            fetch_debian(cache, &root)?;
        }
        let boot = root.join("boot");
        let vmlinuz = only_entry(&boot, "vmlinuz-")?;
        let version = vmlinuz
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("vmlinuz-"))
            .expect("only_entry matched the prefix")
            .to_owned();
        Kernel::at(&vmlinuz, &root.join("lib/modules").join(version))
    }

    /// The modules named, with everything they depend on, in load order
    /// (dependencies first; otherwise the order given). A module built into
    /// the kernel (no `.ko`) is skipped when `builtin` lists it in
    /// `modules.builtin`; otherwise it is an error.
    pub fn modules_for(&self, names: &[&str]) -> Result<Vec<Module>, Error> {
        let files = module_files(&self.modules.join("kernel"))?;
        let builtin = fs::read_to_string(self.modules.join("modules.builtin")).unwrap_or_default();
        let builtin: Vec<String> =
            builtin.lines().filter_map(|line| Path::new(line).file_stem()?.to_str().map(normalise)).collect();
        let mut ordered = Vec::new();
        for name in names {
            self.visit(&normalise(name), &files, &builtin, &mut ordered, &mut Vec::new())?;
        }
        Ok(ordered)
    }

    fn visit(
        &self,
        name: &str,
        files: &[(String, PathBuf)],
        builtin: &[String],
        ordered: &mut Vec<Module>,
        path: &mut Vec<String>,
    ) -> Result<(), Error> {
        if ordered.iter().any(|m| m.name == name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            return Err(Error::Kernel(format!("module dependency cycle: {} -> {name}", path.join(" -> "))));
        }
        let Some((_, file)) = files.iter().find(|(n, _)| n == name) else {
            if builtin.iter().any(|b| b == name) {
                return Ok(());
            }
            return Err(Error::Kernel(format!(
                "module {name} is neither in {} nor built into the kernel",
                self.modules.display()
            )));
        };
        let bytes = fs::read(file).map_err(|e| Error::io(file, e))?;
        path.push(name.to_owned());
        for dependency in depends(&bytes) {
            self.visit(&dependency, files, builtin, ordered, path)?;
        }
        path.pop();
        ordered.push(Module { name: name.to_owned(), path: file.clone() });
        Ok(())
    }
}

/// Module names use `_` and `-` interchangeably (`crc32c-intel.ko` is
/// module `crc32c_intel`).
fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// The `depends=` entry of a module's `.modinfo` section: NUL-separated
/// `key=value` strings, found by scanning (an ELF parser for one string
/// would be more code than the scan).
fn depends(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(start) = module.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &module[start + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).split(',').filter(|s| !s.is_empty()).map(normalise).collect()
}

fn module_files(root: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in fs::read_dir(&directory).map_err(|e| Error::io(&directory, e))? {
            let entry = entry.map_err(|e| Error::io(&directory, e))?;
            let path = entry.path();
            if entry.file_type().map_err(|e| Error::io(&path, e))?.is_dir() {
                pending.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                if let Some(stem) = name.strip_suffix(".ko") {
                    found.push((normalise(stem), path.clone()));
                } else if name.contains(".ko.") {
                    // Compressed modules (newer Debian kernels): busybox's
                    // insmod cannot load them; list them so the error names them.
                    let stem = name.split(".ko.").next().unwrap_or(name);
                    found.push((normalise(stem), path.clone()));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

fn only_entry(directory: &Path, prefix: &str) -> Result<PathBuf, Error> {
    let mut matches = Vec::new();
    for entry in fs::read_dir(directory).map_err(|e| Error::io(directory, e))? {
        let entry = entry.map_err(|e| Error::io(directory, e))?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            matches.push(entry.path());
        }
    }
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::Kernel(format!("expected one {prefix}* in {}, found {}", directory.display(), matches.len()))),
    }
}

fn fetch_debian(cache: &Path, root: &Path) -> Result<(), Error> {
    let package = debian_kernel_package()?;
    let download = cache.join("download");
    let _ = fs::remove_dir_all(&download);
    let _ = fs::remove_dir_all(root);
    fs::create_dir_all(&download).map_err(|e| Error::io(&download, e))?;
    run(Command::new("apt-get").args(["download", "-q", &package]).current_dir(&download), "apt-get download")?;
    let deb = only_entry(&download, &package)?;
    let unpacked = cache.join("debian-kernel.partial");
    let _ = fs::remove_dir_all(&unpacked);
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked), "dpkg -x")?;
    fs::write(unpacked.join("ready"), format!("{package}\n")).map_err(|e| Error::io(&unpacked, e))?;
    fs::rename(&unpacked, root).map_err(|e| Error::io(root, e))?;
    let _ = fs::remove_dir_all(&download);
    Ok(())
}

/// `linux-image-amd64` is a meta-package; the kernel is its dependency.
fn debian_kernel_package() -> Result<String, Error> {
    let output = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]), "apt-cache depends")?;
    output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::Kernel(
                "apt-cache knows no linux-image-amd64: run apt-get update, or give a kernel of your own".to_owned(),
            )
        })
}

fn run(command: &mut Command, what: &str) -> Result<String, Error> {
    let output = command.output().map_err(|e| Error::Kernel(format!("{what} could not run: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(Error::Kernel(format!("{what} failed: {last}")));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_reads_the_modinfo_entry() {
        let module = b"\x7fELF...\0license=GPL\0depends=jbd2,mbcache,crc16\0retpoline=Y\0";
        assert_eq!(depends(module), ["jbd2", "mbcache", "crc16"]);
        assert!(depends(b"\0depends=\0").is_empty());
        assert!(depends(b"no modinfo at all").is_empty());
    }

    #[test]
    fn modules_come_dependencies_first_and_once() {
        let directory = tempfile::tempdir().unwrap();
        let tree = directory.path().join("kernel");
        fs::create_dir_all(tree.join("fs")).unwrap();
        fs::create_dir_all(tree.join("lib")).unwrap();
        fs::write(tree.join("fs/ext4.ko"), b"\0depends=jbd2,crc16\0").unwrap();
        fs::write(tree.join("fs/jbd2.ko"), b"\0depends=\0").unwrap();
        fs::write(tree.join("lib/crc16.ko"), b"\0depends=\0").unwrap();
        fs::write(tree.join("lib/crc32c-intel.ko"), b"\0depends=crc16\0").unwrap();
        fs::write(directory.path().join("modules.builtin"), "kernel/fs/mbcache.ko\n").unwrap();
        let vmlinuz = directory.path().join("vmlinuz");
        fs::write(&vmlinuz, b"").unwrap();
        let kernel = Kernel::at(&vmlinuz, directory.path()).unwrap();

        let names = |modules: Vec<Module>| modules.into_iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(
            names(kernel.modules_for(&["ext4", "crc32c-intel", "mbcache"]).unwrap()),
            ["jbd2", "crc16", "ext4", "crc32c_intel"]
        );
        let error = kernel.modules_for(&["virtio_blk"]).unwrap_err().to_string();
        assert!(error.contains("virtio_blk is neither in"), "{error}");
    }
}
