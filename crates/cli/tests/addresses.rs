//! A machine's static address per site, on a real guest under TCG: the
//! sites' networks are Linux bridges in a network namespace, each its own
//! subnet (primary 10.10.0.0/24, recovery 10.20.0.0/24, the recovery
//! site's drill network 10.30.0.0/24). The guest's NIC gets 10.10.0.5 at
//! the primary site, 10.30.0.5 in a drill (a plan's test failover whose TCP
//! probe reaches it there), 10.20.0.5 after a planned failover, and
//! 10.10.0.5 again after failing back: each time it answers HTTP at that
//! address, set inside the guest by its agent. It is added with its
//! primary address only, and given the recovery site's and the drill's
//! once protected and running (`machine set-nics`), as an operator would.

mod support;

use std::time::{Duration, Instant};

use standby_lifecycle::Instance::{Drill, Primary, Recovery};
use standby_lifecycle::Site;
use support::daemon::{add_guest_machine_args, console_of, test_workload, wait_for, wait_replicated_past, Daemon};
use support::{path, run};

const NIC_ADDED: &str = "primary-lan,primary-address=10.10.0.5/24,primary-gateway=10.10.0.1";
const NIC: &str = "primary-lan,primary-address=10.10.0.5/24,primary-gateway=10.10.0.1,\
                   recovery-address=10.20.0.5/24,recovery-gateway=10.20.0.1,recovery-dns=10.20.0.53,\
                   drill-address=10.30.0.5/24";

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(arguments: &[&str]) {
    let status = std::process::Command::new("ip").args(arguments).status().expect("ip (iproute2) runs");
    assert!(status.success(), "ip {} failed (the tests run as root)", arguments.join(" "));
}

/// Whether the guest's web server answers at `address`, from inside `netns`.
fn answers(netns: &str, address: &str) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", netns, "curl", "-fsS", "--max-time", "2", &format!("http://{address}/")])
        .output()
        .is_ok_and(|output| {
            output.status.success() && String::from_utf8_lossy(&output.stdout).contains("standby-guest")
        })
}

