//! Restartable jobs: the daemon killed (-9) in the middle of a failover, at
//! different steps. The next daemon rolls the failover back: the machine is
//! protected at its source again, running as it was before, never running
//! at both sites, and no acknowledged record is lost.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use standby_testkit::console_text;
use support::daemon::{
    acknowledged, console_of, protected_guest, wait_for, wait_for_step, wait_replica_equals, Daemon,
};
use support::{path, run, standby_command};

fn pid_running(pid_file: &Path) -> bool {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

#[test]
fn a_daemon_killed_during_a_failover_rolls_it_back() {
    let root = tempfile::tempdir().unwrap();
    let (home, image, mut daemon) = protected_guest(root.path());
    let h = path(&home);

    // Killed while the source shuts down, then once the point is served.
    for step in [1, 4] {
        let console = console_of(&home, "web");
        let before = acknowledged(&console);
        let mut failover =
            standby_command().args(["failover", "web", "--shutdown-source", "--home", h]).spawn().unwrap();
        wait_for_step(h, "failover", step);
        drop(daemon); // kill -9
        assert_ne!(failover.wait().unwrap().code(), Some(0), "a failover cut short must not report success");
        daemon = Daemon::start(&home);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
            let job = &jobs["jobs"][0];
            if job["command"] == "failover (rolled back after a daemon restart)" && job["state"] != "running" {
                assert_eq!(job["state"], "succeeded", "{job}");
                break;
            }
            assert!(Instant::now() < deadline, "no roll-back: {jobs}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
        let machine = &listed["machines"][0];
        assert_eq!((machine["state"].as_str(), machine["active_site"].as_str()), (Some("protected"), Some("primary")));
        assert_eq!(machine["runtime"]["running"], true, "the source runs again as before the failover: {listed}");
        assert!(!pid_running(&home.join("run/machines/web@recovery/web@recovery.pid")), "running at both sites");
        let console = console_of(&home, "web");
        let text = console_text(Path::new(&console));
        let resumed = match text.lines().rfind(|l| l.contains("ready, next record ")) {
            Some(line) => line.rsplit(' ').next().unwrap().trim().parse::<u64>().unwrap() - 1,
            None => before,
        };
        assert!(resumed >= before, "{resumed} records after the roll-back, {before} acknowledged before");
        wait_for(&console, &format!("standby-guest: record {}\n", resumed.max(before) + 3));
    }
    let text = console_text(Path::new(&console_of(&home, "web")));
    run(&["machine", "stop", "web", "--home", h]).ok();
    let report = standby_guest::check_disk(&image, 4).unwrap();
    assert!(report.complete_through >= standby_guest::acknowledged(&text).unwrap(), "{report}");
    assert_eq!(daemon.terminate(), 0);
}

/// A reprotect cut short by a kill -9 of the daemon: before the machine
/// moved onto reverse replication (rebuilding its disks), the machine stays
/// committed and reprotect simply runs again; during the move (the reverse
/// splitters started, the guest paused and still on its exports), the next
/// daemon finishes it without copying anything over the guest's newer
/// writes. Either way the machine ends protected in the reverse direction,
/// running (never left paused), its replica equal to its disk, no record
/// lost.
#[test]
fn a_daemon_killed_during_a_reprotect_is_followed_by_one_that_finishes_it() {
    reprotect_killed_at(&["reprotect/2/0", "reprotect/@reverse-splitters-started/0"]);
}

/// Killed once the paused guest's disks are on the reverse splitters but
/// before that was recorded: the next daemon must keep those splitters
/// (stopping one under the guest once left its `stop` waiting out QEMU's
/// reconnect delay) and finish the move.
#[test]
fn a_daemon_killed_right_after_the_reverse_switch_is_followed_by_one_that_finishes_it() {
    reprotect_killed_at(&["reprotect/@reverse-switched/0"]);
}

/// Fails over and commits the test guest, then reprotects it with the
/// daemon killed at each of `crashes` (`STANDBY_TEST_CRASH_AT`) in turn
/// until a restarted daemon finishes the reprotect; checks the result.
fn reprotect_killed_at(crashes: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let (home, _image, mut daemon) = protected_guest(root.path());
    let h = path(&home);
    run(&["failover", "web", "--shutdown-source", "--home", h]).ok();
    run(&["commit", "web", "--home", h]).ok();
    let console = home.join("run/machines/web@recovery/web@recovery.console");
    let console = path(&console).to_string();
    let next = next_record_at_boot(&console);
    wait_for(&console, &format!("standby-guest: record {}\n", next + 3));

    let mut job = Value::Null;
    for &crash in crashes {
        assert_eq!(daemon.terminate(), 0);
        daemon = Daemon::start_with(&home, &[("STANDBY_TEST_CRASH_AT", crash)]);
        let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
        if listed["machines"][0]["state"] == "protected" {
            break;
        }
        let mut reprotect = standby_command().args(["reprotect", "web", "--home", h]).spawn().unwrap();
        assert!(daemon.wait_dead(Duration::from_secs(180)), "the daemon did not die at {crash}");
        assert_ne!(reprotect.wait().unwrap().code(), Some(0), "a reprotect cut short must not report success");
        daemon = Daemon::start(&home);
        let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
        let state = listed["machines"][0]["state"].as_str().unwrap().to_string();
        assert_eq!(listed["machines"][0]["runtime"]["running"], true, "{listed}");
        if crash == "reprotect/2/0" {
            assert_eq!(state, "committed", "nothing had moved: {listed}");
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        job = loop {
            let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
            let newest = jobs["jobs"][0].clone();
            if newest["command"].as_str().is_some_and(|c| c.starts_with("reprotect")) && newest["state"] != "running" {
                break newest;
            }
            assert!(Instant::now() < deadline, "the reprotect never finished: {jobs}");
            std::thread::sleep(Duration::from_millis(200));
        };
        if job["state"] == "interrupted" {
            // Killed before the move began: committed still, run it again.
            assert_eq!(state, "committed", "{listed}");
        }
    }
    assert_eq!(job["state"], "succeeded", "{job}");
    eprintln!("finished by: {job}");
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    let machine = &status["machines"][0];
    assert_eq!((machine["state"].as_str(), machine["replicates_to"].as_str()), (Some("protected"), Some("primary")));
    // Running, not paused: it keeps acknowledging records.
    let now = acknowledged(&console);
    wait_for(&console, &format!("standby-guest: record {}\n", now + 3));
    run(&["machine", "stop", "web", "--home", h]).ok();
    let acknowledged_at_stop = acknowledged(&console);

    let image = home.join("sites/recovery/disks/web-disk0.raw");
    let report = standby_guest::check_disk(&image, 4).unwrap();
    assert!(report.complete_through >= acknowledged_at_stop, "{report}");
    wait_replica_equals(&home, &home.join("sites/primary/vault"), "web.disk0", &image, "after the reprotect");
    assert_eq!(daemon.terminate(), 0);
}

/// The record a freshly booted guest starts at ("ready, next record N").
fn next_record_at_boot(console: &str) -> u64 {
    wait_for(console, "standby-guest: ready, next record ");
    let text = console_text(Path::new(console));
    let line = text.lines().rfind(|l| l.contains("standby-guest: ready, next record ")).unwrap();
    line.rsplit(' ').next().unwrap().trim().parse().unwrap()
}

/// The daemon killed during a protect (initial replication) and during an
/// unprotect (the disks already moved off the splitters, not yet
/// recorded): the next daemon finishes each. The protected machine's vault
/// ends equal to its disk; the unprotected one runs on its image with no
/// splitter and no change tracking left, its records intact.
#[test]
fn a_daemon_killed_during_protect_or_unprotect_is_followed_by_one_that_finishes_it() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    let image = support::daemon::add_guest_machine(&home, "web", &support::daemon::test_workload());
    let mut daemon = Daemon::start(&home);
    run(&["machine", "start", "web", "--home", h]).ok();
    let console = console_of(&home, "web");
    wait_for(&console, "standby-guest: record 3\n");

    let mut protect = standby_command().args(["protect", "web", "--home", h]).spawn().unwrap();
    wait_for_step(h, "protect", 2);
    drop(daemon); // kill -9
    let _ = protect.wait();
    daemon = Daemon::start(&home);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
        if status["machines"][0]["state"] == "protected" {
            break;
        }
        assert!(Instant::now() < deadline, "the protect was not finished: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let now = acknowledged(&console);
    wait_for(&console, &format!("standby-guest: record {}\n", now + 3));
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(status["machines"][0]["health"], "healthy", "{status}");

    let mut unprotect = standby_command().args(["unprotect", "web", "--home", h]).spawn().unwrap();
    wait_for_step(h, "unprotect", 1);
    drop(daemon);
    let _ = unprotect.wait();
    // The guest writes on, on its image, while no daemon runs.
    let now = acknowledged(&console);
    wait_for(&console, &format!("standby-guest: record {}\n", now + 5));
    daemon = Daemon::start(&home);
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        let jobs = run(&["jobs", "--home", h, "--json"]).ok().json();
        let newest = jobs["jobs"][0].clone();
        if newest["command"].as_str().is_some_and(|c| c.starts_with("unprotect")) && newest["state"] != "running" {
            break newest;
        }
        assert!(Instant::now() < deadline, "the unprotect was not finished: {jobs}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(job["state"], "succeeded", "{job}");
    eprintln!("finished by: {job}");
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    assert_eq!(listed["machines"][0]["state"], "unprotected", "{listed}");
    assert!(!pid_running(&home.join("run/disks/web.disk0.pid")), "a splitter outlived the unprotect");
    assert!(!standby_splitter::default_intent_log(&image).exists(), "change tracking outlived the unprotect");
    let now = acknowledged(&console);
    wait_for(&console, &format!("standby-guest: record {}\n", now + 3));
    run(&["machine", "stop", "web", "--home", h]).ok();
    let report = standby_guest::check_disk(&image, 4).unwrap();
    assert!(report.complete_through >= acknowledged(&console), "{report}");
    assert_eq!(daemon.terminate(), 0);
}
