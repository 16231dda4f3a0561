//! Restartable jobs: the daemon killed (-9) in the middle of a failover, at
//! different steps. The next daemon rolls the failover back: the machine is
//! protected at its source again, running as it was before, never running
//! at both sites, and no acknowledged record is lost.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use standby_testkit::console_text;
use support::daemon::{acknowledged, console_of, protected_guest, wait_for, Daemon};
use support::{path, run, standby_command};

/// Waits until the newest job is `command` with step `step` past pending.
fn wait_for_step(home: &str, command: &str, step: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let jobs = run(&["jobs", "--home", home, "--json"]).ok().json();
        let job = &jobs["jobs"][0];
        if job["command"] == command && job["steps"][step]["state"] != "pending" {
            return;
        }
        assert!(Instant::now() < deadline, "the {command} job never reached step {step}: {jobs}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
