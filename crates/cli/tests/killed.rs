//! The daemon killed (SIGKILL, as `kill -9`) at a random step of every job
//! of the journey, a random number of milliseconds in: start, protect,
//! drill and its cleanup, failover, change of point, cancel, planned
//! failover with sync-first, complete, commit, reprotect, unprotect, stop.
//! After each kill, the next daemon resumes or rolls the job back: no job
//! stays running, every job it started to do so succeeds, the machine is
//! in a resting state and runs at one site at most, and the journey goes
//! on from there (running the command again when the job was rolled
//! back). At the end the disk's records and files are intact (`e2fsck -fn`
//! clean) through every record the guest acknowledged.
//!
//! The seed is printed; `STANDBY_TEST_SEED=N` replays a run, and
//! `STANDBY_KEEP_FAILED=DIR` copies the deployment (state, run directory
//! with the QEMU, splitter and export logs) there when a taken-up job fails.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::daemon::{add_guest_machine, console_of, pid_alive, test_workload, wait_for, Daemon};
use support::{path, run, standby_command};

/// One job of the journey: the command, its job's name and step count,
/// and what the machine is once it succeeded.
struct Stage {
    arguments: &'static [&'static str],
    job: &'static str,
    steps: u64,
    leaves: Leaves,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Leaves {
    /// The machine in this lifecycle state.
    State(&'static str),
    /// Running (`true`) or stopped at its active site.
    Running(bool),
}

const JOURNEY: &[Stage] = &[
    Stage { arguments: &["machine", "start"], job: "machine start", steps: 3, leaves: Leaves::Running(true) },
    Stage { arguments: &["protect"], job: "protect", steps: 4, leaves: Leaves::State("protected") },
    Stage { arguments: &["test-failover"], job: "test-failover", steps: 3, leaves: Leaves::State("test-failover") },
    Stage {
        arguments: &["cleanup-test-failover"],
        job: "cleanup-test-failover",
        steps: 1,
        leaves: Leaves::State("protected"),
    },
    Stage {
        arguments: &["failover", "--shutdown-source"],
        job: "failover",
        steps: 6,
        leaves: Leaves::State("failed-over"),
    },
    Stage {
        arguments: &["change-point", "--point", "latest"],
        job: "change-point",
        steps: 4,
        leaves: Leaves::State("failed-over"),
    },
    Stage { arguments: &["cancel"], job: "cancel", steps: 1, leaves: Leaves::State("protected") },
    Stage {
        arguments: &["planned-failover", "--sync-first"],
        job: "planned-failover --sync-first",
        steps: 1,
        leaves: Leaves::State("ready-to-complete"),
    },
    Stage {
        arguments: &["complete-failover"],
        job: "complete-failover",
        steps: 6,
        leaves: Leaves::State("failed-over"),
    },
    Stage { arguments: &["commit"], job: "commit", steps: 2, leaves: Leaves::State("committed") },
    Stage { arguments: &["reprotect"], job: "reprotect", steps: 5, leaves: Leaves::State("protected") },
    Stage { arguments: &["unprotect"], job: "unprotect", steps: 3, leaves: Leaves::State("unprotected") },
    Stage { arguments: &["machine", "stop"], job: "machine stop", steps: 2, leaves: Leaves::Running(false) },
];

/// States no machine may be left in once the restarted daemon settled.
const HALF_WAY: [&str; 3] = ["failover-in-progress", "enabling", "reprotecting"];

/// xorshift64*: enough randomness to pick kill points, replayable from the seed.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn jobs(home: &str) -> Vec<Value> {
    run(&["jobs", "--home", home, "--json"]).ok().json()["jobs"].as_array().unwrap().clone()
}

fn machine(home: &str) -> Value {
    run(&["machine", "list", "--home", home, "--json"]).ok().json()["machines"][0].clone()
}

