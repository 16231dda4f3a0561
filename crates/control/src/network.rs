//! Site networks and the machines' NICs on them.
//!
//! Each site has named networks (`[primary] networks`, `[recovery]
//! networks`) and a test network for drills (`test_network`, isolated: no
//! production machine is ever on it). `[network_map]` says which recovery
//! network each primary network becomes on failover. A NIC is defined once,
//! at `machine add`, as `--nic NETWORK[,recovery=NETWORK][,mac=MAC][,model=MODEL]`
//! and stored resolved (both networks, the MAC), so it lands on the same
//! segment every time it starts at a site, with the same MAC everywhere.
//!
//! How a network reaches QEMU (its *backend*): by default a segment of its
//! own that needs no privileges, a UDP multicast group on the host's
//! loopback that every NIC on the network joins (`-netdev socket,mcast=`;
//! the group and port are derived from the deployment and the network's
//! name, so two deployments on one host never share a segment). A network
//! listed in `[bridges]` attaches to that Linux bridge instead, which is
//! how a real site reaches its LAN: QEMU opens a tap device of its own
//! (gone when QEMU ends) and runs a two-line script the daemon writes in
//! the machine's run folder that puts it on the bridge (this needs the
//! daemon to run as root, or with CAP_NET_ADMIN).

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Serialize;

use standby_lifecycle::{Instance, Site, SITES};

pub use crate::config::default_map;
use crate::config::Config;
use crate::error::ControlError;

/// NIC models a machine may use (QEMU device names).
const MODELS: &[&str] = &["virtio-net-pci", "e1000", "e1000e", "rtl8139"];

/// A machine's NIC, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// Its network at the primary site.
    pub primary: String,
    /// Its network at the recovery site.
    pub recovery: String,
    pub mac: String,
    pub model: String,
    /// Its static address at each site and in a drill (`addresses.rs`).
    pub addresses: NicAddresses,
    /// How those addresses reach the guest.
    pub apply: AddressApply,
}

pub use standby_api::{AddressApply, Attachment, NicBackend as Backend, NicView};

use crate::addresses::{GuestAddress, GuestAddresses, NicAddresses, Pending};

/// How a NIC spec is written (in refusals).
const NIC_USAGE: &str = "NETWORK[,recovery=NETWORK][,mac=MAC][,model=MODEL][,SITE-address=ADDRESS/PREFIX]\
                         [,SITE-gateway=IP][,SITE-dns=IP+IP][,apply=agent|seed] (SITE: primary, recovery or drill)";

impl Nic {
    /// Parses a NIC as `machine add --nic` takes it (or as stored), filling
    /// in the recovery network from `[network_map]` and a MAC derived from
    /// the machine's name and the NIC's position.
    pub fn parse(spec: &str, machine: &str, position: usize, config: &Config) -> Result<Nic, ControlError> {
        let refuse = |why: String| ControlError::Refused(format!("--nic {spec:?}: {why}"));
        let mut words = spec.split(',');
        let first = words.next().unwrap_or_default();
        let mut primary = first.strip_prefix("network=").unwrap_or(first).to_string();
        let mut recovery = None;
        let mut mac = None;
        let mut model = "virtio-net-pci".to_string();
        let mut addresses = NicAddresses::default();
        let mut pending = Pending::default();
        let mut apply = AddressApply::Agent;
        for word in words {
            match word.split_once('=') {
                Some(("recovery", value)) => recovery = Some(value.to_string()),
                Some(("mac", value)) => mac = Some(value.to_ascii_lowercase()),
                Some(("model", value)) => model = value.to_string(),
                Some(("network", value)) => primary = value.to_string(),
                Some(("apply", "agent")) => apply = AddressApply::Agent,
                Some(("apply", "seed")) => apply = AddressApply::Seed,
                Some(("apply", other)) => {
                    return Err(refuse(format!(
                        "apply={other:?}: addresses are applied by the guest's `agent` (qemu-guest-agent) or a NoCloud \
                         `seed` (cloud-init)"
                    )))
                }
                Some((key, value)) if addresses.take(key, value, &mut pending).map_err(&refuse)? => {}
                _ => return Err(refuse(format!("{word:?} is not understood; write {NIC_USAGE}"))),
            }
        }
        addresses.finish(pending).map_err(refuse)?;
        if !config.primary.networks.contains(&primary) {
            return Err(refuse(format!(
                "{primary:?} is not a network of the primary site (it has: {}); add it to [primary] networks in \
                 standby.toml",
                config.primary.networks.join(", ")
            )));
        }
        let recovery = match recovery.or_else(|| config.network_map.get(&primary).cloned()) {
            Some(network) => network,
            None => {
                return Err(refuse(format!(
                    "network {primary:?} has no recovery network: map it in [network_map] in standby.toml or give \
                     recovery=NETWORK"
                )))
            }
        };
        if !config.recovery.networks.contains(&recovery) {
            return Err(refuse(format!(
                "{recovery:?} is not a network of the recovery site (it has: {})",
                config.recovery.networks.join(", ")
            )));
        }
        let mac = match mac {
            Some(mac) if valid_mac(&mac) => mac,
            Some(mac) => {
                return Err(refuse(format!(
                    "MAC {mac:?} is not a unicast address like 52:54:00:12:34:56 (six hex pairs, first byte even)"
                )))
            }
            None => derived_mac(machine, position),
        };
        if !MODELS.contains(&model.as_str()) {
            return Err(refuse(format!("model {model:?} is not one of {}", MODELS.join(", "))));
        }
        Ok(Nic { primary, recovery, mac, model, addresses, apply })
    }

