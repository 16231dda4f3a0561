//! The "newc" cpio archive the Linux kernel unpacks as its initramfs
//! (`Documentation/driver-api/early-userspace/buffer-format.rst` in the
//! kernel tree): per entry a 110-byte ASCII header, the name, the data, each
//! padded to 4 bytes; a `TRAILER!!!` entry ends the archive.

/// Builds an archive in memory (an initramfs is a few MiB).
#[derive(Default)]
pub struct Archive {
    bytes: Vec<u8>,
    inode: u32,
}

const MODE_DIRECTORY: u32 = 0o040000;
const MODE_FILE: u32 = 0o100000;
const MODE_SYMLINK: u32 = 0o120000;

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    pub fn directory(&mut self, path: &str) {
        self.entry(path, MODE_DIRECTORY | 0o755, b"");
    }

    pub fn file(&mut self, path: &str, permissions: u32, data: &[u8]) {
        self.entry(path, MODE_FILE | (permissions & 0o7777), data);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, MODE_SYMLINK | 0o777, target.as_bytes());
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, b"");
        self.bytes
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8]) {
        let path = path.trim_start_matches('/');
        self.inode += 1;
        let links = if mode & MODE_DIRECTORY != 0 { 2 } else { 1 };
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            links,
            0, // mtime: fixed, so the same inputs give the same archive
            u32::try_from(data.len()).expect("an initramfs entry is under 4 GiB"),
            0, // dev major
            0, // dev minor
            0, // rdev major
            0, // rdev minor
            u32::try_from(path.len() + 1).expect("short path"),
            0, // check (unused by "070701")
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_cpio_unpacks_what_we_pack() {
        let mut archive = Archive::new();
        archive.directory("bin");
        archive.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        archive.file("odd", 0o600, b"abc");
        archive.symlink("bin/sh", "busybox");
        let bytes = archive.finish();
        assert_eq!(bytes.len() % 4, 0);

        let directory = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(crate::busybox().expect("busybox-static is installed"))
            .args(["cpio", "-i", "-d"])
            .current_dir(directory.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &bytes).unwrap();
        assert!(child.wait().unwrap().success());
        let root = directory.path();
        assert_eq!(std::fs::read(root.join("bin/hello")).unwrap(), b"#!/bin/sh\necho hi\n");
        assert_eq!(std::fs::read(root.join("odd")).unwrap(), b"abc");
        assert_eq!(std::fs::read_link(root.join("bin/sh")).unwrap(), std::path::Path::new("busybox"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(root.join("bin/hello")).unwrap().permissions().mode() & 0o777, 0o755);
    }
}
