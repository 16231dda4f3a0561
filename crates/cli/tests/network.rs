//! A machine's NICs on the sites' networks, seen from the wire: the test
//! joins each network's segment (the multicast group QEMU's NICs exchange
//! Ethernet frames on) and watches for the guest's MAC. The guest announces
//! itself on every NIC once a second. The machine is on the primary network
//! while it runs there, its drill only on the recovery site's isolated test
//! network, and after failover on the recovery network its NIC maps to.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use standby_lifecycle::Instance;
use support::daemon::{add_guest_machine_args, test_workload, wait_replicated_past, Daemon};
use support::{path, run};

/// Every Ethernet frame seen on one network segment: when, and from which MAC.
struct Wire {
    frames: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    network: String,
}

impl Wire {
    fn join(network: &str, segment: &str) -> Wire {
        let address: SocketAddrV4 = segment.parse().expect("a segment is GROUP:PORT");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        // QEMU binds the same group and port.
        socket.set_reuse_address(true).unwrap();
        socket.bind(&address.into()).unwrap();
        let socket: UdpSocket = socket.into();
        socket.join_multicast_v4(address.ip(), &Ipv4Addr::LOCALHOST).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (frames.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut frame = [0u8; 65536];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok(length) = socket.recv(&mut frame) {
                    if length >= 14 {
                        let source: Vec<String> = frame[6..12].iter().map(|b| format!("{b:02x}")).collect();
                        seen.lock().unwrap().push((Instant::now(), source.join(":")));
                    }
                }
            }
        });
        Wire { frames, stop, network: network.to_string() }
    }

    /// Whether `mac` sent a frame here since `since`.
    fn heard_since(&self, mac: &str, since: Instant) -> bool {
        self.frames.lock().unwrap().iter().any(|(at, source)| *at >= since && source == mac)
    }

    fn wait_to_hear(&self, mac: &str, since: Instant) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.heard_since(mac, since) {
            assert!(Instant::now() < deadline, "{mac} never sent a frame on {}", self.network);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn machines(home: &Path) -> serde_json::Value {
    run(&["machine", "list", "--home", path(home), "--json"]).ok().json()
}

#[test]
fn nics_follow_the_machine_to_each_sites_network_and_drills_are_isolated() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    add_guest_machine_args(&home, "web", &test_workload().cmdline(), &["--nic", "primary-lan"]);
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    let spec = listed["machines"][0]["nics"][0].as_str().unwrap().to_string();
    assert!(spec.starts_with("primary-lan,recovery=recovery-lan,mac=52:54:00:"), "{spec}");

    let _daemon = Daemon::start(&home);
    let networks = machines(&home)["machines"][0]["networks"][0].clone();
    let mac = networks["mac"].as_str().unwrap().to_string();
    let wire = |site: &str| {
        assert_eq!(networks[site]["backend"], "segment", "{networks}");
        Wire::join(networks[site]["network"].as_str().unwrap(), networks[site]["segment"].as_str().unwrap())
    };
    let (primary, recovery, drill) = (wire("primary"), wire("recovery"), wire("drill"));
    assert_eq!([&primary.network, &recovery.network, &drill.network], ["primary-lan", "recovery-lan", "recovery-test"]);
    let start = Instant::now();

    run(&["machine", "start", "web", "--home", h]).ok();
    primary.wait_to_hear(&mac, start);
    run(&["protect", "web", "--home", h]).ok();
    wait_replicated_past(h, "web", jiff::Timestamp::now());

    // The drill copy, same MAC, is heard on the test network only: it never
    // reaches the recovery site's production network.
    let drill_started = Instant::now();
    run(&["test-failover", "web", "--home", h]).ok();
    drill.wait_to_hear(&mac, drill_started);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!recovery.heard_since(&mac, start), "the drill copy was heard on recovery-lan");
    assert!(primary.heard_since(&mac, drill_started), "the source stays on primary-lan during the drill");
    run(&["cleanup-test-failover", "web", "--home", h]).ok();

    // After failover the machine is on recovery-lan, and the source (shut
    // down) is heard no more on primary-lan.
    run(&["failover", "web", "--shutdown-source", "--home", h]).ok();
    let failed_over = Instant::now();
    recovery.wait_to_hear(&mac, failed_over);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!primary.heard_since(&mac, failed_over), "the shut-down source was still heard on primary-lan");
    assert!(!drill.heard_since(&mac, failed_over), "the cleaned-up drill was still heard on recovery-test");
    let running = machines(&home)["machines"][0].clone();
    assert_eq!(running["active_site"], "recovery", "{running}");
}

