//! Replication groups' points at the splitters: three disks in one group,
//! a writer whose records go to A, then (once A acknowledged) to B, then
//! to C, and group points made all along (`standby_splitter::group`).
//! Restored, every group point has C's last record <= B's <= A's, and
//! each disk every record up to its last. The same check catches points
//! made one disk after another without the barrier.
//!
//! Seeds are printed; `STANDBY_TEST_SEED=N` replays one.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use standby_format::PointKind;
use standby_vault::view::PointView;
use standby_vault::Vault;
use support::{path, run, standby_command};

const DISK_BYTES: usize = 4 << 20;
const RECORD: usize = 512;
const GROUP: &str = "app";
const MEMBERS: [&str; 3] = ["a", "b", "c"];

struct Member {
    child: Child,
    socket: PathBuf,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Member {
    fn start(dir: &Path, vault: &Path, disk: &str, faults: Option<&Path>) -> Member {
        let image = dir.join(format!("{disk}.img"));
        std::fs::File::create(&image).unwrap().set_len(DISK_BYTES as u64).unwrap();
        let socket = dir.join(format!("{disk}.sock"));
        let mut command = standby_command();
        command
            .args(["serve-disk", path(&image), "--socket", path(&socket), "--vault", path(vault)])
            .args(["--disk", disk, "--group", GROUP, "--seal-interval", "200ms"])
            .stderr(Stdio::null());
        if let Some(faults) = faults {
            command.env("STANDBY_TEST_IO_FAULTS", faults);
        }
        let member = Member { child: command.spawn().expect("serve-disk starts"), socket };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = run(&["splitter-status", "--socket", path(&member.socket), "--json"]);
            if status.code == 0 && status.json()["refreshed"] == true {
                return member;
            }
            assert!(Instant::now() < deadline, "the splitter of {disk} never caught up: {}", status.stderr);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the splitter the way the daemon does (it ships what it holds).
    fn stop(mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert!(self.child.wait().unwrap().success(), "the splitter stopped with an error");
    }
}

/// How the points of a run are made.
#[derive(Clone, Copy, PartialEq)]
enum Points {
    /// Group points (the barrier).
    Group,
    /// A plain mark in each disk in turn, 20 ms apart: no barrier.
    OneAfterAnother,
}

struct Outcome {
    /// Per point: each disk's last record, in member order.
    lasts: Vec<[u64; 3]>,
    records: u64,
    failed_points: Vec<String>,
}

fn seed_of(default: u64) -> u64 {
    std::env::var("STANDBY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Runs the writer for `seconds` against three splitters while `points`
/// are made every 20 to 150 ms, then restores every point of every disk.
fn run_chain(seed: u64, points: Points, slow_vault: bool, seconds: f64) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    run(&["vault", "init", path(&vault)]).ok();
    let faults = dir.path().join("faults");
    std::fs::write(&faults, "vault-delay 400\n").unwrap();
    let members: Vec<Member> = MEMBERS
        .iter()
        .enumerate()
        .map(|(i, disk)| Member::start(dir.path(), &vault, disk, (slow_vault && i == 2).then_some(faults.as_path())))
        .collect();
    let sockets: Vec<PathBuf> = members.iter().map(|m| m.socket.clone()).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/chained_writes.py");
    let uris: Vec<String> = MEMBERS
        .iter()
        .zip(&sockets)
        .map(|(disk, socket)| format!("nbd+unix:///{disk}?socket={}", socket.display()))
        .collect();
    let mut writer = Command::new("/usr/bin/python3")
        .arg(path(&script))
        .args(&uris)
        .args([DISK_BYTES.to_string(), seed.to_string(), seconds.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (python3-libnbd: scripts/test installs it)");
    let mut rng = standby_testkit::Random::new(seed);
    let mut labels = Vec::new();
    let mut failed_points = Vec::new();
    let mut id = 0u64;
    while writer.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(20 + rng.below(130)));
        id += 1;
        let label = standby_format::group_point_label(GROUP, id);
        match points {
            Points::Group => {
                let point = standby_splitter::group::make_point(
                    &sockets,
                    &label,
                    PointKind::CrashConsistent,
                    Duration::from_millis(500),
                );
                if point.made {
                    labels.push(label);
                } else {
                    failed_points.push(format!("{label}: {:?}", point.held_back().collect::<Vec<_>>()));
                }
            }
            Points::OneAfterAnother => {
                let label = format!("one-after-another {id}");
                for socket in &sockets {
                    run(&["mark", "--socket", path(socket), "--label", &label, "--no-wait", "--json"]).ok();
                    std::thread::sleep(Duration::from_millis(20));
                }
                labels.push(label);
            }
        }
    }
    let output = writer.wait_with_output().unwrap();
    assert!(output.status.success(), "the writer failed");
    let records: u64 = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("records ").map(|n| n.trim().parse().unwrap()))
        .expect("the writer says how many records it wrote");
    members.into_iter().for_each(Member::stop);
    let opened = open_vault(&vault);
    let sequences: Vec<Vec<(String, u64)>> = MEMBERS.iter().map(|disk| labelled_points(&opened, disk)).collect();
    let began = Instant::now();
    // Each disk's points restored on a thread of its own.
    let per_disk: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let threads: Vec<_> = MEMBERS
            .iter()
            .zip(&sequences)
            .map(|(disk, sequences)| {
                let (opened, labels) = (&opened, &labels);
                scope.spawn(move || {
                    labels
                        .iter()
                        .map(|label| {
                            let Some((_, sequence)) = sequences.iter().find(|(l, _)| l == label) else {
                                panic!("seed {seed}: point '{label}' is missing in disk {disk}")
                            };
                            last_record(opened, disk, *sequence, seed)
                        })
                        .collect()
                })
            })
            .collect();
        threads.into_iter().map(|thread| thread.join().unwrap()).collect()
    });
    eprintln!("seed {seed}: {} points restored in {:?}", labels.len(), began.elapsed());
    let lasts = (0..labels.len()).map(|i| [per_disk[0][i], per_disk[1][i], per_disk[2][i]]).collect();
    Outcome { lasts, records, failed_points }
}

