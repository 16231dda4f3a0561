//! The web console (issue 17) in Debian's headless Chromium through
//! Selenium (`tests/clients/console.py`), by clicking: sign in with a
//! token, see the protected test guest, a drill and its clean-up, a
//! failover to a point picked on the timeline followed live, commit,
//! reprotect, and a planned failback completed from its job's page; a
//! read-only token sees no action. Screenshots of every page are kept in
//! `target/console-screenshots/`.

mod support;

use std::path::Path;
use std::process::Command;

use support::daemon::{add_guest_machine, console_of, test_workload, wait_for, Daemon};
use support::{path, run, standby_command};

/// The base64 SHA-256 of the public key of the certificate in `pem`
/// (Chromium's `--ignore-certificate-errors-spki-list` pins it).
fn spki_hash(pem: &Path) -> String {
    let script = format!(
        "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        pem.display()
    );
    let output = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn secret_of(file: &Path) -> String {
    let text: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    text["token"].as_str().unwrap().to_string()
}

/// Runs the Selenium script as `token`; its output.
fn click_through(url: &str, token: &str, spki: &str, shots: &Path, more: &[&str]) -> String {
    let python = standby_testkit::workspace_root().join("target/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/console.py");
    let output = Command::new("python3")
        .env("PYTHONPATH", &python)
        .arg(script)
        .args([url, token, spki, path(shots), "web"])
        .args(more)
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the console run failed:\n{said}");
    said
}

#[test]
fn the_console_runs_the_whole_lifecycle_by_clicking() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    add_guest_machine(&home, "web", &test_workload());
    let listen = format!("127.0.0.1:{}", standby_testkit::free_port());
    let _daemon = Daemon::start_serving(&home, standby_command(), &["--listen", &listen]);
    run(&["machine", "start", "web", "--home", h]).ok();
    wait_for(&console_of(&home, "web"), "standby-guest: record 3\n");
    run(&["protect", "web", "--home", h]).ok();
    let (admin, reader) = (root.path().join("ops.token"), root.path().join("noc.token"));
    run(&["token", "create", "ops", "--file", path(&admin), "--home", h]).ok();
    run(&["token", "create", "noc", "--read-only", "--file", path(&reader), "--home", h]).ok();
    let spki = spki_hash(&home.join("tls/api.pem"));
    let url = format!("https://{listen}");
    let shots = standby_testkit::workspace_root().join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);

    let said = click_through(&url, &secret_of(&reader), &spki, &shots.join("read-only"), &["read-only"]);
    assert!(said.contains("read-only: no action"), "{said}");
    let said = click_through(&url, &secret_of(&admin), &spki, &shots.join("admin"), &[]);
    eprintln!("{said}");
    assert!(said.contains("failed back with complete failover"), "{said}");

    // What was clicked is in the audit log under the token's name.
    let audit = run(&["audit", "--home", h, "--json"]).ok().json();
    let acted: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["actor"] == "ops" && entry["status"] == 200)
        .map(|entry| entry["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    for done in [
        "test-failover",
        "cleanup-test-failover",
        "failover",
        "commit",
        "reprotect",
        "planned-failover",
        "complete-failover",
    ] {
        assert!(acted.iter().any(|path| path == done), "{done} is not in the audit log: {acted:?}");
    }
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    assert_eq!(listed["machines"][0]["active_site"], "primary", "{listed}");
    assert!(std::fs::read_dir(shots.join("admin")).unwrap().count() >= 15, "screenshots missing");
}
