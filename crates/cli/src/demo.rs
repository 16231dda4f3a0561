//! `standby demo`: the disk-level journey on a sample ext4 disk, narrated.
//! It makes a real filesystem with `mke2fs -d`, syncs it, changes a file in it
//! with `debugfs` (no mount needed), syncs again, restores both points, checks
//! them byte for byte and with `e2fsck -fn`, and verifies the vault.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use standby_format::PointKind;
use standby_vault::backend::LocalBackend;
use standby_vault::restore::RestoreOptions;
use standby_vault::sync::SyncOptions;
use standby_vault::{format_time, InitOptions, PointSelector, Vault};

use crate::output::human_bytes;

const DISK_MIB: u64 = 64;

pub fn run(dir: Option<PathBuf>) -> anyhow::Result<u8> {
    // A temporary directory is removed when `_temporary` is dropped.
    let (root, _temporary) = match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            (dir, None)
        }
        None => {
            let temporary =
                tempfile::Builder::new().prefix("standby-demo-").tempdir().context("creating a temporary directory")?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    journey(&root)?;
    if _temporary.is_none() {
        println!("\ndemo complete; its files are in {}", root.display());
    } else {
        println!("\ndemo complete (pass --dir DIR to keep its files)");
    }
    Ok(0)
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn journey(root: &Path) -> anyhow::Result<u8> {
    let image = root.join("disk.img");
    let tree = root.join("sample-files");
    let vault_dir = root.join("vault");
    for tool in ["mke2fs", "debugfs", "e2fsck"] {
        which(tool).with_context(|| format!("the demo needs {tool}: apt-get install e2fsprogs"))?;
    }
    if vault_dir.exists() || image.exists() {
        bail!("{} already holds a demo; choose an empty --dir", root.display());
    }

    step(&format!("making a {DISK_MIB} MiB disk image with a real ext4 filesystem"));
    make_sample_tree(&tree)?;
    run_tool("mke2fs", &["-q", "-F", "-t", "ext4", "-d", path(&tree), path(&image), &format!("{DISK_MIB}M")])?;
    println!("{} holds an ext4 filesystem with the files of {}", image.display(), tree.display());

    step("creating a vault in a local directory");
    let vault = Vault::init(std::sync::Arc::new(LocalBackend::new(vault_dir.clone())), InitOptions::default())?;
    println!("vault {} (format {})", vault.location(), vault.format_version());

    step("first sync: a full copy");
    let first_hash = hash_file(&image)?;
    let report = sync(&vault, &image, "Initial replication")?;
    println!(
        "point {} at {}: read {}, stored {} ({} zero chunks skipped)",
        report.point,
        report.time,
        human_bytes(report.bytes_read),
        human_bytes(report.bytes_new),
        report.chunks_zero
    );

    step("changing a file inside the filesystem");
    let note = root.join("note.txt");
    std::fs::write(&note, "written after the first recovery point\n".repeat(2000))?;
    run_tool("debugfs", &["-w", "-R", &format!("write {} /after-point-1.txt", path(&note)), path(&image)])?;
    println!("wrote /after-point-1.txt into the image");

    step("second sync: only changed chunks move");
    let second_hash = hash_file(&image)?;
    let report = sync(&vault, &image, "after a change")?;
    println!(
        "point {} at {}: read {}, stored only {} new",
        report.point,
        report.time,
        human_bytes(report.bytes_read),
        human_bytes(report.bytes_new)
    );

    step("recovery points");
    for point in vault.points("demo-disk")?.points {
        println!(
            "  point {}  {}  {}  {}",
            point.sequence,
            format_time(point.time_micros),
            point.kind.name(),
            point.label
        );
    }

    for (sequence, expected) in [(1u64, first_hash), (2, second_hash)] {
        step(&format!("restoring point {sequence}"));
        let point = vault.select_point("demo-disk", &PointSelector::Sequence(sequence))?;
        let output = root.join(format!("restored-{sequence}.img"));
        standby_vault::restore::restore_point(
            &vault,
            &point,
            &output,
            RestoreOptions { force: false, progress: &|_| {} },
        )?;
        let restored = hash_file(&output)?;
        if restored != expected {
            bail!("restored point {sequence} differs from the image it was taken from");
        }
        println!("{} is byte-identical to the disk at point {sequence}", output.display());
        run_tool("e2fsck", &["-fn", path(&output)])?;
        println!("e2fsck -fn: filesystem clean");
        let contents = Command::new("debugfs").args(["-R", "cat /after-point-1.txt", path(&output)]).output()?;
        let has_file = contents.status.success() && contents.stdout == std::fs::read(&note)?;
        println!("/after-point-1.txt {}", if has_file { "is there" } else { "is not there (it was written later)" });
        if has_file != (sequence == 2) {
            bail!("point {sequence} has the wrong contents");
        }
    }

    step("verifying every object in the vault");
    let report = standby_vault::verify::verify(&vault, &|_| {})?;
    if !report.is_clean() {
        bail!("the vault is damaged: {:?}", report.damaged);
    }
    println!("checked {} packs and {} points: healthy", report.packs_checked, report.points_checked);
    Ok(0)
}

fn sync(vault: &Vault, image: &Path, label: &str) -> anyhow::Result<standby_vault::sync::SyncReport> {
    Ok(standby_vault::sync::sync_image(
        vault,
        image,
        "demo-disk",
        SyncOptions { kind: PointKind::CrashConsistent, label: label.to_string(), progress: &|_| {} },
    )?)
}

fn make_sample_tree(tree: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(tree.join("etc"))?;
    std::fs::create_dir_all(tree.join("var/log"))?;
    std::fs::write(tree.join("etc/hostname"), "demo-guest\n")?;
    for i in 0..200 {
        let line = format!("{i:05} standby demo log line: replication keeps this record safe\n");
        std::fs::write(tree.join(format!("var/log/app-{i:03}.log")), line.repeat(100 + i * 7))?;
    }
    // Some real, varied files from this machine, when it has them.
    let licenses = Path::new("/usr/share/common-licenses");
    if licenses.is_dir() {
        std::fs::create_dir_all(tree.join("licenses"))?;
        for entry in std::fs::read_dir(licenses)?.flatten() {
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                std::fs::copy(entry.path(), tree.join("licenses").join(entry.file_name()))?;
            }
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(*blake3::hash(&bytes).as_bytes())
}

fn which(tool: &str) -> anyhow::Result<()> {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if Path::new(dir).join(tool).exists() {
            return Ok(());
        }
    }
    bail!("{tool} not found")
}

fn run_tool(tool: &str, arguments: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(tool).args(arguments).output().with_context(|| format!("running {tool}"))?;
    if !output.status.success() {
        bail!("{tool} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("demo paths are UTF-8")
}
