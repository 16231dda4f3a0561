//! `standby serve` and the machine commands it answers: a real guest under
//! TCG started and stopped through the daemon, the refusals, and daemons
//! that stop or die with a machine running: the machine keeps running, the
//! next daemon adopts it, and it is never started twice.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use standby_testkit::console_text;
use support::daemon::{console_of, wait_for, Daemon};
use support::{path, run, standby_command};

#[test]
fn machines_start_and_stop_through_the_daemon() {
    let guest = standby_testkit::test_guest();
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    run(&["init", path(&home)]).ok();
    let disk = root.path().join("guest.raw");
    standby_guest::prepare_disk(&disk, 64 << 20).unwrap();
    let workload = standby_guest::Workload { count: 0, interval: Duration::from_millis(100), file_kib: 4 };
    let h = path(&home);
    run(&[
        "machine",
        "add",
        "web",
        "--disk",
        path(&disk),
        "--kernel",
        path(&guest.vmlinuz),
        "--initrd",
        path(&guest.initramfs),
        "--append",
        &workload.cmdline(),
        "--home",
        h,
    ])
    .ok();

    // Without a daemon the commands say how to start one.
    run(&["machine", "start", "web", "--home", h]).bad_input("standby serve --home");

    let daemon = Daemon::start(&home);
    let second = run(&["serve", "--home", h]);
    second.bad_input("already running");
    run(&["machine", "start", "nope", "--home", h]).bad_input("no machine named 'nope'");
    run(&["machine", "stop", "web", "--home", h]).bad_input("is not running; `standby machine start web` starts it");

    let started = run(&["machine", "start", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(started["accel"], "tcg");
    run(&["machine", "start", "web", "--home", h]).bad_input("already running");
    let console = console_of(&home, "web");
    wait_for(&console, "standby-guest: record 3\n");
    let stopped = run(&["machine", "stop", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(stopped["stopped"], "clean");
    let text = console_text(Path::new(&console));
    let acknowledged = standby_guest::acknowledged(&text).unwrap();
    let image = home.join("sites/primary/disks/web-disk0.raw");
    let report = standby_guest::check_disk(&image, 4).unwrap();
    assert!(report.complete_through >= acknowledged, "{report}, {acknowledged} acknowledged");

    // It carries on where it stopped; the daemon dies (kill -9) and then
    // stops cleanly (SIGTERM): each time the guest keeps running and the
    // next daemon adopts it.
    run(&["machine", "start", "web", "--home", h]).ok();
    let console = console_of(&home, "web");
    wait_for(&console, &format!("standby-guest: record {}\n", acknowledged + 2));
    drop(daemon); // kill -9
    let before = standby_guest::acknowledged(&console_text(Path::new(&console)));
    wait_for(&console, &format!("standby-guest: record {}\n", before.unwrap() + 3));
    let daemon = Daemon::start(&home);
    run(&["machine", "start", "web", "--home", h]).bad_input("already running");
    assert_eq!(daemon.terminate(), 0);
    let daemon = Daemon::start(&home);
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    assert_eq!(listed["machines"][0]["runtime"]["running"], true, "{listed}");
    let stopped = run(&["machine", "stop", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(stopped["stopped"], "clean");
    let text = console_text(Path::new(&console));
    // The console restarts with each boot: one boot since the last start,
    // not a second one by a daemon that failed to adopt the first.
    assert_eq!(text.matches("standby-guest: ready").count(), 1, "the guest was booted again:\n{text}");
    let report = standby_guest::check_disk(&image, 4).unwrap();
    assert!(report.complete_through >= standby_guest::acknowledged(&text).unwrap(), "{report}");

    // Every start and stop was a job with its steps.
    let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
    let jobs = jobs["jobs"].as_array().unwrap().clone();
    assert!(jobs.iter().all(|job| job["state"] == "succeeded"), "{jobs:?}");
    assert_eq!(jobs.iter().filter(|job| job["command"] == "machine start").count(), 2);
    let stop = jobs.iter().find(|job| job["command"] == "machine stop").unwrap();
    assert!(stop["steps"].as_array().unwrap().iter().all(|step| step["state"] == "done"), "{stop}");
    let one = run(&["jobs", &stop["id"].to_string(), "--home", h, "--json"]).ok().json();
    assert_eq!(one["id"], stop["id"]);
    run(&["jobs", "999", "--home", h]).bad_input("no job 999; `standby jobs` lists them");

    // The daemon dies in the middle of a stop: the job is marked interrupted
    // at the next start, and the machine is re-read (adopted if it still runs).
    run(&["machine", "start", "web", "--home", h]).ok();
    let console = console_of(&home, "web");
    wait_for(&console, "standby-guest: ready");
    let mut stopping = standby_command().args(["machine", "stop", "web", "--home", h]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
        if jobs["jobs"][0]["command"] == "machine stop" && jobs["jobs"][0]["state"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the stop job never started: {jobs}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(daemon); // kill -9 mid-job
    assert_ne!(stopping.wait().unwrap().code(), Some(0), "a stop cut short must not report success");
    let daemon = Daemon::start(&home);
    let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
    assert_eq!(jobs["jobs"][0]["state"], "interrupted", "{jobs}");
    assert!(jobs["jobs"][0]["error"].as_str().unwrap().contains("daemon stopped"), "{jobs}");
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    if listed["machines"][0]["runtime"]["running"] == true {
        run(&["machine", "stop", "web", "--home", h]).ok();
    }
    let report = standby_guest::check_disk(&image, 4).unwrap();
    let text = console_text(Path::new(&console));
    if let Some(acknowledged) = standby_guest::acknowledged(&text) {
        assert!(report.complete_through >= acknowledged, "{report}");
    }
    assert_eq!(daemon.terminate(), 0);
    assert!(!home.join("run/standby.sock").exists() && !home.join("run/standby.pid").exists());
}

/// `machine add` through a running daemon: relative paths are the
/// command's (the daemon runs in another folder), made whole before they
/// are sent.
#[test]
fn relative_paths_name_the_commands_files_not_the_daemons() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    run(&["init", path(&home)]).ok();
    std::fs::write(root.path().join("guest.raw"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(root.path().join("vmlinuz"), b"not booted here").unwrap();
    let _daemon = Daemon::start(&home);
    let added = support::standby_command()
        .args(["machine", "add", "web", "--disk", "guest.raw", "--kernel", "vmlinuz", "--home", path(&home), "--json"])
        .current_dir(root.path())
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let machine: serde_json::Value = serde_json::from_slice(&added.stdout).unwrap();
    let kernel = root.path().join("vmlinuz").canonicalize().unwrap();
    assert_eq!(machine["kernel"], path(&kernel), "{machine}");
    assert!(home.join("sites/primary/disks/web-disk0.raw").is_file());
}
