//! Two hosts' networks on one machine: two network namespaces with their
//! own addresses, joined by a veth pair that a test can cut.

use std::process::Command;

/// Two network namespaces joined by a veth pair, removed on drop.
pub struct Sites {
    pub primary: String,
    pub recovery: String,
    /// The primary end of the link (in the primary namespace).
    pub link: String,
    pub primary_address: String,
    pub recovery_address: String,
}

pub fn ip(arguments: &[&str]) {
    let status = Command::new("ip").args(arguments).status().expect("ip (iproute2) runs");
    assert!(status.success(), "ip {} failed (the tests run as root)", arguments.join(" "));
}

impl Sites {
    pub fn create() -> Sites {
        let id = std::process::id();
        let (primary, recovery) = (format!("sbp{id}"), format!("sbr{id}"));
        let (link, peer) = (format!("vp{id}"), format!("vr{id}"));
        let subnet = format!("10.{}.{}", 100 + (id >> 8) % 100, id % 256);
        let sites = Sites {
            primary: primary.clone(),
            recovery: recovery.clone(),
            link: link.clone(),
            primary_address: format!("{subnet}.1"),
            recovery_address: format!("{subnet}.2"),
        };
        ip(&["netns", "add", &primary]);
        ip(&["netns", "add", &recovery]);
        ip(&["link", "add", &link, "netns", &primary, "type", "veth", "peer", "name", &peer, "netns", &recovery]);
        for (netns, device, address) in [(&primary, &link, ".1"), (&recovery, &peer, ".2")] {
            ip(&["-n", netns, "addr", "add", &format!("{subnet}{address}/24"), "dev", device]);
            ip(&["-n", netns, "link", "set", device, "up"]);
            ip(&["-n", netns, "link", "set", "lo", "up"]);
        }
        sites
    }

    pub fn link(&self, state: &str) {
        ip(&["-n", &self.primary, "link", "set", &self.link, state]);
    }

    /// Drops `percent` % of the packets arriving at either host, picked at
    /// random (nftables' `numgen random`: this kernel has no netem); `None`
    /// drops none again.
    pub fn loss(&self, percent: Option<u32>) {
        for netns in [&self.primary, &self.recovery] {
            let _ =
                Command::new("ip").args(["netns", "exec", netns, "nft", "delete", "table", "inet", "loss"]).output();
            let Some(percent) = percent else { continue };
            let percent = percent.to_string();
            let commands: [&[&str]; 3] = [
                &["add", "table", "inet", "loss"],
                &["add", "chain", "inet", "loss", "input", "{ type filter hook input priority 0; }"],
                &["add", "rule", "inet", "loss", "input", "iifname", "!=", "lo", "numgen", "random", "mod", "100"],
            ];
            for (i, command) in commands.iter().enumerate() {
                let tail: &[&str] = if i == 2 { &["<", &percent, "drop"] } else { &[] };
                let output = Command::new("ip")
                    .args(["netns", "exec", netns, "nft"])
                    .args(*command)
                    .args(tail)
                    .output()
                    .expect("nft (nftables) runs");
                assert!(output.status.success(), "nft could not drop packets in {netns}: {output:?}");
            }
        }
    }

    /// Stops the primary "host": every process in its namespace, at once.
    pub fn stop_primary_host(&self) {
        self.stop_host(&self.primary);
    }

    /// Stops the "host" of namespace `netns`: every process in it, at once.
    pub fn stop_host(&self, netns: &str) {
        let pids = Command::new("ip").args(["netns", "pids", netns]).output().unwrap();
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            // SAFETY: kill(2) on the processes of the test's own namespace.
            unsafe { libc::kill(pid.parse().unwrap(), libc::SIGKILL) };
        }
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        for netns in [&self.primary, &self.recovery] {
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
    }
}
