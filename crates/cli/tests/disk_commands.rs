//! The disk-level commands end to end through the real binary: sync (full,
//! then incremental), points, restore by id / latest / latest-app / time,
//! disk size changes, encryption at rest, resync, prune, and the same journey
//! on Azure Blob (Azurite).

mod support;

use support::{path, run, run_with, Site};

#[test]
fn full_then_incremental_sync_and_restore_every_point() {
    let site = Site::new(8 << 20, 21);
    let first = site.sync("web");
    assert_eq!(first["first"], true);
    assert_eq!(first["point"], 1);
    let original = std::fs::read(&site.image).unwrap();

    // Change 3 scattered 64 KiB blocks: the next sync stores about that much.
    let mut changed = original.clone();
    for block in [3usize, 40, 99] {
        standby_testkit::Random::new(block as u64).fill(&mut changed[block * 65536..(block + 1) * 65536]);
    }
    std::fs::write(&site.image, &changed).unwrap();
    let second = run(&[
        "sync",
        path(&site.image),
        "--vault",
        path(&site.vault),
        "--disk",
        "web",
        "--json",
        "--app-consistent",
        "--label",
        "after change",
    ])
    .ok()
    .json();
    assert_eq!(second["first"], false);
    assert_eq!(second["chunks_new"], 3);
    assert_eq!(second["kind"], "app-consistent");
    let bytes_new = second["bytes_new"].as_u64().unwrap();
    assert!(bytes_new < 3 * 65536 + 16384, "incremental sync stored {bytes_new} bytes for 192 KiB of change");

    let points = run(&["points", "--vault", path(&site.vault), "--disk", "web", "--json"]).ok().json();
    let listed = points["points"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["label"], "after change");
    let first_time = listed[0]["time"].as_str().unwrap().to_string();

    for (point, expected) in
        [("1", &original), ("latest", &changed), ("latest-app", &changed), (first_time.as_str(), &original)]
    {
        let out = site.path(&format!("restored-{}.img", point.replace(':', "_")));
        site.restore("web", point, &out).ok();
        assert!(std::fs::read(&out).unwrap() == *expected, "point {point} restored wrong data");
    }
    run(&["verify", "--vault", path(&site.vault)]).ok();
}

#[test]
fn restored_images_are_sparse_where_the_disk_is_zero() {
    let site = Site::new(0, 22);
    let mut data = vec![0u8; 64 << 20];
    data[..4096].fill(7);
    std::fs::write(&site.image, &data).unwrap();
    site.sync("sparse");
    let out = site.path("out.img");
    site.restore("sparse", "latest", &out).ok();
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(&out).unwrap();
    assert_eq!(metadata.len(), 64 << 20);
    assert!(metadata.blocks() * 512 < 1 << 20, "restore allocated {} bytes for 4 KiB of data", metadata.blocks() * 512);
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn disk_size_changes_are_recorded() {
    let site = Site::new(1 << 20, 23);
    site.sync("grow");
    let mut data = std::fs::read(&site.image).unwrap();
    data.extend(standby_testkit::Random::new(5).disk_data(300_000));
    std::fs::write(&site.image, &data).unwrap();
    let report = site.sync("grow");
    assert_eq!(report["disk_bytes_previous"], 1 << 20);
    assert_eq!(report["disk_bytes"], data.len());
    let out = site.path("grown.img");
    site.restore("grow", "latest", &out).ok();
    assert!(std::fs::read(&out).unwrap() == data);
    let out = site.path("old.img");
    site.restore("grow", "1", &out).ok();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 1 << 20);
}

#[test]
fn identical_disks_are_stored_once() {
    let site = Site::new(4 << 20, 24);
    let first = site.sync("vm-a");
    let second = site.sync("vm-b");
    assert_eq!(second["chunks_new"], 0, "a second disk with the same content stored new chunks");
    assert!(second["bytes_new"].as_u64().unwrap() < first["bytes_new"].as_u64().unwrap() / 20);
}

#[test]
fn encrypted_vault_hides_content_and_round_trips() {
    let site = Site::new(0, 25);
    let secret = b"TOP-SECRET-PAYROLL-RECORD ".repeat(40_000);
    std::fs::write(&site.image, &secret).unwrap();
    let vault = site.path("encrypted");
    let key = site.path("vault.key");
    let init = run(&["vault", "init", path(&vault), "--key-file", path(&key), "--json"]).ok().json();
    assert_eq!(init["encrypted"], true);
    assert_eq!(init["key_file_created"], true);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    run(&["sync", path(&site.image), "--vault", path(&vault), "--disk", "d", "--key-file", path(&key)]).ok();
    for (file, bytes) in standby_testkit::snapshot(&vault) {
        assert!(!bytes.windows(10).any(|w| w == b"TOP-SECRET"), "{} holds plaintext", file.display());
    }
    let out = site.path("out.img");
    run(&[
        "restore",
        "--vault",
        path(&vault),
        "--disk",
        "d",
        "--point",
        "latest",
        path(&out),
        "--key-file",
        path(&key),
    ])
    .ok();
    assert!(std::fs::read(&out).unwrap() == secret);
    run(&["verify", "--vault", path(&vault), "--key-file", path(&key)]).ok();
}

