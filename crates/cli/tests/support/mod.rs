//! Running the real `standby` binary in a temporary directory.
#![allow(dead_code)]

pub mod daemon;
pub mod hosts;
pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// Asserts success and returns self.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed: {}", self.stderr);
        self
    }

    /// Asserts the bad-input contract: exit 2, one line on stderr naming the problem.
    pub fn bad_input(self, needle: &str) -> Run {
        assert_eq!(self.code, 2, "expected exit 2; stderr: {}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one line on stderr, got: {:?}", self.stderr);
        assert!(lines[0].starts_with("standby: error: "), "unexpected stderr: {}", self.stderr);
        assert!(lines[0].contains(needle), "stderr {:?} does not mention {needle:?}", lines[0]);
        self
    }
}

pub fn standby_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_standby"))
}

pub fn run_with(arguments: &[&str], environment: &[(String, String)]) -> Run {
    let output: Output =
        standby_command().args(arguments).envs(environment.iter().cloned()).output().expect("standby runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn run(arguments: &[&str]) -> Run {
    run_with(arguments, &[])
}

/// Asserts that nothing in the deployment at `home` is another local
/// user's to read: no file or folder in it grants its group or others
/// anything, and the user `nobody` can neither list the deployment nor
/// read any of `files` (naming them from the deployment). The folder
/// holding `home` must be open to others, or the check proves nothing.
pub fn only_its_user_reads(home: &Path, files: &[&str]) {
    fn walk(dir: &Path, found: &mut Vec<(PathBuf, u32)>) {
        use std::os::unix::fs::PermissionsExt;
        found.push((dir.to_path_buf(), std::fs::metadata(dir).unwrap().permissions().mode()));
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let metadata = entry.path().symlink_metadata().unwrap();
            if metadata.is_dir() {
                walk(&entry.path(), found);
            } else if !metadata.is_symlink() {
                found.push((entry.path(), metadata.permissions().mode()));
            }
        }
    }
    let mut found = Vec::new();
    walk(home, &mut found);
    let open: Vec<String> = found
        .iter()
        .filter(|(_, mode)| mode & 0o077 != 0)
        .map(|(p, m)| format!("{} {:o}", p.display(), m & 0o777))
        .collect();
    assert!(open.is_empty(), "others may read or enter: {open:?}");
    let as_nobody = |arguments: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
            .args(arguments)
            .output()
            .expect("setpriv runs")
    };
    let outside = home.parent().unwrap();
    assert!(as_nobody(&["ls", path(outside)]).status.success(), "nobody cannot list {}", outside.display());
    let listing = as_nobody(&["ls", path(home)]);
    assert!(String::from_utf8_lossy(&listing.stderr).contains("Permission denied"), "{listing:?}");
    for file in files {
        let file = home.join(file);
        assert!(file.exists(), "{} is missing", file.display());
        let read = as_nobody(&["cat", path(&file)]);
        assert!(!read.status.success(), "nobody read {}", file.display());
        assert!(String::from_utf8_lossy(&read.stderr).contains("Permission denied"), "{read:?}");
    }
}

/// The key of a deployment's vault `DIR/sites/SITE/vault`: `DIR/keys/SITE.key`
/// (`standby init` encrypts both sites' vaults).
pub fn vault_key(vault: &Path) -> PathBuf {
    let site_dir = vault.parent().expect("DIR/sites/SITE/vault");
    let site = site_dir.file_name().unwrap().to_str().unwrap();
    site_dir.parent().unwrap().parent().unwrap().join("keys").join(format!("{site}.key"))
}

/// Runs the vault command `command` on the deployment's vault `vault`
/// (`DIR/sites/SITE/vault`, with its key) with `arguments`.
pub fn run_on_vault(command: &str, vault: &Path, arguments: &[&str]) -> Run {
    let key = vault_key(vault);
    run(&[&[command, "--vault", path(vault), "--key-file", path(&key)], arguments].concat())
}

/// Starts `standby` with `arguments` (ending in `--json`), for a test to
/// act while it runs; [`json_of`] waits for its answer.
pub fn spawn_json(arguments: &[&str]) -> std::process::Child {
    standby_command().args(arguments).stdout(std::process::Stdio::piped()).spawn().expect("standby runs")
}

/// What a command started by [`spawn_json`] printed, once it ends.
pub fn json_of(child: std::process::Child) -> serde_json::Value {
    let output = child.wait_with_output().expect("standby can be waited for");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {output:?}"))
}

/// Rewrites the deployment's `standby.toml` at `home` with `edit`.
pub fn edit_config(home: &Path, edit: impl FnOnce(String) -> String) {
    let config_path = home.join("standby.toml");
    let config = std::fs::read_to_string(&config_path).expect("the deployment has a config");
    std::fs::write(&config_path, edit(config)).expect("the config is writable");
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// With `STANDBY_KEEP_FAILED=DIR`, copies the deployment at `home` (state,
/// run directory with the QEMU, splitter and export logs) and `also` there,
/// for a test about to fail.
pub fn keep_failed(home: &Path, also: &[&Path]) {
    let Ok(keep) = std::env::var("STANDBY_KEEP_FAILED") else { return };
    let _ = std::process::Command::new("cp").arg("-a").arg(home).args(also).arg(&keep).status();
}

/// A temporary directory with a vault and an image.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub vault: PathBuf,
    pub image: PathBuf,
}

impl Site {
    pub fn new(image_bytes: usize, seed: u64) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        let image = dir.path().join("disk.img");
        std::fs::write(&image, standby_testkit::Random::new(seed).disk_data(image_bytes)).unwrap();
        run(&["vault", "init", path(&vault)]).ok();
        Site { dir, vault, image }
    }

    pub fn sync(&self, disk: &str) -> serde_json::Value {
        run(&["sync", path(&self.image), "--vault", path(&self.vault), "--disk", disk, "--json"]).ok().json()
    }

    pub fn restore(&self, disk: &str, point: &str, output: &Path) -> Run {
        run(&["restore", "--vault", path(&self.vault), "--disk", disk, "--point", point, path(output)])
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A mount that a test makes and always undoes.
pub struct Mount {
    target: PathBuf,
}

impl Mount {
    pub fn new(arguments: &[&str], target: &Path) -> Mount {
        let status = Command::new("mount").args(arguments).arg(target).status().expect("mount runs");
        assert!(status.success(), "mount {arguments:?} {} failed (the tests run as root)", target.display());
        Mount { target: target.to_path_buf() }
    }

    pub fn unmount(self) {}
}

impl Drop for Mount {
    /// Unmounts; a filesystem still in use at the end of a test (a helper
    /// the daemon left running for the next one has a file open in it) is
    /// detached at once and unmounted once it is not (`umount -l`).
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.target).status().expect("umount runs");
        if !status.success() {
            let lazy = Command::new("umount").arg("-l").arg(&self.target).status().expect("umount runs");
            assert!(lazy.success() || std::thread::panicking(), "umount {} failed", self.target.display());
        }
    }
}
