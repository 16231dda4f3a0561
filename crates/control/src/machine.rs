//! Machine definitions and disk import.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use standby_lifecycle::{Site, State};

use crate::error::ControlError;

pub use standby_api::{DiskDefinition, MachineDefinition};

/// A machine as the state records it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Machine {
    #[serde(flatten)]
    pub definition: MachineDefinition,
    /// Lifecycle state (docs/cli.md, lifecycle states).
    pub state: State,
    /// Where the machine runs.
    pub active_site: Site,
    pub policy: Option<String>,
    /// The replication group whose points are the machine's (while it is
    /// protected).
    #[serde(default)]
    pub group: Option<String>,
    /// Bumped whenever the machine's authoritative copy moves between
    /// sites: two copies with the same generation but different writes are
    /// a split brain.
    pub generation: u64,
    pub disks: Vec<DiskDefinition>,
    /// What the lifecycle needs to remember: the running drill, the
    /// failover's point and what happened to the source, …
    pub details: crate::records::MachineRecords,
}

impl Machine {
    /// Its disks' images at its active site.
    pub fn images(&self) -> Vec<PathBuf> {
        self.disks.iter().map(|disk| disk.image_at(self.active_site).to_path_buf()).collect()
    }

    pub fn name(&self) -> &str {
        &self.definition.name
    }

    /// The machine as the API shows it, from the state alone (no runtime).
    pub fn view(&self) -> standby_api::MachineView {
        standby_api::MachineView {
            definition: self.definition.clone(),
            state: self.state,
            active_site: self.active_site,
            policy: self.policy.clone(),
            group: self.group.clone(),
            generation: self.generation,
            disks: self
                .disks
                .iter()
                .map(|disk| standby_api::DiskView { definition: disk.clone(), running_from: None })
                .collect(),
            details: serde_json::to_value(&self.details).expect("records serialise"),
            runtime: None,
            networks: None,
        }
    }
}

/// Machine names become file and vault disk names: 1–48 characters of
/// `A–Z a–z 0–9 . _ -`, not starting with `.` or `-`.
pub fn validate_machine_name(name: &str) -> Result<(), ControlError> {
    let valid = !name.is_empty()
        && name.len() <= 48
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(ControlError::Refused(format!(
            "machine name {name:?} is not allowed: use 1 to 48 letters, digits, '.', '_' or '-', not starting with \
             '.' or '-'"
        )));
    }
    Ok(())
}

/// Imports any image `qemu-img` reads as a raw image at `target` (sparse),
/// through `target.partial`, so a failed import leaves nothing.
pub fn import_disk(source: &Path, target: &Path) -> Result<u64, ControlError> {
    if !source.is_file() {
        return Err(ControlError::Refused(format!("disk {} does not exist or is not a file", source.display())));
    }
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(source)
        .output()
        .map_err(|e| ControlError::Failed(format!("qemu-img could not run (apt-get install qemu-utils): {e}")))?;
    if !info.status.success() {
        return Err(ControlError::Refused(format!(
            "disk {} is not an image qemu-img can read: {}",
            source.display(),
            String::from_utf8_lossy(&info.stderr).trim()
        )));
    }
    let info: serde_json::Value = serde_json::from_slice(&info.stdout)
        .map_err(|e| ControlError::Failed(format!("qemu-img info printed no JSON: {e}")))?;
    let format = info["format"].as_str().unwrap_or("raw").to_string();
    let bytes = info["virtual-size"].as_u64().unwrap_or(0);
    if bytes == 0 {
        return Err(ControlError::Refused(format!("disk {} is empty", source.display())));
    }
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let output = Command::new("qemu-img")
        .args(["convert", "-f", &format, "-O", "raw", "-S", "4k"])
        .arg(source)
        .arg(&partial)
        .output()
        .map_err(|e| ControlError::Failed(format!("qemu-img could not run: {e}")))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(ControlError::Failed(format!(
            "importing {} failed: {}",
            source.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let synced = std::fs::File::open(&partial).and_then(|f| f.sync_all());
    if let Err(e) = synced.and_then(|()| std::fs::rename(&partial, target)) {
        let _ = std::fs::remove_file(&partial);
        return Err(ControlError::io(target, e));
    }
    Ok(bytes)
}
