//! `standby demo`, the README's main command: the whole journey on the
//! test guest runs to the end and says so; a --dir that holds something
//! is refused before anything starts.

mod support;

use support::{path, run_with};

fn run(arguments: &[&str]) -> support::Run {
    // The tests' guest kernel cache, fetched once for every test.
    let cache = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/standby-guest");
    run_with(arguments, &[("STANDBY_GUEST_CACHE".into(), cache.display().to_string())])
}

#[test]
fn the_demo_runs_the_whole_journey() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("demo");
    let demo = run(&["demo", "--dir", path(&dir)]).ok();
    for expected in [
        "== protect it while it runs",
        "the drill copy found",
        "the source acknowledged",
        "nothing lost",
        "moved to the primary site",
        "moved to the recovery site",
        "intact",
        "demo complete; its deployment is in",
    ] {
        assert!(demo.stdout.contains(expected), "the demo did not say {expected:?}:\n{}", demo.stdout);
    }
    // Nothing of it keeps running.
    let processes = std::process::Command::new("pgrep").args(["-f", path(&dir)]).output().unwrap();
    assert!(processes.stdout.is_empty(), "left running: {}", String::from_utf8_lossy(&processes.stdout));

    run(&["demo", "--dir", path(&dir)]).bad_input("is not empty");
}
