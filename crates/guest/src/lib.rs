//! The test guest Standby builds itself, and the checks on what it wrote.
//!
//! A guest is a Debian kernel ([`Kernel`]) and an initramfs ([`initramfs`])
//! holding a static busybox, the virtio and ext4 modules, and `init.sh`: a
//! workload that writes sequence-numbered records to the raw end of its disk
//! and files to the ext4 filesystem on it, and prints each record once it is
//! durable. The host prepares the disk ([`prepare_disk`]), reads the console
//! ([`acknowledged`]) and checks any copy of the disk ([`check_disk`]).
//!
//! Used by the tests, the benchmarks and `standby demo`.

pub mod cpio;
mod kernel;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use kernel::{Kernel, Module};

/// The raw record area at the end of the disk, outside the filesystem.
pub const RECORD_AREA_BYTES: u64 = 16 << 20;
/// One record per 512-byte slot: `standby-record <seq>\n`, zero-padded.
pub const RECORD_SLOT_BYTES: u64 = 512;

/// Modules the guest loads, in this order (each after its dependencies):
/// virtio over PCI, the virtio disk, ext4 (with crc32c for its checksums),
/// the ACPI power button for a clean power-down, the agent's virtio-serial
/// port, the virtio NIC, and FAT (to read a NoCloud seed disk).
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "button",
    "evdev",
    "virtio_console",
    "virtio_net",
    "fat",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
];

/// qemu-guest-agent as this host has it (Debian's qemu-guest-agent
/// package): the binary and the shared libraries it loads, copied into
/// the initramfs at the same paths so that it runs there.
#[derive(Debug, Clone)]
pub struct GuestAgent {
    pub binary: PathBuf,
    pub libraries: Vec<PathBuf>,
}

impl GuestAgent {
    /// The host's qemu-ga, if installed (apt-get install qemu-guest-agent).
    pub fn from_host() -> Result<Option<GuestAgent>, Error> {
        let binary = PathBuf::from("/usr/sbin/qemu-ga");
        if !binary.is_file() {
            return Ok(None);
        }
        let output = Command::new("ldd")
            .arg(&binary)
            .output()
            .map_err(|e| Error::Busybox(format!("ldd could not run to list qemu-ga's libraries: {e}")))?;
        // "libglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x…)"
        // and "/lib64/ld-linux-x86-64.so.2 (0x…)".
        let libraries = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().find(|word| word.starts_with('/')))
            .map(PathBuf::from)
            .collect();
        Ok(Some(GuestAgent { binary, libraries }))
    }
}

const INIT: &str = include_str!("init.sh");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kernel(String),
    #[error("{0}")]
    Busybox(String),
    #[error("{0}")]
    Disk(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Error {
    pub(crate) fn io(path: &Path, source: io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }
}

/// What the workload does, passed on the kernel command line.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Steps before powering off; 0 runs until an ACPI power-down.
    pub count: u64,
    pub interval: Duration,
    pub file_kib: u64,
}

impl Default for Workload {
    fn default() -> Workload {
        Workload { count: 0, interval: Duration::from_millis(200), file_kib: 16 }
    }
}

impl Workload {
    /// The kernel command line: serial console, quiet, no reboot on panic.
    pub fn cmdline(&self) -> String {
        format!(
            "console=ttyS0 quiet loglevel=3 panic=-1 standby.count={} standby.interval={}.{:03} standby.file_kib={}",
            self.count,
            self.interval.as_secs(),
            self.interval.subsec_millis(),
            self.file_kib
        )
    }
}

