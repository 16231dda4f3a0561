//! Static addresses of a machine's NICs, per site (ASR's "IP address after
//! failover"): what a NIC spec says (`primary-address=10.1.0.5/24`,
//! `recovery-gateway=…`, `drill-dns=…`, `apply=agent|seed`), checked, and
//! how it reaches a guest: its agent sets it once it answers
//! (`site/address_keeper.rs`), or a NoCloud seed carries it to cloud-init
//! ([`seed_image`]).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use standby_api::{AddressApply, StaticAddress};
use standby_lifecycle::{Instance, INSTANCES};

use crate::error::ControlError;

/// At most this many name servers per address (what resolv.conf reads).
const DNS_MAX: usize = 3;

/// One NIC's static address at one place (a site, or a drill).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NicAddress {
    pub ip: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

/// A NIC's addresses where its machine can run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NicAddresses {
    pub primary: Option<NicAddress>,
    pub recovery: Option<NicAddress>,
    /// On the test network, in a drill.
    pub drill: Option<NicAddress>,
}

/// The place a spec key (`PLACE-address`, `PLACE-gateway`, `PLACE-dns`)
/// names, its index in [`INSTANCES`], and what of it the key sets.
fn place_of(key: &str) -> Option<(usize, &str)> {
    let (place, what) = key.rsplit_once('-')?;
    INSTANCES.iter().position(|instance| instance.name() == place).map(|index| (index, what))
}

/// Whether spec word `word` gives a NIC a static address somewhere.
pub fn is_address_word(word: &str) -> bool {
    word.split_once('=').and_then(|(key, _)| place_of(key)).is_some_and(|(_, what)| what == "address")
}

impl NicAddresses {
    pub fn at(&self, instance: Instance) -> Option<&NicAddress> {
        match instance {
            Instance::Primary => self.primary.as_ref(),
            Instance::Recovery => self.recovery.as_ref(),
            Instance::Drill => self.drill.as_ref(),
        }
    }

    fn at_mut(&mut self, instance: Instance) -> &mut Option<NicAddress> {
        match instance {
            Instance::Primary => &mut self.primary,
            Instance::Recovery => &mut self.recovery,
            Instance::Drill => &mut self.drill,
        }
    }

    pub fn is_empty(&self) -> bool {
        INSTANCES.iter().all(|instance| self.at(*instance).is_none())
    }

    /// Takes `key=value` of a NIC spec when it is an address key (`PLACE-address`,
    /// `PLACE-gateway`, `PLACE-dns`); `Ok(false)` when the key is not one.
    pub fn take(&mut self, key: &str, value: &str, pending: &mut Pending) -> Result<bool, String> {
        let Some((index, what)) = place_of(key) else { return Ok(false) };
        let instance = INSTANCES[index];
        match what {
            "address" => {
                let (ip, prefix) = parse_cidr(value).map_err(|why| format!("{key}={value:?}: {why}"))?;
                *self.at_mut(instance) = Some(NicAddress { ip, prefix, gateway: None, dns: Vec::new() });
            }
            "gateway" => {
                let gateway = value
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{key}={value:?} is not an IP address (as 10.1.0.1)"))?;
                pending.gateways[index] = Some(gateway);
            }
            "dns" => {
                let servers: Result<Vec<IpAddr>, _> = value.split('+').map(str::parse).collect();
                let servers = servers.map_err(|_| {
                    format!("{key}={value:?} is not a list of IP addresses joined by '+' (as 10.1.0.53+10.1.0.54)")
                })?;
                if servers.len() > DNS_MAX {
                    return Err(format!("{key}: at most {DNS_MAX} name servers"));
                }
                pending.dns[index] = servers;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Puts each place's gateway and name servers with its address,
    /// checked against it.
    pub fn finish(&mut self, pending: Pending) -> Result<(), String> {
        for (index, instance) in INSTANCES.into_iter().enumerate() {
            let place = instance.name();
            let gateway = pending.gateways[index];
            let dns = pending.dns[index].clone();
            let Some(address) = self.at_mut(instance) else {
                if gateway.is_some() || !dns.is_empty() {
                    return Err(format!(
                        "{place}-gateway and {place}-dns go with an address: give {place}-address=ADDRESS/PREFIX too"
                    ));
                }
                continue;
            };
            if let Some(gateway) = gateway {
                if gateway.is_ipv4() != address.ip.is_ipv4() {
                    return Err(format!("{place}-gateway {gateway} is not of the same IP version as {}", address.ip));
                }
                if gateway == address.ip || !same_subnet(address.ip, gateway, address.prefix) {
                    return Err(format!(
                        "{place}-gateway {gateway} is not another address in {}/{} (a gateway is reached on the \
                         NIC's own subnet)",
                        address.ip, address.prefix
                    ));
                }
            }
            address.gateway = gateway;
            address.dns = dns;
        }
        Ok(())
    }

    /// The spec words that write these addresses out.
    pub fn spec_words(&self) -> Vec<String> {
        let mut words = Vec::new();
        for instance in INSTANCES {
            let place = instance.name();
            let Some(address) = self.at(instance) else { continue };
            words.push(format!("{place}-address={}/{}", address.ip, address.prefix));
            if let Some(gateway) = address.gateway {
                words.push(format!("{place}-gateway={gateway}"));
            }
            if !address.dns.is_empty() {
                let dns: Vec<String> = address.dns.iter().map(IpAddr::to_string).collect();
                words.push(format!("{place}-dns={}", dns.join("+")));
            }
        }
        words
    }
}

/// Gateways and name servers read before their addresses (a spec's words
/// come in any order), by place.
#[derive(Default)]
pub struct Pending {
    gateways: [Option<IpAddr>; 3],
    dns: [Vec<IpAddr>; 3],
}

impl NicAddress {
    pub fn view(&self, apply: AddressApply) -> StaticAddress {
        StaticAddress {
            address: format!("{}/{}", self.ip, self.prefix),
            gateway: self.gateway.map(|gateway| gateway.to_string()),
            dns: self.dns.iter().map(IpAddr::to_string).collect(),
            apply,
        }
    }

    /// `ADDRESS/PREFIX`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }

    /// How it reads in a job's detail or a listing (as the API's
    /// [`StaticAddress`] shows it; how it is applied is not part of it).
    pub fn describe(&self) -> String {
        self.view(AddressApply::Agent).to_string()
    }
}

fn parse_cidr(value: &str) -> Result<(IpAddr, u8), String> {
    let usage = "write ADDRESS/PREFIX, as 10.1.0.5/24";
    let (ip, prefix) = value.split_once('/').ok_or_else(|| format!("no prefix length; {usage}"))?;
    let ip: IpAddr = ip.parse().map_err(|_| format!("{ip:?} is not an IP address; {usage}"))?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|prefix| (1..=bits).contains(prefix))
        .ok_or_else(|| format!("prefix {prefix:?} is not a length from 1 to {bits}"))?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Err(format!("{ip} cannot be a NIC's address (unspecified, loopback or multicast)"));
    }
    if let IpAddr::V4(v4) = ip {
        let host_bits = 32 - u32::from(prefix);
        let host = u32::from(v4) & (u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0));
        if host_bits >= 2 && (host == 0 || host == (1u32 << host_bits) - 1) {
            return Err(format!("{value} is its subnet's network or broadcast address, not a host's"));
        }
    }
    Ok((ip, prefix))
}

