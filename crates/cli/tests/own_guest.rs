//! A machine that is not the project's: it boots from its own bootable
//! first disk (SYSLINUX in its boot sector; `machine add` is given no
//! kernel), keeps its data on a second disk, and nothing in it knows about
//! Standby. Protected, failed over, committed and reprotected like any
//! other; at the end every record it acknowledged is on its data disk,
//! found through the paths `machine list --json` gives and checked with
//! ordinary tools (`e2fsck -fn`, `debugfs`).

mod support;

use std::path::Path;

use support::daemon::{acknowledged, console_of, test_workload, wait_for, Daemon};
use support::{path, run};

#[test]
fn a_machine_booting_from_its_own_disk_fails_over_and_is_reprotected_with_no_record_lost() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    let boot = root.path().join("boot.img");
    standby_testkit::bootable_image(&boot, &format!("{} standby.disk=/dev/vdb", test_workload().cmdline()));
    let data = root.path().join("data.img");
    standby_guest::prepare_disk(&data, 64 << 20).unwrap();
    run(&["machine", "add", "web", "--disk", path(&boot), "--disk", path(&data), "--home", h]).ok();
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    assert!(listed["machines"][0]["kernel"].is_null(), "{listed}");
    let daemon = Daemon::start(&home);
    run(&["machine", "start", "web", "--home", h]).ok();
    let console = console_of(&home, "web");
    wait_for(&console, "standby-guest: record 3\n");

    run(&["protect", "web", "--home", h]).ok();
    let before = acknowledged(&console);
    wait_for(&console, &format!("standby-guest: record {}\n", before + 3));
    run(&["failover", "web", "--shutdown-source", "--home", h]).ok();
    let source_acknowledged = acknowledged(&console);
    let recovery = console_of(&home, "web");
    wait_for(&recovery, "standby-guest: ready, next record ");
    let text = standby_testkit::console_text(Path::new(&recovery));
    let line = text.lines().rfind(|l| l.contains("ready, next record ")).unwrap();
    let recovered = line.rsplit(' ').next().unwrap().trim().parse::<u64>().unwrap() - 1;
    assert!(recovered >= source_acknowledged, "{recovered} records recovered, {source_acknowledged} acknowledged");
    wait_for(&recovery, &format!("standby-guest: record {}\n", recovered + 3));

    // Until reprotect its disks are the point's exports over overlays,
    // which hydrate into whole raw images; status and the list say so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
        let hydration = status["machines"][0]["hydration"].as_array().cloned().unwrap_or_default();
        assert_eq!(hydration.len(), 2, "{status}");
        if hydration.iter().all(|disk| disk["complete"] == true) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the disks never hydrated: {status}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    let overlay = listed["machines"][0]["disks"][1]["running_from"]["overlay"].as_str().unwrap().to_string();
    assert_eq!(std::fs::metadata(&overlay).unwrap().len(), 64 << 20, "{listed}");

    run(&["commit", "web", "--home", h]).ok();
    run(&["reprotect", "web", "--home", h]).ok();
    let status = run(&["status", "web", "--home", h, "--json"]).ok().json();
    assert_eq!(status["machines"][0]["replicates_to"], "primary", "{status}");
    let now = acknowledged(&recovery);
    wait_for(&recovery, &format!("standby-guest: record {}\n", now + 3));
    run(&["machine", "stop", "web", "--home", h]).ok();
    let acknowledged_at_stop = acknowledged(&recovery);

    let listed = run(&["machine", "list", "--home", h, "--json"]).ok().json();
    let disk = listed["machines"][0]["disks"][1]["recovery_path"].as_str().unwrap().to_string();
    let report = standby_guest::check_disk(Path::new(&disk), 4).unwrap();
    assert!(report.complete_through >= acknowledged_at_stop, "{report}");
    assert_eq!(daemon.terminate(), 0);
}