    /// The stored form: every field written out.
    pub fn spec(&self) -> String {
        let mut spec = format!("{},recovery={},mac={},model={}", self.primary, self.recovery, self.mac, self.model);
        for word in self.addresses.spec_words() {
            spec.push(',');
            spec.push_str(&word);
        }
        if self.apply == AddressApply::Seed {
            spec.push_str(",apply=seed");
        }
        spec
    }

    /// Its network at `site`.
    pub fn network_at(&self, site: Site) -> &str {
        match site {
            Site::Primary => &self.primary,
            Site::Recovery => &self.recovery,
        }
    }
}

/// The NICs of a machine whose stored specs are `specs`.
pub fn nics(specs: &[String], machine: &str, config: &Config) -> Result<Vec<Nic>, ControlError> {
    specs.iter().enumerate().map(|(position, spec)| Nic::parse(spec, machine, position, config)).collect()
}

/// Where each NIC is plugged in when `instance` of a machine active at
/// `active` runs (a drill on the isolated test network of the site it runs at).
pub fn attachments(nics: &[Nic], instance: Instance, active: Site, config: &Config, home: &Path) -> Vec<Attachment> {
    nics.iter()
        .map(|nic| {
            let network = match instance.as_site() {
                Some(site) => nic.network_at(site).to_string(),
                None => config.test_network(instance.site(active)),
            };
            let backend = match config.bridges.get(&network) {
                Some(bridge) => Backend::Bridge { bridge: bridge.clone() },
                None => Backend::Segment { segment: segment(home, &network) },
            };
            let address = nic.addresses.at(instance).map(|address| address.view(nic.apply));
            Attachment { network, mac: nic.mac.clone(), model: nic.model.clone(), backend, address }
        })
        .collect()
}

/// Whether any NIC of the stored specs `specs` has a static address
/// somewhere (a word `PLACE-address=` of its stored form).
pub fn has_static_address(specs: &[String]) -> bool {
    specs.iter().flat_map(|spec| spec.split(',')).any(crate::addresses::is_address_word)
}

/// The first static address `instance` of `machine` has (its NICs in
/// order), where a probe reaches it.
pub fn static_ip(machine: &crate::Machine, instance: Instance, config: &Config) -> Option<std::net::IpAddr> {
    let nics = nics(&machine.definition.nics, &machine.definition.name, config).ok()?;
    nics.iter().find_map(|nic| nic.addresses.at(instance).map(|address| address.ip))
}

/// The static addresses `instance` of machine `key`'s NICs get in its
/// guest, `None` when none has one there. A machine applies all its
/// addresses one way: a NoCloud seed when any NIC asks for one.
pub fn guest_addresses(nics: &[Nic], instance: Instance, key: &str) -> Option<GuestAddresses> {
    let addressed: Vec<GuestAddress> = nics
        .iter()
        .filter_map(|nic| {
            nic.addresses.at(instance).map(|address| GuestAddress { mac: nic.mac.clone(), address: address.clone() })
        })
        .collect();
    if addressed.is_empty() {
        return None;
    }
    let seed = nics.iter().any(|nic| nic.apply == AddressApply::Seed);
    Some(GuestAddresses {
        apply: if seed { AddressApply::Seed } else { AddressApply::Agent },
        nics: addressed,
        instance: key.to_string(),
    })
}

/// What `machine list --json` shows of a machine's NICs: for each, where
/// it is plugged in at each site and when a drill of it runs (at the site
/// the machine is not active at).
pub fn describe(machine: &crate::Machine, config: &Config, home: &Path) -> Result<Vec<NicView>, ControlError> {
    let nics = nics(&machine.definition.nics, &machine.definition.name, config)?;
    let at = |instance| attachments(&nics, instance, machine.active_site, config, home);
    let (primary, recovery, drill) = (at(Instance::Primary), at(Instance::Recovery), at(Instance::Drill));
    Ok(nics
        .iter()
        .zip(primary.into_iter().zip(recovery).zip(drill))
        .map(|(nic, ((primary, recovery), drill))| NicView {
            mac: nic.mac.clone(),
            model: nic.model.clone(),
            primary,
            recovery,
            drill,
        })
        .collect())
}