#[test]
fn resync_writes_only_differences() {
    let site = Site::new(16 << 20, 26);
    let target = site.path("target.img");
    std::fs::copy(&site.image, &target).unwrap();
    let mut data = std::fs::read(&site.image).unwrap();
    for block in 0..8usize {
        let at = (block * 2) << 20;
        standby_testkit::Random::new(block as u64 + 100).fill(&mut data[at..at + 65536]);
    }
    std::fs::write(&site.image, &data).unwrap();
    let report = run(&["resync", path(&site.image), path(&target), "--json"]).ok().json();
    assert_eq!(report["bytes_compared"], 16 << 20);
    assert_eq!(report["bytes_written"], 8 * 65536);
    assert!(std::fs::read(&target).unwrap() == data);
    let again = run(&["resync", path(&site.image), path(&target), "--json"]).ok().json();
    assert_eq!(again["bytes_written"], 0);
    // Resizing only with the flag.
    let shorter = site.path("short.img");
    std::fs::write(&shorter, &data[..1 << 20]).unwrap();
    run(&["resync", path(&site.image), path(&shorter), "--allow-resize"]).ok();
    assert!(std::fs::read(&shorter).unwrap() == data);
}

#[test]
fn prune_drops_old_points_keeps_the_newest_and_collects() {
    let site = Site::new(2 << 20, 27);
    site.sync("d");
    let mut random = standby_testkit::Random::new(9);
    for _ in 0..2 {
        let mut data = std::fs::read(&site.image).unwrap();
        random.fill(&mut data[..1 << 20]);
        std::fs::write(&site.image, &data).unwrap();
        site.sync("d");
    }
    let latest = std::fs::read(&site.image).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let report =
        run(&["prune", "--vault", path(&site.vault), "--retention", "1s", "--grace", "0s", "--json"]).ok().json();
    assert_eq!(report["points_dropped"].as_array().unwrap().len(), 2, "{report}");
    assert!(report["packs_marked"].as_u64().unwrap() >= 1);
    let sweep = run(&["prune", "--vault", path(&site.vault), "--grace", "0s", "--json"]).ok().json();
    assert!(sweep["packs_deleted"].as_u64().unwrap() >= 1, "{sweep}");
    assert!(sweep["bytes_freed"].as_u64().unwrap() >= 1 << 20);
    let points = run(&["points", "--vault", path(&site.vault), "--disk", "d", "--json"]).ok().json();
    assert_eq!(points["points"].as_array().unwrap().len(), 1);
    let out = site.path("out.img");
    site.restore("d", "latest", &out).ok();
    assert!(std::fs::read(&out).unwrap() == latest);
    let verify = run(&["verify", "--vault", path(&site.vault), "--json"]).ok().json();
    assert_eq!(verify["report"]["packs_unreferenced"], 0);
}

#[test]
fn prune_waits_for_a_sync_that_started_before_the_mark() {
    // A lease older than a collection set holds its sweep back.
    let site = Site::new(1 << 20, 28);
    site.sync("d");
    let mut data = std::fs::read(&site.image).unwrap();
    standby_testkit::Random::new(1).fill(&mut data);
    std::fs::write(&site.image, &data).unwrap();
    site.sync("d");
    std::thread::sleep(std::time::Duration::from_millis(50));
    // A sync "in progress": its lease, written before the mark.
    let leases = site.vault.join("leases");
    std::fs::create_dir_all(&leases).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    let body = serde_json::json!({"operation": "sync", "detail": "d", "host": "test", "pid": 1, "started_micros": now, "refreshed_micros": now});
    std::fs::write(leases.join("running.lease"), seal_lease(&serde_json::to_vec(&body).unwrap())).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let retention =
        run(&["prune", "--vault", path(&site.vault), "--retention", "10ms", "--grace", "0s", "--json"]).ok().json();
    assert_eq!(retention["points_dropped"].as_array().unwrap().len(), 1);
    let waiting = run(&["prune", "--vault", path(&site.vault), "--grace", "0s", "--json"]).ok().json();
    assert_eq!(waiting["packs_deleted"], 0, "swept while an older sync was running: {waiting}");
    assert!(waiting["waiting"][0].as_str().unwrap().contains("waiting for sync of d"));
    std::fs::remove_file(leases.join("running.lease")).unwrap();
    let swept = run(&["prune", "--vault", path(&site.vault), "--grace", "0s", "--json"]).ok().json();
    assert!(swept["packs_deleted"].as_u64().unwrap() >= 1, "{swept}");
}