/// The initramfs (a newc cpio archive) for `kernel`, with `busybox` (a
/// static build: Debian's busybox-static) as every command.
pub fn initramfs(kernel: &Kernel, busybox: &Path, agent: Option<&GuestAgent>) -> Result<Vec<u8>, Error> {
    let busybox_bytes = fs::read(busybox).map_err(|e| Error::io(busybox, e))?;
    if has_interpreter(&busybox_bytes) {
        return Err(Error::Busybox(format!(
            "{} is linked dynamically; the guest needs a static busybox (apt-get install busybox-static)",
            busybox.display()
        )));
    }
    let modules = kernel.modules_for(MODULES)?;
    let mut archive = cpio::Archive::new();
    for directory in ["bin", "dev", "etc", "lib", "lib/modules", "mnt", "proc", "sys", "tmp"] {
        archive.directory(directory);
    }
    archive.file("bin/busybox", 0o755, &busybox_bytes);
    archive.symlink("bin/sh", "busybox");
    let mut order = String::new();
    for module in &modules {
        if module.path.extension().is_none_or(|e| e != "ko") {
            return Err(Error::Kernel(format!(
                "{} is compressed; the guest's insmod loads plain .ko modules only",
                module.path.display()
            )));
        }
        let bytes = fs::read(&module.path).map_err(|e| Error::io(&module.path, e))?;
        archive.file(&format!("lib/modules/{}.ko", module.name), 0o644, &bytes);
        order.push_str(&module.name);
        order.push('\n');
    }
    archive.file("etc/standby-modules", 0o644, order.as_bytes());
    if let Some(agent) = agent {
        // Each file at its own path (the dynamic loader and the library
        // paths are compiled in), with its folders.
        let mut folders = std::collections::BTreeSet::new();
        for file in std::iter::once(&agent.binary).chain(&agent.libraries) {
            let relative = file.strip_prefix("/").unwrap_or(file);
            for ancestor in relative.ancestors().skip(1) {
                if !ancestor.as_os_str().is_empty() {
                    folders.insert(ancestor.to_path_buf());
                }
            }
        }
        for folder in &folders {
            if !["bin", "dev", "etc", "lib", "lib/modules", "mnt", "proc", "sys", "tmp"]
                .contains(&folder.to_str().unwrap_or(""))
            {
                archive.directory(&folder.display().to_string());
            }
        }
        for file in std::iter::once(&agent.binary).chain(&agent.libraries) {
            // Follow symbolic links: the archive holds the library itself.
            let bytes = fs::read(file).map_err(|e| Error::io(file, e))?;
            let relative = file.strip_prefix("/").unwrap_or(file);
            archive.file(&relative.display().to_string(), 0o755, &bytes);
        }
    }
    let init = INIT.replace("@RECORD_SLOTS@", &(RECORD_AREA_BYTES / RECORD_SLOT_BYTES).to_string());
    archive.file("init", 0o755, init.as_bytes());
    Ok(archive.finish())
}

/// Whether an ELF64 executable names a dynamic loader (a `PT_INTERP`
/// program header): then it cannot run alone in an initramfs.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| elf.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |at: usize| elf.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |at: usize| elf.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    let (Some(offset), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..count).any(|i| u32_at(offset + i * size) == Some(PT_INTERP))
}

/// Debian's static busybox, where busybox-static installs it.
pub fn busybox() -> Result<PathBuf, Error> {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(candidate).is_file() {
            return Ok(PathBuf::from(candidate));
        }
    }
    Err(Error::Busybox("no busybox found: apt-get install busybox-static".to_owned()))
}

