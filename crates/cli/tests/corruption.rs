//! Corruption: a damaged object is detected and named, never restored
//! silently. Two points share most chunks; point 2 has chunks of its own in
//! packs written by its sync. Each case damages one object (flip a byte,
//! truncate, delete), then checks that `verify` names the object and exactly
//! the points it breaks, that restoring a broken point fails with a clear
//! error and leaves no output, and that unaffected points still restore.

mod support;

use std::path::{Path, PathBuf};

use support::{path, run, Site};

struct Fixture {
    site: Site,
    first: Vec<u8>,
    second: Vec<u8>,
    /// Packs written by the first sync, and by the second.
    packs_first: Vec<PathBuf>,
    packs_second: Vec<PathBuf>,
}

fn packs(vault: &Path) -> Vec<PathBuf> {
    let mut packs: Vec<PathBuf> = std::fs::read_dir(vault.join("packs")).unwrap().map(|e| e.unwrap().path()).collect();
    packs.sort();
    packs
}

fn fixture(seed: u64) -> Fixture {
    let site = Site::new(6 << 20, seed);
    site.sync("d");
    let first = std::fs::read(&site.image).unwrap();
    let packs_first = packs(&site.vault);
    let mut second = first.clone();
    standby_testkit::Random::new(seed + 1).fill(&mut second[2 << 20..(2 << 20) + 200_000]);
    std::fs::write(&site.image, &second).unwrap();
    site.sync("d");
    let packs_second: Vec<PathBuf> = packs(&site.vault).into_iter().filter(|p| !packs_first.contains(p)).collect();
    assert!(!packs_second.is_empty());
    Fixture { site, first, second, packs_first, packs_second }
}

fn object_name(vault: &Path, file: &Path) -> String {
    file.strip_prefix(vault).unwrap().to_str().unwrap().to_string()
}

/// Runs verify and returns (damaged objects → points they break, broken points).
fn verify(site: &Site) -> (Vec<(String, Vec<String>)>, Vec<u64>) {
    let result = run(&["verify", "--vault", path(&site.vault), "--json"]);
    assert_eq!(result.code, 1, "verify must fail on a damaged vault: {}", result.stdout);
    assert!(result.stderr.contains("vault is damaged"), "{}", result.stderr);
    let report = result.json();
    let damaged = report["report"]["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let breaks = d["breaks"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().to_string()).collect();
            (d["object"].as_str().unwrap().to_string(), breaks)
        })
        .collect();
    let broken =
        report["report"]["broken_points"].as_array().unwrap().iter().map(|b| b["point"].as_u64().unwrap()).collect();
    (damaged, broken)
}

fn restore_fails(site: &Site, point: &str, needle: &str) {
    let out = site.path(&format!("broken-{point}.img"));
    let result = site.restore("d", point, &out);
    assert_eq!(result.code, 1, "restore of a broken point must fail: {}", result.stderr);
    assert!(result.stderr.contains(needle), "restore error {:?} does not name {needle}", result.stderr);
    assert_eq!(result.stderr.lines().count(), 1);
    assert!(!out.exists(), "a failed restore left {}", out.display());
    assert!(!site.path(&format!("broken-{point}.img.standby-partial")).exists());
}

fn restores(site: &Site, point: &str, expected: &[u8]) {
    let out = site.path(&format!("good-{point}.img"));
    site.restore("d", point, &out).ok();
    assert!(std::fs::read(&out).unwrap() == expected, "point {point} restored wrong data");
}

