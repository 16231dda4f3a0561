//! The two sites as two network namespaces with their own addresses,
//! joined by a veth link: the primary site's QEMU and splitter run in one,
//! the recovery site's vault (Azurite), the daemon and the recovery VM in
//! the other. The link is cut (the guest keeps writing, the RPO grows and
//! is reported), restored (replication catches up), cut again, and then the
//! primary host is stopped (every process in its namespace killed): the
//! unplanned failover boots the machine at the recovery site from what the
//! vault holds, with every record acknowledged before the link went down.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::daemon::{acknowledged, add_guest_machine_args, test_workload, wait_for, wait_replicated_past, Daemon};
use support::netns::Sites;
use support::{path, run_with};

/// The network namespace a process runs in (its inode).
fn netns_of(pid: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino()
}

fn netns_named(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(Path::new("/run/netns").join(name)).unwrap().ino()
}

/// The pid in `pid_file`.
fn pid_in(pid_file: &Path) -> String {
    std::fs::read_to_string(pid_file).unwrap().trim().to_string()
}

#[test]
fn a_cut_link_and_a_lost_primary_host_lose_only_what_never_crossed() {
    let sites = Sites::create();
    let azurite = standby_testkit::Azurite::start_in(&sites.recovery, &sites.recovery_address);
    azurite.create_container("standby");
    let environment = azurite.environment();
    let run = |arguments: &[&str]| run_with(arguments, &environment);

    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    // The recovery site's vault is across the link; each site's processes
    // run in the site's namespace.
    support::edit_config(&home, |config| {
        config
            .replace("vault = \"sites/recovery/vault\"", "vault = \"az://standby/vault\"")
            .replace("[primary]\n", &format!("[primary]\nnetns = \"{}\"\n", sites.primary))
            .replace("[recovery]\n", &format!("[recovery]\nnetns = \"{}\"\n", sites.recovery))
    });
    let vault_init = Command::new("ip")
        .args(["netns", "exec", &sites.recovery, env!("CARGO_BIN_EXE_standby"), "vault", "init", "az://standby/vault"])
        .args(["--key-file", path(&home.join("keys/recovery.key"))])
        .envs(environment.iter().cloned())
        .status()
        .unwrap();
    assert!(vault_init.success());
    add_guest_machine_args(&home, "web", &test_workload().cmdline(), &["--nic", "primary-lan"]);
    let _daemon = Daemon::start_in(&home, Some(&sites.recovery), &environment);

    run(&["machine", "start", "web", "--home", h]).ok();
    let console = home.join("run/machines/web@primary/web@primary.console");
    let console = path(&console);
    wait_for(console, "standby-guest: record 3\n");
    run(&["protect", "web", "--home", h]).ok();
    // QEMU and the splitter run at the primary site, in its namespace.
    let qemu = pid_in(&home.join("run/machines/web@primary/web@primary.pid"));
    let splitter = pid_in(&home.join("run/disks/web.disk0.pid"));
    assert_eq!(netns_of(&qemu), netns_named(&sites.primary));
    assert_eq!(netns_of(&splitter), netns_named(&sites.primary));
    wait_replicated_past(h, "web", jiff::Timestamp::now());

    // The link goes down: the guest keeps writing, the RPO grows and shows.
    sites.link("down");
    let cut = Instant::now();
    let at_cut = acknowledged(console);
    wait_for(console, &format!("standby-guest: record {}\n", at_cut + 30));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
        let rpo = status["machines"][0]["rpo_seconds"].as_f64().unwrap();
        if rpo >= 3.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the RPO never grew with the link down: {status}");
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("link down {:?}, guest wrote on", cut.elapsed());

    // Back up: replication catches up with everything written meanwhile.
    sites.link("up");
    wait_replicated_past(h, "web", jiff::Timestamp::now());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
        if status["machines"][0]["rpo_seconds"].as_f64().unwrap() < 3.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the RPO never came down with the link up: {status}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Down again once the vault holds every record acknowledged so far
    // (what the guest writes from there on may never cross), and then the
    // primary host stops.
    let before_cut = acknowledged(console);
    wait_replicated_past(h, "web", jiff::Timestamp::now());
    sites.link("down");
    let during_cut = acknowledged(console);
    wait_for(console, &format!("standby-guest: record {}\n", during_cut + 10));
    sites.stop_primary_host();

    // The failover cannot shut down a source that is gone, nor hear from
    // its splitter, and goes on with what the vault holds.
    let job = run(&["failover", "web", "--shutdown-source", "--home", h, "--json"]).ok().json();
    assert_eq!(job["steps"][1]["detail"], "the source was not running", "{job}");
    let recovery_console = home.join("run/machines/web@recovery/web@recovery.console");
    wait_for(path(&recovery_console), "standby-guest: ready, next record ");
    let text = standby_testkit::console_text(&recovery_console);
    let line = text.lines().find(|l| l.contains("standby-guest: ready, next record ")).unwrap();
    let recovered = line.rsplit(' ').next().unwrap().trim().parse::<u64>().unwrap() - 1;
    assert!(
        recovered >= before_cut,
        "{recovered} records recovered, {before_cut} acknowledged before the link was cut"
    );
    eprintln!("{recovered} records recovered; {before_cut} were in the vault when the link went down");
    let recovery_qemu = pid_in(&home.join("run/machines/web@recovery/web@recovery.pid"));
    assert_eq!(netns_of(&recovery_qemu), netns_named(&sites.recovery));
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    let machine = &listed["machines"][0];
    assert_eq!((machine["state"].as_str(), machine["active_site"].as_str()), (Some("failed-over"), Some("recovery")));
    wait_for(path(&recovery_console), &format!("standby-guest: record {}\n", recovered + 3));
}
