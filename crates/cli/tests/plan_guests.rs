//! A recovery plan on real guests under TCG: three groups of one machine,
//! a script before the first (failing at first), a manual step after the
//! second, a console probe per machine. The plan's failover stops at the
//! failing script with nothing moved; resumed, it brings the groups up in
//! order, waits at the manual step, and reports each probe's RTO; then
//! commit, reprotect, a planned failback (the same order, the same steps)
//! and reprotect again, all at plan level.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use standby_lifecycle::{Site, State};
use support::daemon::{add_guest_machine, console_of, test_workload, wait_for, Daemon};
use support::{path, run};

const MACHINES: [&str; 3] = ["db", "app", "web"];

fn plan_source() -> String {
    let probe =
        |machine: &str| format!("[probes.{machine}]\nconsole = \"standby-guest: record [0-9]+\"\ntimeout = \"4m\"\n");
    format!(
        r#"name = "shop"
description = "the shop: database, then the application, then the web front"

[[groups]]
name = "database"
machines = ["db"]
pre = [{{ script = "fence.sh", timeout = "1m" }}]

[[groups]]
name = "application"
machines = ["app"]
post = [{{ manual = "Check that the application answers" }}]

[[groups]]
name = "web"
machines = ["web"]

{}{}{}"#,
        probe("db"),
        probe("app"),
        probe("web")
    )
}

fn write_script(file: &Path, body: &str) {
    std::fs::write(file, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Each machine's state and site.
fn states(home: &str) -> Vec<(String, String)> {
    let listed = run(&["machine", "list", "--home", home, "--json"]).ok().json();
    MACHINES
        .iter()
        .map(|name| {
            let machine = listed["machines"].as_array().unwrap().iter().find(|m| m["name"] == *name).unwrap();
            (machine["state"].as_str().unwrap().to_string(), machine["active_site"].as_str().unwrap().to_string())
        })
        .collect()
}

fn all(home: &str, state: &str, site: &str) {
    let found = states(home);
    assert!(found.iter().all(|(s, at)| s == state && at == site), "expected all {state} at {site}: {found:?}");
}

/// Waits until job `id` waits at its manual step; returns the job.
fn waiting_at_manual_step(home: &str, id: i64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let job = run(&["jobs", &id.to_string(), "--home", home, "--json"]).ok().json();
        let steps = job["steps"].as_array().unwrap();
        if steps.iter().any(|s| s["state"] == "running" && s["detail"].as_str().unwrap_or("").starts_with("waiting")) {
            return job;
        }
        assert_eq!(job["state"], "running", "the plan ended before its manual step: {job}");
        assert!(Instant::now() < deadline, "the plan never reached its manual step: {job}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The creation times of each machine's newest job of `kind`, in MACHINES' order.
fn part_created(home: &str, kind: &str) -> Vec<String> {
    let jobs = run(&["jobs", "--home", home, "--json"]).ok().json();
    let jobs = jobs["jobs"].as_array().unwrap();
    MACHINES
        .iter()
        .map(|name| {
            jobs.iter()
                .filter(|j| j["subject"]["kind"] == "machine" && j["subject"]["name"] == *name && j["kind"] == kind)
                .map(|j| j["created"].as_str().unwrap().to_string())
                .max()
                .unwrap_or_else(|| panic!("{name} has no {kind} job"))
        })
        .collect()
}

/// Runs the plan's failover-like command `command` from its failing
/// script to its end: refused by the script, resumed, stopped at the
/// manual step, resumed again; returns the finished job.
fn through_the_plan(home: &str, command: &[&str], script: &Path, from: &str) -> serde_json::Value {
    write_script(script, "echo the fence is stuck >&2; exit 3");
    let failed = run(&[&["plan"], command, &["shop", "--home", home]].concat());
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let said = format!("{}{}", failed.stdout, failed.stderr);
    assert!(failed.stderr.contains("exit 3") && failed.stdout.contains("the fence is stuck"), "{said}");
    all(home, State::Protected.name(), from);
    write_script(script, "echo fenced $STANDBY_PLAN $STANDBY_DIRECTION");
    let resumed = run(&["plan", "resume", "shop", "--no-wait", "--home", home, "--json"]).ok().json();
    let id = resumed["job"].as_i64().unwrap();
    let job = waiting_at_manual_step(home, id);
    assert!(job["steps"][0]["detail"].as_str().unwrap().contains("fenced shop"), "{job}");
    let found = states(home);
    assert_ne!(found[0].1, from, "db moved before the manual step: {found:?}");
    assert_ne!(found[1].1, from, "app moved before the manual step: {found:?}");
    assert_eq!(found[2], (State::Protected.name().to_string(), from.to_string()), "web waits for the manual step");
    let finished = run(&["plan", "resume", "shop", "--home", home, "--json"]).ok().json();
    assert_eq!(finished["state"], "succeeded", "{finished}");
    finished
}

#[test]
fn a_plan_brings_real_guests_back_in_order_and_fails_them_back() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    for name in MACHINES {
        add_guest_machine(&home, name, &test_workload());
    }
    let _daemon = Daemon::start(&home);
    for name in MACHINES {
        run(&["machine", "start", name, "--home", h]).ok();
    }
    for name in MACHINES {
        wait_for(&console_of(&home, name), "standby-guest: record 3\n");
        run(&["protect", name, "--home", h]).ok();
    }
    let plans = root.path().join("plans");
    std::fs::create_dir_all(&plans).unwrap();
    let script = plans.join("fence.sh");
    write_script(&script, "exit 0");
    std::fs::write(plans.join("shop.toml"), plan_source()).unwrap();
    run(&["plan", "create", path(&plans.join("shop.toml")), "--home", h]).ok();

    let job = through_the_plan(h, &["failover", "--shutdown-source"], &script, Site::Primary.name());
    all(h, State::FailedOver.name(), Site::Recovery.name());
    let created = part_created(h, "failover");
    assert!(created[0] < created[1] && created[1] < created[2], "groups came up out of order: {created:?}");
    let rto = job["steps"].as_array().unwrap().last().unwrap()["detail"].as_str().unwrap().to_string();
    assert!(rto.starts_with("RTO ") && ["db", "app", "web"].iter().all(|m| rto.contains(m)), "{rto}");
    eprintln!("plan failover: {rto}");

    run(&["plan", "commit", "shop", "--home", h]).ok();
    all(h, State::Committed.name(), Site::Recovery.name());
    run(&["plan", "reprotect", "shop", "--home", h]).ok();
    all(h, State::Protected.name(), Site::Recovery.name());

    let job = through_the_plan(h, &["planned-failover"], &script, Site::Recovery.name());
    all(h, State::FailedOver.name(), Site::Primary.name());
    let created = part_created(h, "planned-failover");
    assert!(created[0] < created[1] && created[1] < created[2], "groups came back out of order: {created:?}");
    let fenced = job["steps"][0]["detail"].as_str().unwrap();
    assert!(fenced.contains("recovery-to-primary"), "{fenced}");
    run(&["plan", "commit", "shop", "--home", h]).ok();
    run(&["plan", "reprotect", "shop", "--home", h]).ok();
    all(h, State::Protected.name(), Site::Primary.name());
    for name in MACHINES {
        wait_for(&console_of(&home, name), "standby-guest: record ");
    }
}
