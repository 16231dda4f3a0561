//! Crash test: `standby sync` is killed with SIGKILL at random moments
//! (seeded; the seed of each round is printed). After every kill: `verify`
//! finds no damage, every point published so far restores exactly the image
//! it was taken from, and the next sync succeeds. Interrupted syncs may leave
//! unreferenced packs; a final prune collects them.

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{path, run, standby_command, Site};

#[test]
fn kill_nine_during_sync_never_harms_published_points() {
    let site = Site::new(48 << 20, 50);
    let mut random = standby_testkit::Random::new(0x5EED);
    let mut expected: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut interrupted = 0;

    // Time a clean full sync to know how long "mid-sync" is.
    let started = Instant::now();
    let first = site.sync("d");
    let mut bound = started.elapsed();
    expected.insert(first["point"].as_u64().unwrap(), std::fs::read(&site.image).unwrap());

    for round in 0..16u64 {
        // Change some of the disk (sometimes a lot of it, so the sync has work).
        let mut data = std::fs::read(&site.image).unwrap();
        let regions = 1 + random.below(40) as usize;
        for _ in 0..regions {
            let at = random.below((data.len() - (1 << 20)) as u64) as usize;
            let len = 4096 + random.below(1 << 20) as usize;
            random.fill(&mut data[at..at + len]);
        }
        std::fs::write(&site.image, &data).unwrap();

        let delay = Duration::from_micros(random.below(bound.as_micros() as u64 + 1));
        println!("round {round}: kill after {delay:?} (a sync took {bound:?})");
        let launched = Instant::now();
        let mut child = standby_command()
            .args(["sync", path(&site.image), "--vault", path(&site.vault), "--disk", "d", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let finished = loop {
            if child.try_wait().unwrap().is_some() {
                break Some(launched.elapsed());
            }
            if launched.elapsed() >= delay {
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        match finished {
            // Syncs run faster than the first measure on a quieter machine:
            // the next kills aim within the length of one that just ran.
            Some(took) => bound = bound.min(took),
            // SAFETY: kill(2) on our own child's pid.
            None => unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            },
        }
        let output = child.wait_with_output().unwrap();
        if output.status.success() {
            // It finished before the kill: its point is published and must hold.
            let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            expected.insert(report["point"].as_u64().unwrap(), data.clone());
        } else {
            interrupted += 1;
        }
        check_vault(&site, &mut expected, &data, round);

        // The next sync succeeds, whatever the kill interrupted.
        let report = site.sync("d");
        expected.insert(report["point"].as_u64().unwrap(), data);
    }
    println!("{interrupted} of 16 syncs were killed before they finished");
    assert!(interrupted >= 6, "too few kills landed mid-sync ({interrupted}); the test would prove little");
    run(&["prune", "--vault", path(&site.vault), "--grace", "0s"]).ok();
    // Leases of killed syncs are fresh, so their leftovers wait: the points
    // must still all restore after the attempt.
    for (point, image) in &expected {
        let out = site.path(&format!("final-{point}.img"));
        site.restore("d", &point.to_string(), &out).ok();
        assert!(std::fs::read(&out).unwrap() == *image, "point {point} changed after prune");
        std::fs::remove_file(out).unwrap();
    }
}

/// Verify is clean and every known point restores; a point published by a
/// killed sync (its report lost) must equal the image it read.
fn check_vault(site: &Site, expected: &mut BTreeMap<u64, Vec<u8>>, current: &[u8], round: u64) {
    let verify = run(&["verify", "--vault", path(&site.vault), "--json"]);
    assert_eq!(verify.code, 0, "round {round}: verify after kill: {} {}", verify.stdout, verify.stderr);
    let points = run(&["points", "--vault", path(&site.vault), "--disk", "d", "--json"]).ok().json();
    for point in points["points"].as_array().unwrap() {
        let id = point["id"].as_u64().unwrap();
        expected.entry(id).or_insert_with(|| current.to_vec());
    }
    assert_eq!(points["points"].as_array().unwrap().len(), expected.len(), "round {round}: points disappeared");
    for (point, image) in expected.iter() {
        let out = site.path(&format!("check-{point}.img"));
        site.restore("d", &point.to_string(), &out).ok();
        assert!(std::fs::read(&out).unwrap() == *image, "round {round}: point {point} does not restore exactly");
        std::fs::remove_file(out).unwrap();
    }
}