fn same_subnet(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    let (a, b, bits) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = bits - u32::from(prefix);
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

/// A NIC's address as a guest is given it: which NIC (by MAC) and what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestAddress {
    pub mac: String,
    pub address: NicAddress,
}

/// How the addresses of one running instance reach its guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestAddresses {
    pub apply: AddressApply,
    pub nics: Vec<GuestAddress>,
    /// Names the seed's instance (`NAME@INSTANCE`); cloud-init applies a
    /// seed's network configuration when its instance-id is new.
    pub instance: String,
}

/// The NoCloud `network-config` (version 2) that gives each NIC its address.
pub fn network_config(addresses: &GuestAddresses) -> String {
    let mut text = String::from("version: 2\nethernets:\n");
    for (index, nic) in addresses.nics.iter().enumerate() {
        let address = &nic.address;
        text.push_str(&format!(
            "  nic{index}:\n    match:\n      macaddress: \"{}\"\n    dhcp4: false\n    dhcp6: false\n    addresses: \
             [\"{}\"]\n",
            nic.mac,
            address.cidr()
        ));
        if let Some(gateway) = address.gateway {
            text.push_str(&format!("    routes:\n      - to: default\n        via: \"{gateway}\"\n"));
        }
        if !address.dns.is_empty() {
            let dns: Vec<String> = address.dns.iter().map(|ip| format!("\"{ip}\"")).collect();
            text.push_str(&format!("    nameservers:\n      addresses: [{}]\n", dns.join(", ")));
        }
    }
    text
}

/// The seed's `meta-data`: an instance-id that changes with the instance
/// and its addresses (so cloud-init applies them on the first boot at each
/// site), and the machine's host name.
pub fn meta_data(addresses: &GuestAddresses, hostname: &str) -> String {
    let digest = blake3::hash(network_config(addresses).as_bytes()).to_hex();
    format!(
        "instance-id: standby-{}-{}\nlocal-hostname: {hostname}\n",
        addresses.instance.replace('@', "-"),
        &digest[..12]
    )
}

/// Size of a seed disk (FAT12; a few hundred bytes of files in it).
const SEED_BYTES: u64 = 1 << 20;

