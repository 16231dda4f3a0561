//! `check_disk` is what every guest test trusts: prove it catches a missing
//! record, a damaged file and a damaged filesystem.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use standby_guest::{check_disk, file_content, prepare_disk, RECORD_AREA_BYTES, RECORD_SLOT_BYTES};

fn debugfs_write(image: &Path, commands: &str) {
    let output = Command::new("/usr/sbin/debugfs").args(["-w", "-f", "-"]).arg(image).output_with(commands);
    assert!(output.status.success(), "debugfs: {}", String::from_utf8_lossy(&output.stderr));
}

trait OutputWith {
    fn output_with(&mut self, stdin: &str) -> std::process::Output;
}

impl OutputWith for Command {
    fn output_with(&mut self, stdin: &str) -> std::process::Output {
        let mut child = self
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }
}

fn write_record(image: &Path, seq: u64) {
    let mut file = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    let size = file.metadata().unwrap().len();
    let slots = RECORD_AREA_BYTES / RECORD_SLOT_BYTES;
    file.seek(SeekFrom::Start(size - RECORD_AREA_BYTES + (seq % slots) * RECORD_SLOT_BYTES)).unwrap();
    file.write_all(format!("standby-record {seq}\n").as_bytes()).unwrap();
}

/// A disk as the workload leaves it after `steps` steps.
fn disk_after(dir: &Path, steps: u64) -> std::path::PathBuf {
    let image = dir.join("disk.img");
    prepare_disk(&image, 64 << 20).unwrap();
    let mut commands = String::from("mkdir data\n");
    for seq in 1..=steps {
        let source = dir.join(format!("file-{seq}"));
        std::fs::write(&source, file_content(seq, 4)).unwrap();
        commands.push_str(&format!("write {} data/{seq}\n", source.display()));
        write_record(&image, seq);
    }
    debugfs_write(&image, &commands);
    image
}

#[test]
fn a_complete_disk_passes() {
    let dir = tempfile::tempdir().unwrap();
    let image = disk_after(dir.path(), 5);
    let report = check_disk(&image, 4).unwrap();
    assert_eq!((report.complete_through, report.highest_record), (5, 5));
}

#[test]
fn a_missing_record_ends_the_complete_run() {
    let dir = tempfile::tempdir().unwrap();
    let image = disk_after(dir.path(), 5);
    write_record(&image, 9);
    let mut file = std::fs::OpenOptions::new().write(true).open(&image).unwrap();
    let size = file.metadata().unwrap().len();
    file.seek(SeekFrom::Start(size - RECORD_AREA_BYTES + 3 * RECORD_SLOT_BYTES)).unwrap();
    file.write_all(&[0; 512]).unwrap();
    let report = check_disk(&image, 4).unwrap();
    assert_eq!((report.complete_through, report.highest_record), (2, 9));
}

#[test]
fn a_damaged_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let image = disk_after(dir.path(), 5);
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, file_content(99, 4)).unwrap();
    debugfs_write(&image, &format!("rm data/2\nwrite {} data/2\n", wrong.display()));
    let error = check_disk(&image, 4).unwrap_err().to_string();
    assert!(error.contains("file /data/2"), "{error}");
}

#[test]
fn the_newest_file_may_lag_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let image = disk_after(dir.path(), 5);
    debugfs_write(&image, "rm data/5\n");
    assert_eq!(check_disk(&image, 4).unwrap().complete_through, 4);
}

#[test]
fn a_damaged_filesystem_fails_e2fsck() {
    let dir = tempfile::tempdir().unwrap();
    let image = disk_after(dir.path(), 3);
    // Mark a used inode free: e2fsck -fn reports it.
    debugfs_write(&image, "freei data/1\n");
    let error = check_disk(&image, 4).unwrap_err().to_string();
    assert!(error.contains("e2fsck -fn found problems"), "{error}");
}