fn flip_byte(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x55;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn flipped_byte_in_a_pack_of_the_newer_point() {
    let f = fixture(40);
    let pack = &f.packs_second[0];
    let name = object_name(&f.site.vault, pack);
    flip_byte(pack, 100); // inside the first frame
    let (damaged, broken) = verify(&f.site);
    let entry =
        damaged.iter().find(|(object, _)| *object == name).unwrap_or_else(|| panic!("{name} not named: {damaged:?}"));
    assert_eq!(entry.1, vec!["d@2".to_string()]);
    assert_eq!(broken, vec![2]);
    restore_fails(&f.site, "2", &name);
    restores(&f.site, "1", &f.first);
}

#[test]
fn flipped_byte_in_a_shared_pack_breaks_both_points() {
    let f = fixture(41);
    // The first pack holds the start of the disk, which point 2 did not change.
    let pack = &f.packs_first[0];
    let name = object_name(&f.site.vault, pack);
    flip_byte(pack, 64);
    let (damaged, broken) = verify(&f.site);
    let entry =
        damaged.iter().find(|(object, _)| *object == name).unwrap_or_else(|| panic!("{name} not named: {damaged:?}"));
    assert!(!entry.1.is_empty());
    assert!(!broken.is_empty());
    for point in broken {
        restore_fails(&f.site, &point.to_string(), &name);
    }
}

#[test]
fn truncated_pack() {
    let f = fixture(42);
    let pack = &f.packs_second[0];
    let name = object_name(&f.site.vault, pack);
    let bytes = std::fs::read(pack).unwrap();
    std::fs::write(pack, &bytes[..bytes.len() / 3]).unwrap();
    let (damaged, broken) = verify(&f.site);
    assert!(
        damaged.iter().any(|(object, breaks)| *object == name && breaks == &vec!["d@2".to_string()]),
        "{damaged:?}"
    );
    assert_eq!(broken, vec![2]);
    restores(&f.site, "1", &f.first);
    let out = f.site.path("t.img");
    assert_ne!(f.site.restore("d", "2", &out).code, 0);
    assert!(!out.exists());
}

#[test]
fn deleted_pack() {
    let f = fixture(43);
    let pack = &f.packs_second[0];
    let name = object_name(&f.site.vault, pack);
    std::fs::remove_file(pack).unwrap();
    let (damaged, broken) = verify(&f.site);
    // The orphaned index names its missing pack, and the broken point.
    let index = name.replace("packs/", "indexes/").replace(".pack", ".index");
    assert!(
        damaged.iter().any(|(object, breaks)| *object == index && breaks == &vec!["d@2".to_string()]),
        "{damaged:?}"
    );
    assert_eq!(broken, vec![2]);
    restore_fails(&f.site, "2", &name);
    restores(&f.site, "1", &f.first);
}

#[test]
fn damaged_point_manifest() {
    let f = fixture(44);
    let manifest = f.site.vault.join("disks/d/points/00000000000000000002.point");
    flip_byte(&manifest, 40);
    let (damaged, broken) = verify(&f.site);
    assert!(damaged.iter().any(|(object, _)| object == "disks/d/points/00000000000000000002.point"), "{damaged:?}");
    assert_eq!(broken, vec![2]);
    restore_fails(&f.site, "2", "00000000000000000002.point");
    restores(&f.site, "1", &f.first);
    // `points` lists the readable points and names the damaged one.
    let points = run(&["points", "--vault", path(&f.site.vault), "--disk", "d", "--json"]);
    assert_eq!(points.code, 1);
    assert_eq!(points.json()["damaged"][0]["object"], "disks/d/points/00000000000000000002.point");
}

#[test]
fn damaged_index_object() {
    let f = fixture(45);
    let pack = &f.packs_second[0];
    let index =
        f.site.vault.join(object_name(&f.site.vault, pack).replace("packs/", "indexes/").replace(".pack", ".index"));
    flip_byte(&index, 30);
    let result = run(&["verify", "--vault", path(&f.site.vault), "--json"]);
    assert_eq!(result.code, 1);
    let name = object_name(&f.site.vault, &index);
    assert!(result.stdout.contains(&name), "verify did not name {name}: {}", result.stdout);
    // The pack itself is intact (its embedded index is), so verify can still
    // vouch for the chunks; a restore, which reads index objects, fails
    // clearly and names the damaged index.
    restore_fails(&f.site, "2", "is damaged");
    restores(&f.site, "1", &f.first);
    let _ = f.second;
}

#[test]
fn deleted_index_object_breaks_the_points_that_need_its_pack() {
    let f = fixture(46);
    let pack = &f.packs_second[0];
    let index =
        f.site.vault.join(object_name(&f.site.vault, pack).replace("packs/", "indexes/").replace(".pack", ".index"));
    std::fs::remove_file(&index).unwrap();
    let (damaged, broken) = verify(&f.site);
    let name = object_name(&f.site.vault, &index);
    assert!(
        damaged.iter().any(|(object, breaks)| *object == name && breaks == &vec!["d@2".to_string()]),
        "{damaged:?}"
    );
    assert_eq!(broken, vec![2]);
    restore_fails(&f.site, "2", "no pack index");
    restores(&f.site, "1", &f.first);
}

#[test]
fn a_pack_without_index_that_nothing_needs_is_a_leftover_not_damage() {
    // What a sync killed between storing a pack and its index leaves.
    let f = fixture(47);
    std::fs::remove_file(f.site.vault.join("disks/d/points/00000000000000000002.point")).unwrap();
    for pack in &f.packs_second {
        let index = f
            .site
            .vault
            .join(object_name(&f.site.vault, pack).replace("packs/", "indexes/").replace(".pack", ".index"));
        std::fs::remove_file(index).unwrap();
    }
    let result = run(&["verify", "--vault", path(&f.site.vault), "--json"]).ok();
    assert_eq!(result.json()["report"]["packs_unreferenced"], f.packs_second.len());
    restores(&f.site, "1", &f.first);
}
