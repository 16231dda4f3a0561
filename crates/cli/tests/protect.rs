//! `standby protect`, `unprotect` and `status` on a real guest under TCG:
//! a running machine's disks move onto the splitters and back without a
//! restart, the vault holds every acknowledged record, the daemon can die
//! under a protected machine without it losing protection, and every
//! refusal names the state and what is allowed.

mod support;

use std::path::Path;
use std::time::Duration;

use standby_testkit::console_text;
use support::daemon::{
    acknowledged, add_guest_machine, add_guest_machine_with, console_of, test_workload, wait_for, Daemon,
};
use support::{path, run};

fn restore_latest(home: &Path, out: &Path) {
    let vault = home.join("sites/recovery/vault");
    let _ = std::fs::remove_file(out);
    support::run_on_vault("restore", &vault, &["--disk", "web.disk0", "--point", "latest", path(out)]).ok();
}

#[test]
fn a_running_machine_is_protected_and_unprotected_without_a_restart() {
    let root = tempfile::tempdir().unwrap();
    // Open to other users, so that only the deployment's own modes keep
    // them out (checked below).
    std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    let image = add_guest_machine(&home, "web", &test_workload());
    run(&["protect", "web", "--home", h]).bad_input("standby serve --home");
    let daemon = Daemon::start(&home);

    // Refusals name the state and the commands it allows; none leaves a job.
    run(&["unprotect", "web", "--home", h])
        .bad_input("the machine is unprotected: unprotect is not allowed now; allowed: protect");
    run(&["protect", "web", "--policy", "gold", "--home", h]).bad_input("no policy named 'gold'");
    run(&["protect", "web", "--group", "a:b", "--home", h]).bad_input("--group: group name may only hold");
    run(&["protect", "nope", "--home", h])
        .bad_input("no machine named 'nope' (known: web); `standby machine add` defines one");
    run(&["protect", "a b/c", "--home", h]).bad_input("no machine named 'a b/c'");
    assert!(run(&["jobs", "--home", h, "--json"]).ok().json()["jobs"].as_array().unwrap().is_empty());
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(status["machines"][0]["health"], serde_json::Value::Null, "{status}");

    run(&["machine", "start", "web", "--home", h]).ok();
    let console = console_of(&home, "web");
    wait_for(&console, "standby-guest: record 3\n");

    // Protected while it runs: the guest never notices (one boot, records
    // keep coming), and the vault holds every record acknowledged before.
    let job = run(&["protect", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(job["steps"][1]["detail"].as_str().unwrap().contains("while running"), "{job}");
    let protected_after = acknowledged(&console);
    run(&["protect", "web", "--home", h]).bad_input("the machine is protected: protect is not allowed now");
    wait_for(&console, &format!("standby-guest: record {}\n", protected_after + 5));
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    let machine = &status["machines"][0];
    assert_eq!(
        (machine["state"].as_str(), machine["health"].as_str()),
        (Some("protected"), Some("healthy")),
        "{status}"
    );
    assert!(machine["rpo_seconds"].as_f64().unwrap() < 60.0, "{status}");
    assert_eq!(machine["disks"][0]["latest_processed"]["label"], "protected", "{status}");
    let human = run(&["status", "--home", h]).ok().stdout;
    assert!(human.contains("web: protected, running at the primary site; health healthy"), "{human}");

    // Records acknowledged by now reach the vault within seconds.
    let wanted = acknowledged(&console);
    let restored = root.path().join("restored.raw");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        restore_latest(&home, &restored);
        let report = standby_guest::check_disk(&restored, 4).unwrap();
        if report.complete_through >= wanted {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the vault lags: {report}, {wanted} acknowledged");
    }

    // What the running deployment keeps (disks, vault objects, state,
    // keys, the daemon's socket, logs) is the service's user's alone.
    let pack = std::fs::read_dir(home.join("sites/recovery/vault/packs")).unwrap().next().unwrap().unwrap();
    let pack = pack.path().strip_prefix(&home).unwrap().to_str().unwrap().to_string();
    let files = ["state.db", "sites/primary/disks/web-disk0.raw", "keys/recovery.key", "run/standby.sock", &pack];
    support::only_its_user_reads(&home, &files);

    // The daemon dies under the protected, running machine: the splitters
    // are processes of their own, the guest keeps writing through them,
    // and the next daemon adopts them.
    drop(daemon);
    let before = acknowledged(&console);
    wait_for(&console, &format!("standby-guest: record {}\n", before + 5));
    let daemon = Daemon::start(&home);
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(status["machines"][0]["health"], "healthy", "{status}");

    // Unprotected while it runs: back on its image, the last writes
    // shipped (every record acknowledged before the command is in the
    // vault), the intent log gone; the guest carries on.
    let before_unprotect = acknowledged(&console);
    let job = run(&["unprotect", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(job["state"], "succeeded", "{job}");
    let unprotected_at = acknowledged(&console);
    assert!(!home.join("sites/primary/disks/web-disk0.raw.standby-dirty").exists());
    wait_for(&console, &format!("standby-guest: record {}\n", unprotected_at + 5));
    run(&["machine", "stop", "web", "--home", h]).ok();
    let text = console_text(Path::new(&console));
    assert_eq!(text.matches("standby-guest: ready").count(), 1, "the guest was booted again:\n{text}");
    let report = standby_guest::check_disk(&image, 4).unwrap();
    assert!(report.complete_through >= standby_guest::acknowledged(&text).unwrap(), "{report}");
    restore_latest(&home, &restored);
    let report = standby_guest::check_disk(&restored, 4).unwrap();
    assert!(report.complete_through >= before_unprotect, "{report}, {before_unprotect} acknowledged before unprotect");

    // Protected again while stopped: the whole disk is read again (it was
    // written without a splitter), and the vault's latest equals the image.
    run(&["protect", "web", "--home", h]).ok();
    restore_latest(&home, &restored);
    assert!(std::fs::read(&restored).unwrap() == std::fs::read(&image).unwrap(), "latest differs from the image");

    let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
    let commands: Vec<&str> = jobs["jobs"].as_array().unwrap().iter().map(|j| j["command"].as_str().unwrap()).collect();
    assert_eq!(commands, ["protect", "machine stop", "unprotect", "protect", "machine start"]);
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn app_consistent_points_come_from_the_guest_agent_and_their_absence_is_explained() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    let policy = ["policy", "add", "often", "--app-consistent", "5s", "--retention", "20s", "--bookmarks", "1s"];
    run(&[&policy[..], &["--home", h]].concat()).ok();
    add_guest_machine(&home, "web", &test_workload());
    // The same guest told not to start its agent.
    add_guest_machine_with(&home, "plain", &format!("{} standby.agent=0", test_workload().cmdline()));
    // Retention every 2 s: the policy keeps 20 s of history.
    let daemon = Daemon::start_with(&home, &[("STANDBY_RETENTION_INTERVAL", "2s")]);
    for name in ["web", "plain"] {
        run(&["machine", "start", name, "--home", h]).ok();
        wait_for(&console_of(&home, name), "standby-guest: record 2\n");
        run(&["protect", name, "--policy", "often", "--home", h]).ok();
    }
    assert!(console_text(Path::new(&console_of(&home, "web"))).contains("standby-guest: guest agent running"));

    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (web, plain) = loop {
        let status = run(&["status", "--home", h, "--json"]).ok().json();
        let machines = status["machines"].as_array().unwrap().clone();
        let find = |name: &str| machines.iter().find(|m| m["name"] == name).unwrap().clone();
        let (web, plain) = (find("web"), find("plain"));
        let explained = plain["consistency"].as_str().unwrap().starts_with("crash-consistent only");
        if !web["disks"][0]["latest_app_consistent"].is_null() && explained {
            break (web, plain);
        }
        assert!(std::time::Instant::now() < deadline, "no app-consistent point or no explanation: {status}");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        web["consistency"].as_str().unwrap().starts_with("app-consistent: the latest point of web.disk0 at "),
        "{web}"
    );
    assert!(plain["consistency"].as_str().unwrap().contains("no qemu-guest-agent answered"), "{plain}");
    assert!(plain["disks"][0]["latest_app_consistent"].is_null(), "{plain}");

    // An app-consistent point's filesystem is clean as it is: no journal
    // to replay (it was frozen), e2fsck finds nothing to fix.
    let vault = home.join("sites/recovery/vault");
    let restored = root.path().join("app.raw");
    support::run_on_vault("restore", &vault, &["--disk", "web.disk0", "--point", "latest-app", path(&restored)]).ok();
    let fsck = std::process::Command::new("/sbin/e2fsck").args(["-fn"]).arg(&restored).output().unwrap();
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
    let report = standby_guest::check_disk(&restored, 4).unwrap();
    assert!(report.complete_through >= 2, "{report}");

    // The daemon applies the policy's retention: older records fold into a
    // base, a moment before the window is refused, latest still restores.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let points = support::run_on_vault("points", &vault, &["--disk", "web.disk0", "--json"]).ok().json();
        if points["points"][0]["label"] == "journal base (older records compacted)" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "retention never compacted the journal: {points}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let old = root.path().join("old.raw");
    let long_ago = "2026-01-01T00:00:00Z";
    support::run_on_vault("restore", &vault, &["--disk", "web.disk0", "--point", long_ago, path(&old)])
        .bad_input("older than");
    for name in ["web", "plain"] {
        run(&["machine", "stop", name, "--home", h]).ok();
    }
    let latest = root.path().join("latest.raw");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // The splitter ships the guest's last writes within a second or two.
        restore_latest(&home, &latest);
        let (restored, disk) =
            (std::fs::read(&latest).unwrap(), std::fs::read(home.join("sites/primary/disks/web-disk0.raw")).unwrap());
        if restored == disk {
            break;
        }
        if std::time::Instant::now() > deadline {
            let differing: Vec<usize> = restored
                .chunks(64 << 10)
                .zip(disk.chunks(64 << 10))
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(block, _)| block)
                .collect();
            let points = support::run_on_vault("points", &vault, &["--disk", "web.disk0", "--json"]).stdout;
            let status = run(&["status", "web", "--home", h, "--json"]).stdout;
            if let Ok(keep) = std::env::var("STANDBY_KEEP_FAILED") {
                let _ = std::process::Command::new("cp").args(["-a", path(&home), &keep]).status();
            }
            panic!(
                "latest differs from the disk after retention in 64 KiB blocks {differing:?} (of {})\npoints: \
                 {points}\nstatus: {status}",
                disk.len() >> 16
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    // Stopped, the machine takes no more app-consistent points, and
    // retention folds the last one into the journal's base: `status` then
    // names none, on the disk line and on the points line alike (issue 14:
    // the points line went on naming the last point the daemon took).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let web = loop {
        let web = run(&["status", "web", "--home", h, "--json"]).ok().json()["machines"][0].clone();
        if web["disks"][0]["latest_app_consistent"].is_null() {
            break web;
        }
        assert!(std::time::Instant::now() < deadline, "retention never compacted the app-consistent points: {web}");
        std::thread::sleep(Duration::from_secs(1));
    };
    let line = web["consistency"].as_str().unwrap();
    assert!(!line.contains("the latest point of"), "the points line names a point the disk line has not: {web}");
    assert!(line.contains("none in the vault's retention window"), "{web}");
    assert_eq!(daemon.terminate(), 0);
}

/// `unprotect` while the initial replication runs (here held up by a
/// vault that stopped answering) stops it: the protect job rolls back and says why, the
/// unprotect job says what it stopped, and the machine is unprotected with
/// no splitter left and no change tracking kept.
#[test]
fn unprotect_during_initial_replication_stops_it() {
    let mut azurite = standby_testkit::Azurite::start();
    azurite.create_container("standby");
    let environment = azurite.environment();
    let run = |arguments: &[&str]| support::run_with(arguments, &environment);
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    support::edit_config(&home, |config| config.replace("\"sites/recovery/vault\"", "\"az://standby/vault\""));
    run(&["vault", "init", "az://standby/vault", "--key-file", path(&home.join("keys/recovery.key"))]).ok();
    // Incompressible data: the initial replication has seconds of work to
    // do, far more than it takes to see it start and cut the vault off (a
    // replication that finished first would leave nothing to stop).
    let disk = root.path().join("disk.raw");
    let mut data = vec![0u8; 1 << 30];
    standby_testkit::Random::new(7).fill(&mut data);
    std::fs::write(&disk, data).unwrap();
    run(&["machine", "add", "web", "--disk", path(&disk), "--home", h]).ok();
    let _daemon = Daemon::start_with(&home, &environment);

    run(&["protect", "web", "--no-wait", "--home", h]).ok();
    // The vault stops answering once the splitter has started shipping.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
        if jobs["jobs"][0]["steps"][2]["state"] == "running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the initial replication never started: {jobs}");
        std::thread::sleep(Duration::from_millis(20));
    }
    azurite.freeze();
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    assert_eq!(listed["machines"][0]["state"], "enabling", "{listed}");
    let unprotect = std::thread::scope(|scope| {
        let unprotect = scope.spawn(|| run(&["unprotect", "web", "--home", h, "--json"]));
        // The splitter ships what it queued before it stops: let it.
        std::thread::sleep(Duration::from_secs(2));
        azurite.thaw();
        unprotect.join().unwrap()
    });
    let job = unprotect.ok().json();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(job["steps"][0]["detail"].as_str().unwrap().contains("stopped and rolled back"), "{job}");
    let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
    let protect = &jobs["jobs"][1];
    assert_eq!((protect["command"].as_str(), protect["state"].as_str()), (Some("protect"), Some("failed")));
    assert!(protect["error"].as_str().unwrap().contains("stopped by `standby unprotect`"), "{protect}");
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    assert_eq!(listed["machines"][0]["state"], "unprotected", "{listed}");
    assert!(!home.join("run/disks/web.disk0.pid").exists(), "a splitter was left running");
    assert!(!home.join("sites/primary/disks/web-disk0.raw.standby-dirty").exists(), "change tracking was kept");
}

/// The recovery site's vault on a real S3 cluster (SeaweedFS, three copies
/// of every object on four storage nodes): a storage node killed
/// (SIGKILL) while the guest writes and replication runs stops nothing:
/// the splitter reports no error, points keep being sealed, and once the
/// guest is stopped the latest point equals its disk.
#[test]
fn replication_into_s3_goes_on_when_a_storage_node_is_killed() {
    let mut cluster = standby_testkit::seaweedfs::SeaweedFs::start();
    cluster.create_bucket("standby");
    let environment = cluster.environment();
    let run = |arguments: &[&str]| support::run_with(arguments, &environment);
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    support::edit_config(&home, |config| config.replace("\"sites/recovery/vault\"", "\"s3://standby/vault\""));
    let key = home.join("keys/recovery.key");
    run(&["vault", "init", "s3://standby/vault", "--key-file", path(&key)]).ok();
    let image = add_guest_machine(&home, "web", &test_workload());
    let _daemon = Daemon::start_with(&home, &environment);
    run(&["machine", "start", "web", "--home", h]).ok();
    let console = console_of(&home, "web");
    wait_for(&console, "standby-guest: record 3\n");
    run(&["protect", "web", "--home", h]).ok();

    cluster.kill_node(2);
    let killed = jiff::Timestamp::now();
    let written = acknowledged(&console);
    wait_for(&console, &format!("standby-guest: record {}\n", written + 60));
    support::daemon::wait_replicated_past(h, "web", jiff::Timestamp::now());
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    let splitter = &status["machines"][0]["disks"][0]["splitter"];
    assert!(splitter["error"].is_null(), "a storage node down failed the vault: {status}");
    assert_eq!(status["machines"][0]["health"], "healthy", "{status}");
    eprintln!("replicated past {killed} with a storage node down: {splitter}");

    run(&["machine", "stop", "web", "--home", h]).ok();
    let restored = root.path().join("restored.raw");
    let restore = ["restore", "--vault", "s3://standby/vault", "--key-file", path(&key), "--disk", "web.disk0"];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let _ = std::fs::remove_file(&restored);
        run(&[&restore[..], &["--point", "latest", path(&restored)]].concat()).ok();
        if std::fs::read(&restored).unwrap() == std::fs::read(&image).unwrap() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the latest point in S3 never equalled the stopped disk");
        std::thread::sleep(Duration::from_secs(2));
    }
    // The node back: everything still reads.
    cluster.restart_node(2);
    run(&["verify", "--vault", "s3://standby/vault", "--key-file", path(&key)]).ok();
}