/// A lease envelope, as `standby_format` writes it.
fn seal_lease(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"SBYLEASE");
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

#[test]
fn azure_blob_vault_end_to_end() {
    let azurite = standby_testkit::Azurite::start();
    azurite.create_container("drsite");
    let environment = azurite.environment();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let data = standby_testkit::Random::new(30).disk_data(6 << 20);
    std::fs::write(&image, &data).unwrap();
    let vault = "az://drsite/site-b";
    run_with(&["vault", "init", vault], &environment).ok();
    run_with(&["sync", path(&image), "--vault", vault, "--disk", "web"], &environment).ok();
    let mut changed = data.clone();
    changed[1 << 20..(1 << 20) + 4096].fill(0xAB);
    std::fs::write(&image, &changed).unwrap();
    let second =
        run_with(&["sync", path(&image), "--vault", vault, "--disk", "web", "--json"], &environment).ok().json();
    assert_eq!(second["chunks_new"], 1);
    for (point, expected) in [("1", &data), ("latest", &changed)] {
        let out = dir.path().join(format!("out-{point}"));
        run_with(&["restore", "--vault", vault, "--disk", "web", "--point", point, path(&out)], &environment).ok();
        assert!(std::fs::read(&out).unwrap() == *expected);
    }
    run_with(&["verify", "--vault", vault], &environment).ok();
    run_with(&["prune", "--vault", vault, "--retention", "0s", "--grace", "0s"], &environment).ok();
    run_with(&["prune", "--vault", vault, "--grace", "0s"], &environment).ok();
    let out = dir.path().join("after-prune");
    run_with(&["restore", "--vault", vault, "--disk", "web", "--point", "latest", path(&out)], &environment).ok();
    assert!(std::fs::read(&out).unwrap() == changed);
}

#[test]
fn demo_runs_the_disk_level_journey() {
    let dir = tempfile::tempdir().unwrap();
    let demo = run(&["demo", "--disk", "--dir", path(&dir.path().join("demo"))]).ok();
    assert!(demo.stdout.contains("byte-identical to the disk at point 2"), "{}", demo.stdout);
    assert!(demo.stdout.contains("healthy"));
}

#[test]
fn relative_vault_and_image_paths_work() {
    // Regression: `vault init v1` failed creating the folder "v1" because
    // its parent is the empty path.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("disk.img"), standby_testkit::Random::new(3).disk_data(300_000)).unwrap();
    let in_dir = |arguments: &[&str]| {
        let output = support::standby_command().args(arguments).current_dir(dir.path()).output().unwrap();
        assert!(output.status.success(), "{arguments:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    in_dir(&["vault", "init", "v1"]);
    in_dir(&["sync", "disk.img", "--vault", "v1", "--disk", "d"]);
    in_dir(&["restore", "--vault", "file://v1", "--disk", "d", "--point", "latest", "out.img"]);
    assert_eq!(std::fs::read(dir.path().join("out.img")).unwrap(), std::fs::read(dir.path().join("disk.img")).unwrap());
}

#[test]
fn prune_removes_files_left_by_interrupted_writes_once_they_are_old() {
    let site = Site::new(1 << 20, 29);
    site.sync("d");
    // What a sync killed in the middle of a put leaves: a temporary file
    // beside the objects. One old, one that could still be in flight.
    let packs = site.vault.join("packs");
    let old = packs.join(".standby-tmp-0011223344556677");
    let young = packs.join(".standby-tmp-8899aabbccddeeff");
    std::fs::write(&old, vec![1u8; 5000]).unwrap();
    std::fs::write(&young, vec![2u8; 100]).unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&old).unwrap().set_modified(hour_ago).unwrap();
    let report = run(&["prune", "--vault", path(&site.vault), "--grace", "0s", "--json"]).ok().json();
    assert_eq!(report["abandoned_writes_removed"], 1, "{report}");
    assert_eq!(report["abandoned_bytes_freed"], 5000);
    assert!(!old.exists());
    assert!(young.exists(), "a write that may still be in flight was removed");
    run(&["verify", "--vault", path(&site.vault)]).ok();
    let out = site.path("out.img");
    site.restore("d", "latest", &out).ok();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&site.image).unwrap());
}
