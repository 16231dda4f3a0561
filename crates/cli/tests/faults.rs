//! Faults of a host (issue 14) under a running guest writing numbered
//! records: helpers (splitters, exports) that die are started again by the
//! daemon at once, the guest writes on, `status` says what happened, and
//! the lifecycle goes on without waiting out QEMU's NBD reconnect delay.
//! The times are printed (the figures the limits are held to).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use standby_lifecycle::State;
use standby_testkit::{console_text, wait_for_console};
use support::daemon::{
    acknowledged, add_guest_machine_args, console_of, test_workload, wait_for, wait_replica_equals, Daemon,
};
use support::{path, run, Mount};

/// The pid a helper's pid file names, once it names one.
fn pid_of(pid_file: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(pid_file).unwrap_or_default();
        if let Ok(pid) = text.trim().parse() {
            return pid;
        }
        assert!(Instant::now() < deadline, "{} names no pid", pid_file.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the helper whose pid file is `pid_file` (kill -9) and waits until
/// the daemon has started another that answers on `socket`; returns how
/// long that took.
fn kill_and_wait_for_a_new_one(pid_file: &Path, socket: &Path) -> Duration {
    let old = pid_of(pid_file);
    // SAFETY: kill(2) with a pid read from the helper's pid file.
    assert_eq!(unsafe { libc::kill(old as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(60);
    loop {
        let now = std::fs::read_to_string(pid_file).unwrap_or_default().trim().parse::<u32>().ok();
        if now.is_some_and(|pid| pid != old) && std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return killed.elapsed();
        }
        assert!(Instant::now() < deadline, "{} was not started again", pid_file.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The highest record the guest on `console` acknowledged, once it is past `at_least`.
fn records_past(console: &str, at_least: u64) -> u64 {
    wait_for(console, &format!("standby-guest: record {}\n", at_least + 3));
    acknowledged(console)
}

fn found_at_boot(console: &Path) -> u64 {
    wait_for_console(console, "standby-guest: ready, next record ", Duration::from_secs(120));
    let text = console_text(console);
    let line = text.lines().rfind(|l| l.contains("standby-guest: ready, next record ")).unwrap();
    line.rsplit(' ').next().unwrap().trim().parse::<u64>().unwrap() - 1
}

/// A protected test guest failed over with its source shut down and
/// committed: its deployment, daemon and the recovery VM's console, once
/// the guest writes there.
fn committed_at_the_recovery_site(root: &Path) -> (std::path::PathBuf, Daemon, String) {
    let (home, _image, daemon) = support::daemon::protected_guest(root);
    let h = path(&home);
    let job = run(&["failover", "web", "--shutdown-source", "--home", h, "--json"]).ok().json();
    assert_eq!(job["state"], "succeeded", "{job}");
    run(&["commit", "web", "--home", h]).ok();
    let console = console_of(&home, "web");
    records_past(&console, found_at_boot(Path::new(&console)));
    (home, daemon, console)
}

/// Asserts that machine `web` of the deployment at `home` is in `state`.
fn assert_state(home: &str, state: State) {
    let machines = run(&["machine", "list", "--home", home, "--json"]).ok().json();
    assert_eq!(machines["machines"][0]["state"], state.name(), "{machines}");
}

/// Once the splitters of `web` have replicated past now, the latest point
/// of its disk in `vault` holds every one of the `written` records its
/// guest acknowledged.
fn latest_point_holds(home: &str, vault: &Path, written: u64) {
    support::daemon::wait_replicated_past(home, "web", jiff::Timestamp::now());
    let dir = tempfile::tempdir().unwrap();
    let restored = dir.path().join("latest.raw");
    support::run_on_vault("restore", vault, &["--disk", "web.disk0", "--point", "latest", path(&restored)]).ok();
    let report = standby_guest::check_disk(&restored, test_workload().file_kib).unwrap();
    assert!(report.complete_through >= written, "{report}; {written} records were acknowledged");
}

/// A protected machine with two disks (the test guest's, and a data disk)
/// running under a daemon in `root/d`.
fn protected_two_disk_guest(root: &Path) -> (std::path::PathBuf, Daemon) {
    let home = root.join("d");
    run(&["init", path(&home)]).ok();
    let data = root.join("data.raw");
    std::fs::write(&data, vec![0u8; 16 << 20]).unwrap();
    add_guest_machine_args(&home, "web", &test_workload().cmdline(), &["--disk", path(&data)]);
    let daemon = Daemon::start(&home);
    run(&["machine", "start", "web", "--home", path(&home)]).ok();
    wait_for(&console_of(&home, "web"), "standby-guest: record 3\n");
    run(&["protect", "web", "--home", path(&home)]).ok();
    (home, daemon)
}

/// Both splitters of a running two-disk guest killed with kill -9, one
/// after the other: the daemon starts each again (the time is printed),
/// the guest's writes go on through QEMU's reconnect, `status` names what
/// died, and a planned failover right after (which pauses and stops the
/// guest) loses no acknowledged record and does not wait out QEMU's 60 s
/// NBD reconnect delay.
#[test]
fn splitters_killed_under_a_running_guest_are_started_again_at_once() {
    let root = tempfile::tempdir().unwrap();
    let (home, _daemon) = protected_two_disk_guest(root.path());
    let h = path(&home);
    let console = console_of(&home, "web");
    let disks = home.join("run/disks");
    let mut written = acknowledged(&console);
    for disk in ["web.disk1", "web.disk0"] {
        let took = kill_and_wait_for_a_new_one(&disks.join(format!("{disk}.pid")), &disks.join(format!("{disk}.sock")));
        eprintln!("faults: the splitter of {disk} killed, serving again after {} ms", took.as_millis());
        written = records_past(&console, written);
    }
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    let problems = status["machines"][0]["problems"].to_string();
    for disk in ["web.disk0", "web.disk1"] {
        let said = format!("the splitter of disk '{disk}' died");
        assert!(problems.contains(&said), "status does not say {said}: {status}");
    }
    assert!(problems.contains("was started again in"), "{status}");

    let before = acknowledged(&console);
    let started = Instant::now();
    let job = run(&["planned-failover", "web", "--home", h, "--json"]).ok().json();
    let took = started.elapsed();
    assert_eq!(job["state"], "succeeded", "{job}");
    eprintln!("faults: the planned failover right after took {} ms", took.as_millis());
    assert!(took < Duration::from_secs(60), "the failover waited out a reconnect delay: {job}");
    let recovery = console_of(&home, "web");
    let found = found_at_boot(Path::new(&recovery));
    assert!(found >= before, "the recovery VM found {found} records, {before} were acknowledged");
}

/// The export of a running drill copy killed with kill -9: started again
/// at once on its overlay, the drill copy writes on, `status` says so;
/// likewise under the next daemon (which adopts the exports); and the
/// clean-up removes everything.
#[test]
fn an_export_killed_under_a_drill_is_started_again_at_once() {
    let root = tempfile::tempdir().unwrap();
    let (home, daemon) = protected_two_disk_guest(root.path());
    let h = path(&home);
    let job = run(&["test-failover", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(job["state"], "succeeded", "{job}");
    let drill = home.join("run/machines/web@drill/web@drill.console");
    let drill = drill.to_str().unwrap();
    let exports = home.join("run/exports");
    let written = records_past(drill, found_at_boot(Path::new(drill)));
    let took = kill_and_wait_for_a_new_one(&exports.join("web.disk0@drill.pid"), &exports.join("web.disk0@drill.sock"));
    eprintln!("faults: the drill's export killed, serving again after {} ms", took.as_millis());
    records_past(drill, written);
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    assert!(status["machines"][0]["problems"].to_string().contains("the export web.disk0@drill died"), "{status}");
    // A daemon started after this one adopts the exports and supervises them too.
    assert_eq!(daemon.terminate(), 0);
    let _daemon = Daemon::start(&home);
    let written = records_past(drill, acknowledged(drill));
    let took = kill_and_wait_for_a_new_one(&exports.join("web.disk0@drill.pid"), &exports.join("web.disk0@drill.sock"));
    eprintln!("faults: the drill's export killed under the next daemon, serving again after {} ms", took.as_millis());
    records_past(drill, written);
    run(&["cleanup-test-failover", "web", "--home", h]).ok();
    let left: Vec<_> = std::fs::read_dir(&exports).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|name| !name.to_string_lossy().contains("@drill")), "left behind: {left:?}");
}

/// A failover cancelled while the recovery site's vault is gone (its
/// folder moved away): the roll-back starts the source again at once (the
/// time is printed), on its splitters, which ran through the failover and
/// wait for the vault; the guest writes on; once the vault is back they
/// ship what they held, never re-reading the whole disk, and the latest
/// point has every record acknowledged before.
#[test]
fn a_failover_cancelled_while_the_vault_is_gone_starts_the_source_again_at_once() {
    let root = tempfile::tempdir().unwrap();
    let (home, _image, _daemon) = support::daemon::protected_guest(root.path());
    let h = path(&home);
    let job = run(&["failover", "web", "--shutdown-source", "--home", h, "--json"]).ok().json();
    assert_eq!(job["state"], "succeeded", "{job}");
    let vault = home.join("sites/recovery/vault");
    let gone = home.join("sites/recovery/vault.gone");
    std::fs::rename(&vault, &gone).unwrap();

    let started = Instant::now();
    let job = run(&["cancel", "web", "--home", h, "--json"]).ok().json();
    let took = started.elapsed();
    assert_eq!(job["state"], "succeeded", "{job}");
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    assert_eq!(listed["machines"][0]["runtime"]["running"], true, "{listed}");
    eprintln!("faults: with the vault gone, the source runs again {} ms after the cancel", took.as_millis());
    let console = console_of(&home, "web");
    let booted = found_at_boot(Path::new(&console));
    let written = records_past(&console, booted);
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    let splitter = &status["machines"][0]["disks"][0]["splitter"];
    assert!(splitter["error"].is_string(), "the outage is not reported: {status}");
    assert!(splitter["catch_up_bytes"].as_u64().unwrap() < 64 << 20, "the whole disk is to be re-read: {status}");

    std::fs::rename(&gone, &vault).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
        let splitter = &status["machines"][0]["disks"][0]["splitter"];
        assert!(splitter["catch_up_bytes"].as_u64().unwrap() < 64 << 20, "the whole disk is re-read: {status}");
        // (Caught up: the guest writes on, so some bytes are always on their way.)
        if splitter["error"].is_null() && splitter["refreshed"] == true && splitter["catch_up_bytes"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "replication never caught up: {status}");
        std::thread::sleep(Duration::from_millis(300));
    }
    latest_point_holds(h, &vault, written);
}

/// Starts the daemon of `home` holding a job of `command` at step `step`
/// (from 0) until `release` exists (`STANDBY_TEST_STALL_AT`).
fn daemon_stalled_at(home: &Path, command: &str, step: usize, release: &Path) -> Daemon {
    let stall = [
        ("STANDBY_TEST_STALL_AT", format!("{command}/{step}/600000")),
        ("STANDBY_TEST_STALL_UNTIL", path(release).to_string()),
    ];
    Daemon::start_with(home, &stall)
}

/// `len` bytes no compressor shrinks and no two blocks of which are equal.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes
}

/// A deployment in `root/d` defining machine `web`: the test guest's disk
/// and a 128 MiB data disk of [`noise`].
fn two_disk_machine_of_noise(root: &Path) -> std::path::PathBuf {
    let home = root.join("d");
    run(&["init", path(&home)]).ok();
    let data = root.join("data.raw");
    std::fs::write(&data, noise(128 << 20)).unwrap();
    add_guest_machine_args(&home, "web", &test_workload().cmdline(), &["--disk", path(&data)]);
    home
}

/// A two-disk machine (the test guest's disk and a data disk full of
/// noise) whose splitters are killed with kill -9 while a job waits on
/// them: during protect's initial replication (the data disk's, the job
/// held there until the new splitter serves); while a failover waits for
/// the shut-down source's last writes (the guest's disk, kept from being
/// started again for seconds: the wait bears with it and gets every last
/// write); while reprotect ships the blocks that differ back (the guest's
/// disk again, now at the recovery site). Every job succeeds, the recovery
/// VM boots with every record the source acknowledged, and after reprotect
/// the old site's vault holds both disks exactly as the machine left them.
#[test]
fn splitters_killed_during_protect_failover_and_reprotect_lose_nothing() {
    let root = tempfile::tempdir().unwrap();
    let home = two_disk_machine_of_noise(root.path());
    let h = path(&home);
    let disks = home.join("run/disks");
    let kill = |disk: &str, during: &str| {
        let took = kill_and_wait_for_a_new_one(&disks.join(format!("{disk}.pid")), &disks.join(format!("{disk}.sock")));
        eprintln!("faults: the splitter of {disk} killed during {during}, serving again after {} ms", took.as_millis());
    };

    let release = root.path().join("release-protect");
    let daemon = daemon_stalled_at(&home, "protect", 1, &release);
    run(&["machine", "start", "web", "--home", h]).ok();
    let console = console_of(&home, "web");
    wait_for(&console, "standby-guest: record 3\n");
    let protect = support::spawn_json(&["protect", "web", "--home", h, "--json"]);
    support::daemon::wait_for_step(h, "protect", 1);
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    let splitter = &status["machines"][0]["disks"][1]["splitter"];
    let left = splitter["catch_up_bytes"].as_u64().unwrap() + splitter["lag_bytes"].as_u64().unwrap();
    eprintln!("faults: {left} bytes of web.disk1 not yet in the vault at the kill");
    kill("web.disk1", "initial replication");
    std::fs::write(&release, b"").unwrap();
    let job = support::json_of(protect);
    assert_eq!(job["state"], "succeeded", "{job}");
    records_past(&console, acknowledged(&console));

    assert_eq!(daemon.terminate(), 0);
    let release = root.path().join("release-failover");
    let daemon = daemon_stalled_at(&home, "failover", 2, &release);
    let failover = support::spawn_json(&["failover", "web", "--shutdown-source", "--home", h, "--json"]);
    support::daemon::wait_for_step(h, "failover", 2);
    let source_acknowledged = acknowledged(&console);
    // This one cannot be started again for seconds (a file stands where
    // its socket goes, as when the dying process still holds it): the
    // wait bears with it instead of failing over without the last writes.
    let socket = disks.join("web.disk0.sock");
    let pid_file = disks.join("web.disk0.pid");
    let old = pid_of(&pid_file);
    std::fs::remove_file(&socket).unwrap();
    std::fs::write(&socket, b"not a socket").unwrap();
    // SAFETY: kill(2) with a pid read from the splitter's pid file.
    assert_eq!(unsafe { libc::kill(old as i32, libc::SIGKILL) }, 0);
    std::fs::write(&release, b"").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    std::fs::remove_file(&socket).unwrap();
    let job = support::json_of(failover);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_ne!(pid_of(&pid_file), old, "{job}");
    let waited = &job["steps"][2];
    assert_eq!(waited["detail"], "every write of the source is in the vault", "{job}");
    let console = console_of(&home, "web");
    let recovered = found_at_boot(Path::new(&console));
    assert!(recovered >= source_acknowledged, "{recovered} records recovered, {source_acknowledged} acknowledged");
    run(&["commit", "web", "--home", h]).ok();
    records_past(&console, recovered);

    assert_eq!(daemon.terminate(), 0);
    let release = root.path().join("release-reprotect");
    let _daemon = daemon_stalled_at(&home, "reprotect", 4, &release);
    let reprotect = support::spawn_json(&["reprotect", "web", "--home", h, "--json"]);
    support::daemon::wait_for_step(h, "reprotect", 4);
    let written = records_past(&console, acknowledged(&console));
    kill("web.disk0", "reprotect's shipping");
    let written = records_past(&console, written);
    std::fs::write(&release, b"").unwrap();
    let job = support::json_of(reprotect);
    assert_eq!(job["state"], "succeeded", "{job}");

    run(&["machine", "stop", "web", "--home", h]).ok();
    let vault = home.join("sites/primary/vault");
    for (disk, image) in [("web.disk0", "web-disk0.raw"), ("web.disk1", "web-disk1.raw")] {
        let image = home.join("sites/recovery/disks").join(image);
        wait_replica_equals(&home, &vault, disk, &image, "after splitters were killed");
    }
    let image = home.join("sites/recovery/disks/web-disk0.raw");
    let report = standby_guest::check_disk(&image, test_workload().file_kib).unwrap();
    assert!(report.complete_through >= written, "{report}; {written} records were acknowledged");
}

/// Waits until every disk of machine `web` is local (hydrated).
fn wait_hydrated(home: &str) {
    wait_for_hydration(home, "never hydrated", |hydration| hydration.iter().all(|disk| disk["complete"] == true));
}

/// The hydration of every disk of machine `web`, once `done` says it is
/// as wanted (within two minutes).
fn wait_for_hydration(home: &str, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = run(&["status", "web", "--home", home, "--json"]).ok().json();
        let hydration = status["machines"][0]["hydration"].as_array().cloned().unwrap_or_default();
        if !hydration.is_empty() && done(&hydration) {
            return hydration;
        }
        assert!(Instant::now() < deadline, "{what}: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The export of a failed-over machine's data disk killed with kill -9
/// while it hydrates (slowed down by `STANDBY_TEST_HYDRATE_PACE_MS` so the
/// copy is seen under way): started again on its overlay, it hydrates
/// anew; the recovery VM writes on; both disks become local; reprotect
/// takes the hydrated overlays as the disks, and the data disk equals what
/// was protected byte for byte.
#[test]
fn an_export_killed_during_hydration_is_started_again_and_hydrates_on() {
    let root = tempfile::tempdir().unwrap();
    let home = two_disk_machine_of_noise(root.path());
    let h = path(&home);
    let _daemon = Daemon::start_with(&home, &[("STANDBY_TEST_HYDRATE_PACE_MS", "400")]);
    run(&["machine", "start", "web", "--home", h]).ok();
    wait_for(&console_of(&home, "web"), "standby-guest: record 3\n");
    run(&["protect", "web", "--home", h]).ok();
    let job = run(&["failover", "web", "--shutdown-source", "--home", h, "--json"]).ok().json();
    assert_eq!(job["state"], "succeeded", "{job}");
    let under_way = |hydration: &[serde_json::Value]| {
        assert_ne!(hydration[1]["complete"], true, "the data disk was hydrated before the kill");
        hydration[1]["local_bytes"].as_u64().is_some_and(|local| local > 0)
    };
    let hydration = wait_for_hydration(h, "the data disk's hydration never began", under_way);
    eprintln!(
        "faults: {} of {} bytes of web.disk1 local at the kill",
        hydration[1]["local_bytes"], hydration[1]["disk_bytes"]
    );
    let exports = home.join("run/exports");
    let took =
        kill_and_wait_for_a_new_one(&exports.join("web.disk1@recovery.pid"), &exports.join("web.disk1@recovery.sock"));
    eprintln!("faults: the export of web.disk1 killed while it hydrated, serving again after {} ms", took.as_millis());
    let started = Instant::now();
    wait_hydrated(h);
    eprintln!("faults: both disks hydrated {} ms after the export was started again", started.elapsed().as_millis());
    let console = console_of(&home, "web");
    let written = records_past(&console, found_at_boot(Path::new(&console)));
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    assert!(status["machines"][0]["problems"].to_string().contains("the export web.disk1@recovery died"), "{status}");

    run(&["commit", "web", "--home", h]).ok();
    let written = records_past(&console, written);
    let job = run(&["reprotect", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(job["state"], "succeeded", "{job}");
    let rebuilt = job["steps"][2]["detail"].as_str().unwrap();
    assert!(rebuilt.ends_with(", the hydrated overlays became the disks"), "{job}");
    run(&["machine", "stop", "web", "--home", h]).ok();
    let disks = home.join("sites/recovery/disks");
    assert!(std::fs::read(disks.join("web-disk1.raw")).unwrap() == noise(128 << 20), "the data disk differs");
    let report = standby_guest::check_disk(&disks.join("web-disk0.raw"), test_workload().file_kib).unwrap();
    assert!(report.complete_through >= written, "{report}; {written} records were acknowledged");
}

/// A host back from a power cut while the other site is unreachable: the
/// daemon and the splitters of a protected machine died (kill -9), the
/// recovery site's vault is gone (its folder moved away). The next daemon
/// and `machine start` bring the machine up at once on splitters that wait
/// for the vault; the guest writes, `status` names the vault; once it is
/// back they ship what their intent logs name (not the whole disk) and
/// the latest point has every record acknowledged.
#[test]
fn a_protected_machine_starts_while_its_vault_is_gone_and_replicates_once_it_is_back() {
    let root = tempfile::tempdir().unwrap();
    let (home, _image, daemon) = support::daemon::protected_guest(root.path());
    let h = path(&home);
    run(&["machine", "stop", "web", "--home", h]).ok();
    drop(daemon);
    let splitter = pid_of(&home.join("run/disks/web.disk0.pid")) as i32;
    // SAFETY: kill(2) with a pid read from the splitter's pid file.
    assert_eq!(unsafe { libc::kill(splitter, libc::SIGKILL) }, 0);
    // Gone, as after a power cut (not dying still when the next daemon looks).
    let deadline = Instant::now() + Duration::from_secs(30);
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    while unsafe { libc::kill(splitter, 0) } == 0 {
        assert!(Instant::now() < deadline, "the killed splitter {splitter} never went away");
        std::thread::sleep(Duration::from_millis(20));
    }
    let vault = home.join("sites/recovery/vault");
    let gone = home.join("sites/recovery/vault.gone");
    std::fs::rename(&vault, &gone).unwrap();

    let _daemon = Daemon::start(&home);
    let started = Instant::now();
    run(&["machine", "start", "web", "--home", h]).ok();
    eprintln!("faults: with the vault gone, the machine started in {} ms", started.elapsed().as_millis());
    let console = console_of(&home, "web");
    let written = records_past(&console, found_at_boot(Path::new(&console)));
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    let splitter = &status["machines"][0]["disks"][0]["splitter"];
    assert!(splitter["error"].as_str().is_some_and(|e| e.contains("cannot be opened")), "{status}");

    std::fs::rename(&gone, &vault).unwrap();
    let back = Instant::now();
    support::daemon::wait_replicated_past(h, "web", jiff::Timestamp::now());
    eprintln!("faults: caught up {} ms after the vault came back", back.elapsed().as_millis());
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    let shipped = status["machines"][0]["disks"][0]["splitter"]["bytes_shipped"].as_u64().unwrap();
    assert!(shipped < 16 << 20, "the whole disk was read again: {shipped} bytes shipped: {status}");
    latest_point_holds(h, &vault, written);
}

/// An export that dies and cannot be started again (a file stands where
/// its socket goes) under a failed-over machine: the reprotect that must
/// pause the guest on it fails within seconds naming the export and its
/// last words, instead of waiting out QEMU's 60 s NBD reconnect delay;
/// once the file is gone the export is started again.
#[test]
fn a_pause_on_an_export_that_cannot_be_started_again_fails_at_once_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let (home, _daemon, _console) = committed_at_the_recovery_site(root.path());
    let h = path(&home);
    wait_hydrated(h);

    let exports = home.join("run/exports");
    let socket = exports.join("web.disk0@recovery.sock");
    let export = pid_of(&exports.join("web.disk0@recovery.pid")) as i32;
    // The file first: an export started again at once finds it.
    std::fs::remove_file(&socket).unwrap();
    std::fs::write(&socket, b"not a socket").unwrap();
    // SAFETY: kill(2) with a pid read from the export's pid file.
    assert_eq!(unsafe { libc::kill(export, libc::SIGKILL) }, 0);
    let started = Instant::now();
    let failed = run(&["reprotect", "web", "--home", h, "--json"]);
    let took = started.elapsed();
    eprintln!("faults: reprotect with its export gone for good failed after {} ms", took.as_millis());
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    assert!(!failed.stdout.is_empty(), "refused before the job ran: {}", failed.stderr);
    let job = failed.json();
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("the export web.disk0@recovery is not serving"), "{job}");
    assert!(took < Duration::from_secs(45), "the pause waited out the reconnect delay: {job}");

    std::fs::remove_file(&socket).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the export was never started again");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A reprotect whose reverse splitter cannot start (a file stands where
/// its socket goes) fails with the guest still running on its exports and
/// the machine left reprotecting; once the file is gone, the reprotect
/// asked again goes on from there: the machine is protected, and the old
/// site's vault holds every record the guest acknowledged.
#[test]
fn a_reprotect_that_failed_goes_on_when_asked_again() {
    let root = tempfile::tempdir().unwrap();
    let (home, daemon, console) = committed_at_the_recovery_site(root.path());
    let h = path(&home);

    assert_eq!(daemon.terminate(), 0);
    let release = root.path().join("release");
    let _daemon = daemon_stalled_at(&home, "reprotect", 3, &release);
    let reprotect = support::spawn_json(&["reprotect", "web", "--home", h, "--json"]);
    support::daemon::wait_for_step(h, "reprotect", 3);
    let socket = home.join("run/disks/web.disk0.sock");
    let _ = std::fs::remove_file(&socket);
    std::fs::write(&socket, b"not a socket").unwrap();
    std::fs::write(&release, b"").unwrap();
    let failed = support::json_of(reprotect);
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("not a socket")), "{failed}");
    assert_state(h, State::Reprotecting);
    let written = records_past(&console, acknowledged(&console));

    std::fs::remove_file(&socket).unwrap();
    let job = run(&["reprotect", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["origin"], "operator", "{job}");
    assert_state(h, State::Protected);
    latest_point_holds(h, &home.join("sites/primary/vault"), written);
}

/// The first protect of a running machine whose recovery vault cannot be
/// opened (its folder moved away) is a mistake to report, not an outage to
/// wait out: the job fails at once naming the vault, the machine is
/// unprotected again, its disks on their images with no splitter left
/// running, and the guest writes on; once the vault is back a protect
/// replicates every record acknowledged.
#[test]
fn a_first_protect_without_its_vault_fails_naming_it_and_the_guest_writes_on() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    support::daemon::add_guest_machine(&home, "web", &test_workload());
    let _daemon = Daemon::start(&home);
    run(&["machine", "start", "web", "--home", h]).ok();
    let console = console_of(&home, "web");
    wait_for(&console, "standby-guest: record 3\n");
    let vault = home.join("sites/recovery/vault");
    let gone = home.join("sites/recovery/vault.gone");
    std::fs::rename(&vault, &gone).unwrap();

    let started = Instant::now();
    let failed = run(&["protect", "web", "--home", h, "--json"]);
    eprintln!("faults: a first protect without its vault failed after {} ms", started.elapsed().as_millis());
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    let job = failed.json();
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("the recovery site's vault") && error.contains(path(&vault)), "{job}");
    assert!(error.contains("the machine is unprotected again"), "{job}");
    assert_state(h, State::Unprotected);
    assert!(!home.join("run/disks/web.disk0.sock").exists(), "a splitter was left behind");
    assert!(!vault.exists(), "a vault was made where the recovery site's was");
    let written = records_past(&console, acknowledged(&console));

    std::fs::rename(&gone, &vault).unwrap();
    let job = run(&["protect", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(job["state"], "succeeded", "{job}");
    latest_point_holds(h, &vault, written);
}

/// The recovery site's vault on a filesystem of its own (a tmpfs,
/// bind-mounted at the vault's folder) under a protected guest writing
/// records: filled to the last byte by another file, then unmounted. The
/// guest writes on through both; `status` names each ("No space left on
/// device", the missing vault.config); nothing is written into the empty
/// mount point; once space is freed and the filesystem is mounted again,
/// the latest point holds every record the guest acknowledged.
#[test]
fn a_guest_writes_on_through_a_full_then_unmounted_vault_and_every_record_reaches_it() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    support::daemon::add_guest_machine(&home, "web", &test_workload());
    let vault = home.join("sites/recovery/vault");
    let store = root.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let _tmpfs = Mount::new(&["-t", "tmpfs", "-o", "size=256m", "tmpfs"], &store);
    let copied = std::process::Command::new("cp").arg("-a").arg(vault.join(".")).arg(&store).status().unwrap();
    assert!(copied.success());
    std::fs::remove_dir_all(&vault).unwrap();
    std::fs::create_dir(&vault).unwrap();
    let mounted = Mount::new(&["--bind", path(&store)], &vault);
    let _daemon = Daemon::start(&home);
    run(&["machine", "start", "web", "--home", h]).ok();
    let console = console_of(&home, "web");
    wait_for(&console, "standby-guest: record 3\n");
    run(&["protect", "web", "--home", h]).ok();
    let splitter_error = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
            if status["machines"][0]["disks"][0]["splitter"]["error"].as_str().is_some_and(|e| e.contains(what)) {
                return;
            }
            assert!(Instant::now() < deadline, "status never said {what:?}: {status}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let filler = store.join("filler");
    let filled = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", path(&filler)))
        .arg("bs=64k")
        .output()
        .unwrap();
    assert!(!filled.status.success(), "dd stops when the filesystem is full");
    records_past(&console, acknowledged(&console));
    splitter_error("No space left on device");
    records_past(&console, acknowledged(&console));
    std::fs::remove_file(&filler).unwrap();
    support::daemon::wait_replicated_past(h, "web", jiff::Timestamp::now());

    mounted.unmount();
    assert_eq!(std::fs::read_dir(&vault).unwrap().count(), 0, "the mount point is empty");
    records_past(&console, acknowledged(&console));
    splitter_error("vault.config");
    records_past(&console, acknowledged(&console));
    assert_eq!(std::fs::read_dir(&vault).unwrap().count(), 0, "something wrote into the empty mount point");
    let _mounted = Mount::new(&["--bind", path(&store)], &vault);
    let written = records_past(&console, acknowledged(&console));
    latest_point_holds(h, &vault, written);
}
