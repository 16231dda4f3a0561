//! A recovery plan's failover on real guests, the daemon killed (SIGKILL,
//! as `kill -9`) in the middle: two groups of one TCG guest each (db, then
//! web), the daemon dies at a random step of db's failover a random number
//! of milliseconds in (or of web's, when db's went by first). The next
//! daemon takes the plan up: the cut plan job ends interrupted, the resumed
//! one succeeds, both machines end failed over (the plan finished) and run
//! at the recovery site only, db came up before web, and each copy holds
//! every record its source acknowledged.
//!
//! The seed is printed; `STANDBY_TEST_SEED=N` replays a run.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use standby_lifecycle::{Site, State};
use support::daemon::{
    add_guest_machine, console_of, pid_alive, test_workload, wait_for, wait_replicated_past, Daemon,
};
use support::{path, run, standby_command};

const MACHINES: [&str; 2] = ["db", "web"];
/// Steps of a failover job (daemon/failover.rs).
const FAILOVER_STEPS: u64 = 6;

fn jobs(home: &str) -> Vec<Value> {
    run(&["jobs", "--home", home, "--json"]).ok().json()["jobs"].as_array().unwrap().clone()
}

fn machine(home: &str, name: &str) -> Value {
    let listed = run(&["machine", "list", "--home", home, "--json"]).ok().json();
    listed["machines"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap().clone()
}

/// The plan's jobs, newest first, once the plan was taken up (a job after
/// the cut one: the next daemon resumes the plan once its machines' own
/// jobs were taken up) and no job of any kind runs.
fn settled_plan_jobs(home: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let jobs = jobs(home);
        let plan_jobs: Vec<Value> = jobs.iter().filter(|job| job["subject"]["kind"] == "plan").cloned().collect();
        if plan_jobs.len() >= 2 && jobs.iter().all(|job| job["state"] != "running") {
            return plan_jobs;
        }
        assert!(Instant::now() < deadline, "jobs still running after the restart: {jobs:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The records the guest on `console` printed as acknowledged.
fn acknowledged(console: &str) -> u64 {
    standby_guest::acknowledged(&standby_testkit::console_text(Path::new(console))).unwrap_or(0)
}

#[test]
fn a_plan_failover_survives_a_kill_9_of_the_daemon() {
    let seed = std::env::var("STANDBY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("STANDBY_TEST_SEED={seed}");
    // xorshift64*: replayable from the seed.
    let mut state = seed;
    let mut below = |n: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    };
    let step = below(FAILOVER_STEPS);
    let delay = if below(3) == 0 { 0 } else { below(400) };

    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    for name in MACHINES {
        add_guest_machine(&home, name, &test_workload());
    }
    let daemon = Daemon::start(&home);
    for name in MACHINES {
        run(&["machine", "start", name, "--home", h]).ok();
    }
    for name in MACHINES {
        wait_for(&console_of(&home, name), "standby-guest: record 3\n");
        run(&["protect", name, "--home", h]).ok();
    }
    for name in MACHINES {
        wait_replicated_past(h, name, jiff::Timestamp::now());
    }
    let plan = root.path().join("shop.toml");
    std::fs::write(&plan, "name = \"shop\"\n[[groups]]\nmachines = [\"db\"]\n[[groups]]\nmachines = [\"web\"]\n")
        .unwrap();
    run(&["plan", "create", path(&plan), "--home", h]).ok();
    let consoles: Vec<String> = MACHINES.iter().map(|name| console_of(&home, name)).collect();

    eprintln!("--- the daemon dies {delay} ms into step {step} of the first failover part to reach it");
    let mut daemon = daemon;
    assert_eq!(daemon.terminate(), 0);
    let crash = format!("failover/{step}/{delay}");
    daemon = Daemon::start_with(&home, &[("STANDBY_TEST_CRASH_AT", crash.as_str())]);
    let mut command =
        standby_command().args(["plan", "failover", "shop", "--shutdown-source", "--home", h]).spawn().unwrap();
    assert!(daemon.wait_dead(Duration::from_secs(300)), "the daemon was not killed during {crash}");
    let _ = command.wait();
    let at_the_kill: Vec<u64> = consoles.iter().map(|console| acknowledged(console)).collect();
    let _daemon = Daemon::start(&home);

    let plan_jobs = settled_plan_jobs(h);
    // Newest first: the plan's first job is the one the kill cut.
    let cut = plan_jobs.last().expect("the cut plan job");
    assert_eq!(cut["state"], "interrupted", "the killed plan job ends interrupted: {cut:#}");
    let resumed = plan_jobs
        .iter()
        .find(|job| job["id"].as_i64() > cut["id"].as_i64())
        .unwrap_or_else(|| panic!("the plan was not taken up: {plan_jobs:#?}"));
    assert_eq!(resumed["state"], "succeeded", "taking up the plan failed: {resumed:#}");

    for (index, name) in MACHINES.iter().enumerate() {
        // What the source acknowledged before the plan shut it down for
        // good (a source started again by a rollback prints on from where
        // its disk was, on a console started afresh).
        let before = acknowledged(&consoles[index]).max(at_the_kill[index]);
        let after = machine(h, name);
        assert_eq!(after["state"], State::FailedOver.name(), "{name}: {after:#}");
        assert_eq!(after["active_site"], Site::Recovery.name(), "{name}: {after:#}");
        let pid = |site: Site| home.join(format!("run/machines/{name}@{site}/{name}@{site}.pid"));
        assert!(!pid_alive(&pid(Site::Primary)), "{name} still runs at the primary site");
        assert!(pid_alive(&pid(Site::Recovery)), "{name} does not run at the recovery site");
        let copy = console_of(&home, name);
        let text = standby_testkit::console_text(Path::new(&copy));
        let deadline = Instant::now() + Duration::from_secs(180);
        let ready = loop {
            if let Some(line) = standby_testkit::console_text(Path::new(&copy))
                .lines()
                .rfind(|line| line.contains("ready, next record "))
                .map(str::to_string)
            {
                break line;
            }
            assert!(Instant::now() < deadline, "{name}'s copy never booted: {text}");
            std::thread::sleep(Duration::from_millis(200));
        };
        let found = ready.rsplit(' ').next().unwrap().trim().parse::<u64>().unwrap() - 1;
        assert!(found >= before, "{name}: {found} records in the copy, {before} acknowledged by its source");
        eprintln!("{name}: {found} records in the copy, {before} acknowledged by its source");
    }
    let created = |name: &str| {
        jobs(h)
            .into_iter()
            .filter(|j| j["subject"]["name"] == name && j["kind"] == "failover" && j["state"] == "succeeded")
            .map(|j| j["created"].as_str().unwrap().to_string())
            .max()
            .unwrap_or_else(|| panic!("{name} has no finished failover"))
    };
    assert!(created("db") < created("web"), "web came up before db");
}
