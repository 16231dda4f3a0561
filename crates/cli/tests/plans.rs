//! Recovery plans from TOML files through the binary: a good file is
//! validated and kept, shown and listed, deleted; each bad file is refused
//! by both `plan validate` and `plan create` with its line and what to do,
//! exit 2, and nothing is kept.

mod support;

use std::path::Path;

use support::{path, run};

const PLAN: &str = r#"name = "shop"
description = "the web shop: database first"

[[groups]]
name = "database"
machines = ["db", "db2"]
pre = [{ script = "scripts/fence.sh", timeout = "2m" }]
post = [{ manual = "Check that the database takes writes" }]

[[groups]]
machines = ["web"]

[probes.db]
tcp = "10.1.0.5:5432"
"#;

fn add_machine(home: &Path, name: &str) {
    let disk = home.parent().unwrap().join(format!("{name}.raw"));
    std::fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    run(&["machine", "add", name, "--disk", path(&disk), "--home", path(home)]).ok();
}

/// Writes `source` as `DIR/NAME` beside an executable `scripts/fence.sh`
/// and a plain `scripts/plain.sh`.
fn plan_file(dir: &Path, name: &str, source: &str) -> std::path::PathBuf {
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    for (script, mode) in [("fence.sh", 0o755), ("plain.sh", 0o644)] {
        let file = scripts.join(script);
        std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let file = dir.join(name);
    std::fs::write(&file, source).unwrap();
    file
}

#[test]
fn plans_are_checked_with_their_lines_and_kept_only_whole() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("deployment");
    run(&["init", path(&home)]).ok();
    for name in ["db", "db2", "web"] {
        add_machine(&home, name);
    }
    let files = dir.path().join("plans");
    let good = plan_file(&files, "shop.toml", PLAN);
    // Without a daemon, validate checks against the state here.
    let checked = run(&["plan", "validate", path(&good), "--home", path(&home)]).ok();
    assert!(
        checked.stdout.contains("plan 'shop' is valid: 2 group(s), 3 machine(s), 1 probe(s)"),
        "{}",
        checked.stdout
    );
    let _daemon = support::daemon::Daemon::start(&home);

    let bad: &[(&str, &str, &str)] = &[
        (
            r#"machines = ["web"]"#,
            r#"machines = ["web", "cache"]"#,
            "bad.toml:11: 'cache' is not a machine of this deployment",
        ),
        (
            r#"machines = ["web"]"#,
            r#"machines = ["web", "db"]"#,
            "bad.toml:11: 'db' is already in plan group 1 ('database')",
        ),
        (r#"scripts/fence.sh"#, r#"scripts/gone.sh"#, "bad.toml:7: script "),
        (r#"scripts/fence.sh"#, r#"scripts/plain.sh"#, "is not executable; `chmod +x` it"),
        (
            r#"name = "database""#,
            r#"name = "database"
colour = "red""#,
            "bad.toml:6: unknown field `colour`",
        ),
        (r#"tcp = "10.1.0.5:5432""#, r#"tcp = 10.1.0.5:5432"#, "bad.toml:14: invalid float"),
    ];
    for (from, to, expected) in bad {
        assert_eq!(PLAN.matches(from).count(), 1, "{from}");
        let file = plan_file(&files, "bad.toml", &PLAN.replace(from, to));
        for command in ["validate", "create"] {
            let refused = run(&["plan", command, path(&file), "--home", path(&home)]).bad_input(expected);
            drop(refused);
        }
    }
    // A replication group moves whole: db and db2 in group `data` may be
    // neither split across plan groups nor half in the plan.
    let split = PLAN.replace(r#"machines = ["db", "db2"]"#, r#"machines = ["db"]"#);
    let half = plan_file(&files, "half.toml", &split);
    let split =
        plan_file(&files, "split.toml", &split.replace(r#"machines = ["web"]"#, r#"machines = ["web", "db2"]"#));
    run(&["plan", "validate", path(&split), "--home", path(&home)]).ok();
    for name in ["db", "db2"] {
        run(&["protect", name, "--group", "data", "--home", path(&home)]).ok();
    }
    run(&["plan", "create", path(&split), "--home", path(&home)])
        .bad_input("split.toml:11: 'db2' and 'db' are in replication group 'data', which moves whole");
    run(&["plan", "create", path(&half), "--home", path(&home)])
        .bad_input("'db' is in replication group 'data', which moves whole, and its machine 'db2' is not in the plan");
    let missing = run(&["plan", "validate", path(&files.join("nowhere.toml")), "--home", path(&home)]);
    missing.bad_input("cannot read the plan file");
    let listed = run(&["plan", "list", "--home", path(&home), "--json"]).ok().json();
    assert_eq!(listed["plans"].as_array().unwrap().len(), 0, "a refused file was kept: {listed}");

    let created = run(&["plan", "create", path(&good), "--home", path(&home), "--json"]).ok().json();
    assert_eq!(created["name"], "shop");
    assert_eq!(created["groups"][0]["pre"][0]["timeout_seconds"], 120);
    let again = run(&["plan", "create", path(&good), "--home", path(&home)]);
    again.bad_input("a plan named 'shop' exists; `standby plan delete shop` first");
    let shown = run(&["plan", "show", "shop", "--home", path(&home)]).ok();
    assert!(shown.stdout.contains("1. database: db, db2"), "{}", shown.stdout);
    assert!(shown.stdout.contains("2. group 2: web"), "{}", shown.stdout);
    assert!(shown.stdout.contains("after: manual Check that the database takes writes"), "{}", shown.stdout);
    assert!(shown.stdout.contains("probe db: tcp 10.1.0.5:5432"), "{}", shown.stdout);
    // The plan is checked again as the deployment changes.
    std::fs::set_permissions(files.join("scripts/fence.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .unwrap();
    let listed = run(&["plan", "list", "--home", path(&home)]).ok();
    assert!(listed.stdout.contains("shop.toml:7: script") && listed.stdout.contains("PROBLEM: "), "{}", listed.stdout);
    run(&["plan", "show", "nope", "--home", path(&home)]).bad_input("no plan named 'nope' (known: shop)");
    run(&["plan", "delete", "shop", "--home", path(&home)]).ok();
    let listed = run(&["plan", "list", "--home", path(&home), "--json"]).ok().json();
    assert_eq!(listed["plans"].as_array().unwrap().len(), 0);
}
