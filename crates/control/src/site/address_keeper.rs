//! Keeps a running guest's NICs at their static addresses through its
//! qemu-guest-agent: once the agent answers, each NIC (found by its MAC)
//! that lacks its address gets it (`ip addr flush`, `ip addr add`, the
//! default route, `/etc/resolv.conf`), and every [`RECHECK`] it is looked
//! at again, so a guest that rebooted by itself or whose DHCP client took
//! the NIC over gets its address back. What it did, or why not yet, is
//! the instance's [`AddressesState`] (`machine list`).
//!
//! A machine whose addresses go in a NoCloud seed has no keeper: the seed
//! is written before QEMU starts and cloud-init applies it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use standby_api::{AddressApply, AddressesPhase, AddressesState};

use super::local::lock;
use crate::addresses::{GuestAddress, GuestAddresses};
use crate::guest_agent::GuestAgent;

/// How long the agent has to answer one look.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Between looks until the addresses are set (the guest is booting).
const RETRY: Duration = Duration::from_secs(2);
/// Between looks once they are.
const RECHECK: Duration = Duration::from_secs(15);
/// How long one command in the guest may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(20);

/// The keeper of one running instance's addresses; it stops when dropped.
pub(crate) struct AddressKeeper {
    state: Arc<Mutex<AddressesState>>,
    stop: Arc<AtomicBool>,
}

impl AddressKeeper {
    /// Starts keeping `addresses` in the guest whose agent channel is
    /// `socket`.
    pub fn start(socket: PathBuf, addresses: GuestAddresses) -> AddressKeeper {
        let described = describe(&addresses.nics);
        let (phase, detail) = match addresses.apply {
            AddressApply::Seed => (AddressesPhase::Seeded, format!("in its NoCloud seed for cloud-init: {described}")),
            AddressApply::Agent => (AddressesPhase::Waiting, format!("waiting for the guest agent to set {described}")),
        };
        let state = Arc::new(Mutex::new(phase_since(phase, detail)));
        let stop = Arc::new(AtomicBool::new(false));
        if addresses.apply == AddressApply::Agent {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("addresses {}", addresses.instance))
                .spawn(move || keep(&socket, &addresses.nics, &state, &stop))
                .expect("a thread starts");
        }
        AddressKeeper { state, stop }
    }

    pub fn state(&self) -> AddressesState {
        lock(&self.state).clone()
    }
}

impl Drop for AddressKeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn phase_since(state: AddressesPhase, detail: String) -> AddressesState {
    AddressesState { state, detail, since: jiff::Timestamp::now().to_string() }
}

fn describe(nics: &[GuestAddress]) -> String {
    let each: Vec<String> = nics.iter().map(|nic| format!("{} {}", nic.mac, nic.address.describe())).collect();
    each.join("; ")
}

fn keep(socket: &std::path::Path, nics: &[GuestAddress], state: &Mutex<AddressesState>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let looked = look(socket, nics);
        let applied = looked.is_ok();
        {
            let mut state = lock(state);
            match looked {
                Ok(set) if !set.is_empty() => {
                    *state = phase_since(AddressesPhase::Applied, format!("set {}", set.join("; ")))
                }
                // Found as they should be: when they were set stands.
                Ok(_) if state.state == AddressesPhase::Applied => {}
                Ok(_) => *state = phase_since(AddressesPhase::Applied, format!("found set: {}", describe(nics))),
                Err(why) => {
                    let detail = format!("not set yet: {why}");
                    if state.state != AddressesPhase::Waiting || state.detail != detail {
                        *state = phase_since(AddressesPhase::Waiting, detail);
                    }
                }
            }
        }
        let until = Instant::now() + if applied { RECHECK } else { RETRY };
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One look: sets every NIC that lacks its address; returns what it set.
fn look(socket: &std::path::Path, nics: &[GuestAddress]) -> Result<Vec<String>, String> {
    let mut agent = GuestAgent::connect(socket, AGENT_TIMEOUT)?;
    let interfaces = agent.execute("guest-network-get-interfaces", json!({})).map_err(|e| e.to_string())?;
    let mut set = Vec::new();
    let mut dns = Vec::new();
    for nic in nics {
        let interface = interfaces
            .as_array()
            .into_iter()
            .flatten()
            .find(|interface| {
                interface["hardware-address"].as_str().is_some_and(|mac| mac.eq_ignore_ascii_case(&nic.mac))
            })
            .ok_or_else(|| format!("the guest has no interface with MAC {} (yet)", nic.mac))?;
        let name = interface["name"].as_str().ok_or("the agent named no interface")?.to_string();
        let address = &nic.address;
        if !address.dns.is_empty() {
            dns.extend(address.dns.iter().copied());
        }
        if has_address(interface, address) {
            continue;
        }
        let family = if address.ip.is_ipv4() { "-4" } else { "-6" };
        run(&mut agent, &["link", "set", "dev", &name, "up"])?;
        run(&mut agent, &[family, "addr", "flush", "dev", &name, "scope", "global"])?;
        run(&mut agent, &[family, "addr", "add", &address.cidr(), "dev", &name])?;
        if let Some(gateway) = address.gateway {
            run(&mut agent, &[family, "route", "replace", "default", "via", &gateway.to_string(), "dev", &name])?;
        }
        set.push(format!("{name} ({}) {}", nic.mac, address.describe()));
    }
    if !set.is_empty() && !dns.is_empty() {
        let text: String = dns.iter().map(|server| format!("nameserver {server}\n")).collect();
        write_file(&mut agent, "/etc/resolv.conf", text.as_bytes())?;
    }
    Ok(set)
}

fn has_address(interface: &Value, address: &crate::addresses::NicAddress) -> bool {
    interface["ip-addresses"].as_array().into_iter().flatten().any(|entry| {
        entry["ip-address"].as_str().and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) == Some(address.ip)
            && entry["prefix"].as_u64() == Some(u64::from(address.prefix))
    })
}

/// Runs `ip ARGUMENTS` in the guest (guest-exec) and waits for it.
fn run(agent: &mut GuestAgent, arguments: &[&str]) -> Result<(), String> {
    let command = format!("ip {}", arguments.join(" "));
    let exited = agent
        .exec("ip", arguments, EXEC_TIMEOUT)
        .map_err(|e| format!("{command}: {e} (the guest agent must allow guest-exec, or give the NIC apply=seed)"))?;
    match exited.code {
        Some(0) => Ok(()),
        code => {
            Err(format!("`{command}` in the guest failed ({code:?}): {}{}", exited.stderr.trim(), exited.stdout.trim()))
        }
    }
}

fn write_file(agent: &mut GuestAgent, path: &str, bytes: &[u8]) -> Result<(), String> {
    let failed = |e: crate::error::ControlError| format!("writing {path} in the guest: {e}");
    let handle = agent.execute("guest-file-open", json!({"path": path, "mode": "w"})).map_err(failed)?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let written = agent.execute("guest-file-write", json!({"handle": handle, "buf-b64": encoded})).map_err(failed);
    let closed = agent.execute("guest-file-close", json!({"handle": handle})).map_err(failed);
    written.and(closed).map(|_| ())
}