fn open_vault(vault: &Path) -> Arc<Vault> {
    let backend = Arc::new(standby_vault::backend::LocalBackend::new(vault.to_path_buf()));
    Arc::new(Vault::open(backend, None).unwrap())
}

/// Every labelled point of `disk` with its sequence.
fn labelled_points(vault: &Vault, disk: &str) -> Vec<(String, u64)> {
    let listing = standby_vault::journal::list_journal(vault, disk).unwrap();
    listing.bookmarks.into_iter().map(|b| (b.label, b.sequence)).collect()
}

/// The last record of `disk` at `sequence`, after checking it holds every
/// record before it and none after.
fn last_record(vault: &Arc<Vault>, disk: &str, sequence: u64, seed: u64) -> u64 {
    let target = standby_vault::journal::JournalTarget::Sequence(sequence);
    let view = PointView::of_journal(vault.clone(), disk, target).unwrap();
    let slots = DISK_BYTES / 2 / RECORD;
    let mut image = vec![0u8; slots * RECORD];
    view.read(0, &mut image).unwrap();
    let record_at = |slot: usize| -> Option<(u64, u64)> {
        let bytes = &image[slot * RECORD..(slot + 1) * RECORD];
        (&bytes[..4] == b"REC!").then(|| {
            let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
            (word(4), word(12))
        })
    };
    let mut last = 0;
    for slot in 1..slots {
        match record_at(slot) {
            Some((of, n)) if of == seed && n == slot as u64 && last + 1 == slot as u64 => last = n,
            Some(other) => panic!(
                "seed {seed}: disk {disk} at point {sequence}: slot {slot} holds {other:?} after \
                                  a missing record (last whole one {last})"
            ),
            None => {}
        }
    }
    last
}

/// C <= B <= A at a point: what a barrier promises.
fn consistent(last: &[u64; 3]) -> bool {
    last[2] <= last[1] && last[1] <= last[0]
}

fn check_group_points(seed: u64, slow_vault: bool) {
    eprintln!("STANDBY_TEST_SEED={seed} (slow vault under c: {slow_vault})");
    let outcome = run_chain(seed, Points::Group, slow_vault, 4.0);
    eprintln!(
        "seed {seed}: {} records, {} group points, {} not made {:?}",
        outcome.records,
        outcome.lasts.len(),
        outcome.failed_points.len(),
        outcome.failed_points
    );
    assert!(outcome.records > 100, "seed {seed}: the writer wrote only {} records", outcome.records);
    assert!(outcome.lasts.len() >= 10, "seed {seed}: only {} group points were made", outcome.lasts.len());
    for last in &outcome.lasts {
        assert!(consistent(last), "seed {seed}: a group point has a, b, c's last records {last:?}");
    }
    // Points were made while the writer wrote, not only before or after.
    let inside = outcome.lasts.iter().filter(|last| last[0] > 0 && last[2] < outcome.records).count();
    assert!(inside >= 5, "seed {seed}: only {inside} points fell while records were written: {:?}", outcome.lasts);
}

#[test]
fn every_group_point_holds_each_records_cause() {
    let base = seed_of(0x5eed_0000 + std::process::id() as u64);
    for round in 0..4 {
        check_group_points(base + round, false);
    }
}

#[test]
fn group_points_stay_consistent_with_one_members_vault_slowed() {
    let base = seed_of(0x51_0000 + std::process::id() as u64);
    for round in 0..2 {
        check_group_points(base + round, true);
    }
}

