//! `standby sites`: each site, whether its host answers and since when,
//! its address, its vault, and the replication into it. The control plane
//! asks the other site's host every second (a TCP connection to its
//! listener, [`SiteHost::probe`](crate::site::SiteHost::probe)); a site its
//! own process runs answers as long as the daemon does.

use standby_api::{SiteList, SiteView};
use standby_lifecycle::SITES;

use super::Daemon;
use crate::error::ControlError;
use crate::site::PROBE_INTERVAL;

impl Daemon {
    /// Asks every other host whether it answers, forever (a loop of its own).
    pub(super) fn probe_loop(&self) {
        loop {
            for host in self.sites.hosts() {
                host.probe();
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    pub(super) fn sites(&self) -> Result<SiteList, ControlError> {
        let deployment = self.deployment()?;
        let board = self.statuses()?;
        let status = &board.list;
        let joined = deployment.state.hosts()?;
        let own = deployment.config.host.as_ref().map(|host| host.site);
        let mut sites = Vec::new();
        for site in SITES {
            let into: Vec<_> = status.machines.iter().filter(|machine| machine.replicates_to == Some(site)).collect();
            let worst = into
                .iter()
                .filter_map(|machine| machine.rpo_seconds)
                .fold(None, |worst: Option<f64>, rpo| Some(worst.map_or(rpo, |worst| worst.max(rpo))));
            let host = joined.iter().find(|host| host.site == site);
            let runs_here = own.is_none() || own == Some(site);
            let (address, reachable, since, vault) = if runs_here {
                let address = deployment.config.host.as_ref().map(|host| host.listen.to_string());
                (address, true, self.started.to_string(), deployment.vault_at(site).location)
            } else if let Some(host) = host {
                let (reachable, since) = self.site(site).reachable().unwrap_or((false, self.started));
                let vault = format!("{}{}/{site}", standby_link::remote::SCHEME, host.address);
                (Some(host.address.clone()), reachable, since.to_string(), vault)
            } else {
                (None, false, self.started.to_string(), "(no host has joined for this site)".to_string())
            };
            sites.push(SiteView {
                site,
                address,
                reachable,
                since,
                vault,
                replicating: into.len() as u64,
                worst_rpo_seconds: worst,
            });
        }
        Ok(SiteList { sites })
    }
}