/// The multicast group and port of network `name` in the deployment at
/// `home`: 239.255.0.0/16 (administratively scoped), ports 20000–59999.
pub fn segment(home: &Path, name: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"standby network segment\0");
    hasher.update(home.as_os_str().as_encoded_bytes());
    hasher.update(b"\0");
    hasher.update(name.as_bytes());
    let hash = hasher.finalize();
    let bytes = hash.as_bytes();
    let group = Ipv4Addr::new(239, 255, bytes[0], bytes[1].max(1));
    let port = 20_000 + u16::from_le_bytes([bytes[2], bytes[3]]) % 40_000;
    format!("{group}:{port}")
}

/// The QEMU arguments that plug `attachments` in, as `-netdev`/`-device`
/// pairs; a bridged NIC's script goes in `run_dir`.
pub fn qemu_arguments(attachments: &[Attachment], run_dir: &Path) -> Result<Vec<String>, ControlError> {
    let mut arguments = Vec::new();
    for (index, attachment) in attachments.iter().enumerate() {
        let netdev = match &attachment.backend {
            Backend::Segment { segment } => format!("socket,id=net{index},mcast={segment},localaddr=127.0.0.1"),
            Backend::Bridge { bridge } => {
                // QEMU runs it with the tap's name once it has opened it.
                let script = run_dir.join(format!("net{index}-up"));
                let text = format!("#!/bin/sh\nexec ip link set \"$1\" master '{bridge}' up\n");
                std::fs::create_dir_all(run_dir).map_err(|e| ControlError::io(run_dir, e))?;
                std::fs::write(&script, text).map_err(|e| ControlError::io(&script, e))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| ControlError::io(&script, e))?;
                format!("tap,id=net{index},script={},downscript=no", script.display())
            }
        };
        arguments.extend([
            "-netdev".into(),
            netdev,
            "-device".into(),
            format!("{},netdev=net{index},mac={}", attachment.model, attachment.mac),
        ]);
    }
    Ok(arguments)
}

