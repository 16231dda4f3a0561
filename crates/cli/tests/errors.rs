//! Bad input: every case gets one line on stderr naming what was wrong and
//! what to do, exit code 2, and leaves the vault and the file system as they
//! were (compared with a snapshot of the whole test directory).

mod support;

use support::{path, run, run_with, Site};

/// Runs `arguments` and checks the bad-input contract and that nothing changed.
fn refused(site: &Site, arguments: &[&str], needle: &str) {
    let before = standby_testkit::snapshot(site.dir.path());
    run(arguments).bad_input(needle);
    let after = standby_testkit::snapshot(site.dir.path());
    assert!(before == after, "{arguments:?} changed files: {:?}", changed(&before, &after));
}

fn changed(
    before: &std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
    after: &std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> =
        before.keys().chain(after.keys()).filter(|p| before.get(*p) != after.get(*p)).cloned().collect();
    paths.dedup();
    paths
}

#[test]
fn missing_image() {
    let site = Site::new(65536, 1);
    let missing = site.path("missing.img");
    refused(&site, &["sync", path(&missing), "--vault", path(&site.vault), "--disk", "d"], "does not exist");
}

#[test]
fn image_that_is_a_directory() {
    let site = Site::new(65536, 2);
    refused(&site, &["sync", path(site.dir.path()), "--vault", path(&site.vault), "--disk", "d"], "is a directory");
}

#[test]
fn unknown_vault_url_scheme() {
    let site = Site::new(65536, 3);
    refused(
        &site,
        &["sync", path(&site.image), "--vault", "ftp://host/vault", "--disk", "d"],
        "unknown vault URL scheme 'ftp'",
    );
    refused(&site, &["vault", "init", "ftp://host/vault"], "unknown vault URL scheme");
}

#[test]
fn directory_that_is_not_a_vault() {
    let site = Site::new(65536, 4);
    let other = site.path("not-a-vault");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("file"), b"x").unwrap();
    refused(&site, &["points", "--vault", path(&other), "--disk", "d"], "is not a vault");
    refused(&site, &["sync", path(&site.image), "--vault", path(&other), "--disk", "d"], "standby vault init");
    refused(&site, &["vault", "init", path(&other)], "not empty");
    refused(&site, &["vault", "init", path(&site.vault)], "already a vault");
}

#[test]
fn vault_of_a_newer_format_version() {
    let site = Site::new(65536, 5);
    // Rewrite the config envelope with version 99 and a valid checksum: a
    // vault written by a future standby.
    let config_path = site.vault.join("vault.config");
    let mut config = std::fs::read(&config_path).unwrap();
    config[8..10].copy_from_slice(&99u16.to_le_bytes());
    let split = config.len() - 32;
    let checksum = *blake3_hash(&config[..split]);
    config[split..].copy_from_slice(&checksum);
    std::fs::write(&config_path, &config).unwrap();
    refused(&site, &["points", "--vault", path(&site.vault), "--disk", "d"], "format version 99");
    refused(&site, &["sync", path(&site.image), "--vault", path(&site.vault), "--disk", "d"], "upgrade standby");
}

fn blake3_hash(bytes: &[u8]) -> Box<[u8; 32]> {
    Box::new(*blake3::hash(bytes).as_bytes())
}

#[test]
fn unknown_disk_and_unknown_point() {
    let site = Site::new(200_000, 6);
    site.sync("web");
    let out = site.path("out.img");
    refused(&site, &["points", "--vault", path(&site.vault), "--disk", "db"], "no disk 'db' in the vault (disks: web)");
    refused(
        &site,
        &["restore", "--vault", path(&site.vault), "--disk", "db", "--point", "latest", path(&out)],
        "no disk 'db'",
    );
    refused(
        &site,
        &["restore", "--vault", path(&site.vault), "--disk", "web", "--point", "7", path(&out)],
        "no recovery point '7'",
    );
    refused(
        &site,
        &["restore", "--vault", path(&site.vault), "--disk", "web", "--point", "yesterday", path(&out)],
        "is not a recovery point",
    );
    refused(
        &site,
        &["restore", "--vault", path(&site.vault), "--disk", "web", "--point", "latest-app", path(&out)],
        "no app-consistent point",
    );
    refused(
        &site,
        &["restore", "--vault", path(&site.vault), "--disk", "web", "--point", "2001-01-01T00:00:00Z", path(&out)],
        "the oldest point is from",
    );
    refused(
        &site,
        &["sync", path(&site.image), "--vault", path(&site.vault), "--disk", "../escape"],
        "invalid disk name",
    );
}

#[test]
fn restore_refuses_to_overwrite() {
    let site = Site::new(100_000, 7);
    site.sync("web");
    let out = site.path("existing.img");
    std::fs::write(&out, b"precious").unwrap();
    refused(
        &site,
        &["restore", "--vault", path(&site.vault), "--disk", "web", "--point", "latest", path(&out)],
        "--force",
    );
    refused(
        &site,
        &["restore", "--vault", path(&site.vault), "--disk", "web", "--point", "latest", path(site.dir.path())],
        "directory",
    );
}

