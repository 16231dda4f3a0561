//! A replication group on real guests under TCG: three test guests a, b
//! and c in one group (a point every second), each with a second disk for
//! a chain of records. Record n goes into a's chain disk through a's guest
//! agent (`dd … conv=fsync`, acknowledged when it exits), then into b's
//! once a's was acknowledged, then into c's. Every group point the run
//! made, restored from the vault, has c's last record <= b's <= a's, each
//! disk holding every record up to its last; a drill of the group from
//! `latest-group`, read inside the three copies, agrees the same way. Every
//! 10 s a group point is app-consistent (the three guests frozen together
//! by their agents; the writer waits while they are) and `latest-group-app`
//! names one.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use standby_control::guest_agent::GuestAgent;
use support::daemon::{add_guest_machine_args, console_of, test_workload, wait_for, Daemon};
use support::{path, run, run_on_vault};

const MEMBERS: [&str; 3] = ["a", "b", "c"];
/// The chain disk: one record per 512-byte slot, record n in slot n.
const CHAIN_BYTES: u64 = 4 << 20;
const SLOTS: u64 = CHAIN_BYTES / 512;

fn agent(home: &Path, key: &str) -> GuestAgent {
    let socket = home.join(format!("run/machines/{key}/{key}.qga"));
    GuestAgent::connect(&socket, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{key}'s agent: {e}"))
}

/// Runs `script` in the guest of instance `key`; its standard output once
/// it exited 0. While the daemon freezes the guest's filesystems for an
/// app-consistent point its agent runs nothing: the writer waits, as an
/// application's writes would, letting go of the agent's channel (it takes
/// one client at a time, and the daemon's thaw needs it).
fn exec(home: &Path, key: &str, script: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match agent(home, key).exec("/bin/sh", &["-c", script], Duration::from_secs(60)) {
            Ok(exited) => {
                assert_eq!(exited.code, Some(0), "`{script}` failed in the guest: {exited:?}");
                return exited.stdout;
            }
            Err(e) if e.to_string().contains("frozen") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("`{script}`: {e}"),
        }
    }
}

/// The chain records in `text` (lines `chain N`), checked contiguous from
/// 1; the last, 0 for none.
fn last_of(text: &str, what: &str) -> u64 {
    let found: BTreeSet<u64> =
        text.lines().filter_map(|line| line.strip_prefix("chain ")).map(|n| n.trim().parse().unwrap()).collect();
    let last = found.iter().next_back().copied().unwrap_or(0);
    assert_eq!(found.len() as u64, last, "{what}: records missing below {last}: {found:?}");
    last
}

/// Reads the chain records of a raw chain disk image.
fn chain_of_image(image: &[u8]) -> String {
    image
        .chunks(512)
        .filter_map(|slot| {
            let end = slot.iter().position(|&b| b == b'\n')?;
            std::str::from_utf8(&slot[..end]).ok().filter(|line| line.starts_with("chain ")).map(|l| format!("{l}\n"))
        })
        .collect()
}

