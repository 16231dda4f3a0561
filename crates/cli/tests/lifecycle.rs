//! Deployments and machine definitions: `init`, `machine add`, `machine
//! list`, and every refusal (exit 2, one line, nothing changed).

mod support;

use std::path::Path;
use std::process::Command;

use standby_testkit::snapshot;
use support::{path, run, run_with};

fn init(dir: &Path) {
    run(&["init", path(dir)]).ok();
}

#[test]
fn init_makes_both_sites_a_vault_and_the_default_policy() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("deployment");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let report = run(&["init", path(&home), "--json"]).ok().json();
    let made = ["sites/primary/disks", "sites/recovery/disks", "sites/recovery/vault/vault.config", "state.db"];
    for folder in made.into_iter().chain(["sites/primary/vault/vault.config"]) {
        assert!(home.join(folder).exists(), "{folder} is missing");
    }
    let policy = &report["policies"][0];
    assert_eq!(policy["name"], "default");
    assert_eq!(policy["rpo_threshold_seconds"], 900);
    assert_eq!(policy["retention_seconds"], 86400);
    assert_eq!(policy["app_consistent_seconds"], 3600);
    assert_eq!(policy["bookmark_seconds"], 5);
    // Each site has a real vault, encrypted with a key outside it that
    // only the service's user reads; without the key it tells what to pass.
    for site in ["recovery", "primary"] {
        let vault = &report["vaults"][site];
        let (location, key) = (vault["location"].as_str().unwrap(), vault["key_file"].as_str().unwrap());
        assert_eq!(location, path(&home.join(format!("sites/{site}/vault"))), "{report}");
        assert_eq!(key, path(&home.join(format!("keys/{site}.key"))), "{report}");
        run(&["verify", "--vault", location]).bad_input("is encrypted: pass --key-file");
        run(&["verify", "--vault", location, "--key-file", key]).ok();
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(key).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    assert_eq!(report["vault"], report["vaults"]["recovery"]["location"]);
    let other = run(&[
        "verify",
        "--vault",
        report["vault"].as_str().unwrap(),
        "--key-file",
        path(&home.join("keys/primary.key")),
    ]);
    other.bad_input("is not the key of vault");
    // Made in a folder open to all, the deployment is its user's alone.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&home).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn init_refuses_an_existing_deployment_or_a_non_empty_folder() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    init(&home);
    let before = snapshot(root.path());
    run(&["init", path(&home)]).bad_input("already a Standby deployment");
    let busy = root.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    run(&["init", path(&busy)]).bad_input("is not empty");
    let file = root.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    run(&["init", path(&file)]).bad_input("not a directory");
    let mut after = snapshot(root.path());
    after.retain(|p, _| !p.starts_with(&busy) && *p != file);
    let mut before = before;
    before.retain(|p, _| !p.starts_with(&busy) && *p != file);
    // SQLite may leave its WAL files; nothing else may change.
    let strip = |m: &mut std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>| {
        m.retain(|p, _| !p.to_string_lossy().contains("state.db"));
    };
    strip(&mut after);
    strip(&mut before);
    assert_eq!(before, after);
    assert_eq!(std::fs::read_to_string(busy.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn machines_import_any_image_as_raw_and_list_their_disks_at_both_sites() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    init(&home);
    let raw = root.path().join("boot.raw");
    std::fs::write(&raw, standby_testkit::Random::new(5).disk_data(4 << 20)).unwrap();
    let qcow2 = root.path().join("data.qcow2");
    let status = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", path(&qcow2), "8M"]).status().unwrap();
    assert!(status.success());
    let kernel = root.path().join("vmlinuz");
    std::fs::write(&kernel, "not really a kernel").unwrap();

    let added = run(&[
        "machine",
        "add",
        "web-01",
        "--disk",
        path(&raw),
        "--disk",
        path(&qcow2),
        "--memory",
        "128",
        "--cpus",
        "2",
        "--kernel",
        path(&kernel),
        "--append",
        "console=ttyS0",
        "--nic",
        "primary-lan",
        "--home",
        path(&home),
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(added["state"], "unprotected");
    assert_eq!(added["active_site"], "primary");

    // STANDBY_HOME finds the deployment too.
    let listed = run_with(&["machine", "list", "--json"], &[("STANDBY_HOME".into(), path(&home).into())]).ok().json();
    let machine = &listed["machines"][0];
    assert_eq!(machine["name"], "web-01");
    assert_eq!(machine["memory_mib"], 128);
    assert_eq!(machine["cpus"], 2);
    // Stored resolved: the recovery network it maps to and a stable MAC.
    let nic = machine["nics"][0].as_str().unwrap();
    assert!(nic.starts_with("primary-lan,recovery=recovery-lan,mac=52:54:00:"), "{nic}");
    let disks = machine["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2);
    let boot = Path::new(disks[0]["primary_path"].as_str().unwrap());
    assert!(boot.starts_with(home.join("sites/primary/disks").canonicalize().unwrap()));
    assert!(std::fs::read(boot).unwrap() == std::fs::read(&raw).unwrap(), "the raw disk is imported as is");
    let data = Path::new(disks[1]["primary_path"].as_str().unwrap());
    assert_eq!(std::fs::metadata(data).unwrap().len(), 8 << 20, "the qcow2 disk is imported as raw");
    assert!(disks[1]["recovery_path"].as_str().unwrap().contains("sites/recovery/disks"));
    assert_eq!(disks[0]["vault_disk"], "web-01.disk0");
}

#[test]
fn a_stop_at_an_unknown_site_is_refused_before_any_request() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    init(&home);
    // No daemon runs: the flag is refused first, naming the sites there are.
    run(&["machine", "stop", "db", "--site", "elsewhere", "--home", path(&home)])
        .bad_input("--site \"elsewhere\": use primary or recovery");
}

#[test]
fn machine_add_refusals_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    init(&home);
    let raw = root.path().join("boot.raw");
    std::fs::write(&raw, vec![1u8; 1 << 20]).unwrap();
    run(&["machine", "add", "db", "--disk", path(&raw), "--home", path(&home)]).ok();
    let before = snapshot(&home.join("sites"));
    let h = path(&home);
    let missing = root.path().join("missing.raw");
    let empty = root.path().join("empty.raw");
    std::fs::write(&empty, b"").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // (No daemon runs: the hint comes from the control crate, said by the CLI.)
        (
            vec!["machine", "add", "db", "--disk", path(&raw), "--home", h],
            "already exists; `standby machine list` shows it",
        ),
        (vec!["machine", "add", "bad name", "--disk", path(&raw), "--home", h], "is not allowed"),
        (vec!["machine", "add", "web", "--disk", path(&raw), "--disk", path(&missing), "--home", h], "does not exist"),
        (vec!["machine", "add", "web", "--disk", path(&empty), "--home", h], "is empty"),
        (vec!["machine", "add", "web", "--disk", path(&raw), "--kernel", path(&missing), "--home", h], "--kernel"),
        (vec!["machine", "add", "web", "--disk", path(&raw), "--append", "x", "--home", h], "need --kernel"),
        (vec!["machine", "add", "web", "--disk", path(&raw), "--memory", "1", "--home", h], "16 MiB"),
        (vec!["machine", "list", "--home", path(root.path())], "no Standby deployment"),
    ];
    for (arguments, needle) in cases {
        run(&arguments).bad_input(needle);
    }
    assert_eq!(snapshot(&home.join("sites")), before, "a refused machine add left something behind");
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    assert_eq!(listed["machines"].as_array().unwrap().len(), 1);
}

#[test]
fn serve_refuses_a_bad_accelerator_or_a_missing_deployment() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    init(&home);
    let bogus = run_with(&["serve", "--home", path(&home)], &[("STANDBY_ACCEL".into(), "fast".into())]);
    bogus.bad_input("STANDBY_ACCEL");
    assert!(!home.join("run/standby.pid").exists() && !home.join("run/standby.sock").exists());
    run(&["serve", "--home", path(root.path())]).bad_input("no Standby deployment");
}

#[test]
fn policies_are_added_listed_and_refused_when_wrong() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    init(&home);
    let h = path(&home);
    let added = run(&[
        "policy",
        "add",
        "gold",
        "--rpo-threshold",
        "5m",
        "--retention",
        "7d",
        "--app-consistent",
        "4h",
        "--bookmarks",
        "1s",
        "--home",
        h,
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(added["rpo_threshold_seconds"], 300);
    assert_eq!(added["retention_seconds"], 7 * 86400);
    run(&["policy", "add", "gold", "--home", h]).bad_input("a policy named 'gold' already exists");
    run(&["policy", "add", "bad", "--rpo-threshold", "soon", "--home", h]).bad_input("--rpo-threshold \"soon\"");
    run(&["policy", "add", "bad", "--bookmarks", "0s", "--home", h]).bad_input("at least one second");
    run(&["policy", "add", "bad", "--bookmarks", "2h", "--retention", "1h", "--home", h]).bad_input("longer than");
    run(&["policy", "add", "no/slash", "--home", h]).bad_input("policy name");
    let listed = run(&["policy", "list", "--home", h, "--json"]).ok().json();
    let names: Vec<&str> = listed["policies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "gold"]);
    let human = run(&["policy", "list", "--home", h]).ok().stdout;
    assert!(human.contains("gold") && human.contains("7days"), "{human}");
}

/// Every command a state does not accept, asked of a real daemon with the
/// machine in that state: exit 2 and one line naming the machine's state,
/// the command and the commands the state allows, and nothing changes.
#[test]
fn every_refused_transition_exits_2_naming_the_state_and_what_is_allowed() {
    use standby_lifecycle::{transition, COMMANDS, STATES};
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    let disk = root.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    run(&["machine", "add", "web", "--disk", path(&disk), "--home", h]).ok();
    let _daemon = support::daemon::Daemon::start(&home);
    let state_db = home.join("state.db");
    let mut refused = 0;
    for state in STATES {
        // The state as a job would leave it (set behind the daemon's back:
        // it reads the state on every request).
        let set = Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
                          c.execute('UPDATE machines SET state = ?', (sys.argv[2],)); c.commit()",
            ])
            .arg(&state_db)
            .arg(state.name())
            .status()
            .unwrap();
        assert!(set.success());
        for command in COMMANDS {
            let Err(refusal) = transition(state, command) else { continue };
            let mut words = command.name().split(' ');
            let mut arguments = vec![words.next().unwrap(), "web"];
            arguments.extend(words);
            if command.name() == "change-point" {
                arguments.extend(["--point", "latest"]);
            }
            arguments.extend(["--home", h]);
            run(&arguments).bad_input(&format!("machine 'web': {refusal}"));
            refused += 1;
        }
        let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
        assert_eq!(listed["machines"][0]["state"], state.name(), "a refusal changed the state: {listed}");
    }
    let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
    assert_eq!(jobs["jobs"], serde_json::json!([]), "a refusal recorded a job");
    assert!(refused > 60, "{refused} refusals checked");
}

/// A daemon asked to stop (SIGTERM) lets a running job finish first, and
/// leaves replication running for the next daemon. (The protect is held
/// 10 s at its initial replication, so that it still runs when the daemon
/// is told to stop however slow the machine, and finishes well within the
/// daemon's 60 s.)
#[test]
fn a_stopping_daemon_lets_running_jobs_finish() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    let disk = root.path().join("disk.raw");
    std::fs::write(&disk, standby_testkit::Random::new(9).disk_data(16 << 20)).unwrap();
    run(&["machine", "add", "web", "--disk", path(&disk), "--home", h]).ok();
    let daemon = support::daemon::Daemon::start_with(&home, &[("STANDBY_TEST_STALL_AT", "protect/2/10000")]);
    run(&["protect", "web", "--no-wait", "--home", h]).ok();
    let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
    assert_eq!(jobs["jobs"][0]["state"], "running", "the job must still run when the daemon is told to stop");
    assert_eq!(daemon.terminate(), 0);
    let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
    assert_eq!(
        (jobs["jobs"][0]["command"].as_str(), jobs["jobs"][0]["state"].as_str()),
        (Some("protect"), Some("succeeded")),
        "{jobs}"
    );
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    assert_eq!(listed["machines"][0]["state"], "protected", "{listed}");
    assert!(home.join("run/disks/web.disk0.pid").exists(), "replication stopped with the daemon");
}