/// The check has teeth: points marked one disk after another (20 ms
/// apart, no barrier) are caught with B ahead of A.
#[test]
fn points_made_one_disk_after_another_are_caught_inconsistent() {
    let seed = seed_of(0xbad_0000 + std::process::id() as u64);
    eprintln!("STANDBY_TEST_SEED={seed}");
    let outcome = run_chain(seed, Points::OneAfterAnother, false, 3.0);
    let caught = outcome.lasts.iter().filter(|last| !consistent(last)).count();
    assert!(
        caught * 2 >= outcome.lasts.len(),
        "seed {seed}: only {caught} of {} points were caught: {:?}",
        outcome.lasts.len(),
        outcome.lasts
    );
}

/// A hold that is never released ends at its deadline: the guest's
/// writes go on, and the point is not in the journal.
#[test]
fn a_hold_never_released_ends_at_its_deadline_and_makes_no_point() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    run(&["vault", "init", path(&vault)]).ok();
    let member = Member::start(dir.path(), &vault, "a", None);
    let label = standby_format::group_point_label(GROUP, 1);
    let held = standby_splitter::control_request(
        &member.socket,
        &serde_json::json!({"op": "group-hold", "label": label, "within_ms": 700}),
    )
    .unwrap();
    assert_eq!(held["held"], true, "{held}");
    let uri = format!("nbd+unix:///a?socket={}", member.socket.display());
    let began = Instant::now();
    let write = Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 7 0 4k", &uri]).output().unwrap();
    let took = began.elapsed();
    assert!(write.status.success(), "{write:?}");
    assert!(took >= Duration::from_millis(500), "the write was acknowledged during the hold ({took:?})");
    let released = standby_splitter::control_request(
        &member.socket,
        &serde_json::json!({"op": "group-release", "label": label, "keep": true}),
    )
    .unwrap();
    assert!(released["error"].as_str().unwrap().contains("ended at its deadline"), "{released}");
    let status = run(&["splitter-status", "--socket", path(&member.socket), "--json"]).ok().json();
    assert_eq!(status["group_holds_expired"], 1, "{status}");
    member.stop();
    assert!(
        labelled_points(&open_vault(&vault), "a").iter().all(|(l, _)| l != &label),
        "the dropped point is in the journal"
    );
}

/// The splitter refuses what is not its group's: a hold of another
/// group's point, a hold of a disk in no group, a second hold while one
/// is in force, a hold longer than the bound, and marks with a group's
/// label.
#[test]
fn holds_and_marks_that_are_not_the_groups_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    run(&["vault", "init", path(&vault)]).ok();
    let member = Member::start(dir.path(), &vault, "a", None);
    let ask = |request: serde_json::Value| standby_splitter::control_request(&member.socket, &request).unwrap();
    let other = ask(serde_json::json!({"op": "group-hold", "label": "group:other:1", "within_ms": 100}));
    assert!(other["error"].as_str().unwrap().contains("not a point of group 'app'"), "{other}");
    let long = ask(serde_json::json!({"op": "group-hold", "label": "group:app:1", "within_ms": 60_000}));
    assert!(long["error"].as_str().unwrap().contains("within_ms must be 1 to 2000"), "{long}");
    let first = ask(serde_json::json!({"op": "group-hold", "label": "group:app:2", "within_ms": 1000}));
    assert_eq!(first["held"], true, "{first}");
    let second = ask(serde_json::json!({"op": "group-hold", "label": "group:app:3", "within_ms": 1000}));
    assert!(second["error"].as_str().unwrap().contains("'group:app:2' is still being made"), "{second}");
    let released = ask(serde_json::json!({"op": "group-release", "label": "group:app:2", "keep": true}));
    assert_eq!(released["kept"], true, "{released}");
    let mark = run(&["mark", "--socket", path(&member.socket), "--label", "group:app:9"]);
    assert_ne!(mark.code, 0);
    assert!(mark.stderr.contains("replication groups' points"), "{}", mark.stderr);
    member.stop();
    let labels: Vec<String> = labelled_points(&open_vault(&vault), "a").into_iter().map(|(l, _)| l).collect();
    assert!(labels.contains(&"group:app:2".to_string()), "{labels:?}");

    let lone_vault = dir.path().join("lone-vault");
    run(&["vault", "init", path(&lone_vault)]).ok();
    let image = dir.path().join("lone.img");
    std::fs::File::create(&image).unwrap().set_len(1 << 20).unwrap();
    let socket = dir.path().join("lone.sock");
    let child = standby_command()
        .args(["serve-disk", path(&image), "--socket", path(&socket), "--vault", path(&lone_vault), "--disk", "z"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lone = Member { child, socket };
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match standby_splitter::control_request(
            &lone.socket,
            &serde_json::json!({"op": "group-hold", "label": "group:app:1", "within_ms": 100}),
        ) {
            Ok(reply) => break reply,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the lone splitter never answered: {e}"),
        }
    };
    assert!(refused["error"].as_str().unwrap().contains("in no replication group"), "{refused}");
    drop(lone);

    let other = dir.path().join("other.sock");
    let vault = path(&lone_vault);
    run(&["serve-disk", path(&image), "--socket", path(&other), "--vault", vault, "--disk", "z", "--group", "a:b"])
        .bad_input("--group: group name may only hold letters, digits");
}