#[test]
fn bad_nics_and_network_configs_are_refused_with_nothing_left_behind() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    let disk = root.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let d = path(&disk);
    for (nic, needle) in [
        ("nowhere", "\"nowhere\" is not a network of the primary site (it has: primary-lan)"),
        ("primary-lan,recovery=recovery-test", "not a network of the recovery site"),
        ("primary-lan,mac=03:00:00:00:00:01", "is not a unicast address"),
        ("primary-lan,model=pcnet", "is not one of virtio-net-pci"),
        ("primary-lan,bandwidth=1g", "\"bandwidth=1g\" is not understood"),
    ] {
        run(&["machine", "add", "web", "--disk", d, "--nic", nic, "--home", h]).bad_input(needle);
    }
    assert_eq!(machines(&home)["machines"], serde_json::json!([]));
    assert_eq!(std::fs::read_dir(home.join("sites/primary/disks")).unwrap().count(), 0);

    // A primary network without a mapping needs recovery= …
    let config_path = home.join("standby.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let with_dmz = config.replace("networks = [\"primary-lan\"]", "networks = [\"primary-lan\", \"primary-dmz\"]");
    std::fs::write(&config_path, &with_dmz).unwrap();
    run(&["machine", "add", "web", "--disk", d, "--nic", "primary-dmz", "--home", h])
        .bad_input("network \"primary-dmz\" has no recovery network: map it in [network_map]");
    run(&["machine", "add", "web", "--disk", d, "--nic", "primary-dmz,recovery=recovery-lan", "--home", h]).ok();

    // Its NICs replaced later (here without a daemon): checked whole, a
    // refusal changes nothing; the first NIC keeps its MAC.
    let before = machines(&home)["machines"][0]["networks"].clone();
    run(&["machine", "set-nics", "ghost", "--nic", "primary-lan", "--home", h]).bad_input("no machine named 'ghost'");
    let with_bad = ["--nic", "primary-lan", "--nic", "primary-dmz,recovery=recovery-lan,recovery-address=10.20.0.7"];
    run(&[&["machine", "set-nics", "web"][..], &with_bad, &["--home", h]].concat()).bad_input("no prefix length");
    run(&["machine", "set-nics", "web", "--nic", "nowhere", "--home", h]).bad_input("\"nowhere\" is not a network");
    assert_eq!(machines(&home)["machines"][0]["networks"], before);
    let two = ["--nic", "primary-lan", "--nic", "primary-dmz,recovery=recovery-lan,recovery-address=10.20.0.7/24"];
    let said = run(&[&["machine", "set-nics", "web"][..], &two, &["--home", h]].concat()).ok().stdout;
    assert!(said.contains("machine 'web' boots with 2 NICs from now on"), "{said}");
    assert!(said.contains("recovery 10.20.0.7/24"), "{said}");
    let after = machines(&home)["machines"][0]["networks"].clone();
    assert_eq!(
        (after[0]["mac"].clone(), after[0][Instance::Primary.name()]["network"].clone()),
        (before[0]["mac"].clone(), "primary-lan".into())
    );
    assert_eq!(after[1][Instance::Recovery.name()]["network"], "recovery-lan", "{after}");
    assert_eq!(after[1][Instance::Recovery.name()]["address"]["address"], "10.20.0.7/24", "{after}");

    // … and a test network must be isolated from production.
    let leaky = with_dmz.replace("[recovery]\n", "[recovery]\ntest_network = \"recovery-lan\"\n");
    assert_ne!(leaky, with_dmz);
    std::fs::write(&config_path, leaky).unwrap();
    run(&["machine", "list", "--home", h]).bad_input("test_network \"recovery-lan\" is also a production network");
}

/// A network listed under `[bridges]` puts the NIC on that Linux bridge:
/// the primary site here is a network namespace with a bridge in it, the
/// guest's frames are seen on the bridge, and the tap QEMU opened for it
/// goes when the machine stops.
#[test]
fn a_bridged_network_puts_the_nic_on_the_hosts_bridge() {
    let netns = format!("sbb{}", std::process::id());
    let ip = |arguments: &[&str]| {
        let status = std::process::Command::new("ip").args(arguments).status().expect("ip (iproute2) runs");
        assert!(status.success(), "ip {} failed (the tests run as root)", arguments.join(" "));
    };
    ip(&["netns", "add", &netns]);
    struct Namespace(String);
    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _namespace = Namespace(netns.clone());
    ip(&["-n", &netns, "link", "add", "sbbr", "type", "bridge"]);
    ip(&["-n", &netns, "link", "set", "sbbr", "up"]);

    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    support::edit_config(&home, |config| {
        config.replace("[primary]\n", &format!("[primary]\nnetns = \"{netns}\"\n"))
            + "\n[bridges]\nprimary-lan = \"sbbr\"\n"
    });
    add_guest_machine_args(&home, "web", &test_workload().cmdline(), &["--nic", "primary-lan"]);
    let _daemon = Daemon::start(&home);
    let networks = machines(&home)["machines"][0]["networks"][0].clone();
    assert_eq!(
        (networks["primary"]["backend"].as_str(), networks["primary"]["bridge"].as_str()),
        (Some("bridge"), Some("sbbr"))
    );
    let mac = networks["mac"].as_str().unwrap().to_string();

    run(&["machine", "start", "web", "--home", h]).ok();
    let sniffer = "import socket, sys, time\n\
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))\n\
        s.bind((sys.argv[1], 0)); s.settimeout(1)\n\
        mac = bytes.fromhex(sys.argv[2].replace(':', ''))\n\
        end = time.time() + float(sys.argv[3])\n\
        while time.time() < end:\n\
        \x20   try: frame = s.recv(65536)\n\
        \x20   except socket.timeout: continue\n\
        \x20   if frame[6:12] == mac: sys.exit(0)\n\
        sys.exit(1)\n";
    let heard = std::process::Command::new("ip")
        .args(["netns", "exec", &netns, "python3", "-c", sniffer, "sbbr", &mac, "120"])
        .status()
        .unwrap();
    assert!(heard.success(), "{mac} never sent a frame on the bridge");
    let ports = |netns: &str| {
        let output = std::process::Command::new("ip")
            .args(["-n", netns, "-o", "link", "show", "master", "sbbr"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).lines().count()
    };
    assert_eq!(ports(&netns), 1, "one tap on the bridge while the machine runs");
    run(&["machine", "stop", "web", "--force", "--home", h]).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ports(&netns) != 0 {
        assert!(Instant::now() < deadline, "the machine's tap outlived it");
        std::thread::sleep(Duration::from_millis(100));
    }
}
