//! Where a site keeps the files of machines running from a point: the
//! overlays of failovers and drills, the folder writes are set aside in.
//! Names only: the files are acted on through the site's host.

use std::path::PathBuf;

use standby_lifecycle::{Instance, Site};

use crate::deployment::Deployment;
use crate::machine::Machine;

/// The folder of `site` (`sites/SITE`).
pub(super) fn site_folder(deployment: &Deployment, site: Site) -> PathBuf {
    let disks = deployment.path(&deployment.config.site(site).disks);
    disks.parent().unwrap_or(&deployment.home).to_path_buf()
}

/// Where the writes of disk `index` go when `machine` runs from a point in
/// `role`: beside the site's disks for a failover, in the site's `drills/`
/// for a drill.
pub(super) fn overlay_path(deployment: &Deployment, machine: &Machine, index: usize, role: Instance) -> PathBuf {
    let site = role.site(machine.active_site);
    let file = machine.disks[index].recovery_path.with_extension("overlay");
    let file = file.file_name().expect("disk images have names");
    match role {
        Instance::Drill => site_folder(deployment, site).join("drills").join(file),
        Instance::Primary | Instance::Recovery => deployment.path(&deployment.config.site(site).disks).join(file),
    }
}
