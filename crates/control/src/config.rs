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
        }
    }
}

/// The network map of a new deployment: its one primary network becomes
/// its one recovery network.
pub fn default_map() -> BTreeMap<String, String> {
    BTreeMap::from([("primary-lan".to_string(), "recovery-lan".to_string())])
}