/// A new raw disk of `bytes` at `path`: an ext4 filesystem over all but
/// the record area at its end.
pub fn prepare_disk(path: &Path, bytes: u64) -> Result<(), Error> {
    if bytes < 64 << 20 || !bytes.is_multiple_of(1 << 20) {
        return Err(Error::Disk(format!(
            "a guest disk is a whole number of MiB, at least 64 MiB (asked for {bytes} bytes)"
        )));
    }
    let file = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    file.set_len(bytes).map_err(|e| Error::io(path, e))?;
    drop(file);
    let filesystem_kib = (bytes - RECORD_AREA_BYTES) / 1024;
    let output = Command::new(sbin("mke2fs"))
        .args(["-q", "-F", "-t", "ext4", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(path)
        .arg(format!("{filesystem_kib}k"))
        .output()
        .map_err(|e| Error::Disk(format!("mke2fs could not run (apt-get install e2fsprogs): {e}")))?;
    if !output.status.success() {
        return Err(Error::Disk(format!("mke2fs failed: {}", String::from_utf8_lossy(&output.stderr).trim())));
    }
    Ok(())
}

/// The highest record the console says was acknowledged (durable in the
/// guest's view), if any.
pub fn acknowledged(console: &str) -> Option<u64> {
    console
        .lines()
        .filter_map(|line| line.trim().strip_prefix("standby-guest: record "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
}

/// The content the workload writes to `/data/<seq>`: what `yes
/// "standby-file <seq>" | head -c <kib KiB>` prints.
pub fn file_content(seq: u64, kib: u64) -> Vec<u8> {
    let line = format!("standby-file {seq}\n");
    line.as_bytes().iter().copied().cycle().take((kib * 1024) as usize).collect()
}

/// The record numbers found in a disk's record area.
pub fn records(image: &Path) -> Result<Vec<u64>, Error> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = fs::File::open(image).map_err(|e| Error::io(image, e))?;
    let size = file.metadata().map_err(|e| Error::io(image, e))?.len();
    if size < RECORD_AREA_BYTES {
        return Err(Error::Disk(format!("{} is too small to hold a record area", image.display())));
    }
    file.seek(SeekFrom::Start(size - RECORD_AREA_BYTES)).map_err(|e| Error::io(image, e))?;
    let mut area = vec![0; RECORD_AREA_BYTES as usize];
    file.read_exact(&mut area).map_err(|e| Error::io(image, e))?;
    let mut found: Vec<u64> = area
        .chunks(RECORD_SLOT_BYTES as usize)
        .filter_map(|slot| {
            let end = slot.iter().position(|&b| b == b'\n')?;
            std::str::from_utf8(&slot[..end]).ok()?.strip_prefix("standby-record ")?.parse().ok()
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// What a check of a guest disk found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DiskReport {
    /// Records 1..=n are all in the record area and all files /data/1..=n
    /// hold their content.
    pub complete_through: u64,
    pub highest_record: u64,
}

impl fmt::Display for DiskReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "records and files 1..={} intact (highest record {})", self.complete_through, self.highest_record)
    }
}

/// Checks a copy of a guest disk the way an operator would: replays the
/// ext4 journal (as a mount would), runs `e2fsck -fn` (must find nothing),
/// then reads the record area and every `/data` file (`debugfs rdump`).
/// The image is modified only by the journal replay.
pub fn check_disk(image: &Path, file_kib: u64) -> Result<DiskReport, Error> {
    let replay = Command::new(sbin("e2fsck"))
        .args(["-E", "journal_only", "-p"])
        .arg(image)
        .output()
        .map_err(|e| Error::Disk(format!("e2fsck could not run (apt-get install e2fsprogs): {e}")))?;
    // Exit 1 means "errors corrected": here, the journal was replayed.
    if !matches!(replay.status.code(), Some(0 | 1)) {
        return Err(Error::Disk(format!(
            "{}: replaying the ext4 journal failed: {}",
            image.display(),
            String::from_utf8_lossy(&replay.stdout).trim()
        )));
    }
    let check = Command::new(sbin("e2fsck")).arg("-fn").arg(image).output().expect("e2fsck ran a moment ago");
    if !check.status.success() {
        return Err(Error::Disk(format!(
            "{}: e2fsck -fn found problems: {}",
            image.display(),
            String::from_utf8_lossy(&check.stdout).trim()
        )));
    }

    let records = records(image)?;
    let highest_record = records.last().copied().unwrap_or(0);
    let mut complete_through = 0;
    for (expected, found) in (1..).zip(&records) {
        if *found != expected {
            break;
        }
        complete_through = expected;
    }

    let parent = image.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dump = tempfile::Builder::new()
        .prefix(".standby-guest-check-")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    let output = Command::new(sbin("debugfs"))
        .arg("-R")
        .arg(format!("rdump /data {}", dump.path().display()))
        .arg(image)
        .output()
        .map_err(|e| Error::Disk(format!("debugfs could not run: {e}")))?;
    if !output.status.success() {
        return Err(Error::Disk(format!("debugfs rdump failed: {}", String::from_utf8_lossy(&output.stderr))));
    }
    for seq in 1..=complete_through {
        let path = dump.path().join("data").join(seq.to_string());
        let intact = fs::read(&path).is_ok_and(|bytes| bytes == file_content(seq, file_kib));
        if intact {
            continue;
        }
        // The workload makes a file durable before its record, so a record
        // has its file in any crash-consistent copy; the newest record's
        // file is still let off (a copy of a disk written by an older
        // workload, which wrote the record first).
        if seq == complete_through {
            complete_through -= 1;
            break;
        }
        return Err(Error::Disk(format!("{}: file /data/{seq} is missing or has the wrong content", image.display())));
    }
    Ok(DiskReport { complete_through, highest_record })
}

/// e2fsprogs live in /sbin, which a non-root PATH may lack.
fn sbin(tool: &str) -> PathBuf {
    for directory in ["/usr/sbin", "/sbin"] {
        let path = Path::new(directory).join(tool);
        if path.exists() {
            return path;
        }
    }
    PathBuf::from(tool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_content_matches_what_yes_and_head_print() {
        let content = file_content(42, 1);
        assert_eq!(content.len(), 1024);
        assert!(content.starts_with(b"standby-file 42\nstandby-file 42\n"));
    }

    #[test]
    fn acknowledged_takes_the_highest_record_printed() {
        let console =
            "noise\nstandby-guest: ready, next record 1\nstandby-guest: record 1\r\nstandby-guest: record 2\n";
        assert_eq!(acknowledged(console), Some(2));
        assert_eq!(acknowledged("standby-guest: ready"), None);
    }

    #[test]
    fn a_dynamic_executable_is_told_apart_from_a_static_one() {
        assert!(has_interpreter(&fs::read("/proc/self/exe").unwrap()), "test binaries are dynamic");
        assert!(!has_interpreter(b"not an ELF file"));
    }

    #[test]
    fn cmdline_carries_the_workload() {
        let workload = Workload { count: 5, interval: Duration::from_millis(1500), file_kib: 4 };
        assert!(workload.cmdline().ends_with("standby.count=5 standby.interval=1.500 standby.file_kib=4"));
    }
}