#[test]
fn group_points_of_real_guests_never_hold_a_later_record_without_an_earlier_one() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    run(&["policy", "add", "every-second", "--bookmarks", "1s", "--app-consistent", "10s", "--home", h]).ok();
    for name in MEMBERS {
        let chain = root.path().join(format!("{name}-chain.raw"));
        std::fs::File::create(&chain).unwrap().set_len(CHAIN_BYTES).unwrap();
        add_guest_machine_args(&home, name, &test_workload().cmdline(), &["--disk", path(&chain)]);
    }
    let _daemon = Daemon::start(&home);
    for name in MEMBERS {
        run(&["machine", "start", name, "--home", h]).ok();
    }
    for name in MEMBERS {
        wait_for(&console_of(&home, name), "standby-guest: guest agent running\n");
        run(&["protect", name, "--group", "g", "--policy", "every-second", "--home", h]).ok();
    }

    // The chain, for 25 s, group points made every second meanwhile. Each
    // write connects to the agent afresh: its channel takes one client at
    // a time, and the daemon's freezes need it between the writes.
    let began = Instant::now();
    let mut records = 0u64;
    while began.elapsed() < Duration::from_secs(25) && records + 1 < SLOTS {
        records += 1;
        for name in MEMBERS {
            exec(&home, &format!("{name}@primary"), &format!("printf 'chain %d\\n' {records} | dd of=/dev/vdb bs=512 seek={records} conv=notrunc,fsync 2>/dev/null"));
        }
    }
    let group = run(&["group", "show", "g", "--home", h, "--json"]).ok().json();
    eprintln!("{records} records chained; group: {group}");
    assert!(group["points_made"].as_u64() >= Some(10), "the group made too few points: {group}");

    // Every group point every disk holds, restored.
    let vault = home.join("sites/recovery/vault");
    let points_of = |disk: &str| -> Vec<(String, u64)> {
        let listed = run_on_vault("points", &vault, &["--disk", disk, "--json"]).ok().json();
        listed["points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["label"].as_str().is_some_and(|l| l.starts_with("group:g:")))
            .map(|p| (p["label"].as_str().unwrap().to_string(), p["id"].as_u64().unwrap()))
            .collect()
    };
    let per_disk: Vec<Vec<(String, u64)>> = MEMBERS.iter().map(|name| points_of(&format!("{name}.disk1"))).collect();
    let labels: Vec<&String> = per_disk[0]
        .iter()
        .map(|(l, _)| l)
        .filter(|l| per_disk[1..].iter().all(|d| d.iter().any(|(x, _)| x == *l)))
        .collect();
    assert!(labels.len() >= 5, "too few group points in every disk: {per_disk:?}");
    let restored = root.path().join("restored.raw");
    let mut moving = 0;
    let mut newest_a = 0;
    for label in &labels {
        let mut lasts = Vec::new();
        for (name, points) in MEMBERS.iter().zip(&per_disk) {
            let id = points.iter().find(|(l, _)| l == *label).unwrap().1.to_string();
            let disk = format!("{name}.disk1");
            run_on_vault("restore", &vault, &["--disk", &disk, "--point", &id, "--force", path(&restored)]).ok();
            let text = chain_of_image(&std::fs::read(&restored).unwrap());
            lasts.push(last_of(&text, &format!("{disk} at {label}")));
        }
        assert!(
            lasts[2] <= lasts[1] && lasts[1] <= lasts[0],
            "{label}: a {}, b {}, c {}",
            lasts[0],
            lasts[1],
            lasts[2]
        );
        if lasts[0] > 0 && lasts[0] < records {
            moving += 1;
        }
        newest_a = newest_a.max(lasts[0]);
    }
    eprintln!("{} group points restored, {moving} of them taken while the chain ran", labels.len());
    assert!(moving >= 3, "too few points fell while the chain was being written");

    let group = run(&["group", "show", "g", "--home", h, "--json"]).ok().json();
    eprintln!("before the drill: {group}");
    // Every 10 s the point was app-consistent: the three guests' filesystems
    // frozen together by their agents (`latest-group-app`).
    assert_eq!(group["latest_app"]["kind"], "app-consistent", "{group}");
    // A drill of the group from its latest point: the copies agree.
    let drill = run(&["test-failover", "a", "--point", "latest-group", "--home", h, "--json"]).ok().json();
    assert_eq!(drill["subject"]["kind"], "group", "one job of the group: {drill}");
    let mut lasts = Vec::new();
    for name in MEMBERS {
        let key = format!("{name}@drill");
        let console = home.join(format!("run/machines/{key}/{key}.console"));
        wait_for(path(&console), "standby-guest: guest agent running\n");
        let text = exec(
            &home,
            &key,
            "dd if=/dev/vdb bs=512 count=8192 2>/dev/null | tr '\\000' '\\n' | grep -a '^chain ' || true",
        );
        lasts.push(last_of(&text, &key));
    }
    assert!(lasts[2] <= lasts[1] && lasts[1] <= lasts[0], "the drill's copies: {lasts:?} of {records}");
    assert!(lasts[0] >= newest_a, "latest-group is older than a point restored before: {lasts:?}, {newest_a}");
    eprintln!("the drill from latest-group: a {}, b {}, c {} of {records} chained", lasts[0], lasts[1], lasts[2]);
    run(&["cleanup-test-failover", "a", "--home", h]).ok();
}