#[test]
fn encryption_key_errors() {
    let site = Site::new(100_000, 8);
    let encrypted = site.path("encrypted");
    let key = site.path("key");
    run(&["vault", "init", path(&encrypted), "--key-file", path(&key)]).ok();
    run(&["sync", path(&site.image), "--vault", path(&encrypted), "--disk", "d", "--key-file", path(&key)]).ok();
    let wrong = site.path("wrong-key");
    std::fs::write(&wrong, b"this is some other key material").unwrap();
    let short = site.path("short-key");
    std::fs::write(&short, b"short").unwrap();
    let missing = site.path("no-such-key");

    refused(&site, &["points", "--vault", path(&encrypted), "--disk", "d"], "is encrypted: pass --key-file");
    refused(
        &site,
        &["points", "--vault", path(&encrypted), "--disk", "d", "--key-file", path(&wrong)],
        "is not the key of vault",
    );
    refused(
        &site,
        &["points", "--vault", path(&encrypted), "--disk", "d", "--key-file", path(&missing)],
        "cannot read key file",
    );
    refused(
        &site,
        &["points", "--vault", path(&encrypted), "--disk", "d", "--key-file", path(site.dir.path())],
        "is a directory",
    );
    refused(&site, &["points", "--vault", path(&encrypted), "--disk", "d", "--key-file", path(&short)], "at least 16");
    refused(
        &site,
        &["points", "--vault", path(&site.vault), "--disk", "d", "--key-file", path(&key)],
        "not encrypted: drop --key-file",
    );
}

#[test]
fn resync_bad_input() {
    let site = Site::new(100_000, 9);
    let target = site.path("target.img");
    std::fs::write(&target, vec![0u8; 50_000]).unwrap();
    refused(&site, &["resync", path(&site.image), path(&target)], "--allow-resize");
    refused(&site, &["resync", path(&site.image), path(&site.image)], "same file");
    refused(&site, &["resync", path(&site.path("nope")), path(&target)], "does not exist");
    refused(&site, &["resync", path(&site.image), path(&site.path("nope"))], "does not exist");
}

#[test]
fn bad_durations_and_usage() {
    let site = Site::new(65536, 10);
    refused(&site, &["prune", "--vault", path(&site.vault), "--retention", "a while"], "not a duration");
    refused(&site, &["prune", "--vault", path(&site.vault), "--grace", "forever"], "not a duration");
    // Usage errors (clap) are exit 2 too, though their message spans lines.
    assert_eq!(run(&["sync"]).code, 2);
    assert_eq!(run(&["frobnicate"]).code, 2);
}

#[test]
fn unreachable_azurite_names_the_endpoint() {
    let site = Site::new(65536, 11);
    let port = standby_testkit::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let environment = vec![
        ("AZURE_STORAGE_USE_EMULATOR".to_string(), "true".to_string()),
        ("AZURITE_BLOB_STORAGE_URL".to_string(), endpoint.clone()),
    ];
    let before = standby_testkit::snapshot(site.dir.path());
    run_with(&["sync", path(&site.image), "--vault", "az://vault/x", "--disk", "d"], &environment)
        .bad_input(&format!("cannot reach {endpoint}"));
    run_with(&["vault", "init", "az://vault/x"], &environment).bad_input(&endpoint);
    assert!(before == standby_testkit::snapshot(site.dir.path()));
}

#[test]
fn missing_azure_container_is_named() {
    let azurite = standby_testkit::Azurite::start();
    run_with(&["vault", "init", "az://absent/prefix"], &azurite.environment())
        .bad_input("does not exist; create it first");
}

#[test]
fn serve_disk_and_export_bad_input() {
    let site = Site::new(65536, 12);
    let socket = site.path("d.sock");
    let vault = path(&site.vault);
    let image = path(&site.image);
    let socket_text = path(&socket);
    refused(
        &site,
        &["serve-disk", image, "--socket", socket_text, "--vault", vault, "--disk", "d", "--seal-interval", "0s"],
        "must be longer than zero",
    );
    let missing = site.path("missing.img");
    refused(
        &site,
        &["serve-disk", path(&missing), "--socket", socket_text, "--vault", vault, "--disk", "d"],
        "missing.img",
    );
    let not_a_vault = site.path("nowhere");
    refused(
        &site,
        &["serve-disk", image, "--socket", socket_text, "--vault", path(&not_a_vault), "--disk", "d"],
        "is not a vault",
    );
    let plain = site.path("plain-file");
    std::fs::write(&plain, b"keep").unwrap();
    refused(
        &site,
        &["serve-disk", image, "--socket", path(&plain), "--vault", vault, "--disk", "d"],
        "is not a socket",
    );
    refused(
        &site,
        &["export", "--vault", vault, "--disk", "d", "--point", "latest", "--socket", socket_text],
        "no disk 'd'",
    );
    site.sync("d");
    refused(&site, &["export", "--vault", vault, "--disk", "d", "--point", "7", "--socket", socket_text], "'7'");
    refused(
        &site,
        &["export", "--vault", vault, "--disk", "d", "--point", "latest", "--socket", path(&plain)],
        "is not a socket",
    );
}