fn wait_to_answer(netns: &str, address: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !answers(netns, address) {
        assert!(Instant::now() < deadline, "the guest never answered at {address}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Machine `name` as `machine list --json` shows it.
fn listed(home: &str, name: &str) -> serde_json::Value {
    let listed = run(&["machine", "list", "--home", home, "--json"]).ok().json();
    listed["machines"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap().clone()
}

/// The addresses state of the machine where it runs, from `machine list`.
fn addresses_state(home: &str) -> serde_json::Value {
    listed(home, "web")["runtime"]["addresses"].clone()
}

#[test]
fn a_guest_answers_at_each_sites_address_and_comes_back_with_its_own() {
    let netns = format!("sba{}", std::process::id());
    ip(&["netns", "add", &netns]);
    let _namespace = Namespace(netns.clone());
    ip(&["-n", &netns, "link", "set", "lo", "up"]);
    for (bridge, address) in [("sbp", "10.10.0.1/24"), ("sbr", "10.20.0.1/24"), ("sbt", "10.30.0.1/24")] {
        ip(&["-n", &netns, "link", "add", bridge, "type", "bridge"]);
        ip(&["-n", &netns, "addr", "add", address, "dev", bridge]);
        ip(&["-n", &netns, "link", "set", bridge, "up"]);
    }

    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    support::edit_config(&home, |config| {
        config
            .replace("[primary]\n", &format!("[primary]\nnetns = \"{netns}\"\n"))
            .replace("[recovery]\n", &format!("[recovery]\nnetns = \"{netns}\"\n"))
            + "\n[bridges]\nprimary-lan = \"sbp\"\nrecovery-lan = \"sbr\"\nrecovery-test = \"sbt\"\n"
    });

    // A bad address is refused with nothing defined.
    let source = root.path().join("bad.raw");
    std::fs::write(&source, vec![0u8; 1 << 20]).unwrap();
    for (nic, problem) in [
        ("primary-lan,recovery-address=10.20.0.5", "recovery-address=\"10.20.0.5\": no prefix length"),
        ("primary-lan,recovery-address=10.20.0.5/24,recovery-gateway=10.21.0.1", "not another address in 10.20.0.5/24"),
    ] {
        run(&["machine", "add", "bad", "--disk", path(&source), "--nic", nic, "--home", h]).bad_input(problem);
    }
    assert!(run(&["machine", "list", "--home", h, "--json"]).ok().json()["machines"].as_array().unwrap().is_empty());

    add_guest_machine_args(&home, "web", &test_workload().cmdline(), &["--nic", NIC_ADDED]);
    let web = listed(h, "web");
    let nic = &web["networks"][0];
    assert_eq!(nic[Primary.name()]["address"]["address"], "10.10.0.5/24", "{nic}");
    assert_eq!(nic[Primary.name()]["address"]["gateway"], "10.10.0.1", "{nic}");
    assert!(nic[Recovery.name()]["address"].is_null(), "{nic}");

    // A machine whose address goes to cloud-init in a NoCloud seed disk
    // (the test guest prints the seed's network-config it finds).
    add_guest_machine_args(
        &home,
        "seeded",
        &test_workload().cmdline(),
        &["--nic", "primary-lan,primary-address=10.10.0.6/24,primary-gateway=10.10.0.1,apply=seed"],
    );

    let _daemon = Daemon::start(&home);
    run(&["machine", "start", "web", "--home", h]).ok();
    run(&["machine", "start", "seeded", "--home", h]).ok();
    wait_to_answer(&netns, "10.10.0.5");
    wait_for(&console_of(&home, "seeded"), "standby-guest: seed:         via: \"10.10.0.1\"\n");
    let console = standby_testkit::console_text(std::path::Path::new(&console_of(&home, "seeded")));
    assert!(console.contains("standby-guest: seed:     addresses: [\"10.10.0.6/24\"]\n"), "{console}");
    let seeded = listed(h, "seeded");
    assert_eq!(seeded["runtime"]["addresses"]["state"], "seeded", "{seeded}");
    assert_eq!(seeded["networks"][0][Primary.name()]["address"]["apply"], "seed", "{seeded}");
    run(&["machine", "stop", "seeded", "--force", "--home", h]).ok();
    let state = addresses_state(h);
    assert_eq!(state["state"], "applied", "{state}");
    assert!(state["detail"].as_str().unwrap().contains("10.10.0.5/24 via 10.10.0.1"), "{state}");

    run(&["protect", "web", "--home", h]).ok();
    wait_for(&console_of(&home, "web"), "standby-guest: record 5\n");

    // Protected and running, it is given its recovery site's and drill's
    // addresses (a bad one first: refused, nothing changed).
    let bad = NIC.replace("recovery-gateway=10.20.0.1", "recovery-gateway=10.21.0.1");
    run(&["machine", "set-nics", "web", "--nic", &bad, "--home", h]).bad_input("not another address in 10.20.0.5/24");
    let unchanged = listed(h, "web");
    assert!(unchanged["networks"][0][Recovery.name()]["address"].is_null(), "{unchanged}");
    let said = run(&["machine", "set-nics", "web", "--nic", NIC, "--home", h]).ok().stdout;
    assert!(said.contains(&format!("running at the {} site keeps the NICs it booted with", Site::Primary)), "{said}");
    let web = listed(h, "web");
    let nic = &web["networks"][0];
    assert_eq!(nic[Primary.name()]["address"]["address"], "10.10.0.5/24", "{nic}");
    assert_eq!(nic[Recovery.name()]["address"]["address"], "10.20.0.5/24", "{nic}");
    assert_eq!(nic[Recovery.name()]["address"]["dns"][0], "10.20.0.53", "{nic}");
    assert_eq!(nic[Drill.name()]["address"]["address"], "10.30.0.5/24", "{nic}");
    assert_eq!(nic[Drill.name()]["address"]["apply"], "agent", "{nic}");
    assert!(answers(&netns, "10.10.0.5"), "the running guest kept its address");
    wait_replicated_past(h, "web", jiff::Timestamp::now());

    // A drill from a plan: on the test network at the drill's address,
    // where the plan's TCP probe reaches it.
    let plans = root.path().join("plans");
    std::fs::create_dir_all(&plans).unwrap();
    let plan = plans.join("web.toml");
    std::fs::write(
        &plan,
        "name = \"web\"\n[[groups]]\nmachines = [\"web\"]\n[probes.web]\ntcp = \":80\"\ntimeout = \"5m\"\n",
    )
    .unwrap();
    run(&["plan", "create", path(&plan), "--home", h]).ok();
    // Its probe needs the machine's static address: NICs without one are
    // refused while the plan stands.
    run(&["machine", "set-nics", "web", "--nic", "primary-lan", "--home", h])
        .bad_input("recovery plan 'web' would no longer hold with these NICs (");
    assert_eq!(listed(h, "web")["networks"][0][Drill.name()]["address"]["address"], "10.30.0.5/24");
    let shown = run(&["plan", "show", "web", "--home", h]).ok().stdout;
    assert!(shown.contains("10.30.0.5/24") && shown.contains("10.20.0.5/24"), "plan show names the addresses: {shown}");
    let drill = run(&["plan", "test-failover", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(drill["state"], "succeeded", "{drill}");
    let rto = drill["steps"].as_array().unwrap().last().unwrap()["detail"].as_str().unwrap().to_string();
    assert!(rto.starts_with("RTO "), "{rto}");
    assert!(answers(&netns, "10.30.0.5"), "the drill answers at its test-network address");
    assert!(answers(&netns, "10.10.0.5"), "the primary still answers at its own");
    assert!(!answers(&netns, "10.20.0.5"), "nothing took the recovery address");
    run(&["plan", "cleanup-test-failover", "web", "--home", h]).ok();

    // Planned failover: the recovery site's address.
    run(&["planned-failover", "web", "--home", h]).ok();
    wait_to_answer(&netns, "10.20.0.5");
    assert!(!answers(&netns, "10.10.0.5"), "the primary's address went with it");
    let state = addresses_state(h);
    assert_eq!(state["state"], "applied", "{state}");
    assert!(state["detail"].as_str().unwrap().contains("10.20.0.5/24 via 10.20.0.1, dns 10.20.0.53"), "{state}");

    // Failback: its own address again.
    run(&["commit", "web", "--home", h]).ok();
    run(&["reprotect", "web", "--home", h]).ok();
    wait_replicated_past(h, "web", jiff::Timestamp::now());
    run(&["planned-failover", "web", "--home", h]).ok();
    wait_to_answer(&netns, "10.10.0.5");
    assert!(!answers(&netns, "10.20.0.5"), "the recovery address went with it");
    let state = addresses_state(h);
    assert!(state["detail"].as_str().unwrap().contains("10.10.0.5/24"), "{state}");
}