/// Writes the NoCloud seed of `addresses` at `path`: a small FAT disk
/// labelled `CIDATA` with `meta-data`, `user-data` (empty cloud-config) and
/// `network-config`, written whole then renamed into place.
pub fn seed_image(path: &Path, addresses: &GuestAddresses, hostname: &str) -> Result<(), ControlError> {
    let partial = path.with_extension("partial");
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&partial)?;
        file.set_len(SEED_BYTES)?;
        fatfs::format_volume(&mut file, fatfs::FormatVolumeOptions::new().volume_label(*b"CIDATA     "))?;
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new())?;
        {
            let root = fs.root_dir();
            for (name, text) in [
                ("meta-data", meta_data(addresses, hostname)),
                ("user-data", "#cloud-config\n{}\n".to_string()),
                ("network-config", network_config(addresses)),
            ] {
                let mut entry = root.create_file(name)?;
                entry.truncate()?;
                entry.write_all(text.as_bytes())?;
                entry.flush()?;
            }
        }
        fs.unmount()?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        ControlError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(words: &[(&str, &str)]) -> Result<NicAddresses, String> {
        let mut addresses = NicAddresses::default();
        let mut pending = Pending::default();
        for (key, value) in words {
            assert!(addresses.take(key, value, &mut pending)?, "{key} is an address key");
        }
        addresses.finish(pending)?;
        Ok(addresses)
    }

    #[test]
    fn addresses_are_read_per_place_and_written_back_the_same() {
        let addresses = parsed(&[
            ("recovery-gateway", "10.20.0.1"),
            ("recovery-address", "10.20.0.5/24"),
            ("recovery-dns", "10.20.0.53+1.1.1.1"),
            ("primary-address", "fd00::5/64"),
            ("drill-address", "192.168.7.5/24"),
        ])
        .unwrap();
        let recovery = addresses.recovery.as_ref().unwrap();
        assert_eq!(recovery.describe(), "10.20.0.5/24 via 10.20.0.1, dns 10.20.0.53 1.1.1.1");
        assert_eq!(addresses.at(Instance::Primary).unwrap().cidr(), "fd00::5/64");
        let words = addresses.spec_words();
        let pairs: Vec<(&str, &str)> = words.iter().map(|w| w.split_once('=').unwrap()).collect();
        assert_eq!(parsed(&pairs).unwrap(), addresses);
        assert!(!NicAddresses::default().take("recovery", "x", &mut Pending::default()).unwrap());
        assert!(!NicAddresses::default().take("mac", "x", &mut Pending::default()).unwrap());
    }

    #[test]
    fn bad_addresses_are_refused_naming_the_problem() {
        for (words, needle) in [
            (&[("recovery-address", "10.20.0.5")][..], "no prefix length"),
            (&[("recovery-address", "10.20.0/24")], "not an IP address"),
            (&[("recovery-address", "10.20.0.5/33")], "not a length from 1 to 32"),
            (&[("recovery-address", "10.20.0.0/24")], "network or broadcast"),
            (&[("recovery-address", "10.20.0.255/24")], "network or broadcast"),
            (&[("recovery-address", "127.0.0.2/8")], "cannot be a NIC's address"),
            (&[("recovery-address", "10.20.0.5/24"), ("recovery-gateway", "10.21.0.1")], "own subnet"),
            (&[("recovery-address", "10.20.0.5/24"), ("recovery-gateway", "10.20.0.5")], "own subnet"),
            (&[("recovery-address", "10.20.0.5/24"), ("recovery-gateway", "fd00::1")], "same IP version"),
            (&[("recovery-gateway", "10.20.0.1")], "give recovery-address"),
            (&[("drill-dns", "10.0.0.53")], "give drill-address"),
            (&[("recovery-address", "10.20.0.5/24"), ("recovery-dns", "a+b")], "joined by '+'"),
            (&[("recovery-address", "10.20.0.5/24"), ("recovery-dns", "1.1.1.1+1.1.1.2+1.1.1.3+1.1.1.4")], "at most 3"),
        ] {
            let error = parsed(words).unwrap_err();
            assert!(error.contains(needle), "{words:?}: {error}");
        }
    }

    #[test]
    fn a_seed_is_a_cidata_disk_cloud_init_reads() {
        let address = parsed(&[
            ("recovery-address", "10.20.0.5/24"),
            ("recovery-gateway", "10.20.0.1"),
            ("recovery-dns", "10.20.0.53"),
        ])
        .unwrap()
        .recovery
        .unwrap();
        let addresses = GuestAddresses {
            apply: AddressApply::Seed,
            nics: vec![GuestAddress { mac: "52:54:00:aa:bb:cc".into(), address }],
            instance: "db@recovery".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("db.seed");
        seed_image(&seed, &addresses, "db").unwrap();
        assert!(!dir.path().join("db.partial").exists());
        let fs = fatfs::FileSystem::new(std::fs::File::open(&seed).unwrap(), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label().trim(), "CIDATA");
        let read = |name: &str| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut fs.root_dir().open_file(name).unwrap(), &mut text).unwrap();
            text
        };
        let config = read("network-config");
        assert_eq!(config, network_config(&addresses));
        for needle in ["macaddress: \"52:54:00:aa:bb:cc\"", "addresses: [\"10.20.0.5/24\"]", "via: \"10.20.0.1\""] {
            assert!(config.contains(needle), "{needle} in {config}");
        }
        let meta = read("meta-data");
        assert!(meta.starts_with("instance-id: standby-db-recovery-") && meta.contains("local-hostname: db"), "{meta}");
        assert!(read("user-data").starts_with("#cloud-config"));
        let mut drill = addresses.clone();
        drill.instance = "db@drill".into();
        assert_ne!(meta_data(&drill, "db"), meta, "each instance is new to cloud-init");
    }
}
