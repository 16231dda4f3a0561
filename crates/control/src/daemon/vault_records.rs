//! The control plane's records written into each site's vault
//! (`control_records.rs`), in a deployment with a host per site: every
//! [`RECORD_INTERVAL`], when the state changed since the vault last got a
//! record, and not while the vault's host does not answer (it gets the
//! newest once it does).

use std::collections::BTreeMap;
use std::time::Duration;

use standby_lifecycle::{Site, SITES};

use super::Daemon;

/// How often the control plane looks whether its records changed.
const RECORD_INTERVAL: Duration = Duration::from_secs(2);

impl Daemon {
    /// Writes the control plane's records into the vaults, forever (a loop
    /// of its own); returns at once in the embedded default.
    pub(super) fn records_loop(&self) {
        let mut written: BTreeMap<Site, blake3::Hash> = BTreeMap::new();
        let mut failing: BTreeMap<Site, String> = BTreeMap::new();
        loop {
            let Ok(deployment) = self.deployment() else {
                std::thread::sleep(RECORD_INTERVAL);
                continue;
            };
            let Some(host) = deployment.config.host.clone() else { return };
            let document = match crate::control_records::document(&deployment, host.site) {
                Ok(document) => document,
                Err(e) => {
                    eprintln!("standby: the control record cannot be made: {e}");
                    std::thread::sleep(RECORD_INTERVAL);
                    continue;
                }
            };
            let hash = blake3::hash(&document);
            for site in SITES {
                let silent = self.site(site).reachable().is_some_and(|(answers, _)| !answers);
                if silent || written.get(&site) == Some(&hash) {
                    continue;
                }
                let result = deployment
                    .open_vault_at(site)
                    .and_then(|vault| Ok(standby_vault::control::write_record(&vault, &document)?));
                match result {
                    Ok(_) => {
                        written.insert(site, hash);
                        if failing.remove(&site).is_some() {
                            eprintln!("standby: the control record reaches the {site} site's vault again");
                        }
                    }
                    Err(e) => {
                        let said = e.to_string();
                        if failing.get(&site) != Some(&said) {
                            eprintln!(
                                "standby: the control record could not be written into the {site} site's vault: {said}"
                            );
                            failing.insert(site, said);
                        }
                    }
                }
            }
            std::thread::sleep(RECORD_INTERVAL);
        }
    }
}