/// Checks a config's networks: names unique, test networks isolated,
/// the map's networks real. Called when a deployment is opened.
pub fn check_config(config: &Config) -> Result<(), ControlError> {
    let refuse = |why: String| ControlError::Refused(format!("standby.toml: {why}"));
    for site in SITES {
        let site_config = config.site(site);
        for network in &site_config.networks {
            if !valid_name(network) {
                return Err(refuse(format!(
                    "network name {network:?} of the {site} site is not allowed: use letters, digits, '.', '_', '-'"
                )));
            }
        }
        let test = &config.test_network(site);
        if config.primary.networks.contains(test) || config.recovery.networks.contains(test) {
            return Err(refuse(format!(
                "the {site} site's test_network {test:?} is also a production network; a drill's network must be \
                 isolated, give it a name of its own"
            )));
        }
    }
    for (network, bridge) in &config.bridges {
        let known = [&config.primary, &config.recovery].iter().any(|site| site.networks.contains(network))
            || SITES.map(|site| config.test_network(site)).contains(network);
        if !known {
            return Err(refuse(format!("[bridges] {network}: no site has a network of that name")));
        }
        let interface = !bridge.is_empty()
            && bridge.len() <= 15
            && bridge.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !interface {
            return Err(refuse(format!(
                "[bridges] {network} = {bridge:?} is not a Linux interface name (1 to 15 letters, digits, '.', '_', \
                 '-')"
            )));
        }
    }
    for (primary, recovery) in &config.network_map {
        if !config.primary.networks.contains(primary) || !config.recovery.networks.contains(recovery) {
            return Err(refuse(format!(
                "[network_map] {primary} = {recovery:?} must map a [primary] network to a [recovery] network"
            )));
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn valid_mac(mac: &str) -> bool {
    let pairs: Vec<&str> = mac.split(':').collect();
    pairs.len() == 6
        && pairs.iter().all(|pair| pair.len() == 2 && u8::from_str_radix(pair, 16).is_ok())
        && u8::from_str_radix(pairs[0], 16).is_ok_and(|first| first & 1 == 0)
}

/// QEMU's locally administered prefix and three bytes from the machine's
/// name and the NIC's position: stable across sites and restarts.
fn derived_mac(machine: &str, position: usize) -> String {
    let hash = blake3::hash(format!("standby mac\0{machine}\0{position}").as_bytes());
    let b = hash.as_bytes();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
            accel = "tcg"
            vault = "v"
            [primary]
            disks = "p"
            networks = ["primary-lan", "primary-dmz"]
            [recovery]
            disks = "r"
            networks = ["recovery-lan"]
            [network_map]
            primary-lan = "recovery-lan"
            [bridges]
            recovery-lan = "br-recovery"
        "#;
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_nic_is_resolved_and_stored_in_full() {
        let config = config();
        let nic = Nic::parse("primary-lan", "web", 0, &config).unwrap();
        assert_eq!(nic.recovery, "recovery-lan");
        assert!(valid_mac(&nic.mac) && nic.mac.starts_with("52:54:00:"));
        assert_eq!(Nic::parse(&nic.spec(), "web", 0, &config).unwrap(), nic);
        let addressed = Nic::parse("primary-lan,apply=seed,recovery-address=10.20.0.5/24", "web", 0, &config).unwrap();
        assert_eq!(Nic::parse(&addressed.spec(), "web", 0, &config).unwrap(), addressed);
        assert!(has_static_address(&[addressed.spec()]) && !has_static_address(&[nic.spec()]));
        assert_ne!(Nic::parse("primary-lan", "web", 1, &config).unwrap().mac, nic.mac);
        let explicit =
            Nic::parse("primary-dmz,recovery=recovery-lan,mac=02:00:00:00:00:01,model=e1000", "web", 0, &config);
        assert_eq!(explicit.unwrap().spec(), "primary-dmz,recovery=recovery-lan,mac=02:00:00:00:00:01,model=e1000");
    }

    #[test]
    fn bad_nics_are_refused_naming_the_problem() {
        let config = config();
        for (spec, needle) in [
            ("nowhere", "not a network of the primary site"),
            ("primary-dmz", "has no recovery network"),
            ("primary-lan,recovery=elsewhere", "not a network of the recovery site"),
            ("primary-lan,mac=01:00:00:00:00:01", "not a unicast address"),
            ("primary-lan,mac=52:54:00:zz:00:01", "not a unicast address"),
            ("primary-lan,model=ne2k", "not one of"),
            ("primary-lan,speed=10", "not understood"),
            ("primary-lan,apply=dhcp", "apply=\"dhcp\": addresses are applied by"),
            ("primary-lan,recovery-address=10.20.0.5", "no prefix length"),
        ] {
            let error = Nic::parse(spec, "web", 0, &config).unwrap_err().to_string();
            assert!(error.contains(needle), "{spec}: {error}");
        }
    }

    #[test]
    fn sites_drills_and_bridges_get_their_own_attachments() {
        let config = config();
        let home = Path::new("/deployments/a");
        let nics = vec![Nic::parse("primary-lan", "web", 0, &config).unwrap()];
        let at = |instance| attachments(&nics, instance, Site::Primary, &config, home).remove(0);
        assert_eq!(at(Instance::Primary).network, "primary-lan");
        assert_eq!(at(Instance::Primary).backend, Backend::Segment { segment: segment(home, "primary-lan") });
        assert_eq!(at(Instance::Recovery).backend, Backend::Bridge { bridge: "br-recovery".into() });
        assert_eq!(at(Instance::Drill).network, "recovery-test");
        let segments =
            [segment(home, "primary-lan"), segment(home, "recovery-test"), segment(Path::new("/b"), "primary-lan")];
        assert!(segments[0] != segments[1] && segments[0] != segments[2]);
        let run_dir = tempfile::tempdir().unwrap();
        let arguments = qemu_arguments(&[at(Instance::Primary)], run_dir.path()).unwrap();
        assert_eq!(arguments[0], "-netdev");
        assert!(arguments[1].starts_with("socket,id=net0,mcast=239.255."));
        assert_eq!(arguments[3], format!("virtio-net-pci,netdev=net0,mac={}", nics[0].mac));
        let bridged = qemu_arguments(&[at(Instance::Recovery)], run_dir.path()).unwrap();
        let script = run_dir.path().join("net0-up");
        assert_eq!(bridged[1], format!("tap,id=net0,script={},downscript=no", script.display()));
        let text = std::fs::read_to_string(&script).unwrap();
        assert!(text.contains("ip link set \"$1\" master 'br-recovery' up"), "{text}");
    }

    #[test]
    fn a_test_network_that_is_a_production_network_is_refused() {
        let mut config = config();
        assert!(check_config(&config).is_ok());
        config.recovery.test_network = Some("recovery-lan".into());
        assert!(check_config(&config).unwrap_err().to_string().contains("must be isolated"));
        let mut config = self::tests::config();
        config.bridges.insert("recovery-lan".into(), "br0; reboot".into());
        assert!(check_config(&config).unwrap_err().to_string().contains("not a Linux interface name"));
        let mut config = self::tests::config();
        config.bridges.insert("elsewhere".into(), "br0".into());
        assert!(check_config(&config).unwrap_err().to_string().contains("no site has a network of that name"));
    }
}