/// Waits until no job runs (the restarted daemon's own included).
fn settle(home: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let jobs = jobs(home);
        if jobs.iter().all(|job| job["state"] != "running") {
            return jobs;
        }
        assert!(Instant::now() < deadline, "jobs still running after the restart: {jobs:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the guest on `console` acknowledges records, then for two more.
fn writes_on(console: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let now = loop {
        if let Some(now) = standby_guest::acknowledged(&standby_testkit::console_text(Path::new(console))) {
            break now;
        }
        assert!(Instant::now() < deadline, "the guest on {console} acknowledged nothing");
        std::thread::sleep(Duration::from_millis(200));
    };
    wait_for(console, &format!("standby-guest: record {}\n", now + 2));
}

fn reached(home: &str, leaves: Leaves) -> bool {
    let machine = machine(home);
    match leaves {
        Leaves::State(state) => machine["state"] == state,
        Leaves::Running(running) => machine["runtime"]["running"] == running,
    }
}

#[test]
fn the_daemon_killed_at_a_random_step_of_every_job_leaves_no_machine_half_way() {
    let seed = std::env::var("STANDBY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("STANDBY_TEST_SEED={seed}");
    let mut random = Random(seed);
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    add_guest_machine(&home, "web", &test_workload());
    let mut daemon = Daemon::start(&home);

    for stage in JOURNEY {
        let step = random.below(stage.steps);
        let delay = if random.below(3) == 0 { 0 } else { random.below(400) };
        let crash = format!("{}/{step}/{delay}", stage.job);
        // What the guest acknowledged before a move that loses nothing.
        let acknowledged_before = machine(h)["runtime"]["console"].as_str().map(|console| {
            standby_guest::acknowledged(&standby_testkit::console_text(Path::new(console))).unwrap_or(0)
        });
        eprintln!("--- {}: the daemon dies {delay} ms into step {step}", stage.job);
        assert_eq!(daemon.terminate(), 0);
        daemon = Daemon::start_with(&home, &[("STANDBY_TEST_CRASH_AT", crash.as_str())]);
        let before = jobs(h).first().map_or(0, |job| job["id"].as_i64().unwrap());
        let mut arguments: Vec<&str> = stage.arguments.to_vec();
        arguments.insert(if arguments[0] == "machine" { 2 } else { 1 }, "web");
        arguments.extend(["--home", h]);
        let mut command = standby_command().args(&arguments).spawn().unwrap();
        assert!(daemon.wait_dead(Duration::from_secs(240)), "the daemon was not killed during {crash}");
        let _ = command.wait();
        daemon = Daemon::start(&home);

        // The restarted daemon resumes or rolls back, and succeeds at it.
        let jobs = settle(h);
        let crashed = jobs.iter().find(|job| job["command"] == stage.job && job["id"].as_i64() > Some(before));
        let crashed = crashed.unwrap_or_else(|| panic!("no {} job: {jobs:#?}", stage.job));
        assert!(
            crashed["state"] == "interrupted" || crashed["state"] == "succeeded",
            "the killed job ends interrupted (or finished before the kill): {crashed:#}"
        );
        for later in jobs.iter().filter(|job| job["id"].as_i64() > crashed["id"].as_i64()) {
            if later["state"] != "succeeded" {
                support::keep_failed(&home, &[]);
            }
            assert_eq!(later["state"], "succeeded", "taking up the killed job failed: {later:#}");
        }
        let after = machine(h);
        eprintln!(
            "    after the restart: {} at {}, running {}; {}",
            after["state"],
            after["active_site"],
            after["runtime"]["running"],
            jobs.iter()
                .filter(|job| job["id"].as_i64() > crashed["id"].as_i64())
                .map(|job| job["command"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(!HALF_WAY.contains(&after["state"].as_str().unwrap()), "left half-way: {after:#}");
        let primary = pid_alive(&home.join("run/machines/web@primary/web@primary.pid"));
        let recovery = pid_alive(&home.join("run/machines/web@recovery/web@recovery.pid"));
        assert!(!(primary && recovery), "running at both sites after killing {crash}: {after:#}");
        if after["state"] != "test-failover" {
            assert!(!pid_alive(&home.join("run/machines/web@drill/web@drill.pid")), "a drill copy outlived its drill");
        }

        // The journey goes on from where the restart left it (once a
        // guest the restart booted is up: one still booting ignores the
        // power button a failover presses).
        if stage.job == "machine stop" {
            // The dead daemon may have pressed the power button already:
            // then the guest is on its way down (in a second or two) and
            // goes by itself.
            let deadline = Instant::now() + Duration::from_secs(10);
            while machine(h)["runtime"]["running"] == true && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
        } else if machine(h)["runtime"]["running"] == true {
            writes_on(&console_of(&home, "web"));
        }
        if !reached(h, stage.leaves) {
            if stage.job == "complete-failover" && machine(h)["state"] == "protected" {
                // Rolled back to before the planned failover.
                run(&["planned-failover", "web", "--sync-first", "--home", h]).ok();
            }
            run(&arguments).ok();
            assert!(reached(h, stage.leaves), "{} did not lead to {:?}: {:#}", stage.job, stage.leaves, machine(h));
        }
        if machine(h)["runtime"]["running"] == true && stage.job != "machine stop" {
            // Running, not left paused: the guest acknowledges new records.
            writes_on(&console_of(&home, "web"));
        }
        if matches!(stage.job, "failover" | "complete-failover") {
            // The source was shut down first: the copy has every record it acknowledged.
            let console = console_of(&home, "web");
            let text = standby_testkit::console_text(Path::new(&console));
            let line = text.lines().rfind(|l| l.contains("ready, next record ")).expect("the copy booted");
            let found = line.rsplit(' ').next().unwrap().trim().parse::<u64>().unwrap() - 1;
            let before = acknowledged_before.unwrap_or(0);
            assert!(found >= before, "{}: {found} records at the other site, {before} acknowledged before", stage.job);
        }
        // What the vault holds is a whole filesystem (after its journal's
        // replay), whatever the kill interrupted.
        let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
        if let Some(site) = status["machines"][0]["replicates_to"].as_str() {
            let restored = root.path().join("latest.raw");
            let _ = std::fs::remove_file(&restored);
            let vault = home.join(format!("sites/{site}/vault"));
            support::run_on_vault("restore", &vault, &["--disk", "web.disk0", "--point", "latest", path(&restored)])
                .ok();
            if let Err(e) = standby_guest::check_disk(&restored, 4) {
                if let Ok(keep) = std::env::var("STANDBY_KEEP_FAILED") {
                    let _ = std::process::Command::new("cp").args(["-a", h, &keep]).status();
                }
                panic!("the vault's latest after {}: {e}", stage.job);
            }
        }
    }
    let after = machine(h);
    assert_eq!((after["state"].as_str(), after["active_site"].as_str()), (Some("unprotected"), Some("recovery")));
    let console = home.join("run/machines/web@recovery/web@recovery.console");
    let text = standby_testkit::console_text(&console);
    let report = standby_guest::check_disk(&home.join("sites/recovery/disks/web-disk0.raw"), 4);
    let report = report.unwrap_or_else(|e| {
        if let Ok(keep) = std::env::var("STANDBY_KEEP_FAILED") {
            let _ = std::process::Command::new("cp").args(["-a", h, &keep]).status();
        }
        panic!("{e}")
    });
    assert!(report.complete_through >= standby_guest::acknowledged(&text).unwrap(), "{report}");
    assert_eq!(daemon.terminate(), 0);
}
