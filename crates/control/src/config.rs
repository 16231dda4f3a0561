//! A deployment's configuration, `standby.toml`: the accelerator, the vault,
//! each site's folders, networks, vault and network namespace, how networks
//! map between sites, and which are bridged. Pure data; `network` checks
//! the networks when a deployment is opened.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use standby_lifecycle::Site;

/// How QEMU runs guests: `kvm` needs a usable /dev/kvm; `tcg` is software
/// emulation and works everywhere; `auto` probes (see `qemu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteConfig {
    /// Where the site's disk images live (relative to the deployment).
    pub disks: PathBuf,
    /// The site's networks; a machine's NICs map onto them.
    pub networks: Vec<String>,
    /// The vault at this site (replication *into* this site): a path
    /// relative to the deployment or a URL. The recovery site's is the
    /// top-level `vault`; the primary site's (reverse replication after a
    /// reprotect) defaults to `sites/primary/vault`. `init` makes both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
    /// The file holding the key of this site's vault (relative to the
    /// deployment), made by `init`; without it the vault is stored in the
    /// clear. Never inside the vault: whoever holds the vault's objects
    /// alone reads nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_key: Option<PathBuf>,
    /// The isolated network drills at this site are plugged into
    /// (default `SITE-test`); never one of the production networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_network: Option<String>,
    /// The network namespace the site's processes (QEMU, splitters,
    /// exports) run in: a name (`ip netns add NAME`) or a path. Without it
    /// they run in the daemon's. Two sites on one host in two namespaces
    /// have separate networks, and the link between them can be cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub accel: Accel,
    /// The vault, a path relative to the deployment or a URL.
    pub vault: String,
    pub primary: SiteConfig,
    pub recovery: SiteConfig,
    /// Which recovery network each primary network becomes on failover.
    #[serde(default)]
    pub network_map: BTreeMap<String, String>,
    /// Networks plugged into a Linux bridge of the host rather than a
    /// segment of their own (see `network`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bridges: BTreeMap<String, String>,
    /// This host, in a deployment with a host per site (`standby init
    /// --site`, `standby join`); absent in the embedded default, where one
    /// process runs both sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostConfig>,
    /// Per site: limits on replication into it (`[sites.recovery]
    /// max_bandwidth = "100MiB/s"`), read again while the daemon runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sites: BTreeMap<Site, SiteLimits>,
    /// Where alerts go besides `standby alerts` (`[alerts] webhook = URL`).
    #[serde(default, skip_serializing_if = "AlertsConfig::is_empty")]
    pub alerts: AlertsConfig,
}

/// `[alerts]`: a webhook that receives every alert raised and cleared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertsConfig {
    /// An `http://` or `https://` URL, POSTed an `AlertEvent` (JSON) per change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

impl AlertsConfig {
    fn is_empty(&self) -> bool {
        self.webhook.is_none()
    }
}

/// A host of a deployment with a host per site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConfig {
    /// The site this host runs.
    pub site: Site,
    /// Where its TLS listener listens: the address the other site's host
    /// and operators reach it at.
    pub listen: std::net::SocketAddr,
    /// The control plane's URL when this host only runs its site's agent
    /// (made by `join`); absent on the host holding the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
}

/// Limits on replication into a site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteLimits {
    /// The most writes into the site's vault may take, as `100MiB/s`
    /// (`KiB`, `MiB`, `GiB`; `KB`, `MB`, `GB`); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<String>,
}

impl SiteLimits {
    /// The bandwidth limit in bytes per second (0: none).
    pub fn bandwidth(&self) -> Result<u64, String> {
        match &self.max_bandwidth {
            None => Ok(0),
            Some(text) => parse_rate(text),
        }
    }
}

/// `100MiB/s` as bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let bad = || format!("max_bandwidth {text:?} is not a rate like \"100MiB/s\"");
    let amount = text.trim().strip_suffix("/s").ok_or_else(bad)?;
    let split = amount.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
    let (number, unit) = amount.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.trim() {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return Err(bad()),
    };
    let rate = number * scale;
    if !(1.0..1e15).contains(&rate) {
        return Err(bad());
    }
    Ok(rate as u64)
}

impl Config {
    /// The configuration of `site`.
    pub fn site(&self, site: Site) -> &SiteConfig {
        match site {
            Site::Primary => &self.primary,
            Site::Recovery => &self.recovery,
        }
    }

    /// The isolated network drills at `site` use.
    pub fn test_network(&self, site: Site) -> String {
        self.site(site).test_network.clone().unwrap_or_else(|| format!("{site}-test"))
    }

    pub(crate) fn default_for_init() -> Config {
        Config {
            accel: Accel::Auto,
            vault: "sites/recovery/vault".into(),
            primary: SiteConfig {
                disks: "sites/primary/disks".into(),
                networks: vec!["primary-lan".into()],
                vault: None,
                vault_key: Some("keys/primary.key".into()),
                test_network: None,
                netns: None,
            },
            recovery: SiteConfig {
                disks: "sites/recovery/disks".into(),
                networks: vec!["recovery-lan".into()],
                vault: None,
                vault_key: Some("keys/recovery.key".into()),
                test_network: None,
                netns: None,
            },
            network_map: default_map(),
            bridges: BTreeMap::new(),
            host: None,
            sites: BTreeMap::new(),
            alerts: AlertsConfig::default(),
        }
    }
}

/// The network map of a new deployment: its one primary network becomes
/// its one recovery network.
pub fn default_map() -> BTreeMap<String, String> {
    BTreeMap::from([("primary-lan".to_string(), "recovery-lan".to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_or_are_refused() {
        assert_eq!(parse_rate("100MiB/s").unwrap(), 100 << 20);
        assert_eq!(parse_rate("1.5 GB/s").unwrap(), 1_500_000_000);
        assert_eq!(parse_rate("512KiB/s").unwrap(), 512 << 10);
        for bad in ["", "100", "100MiB", "MiB/s", "0MiB/s", "-1MiB/s", "10 furlongs/s", "1e30GB/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
