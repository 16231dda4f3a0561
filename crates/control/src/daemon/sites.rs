//! `standby sites`: each site, whether its host answers and since when,
//! its address, its vault, and the replication into it. The control plane
//! asks each joined host's listener every few seconds (a TCP connection to
//! it); a site its own process runs answers as long as the daemon does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use standby_api::{SiteList, SiteView};
use standby_lifecycle::{Site, SITES};

use super::{lock, Daemon};
use crate::error::ControlError;

/// How often the joined hosts are asked.
const PROBE_INTERVAL: Duration = Duration::from_secs(3);
/// How long a host has to take the connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether each joined host answered, and since when.
#[derive(Default)]
pub(super) struct Reachability(Mutex<BTreeMap<Site, (bool, jiff::Timestamp)>>);

impl Reachability {
    fn record(&self, site: Site, reachable: bool) {
        let mut seen = lock(&self.0);
        let changed = seen.get(&site).is_none_or(|(was, _)| *was != reachable);
        if changed {
            seen.insert(site, (reachable, jiff::Timestamp::now()));
            let now = if reachable { "answers" } else { "does not answer" };
            eprintln!("standby: the {site} site's host {now}");
        }
    }

    fn of(&self, site: Site) -> Option<(bool, jiff::Timestamp)> {
        lock(&self.0).get(&site).copied()
    }
}

impl Daemon {
    /// Asks every joined host's listener, forever (a loop of its own).
    pub(super) fn probe_loop(&self) {
        loop {
            if let Ok(deployment) = self.deployment() {
                for host in deployment.state.hosts().unwrap_or_default() {
                    let reachable = host
                        .address
                        .parse::<SocketAddr>()
                        .is_ok_and(|address| std::net::TcpStream::connect_timeout(&address, PROBE_TIMEOUT).is_ok());
                    self.reachability.record(host.site, reachable);
                }
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    pub(super) fn sites(&self) -> Result<SiteList, ControlError> {
        let deployment = self.deployment()?;
        let status = self.status(None)?;
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
                let (reachable, since) = self.reachability.of(site).unwrap_or((false, self.started));
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
