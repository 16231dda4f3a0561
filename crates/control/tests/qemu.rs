//! The QEMU runtime on the project's own guest under TCG: start, QMP
//! status and queries, an ACPI power-down the guest honours, a forced one
//! when it cannot, and the accelerator probes.

use std::path::Path;
use std::time::{Duration, Instant};

use standby_control::qemu::{probe_kvm_in_child, resolve_accel, Drive, Qemu, QemuSpec, Stopped};
use standby_control::Accel;
use standby_guest::{check_disk, prepare_disk, Workload};
use standby_testkit::{console_text, wait_for_console};

/// The project's test guest writing a record every 100 ms to `disk`, run from `dir`.
fn test_guest_on(disk: &Path, dir: &Path) -> QemuSpec {
    let guest = standby_testkit::test_guest();
    let workload = Workload { count: 0, interval: Duration::from_millis(100), file_kib: 4 };
    QemuSpec {
        name: "web".into(),
        cpus: 1,
        memory_mib: 256,
        kernel: Some(guest.vmlinuz),
        initrd: Some(guest.initramfs),
        append: Some(workload.cmdline()),
        drives: vec![Drive::File(disk.to_path_buf())],
        network: vec![],
        addresses: None,
        netns: None,
        accel: "tcg".to_string(),
        run_dir: dir.join("run"),
    }
}

#[test]
fn a_guest_runs_answers_qmp_and_powers_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    prepare_disk(&disk, 64 << 20).unwrap();
    let mut qemu = Qemu::start(&test_guest_on(&disk, dir.path())).unwrap();
    wait_for_console(&qemu.console, "standby-guest: record 3\n", Duration::from_secs(120));
    assert_eq!(qemu.status().unwrap(), "running");
    assert!(qemu.snapshots().unwrap().is_empty(), "a raw disk has no internal snapshots");
    let console = qemu.console.clone();
    assert_eq!(qemu.power_down(Duration::from_secs(60)).unwrap(), Stopped::Clean);
    let text = console_text(&console);
    assert!(text.contains("stopped cleanly"), "{text}");
    let acknowledged = standby_guest::acknowledged(&text).unwrap();
    let report = check_disk(&disk, 4).unwrap();
    assert!(report.complete_through >= acknowledged, "{report} but {acknowledged} acknowledged");
    assert!(!dir.path().join("run/web.qmp").exists(), "the QMP socket is removed");
}

#[test]
fn a_guest_that_ignores_the_power_button_is_stopped_by_force() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("blank.raw");
    std::fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    // No kernel and a blank disk: the firmware finds nothing to boot and
    // never answers ACPI.
    let spec = QemuSpec {
        name: "blank".into(),
        cpus: 1,
        memory_mib: 64,
        kernel: None,
        initrd: None,
        append: None,
        drives: vec![Drive::File(disk.clone())],
        network: vec![],
        addresses: None,
        netns: None,
        accel: "tcg".to_string(),
        run_dir: dir.path().join("run"),
    };
    let mut qemu = Qemu::start(&spec).unwrap();
    assert_eq!(qemu.status().unwrap(), "running");
    let started = Instant::now();
    assert_eq!(qemu.power_down(Duration::from_secs(2)).unwrap(), Stopped::Forced);
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn qemu_that_cannot_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = QemuSpec {
        name: "broken".into(),
        cpus: 1,
        memory_mib: 64,
        kernel: Some(dir.path().join("no-such-kernel")),
        initrd: None,
        append: None,
        drives: vec![],
        network: vec![],
        addresses: None,
        netns: None,
        accel: "tcg".to_string(),
        run_dir: dir.path().join("run"),
    };
    let error = Qemu::start(&spec).err().expect("QEMU cannot load a missing kernel").to_string();
    assert!(error.contains("QEMU exited at start"), "{error}");
}

#[test]
fn the_accelerator_follows_the_setting_and_the_probe() {
    assert_eq!(resolve_accel(Accel::Tcg, "the config", || Ok(())).0, "tcg");
    assert_eq!(resolve_accel(Accel::Kvm, "the config", || Err("unused".into())).0, "kvm");
    assert_eq!(resolve_accel(Accel::Auto, "the config", || Ok(())).0, "kvm");
    let (accel, why) = resolve_accel(Accel::Auto, "the config", || Err("no /dev/kvm".into()));
    assert_eq!(accel, "tcg");
    assert!(why.contains("no /dev/kvm"));
}

#[test]
fn a_kvm_probe_that_hangs_or_fails_means_no_kvm() {
    if !Path::new("/dev/kvm").exists() {
        // Nothing to probe: the missing device is the answer.
        assert!(probe_kvm_in_child(Path::new("/bin/true"), Duration::from_secs(1)).is_err());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hangs = dir.path().join("hangs");
    std::fs::write(&hangs, "#!/bin/sh\nsleep 30\n").unwrap();
    let fails = dir.path().join("fails");
    std::fs::write(&fails, "#!/bin/sh\necho 'KVM_RUN: no' >&2\nexit 1\n").unwrap();
    for script in [&hangs, &fails] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let started = Instant::now();
    let error = probe_kvm_in_child(&hangs, Duration::from_millis(500)).unwrap_err();
    assert!(error.contains("did not run a guest instruction"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(probe_kvm_in_child(&fails, Duration::from_secs(5)).unwrap_err(), "KVM_RUN: no");
    assert!(probe_kvm_in_child(Path::new("/bin/true"), Duration::from_secs(5)).is_ok());
}

/// A daemon that died in the middle of moving a disk leaves a second
/// protocol node beside the one in use (added, never opened): the disk's
/// kind is still told right (a mistaken "nbd" once let a resumed protect
/// skip the move, the guest writing past its splitter), and the next move
/// removes the leftover.
#[test]
fn a_half_done_disk_switch_is_seen_for_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    let other = dir.path().join("other.raw");
    prepare_disk(&disk, 64 << 20).unwrap();
    prepare_disk(&other, 64 << 20).unwrap();
    let mut qemu = Qemu::start(&test_guest_on(&disk, dir.path())).unwrap();
    wait_for_console(&qemu.console, "standby-guest: record 3\n", Duration::from_secs(120));
    let leftover = serde_json::json!({"driver": "file", "node-name": "disk0-nbd", "filename": other});
    qemu.qmp("blockdev-add", leftover).unwrap();
    assert_eq!(qemu.drive_kind(0).unwrap(), "file", "the guest writes to its image, whatever else was added");
    qemu.switch_drive(0, &Drive::File(disk.clone())).unwrap();
    let nodes = qemu.qmp("query-named-block-nodes", serde_json::json!({"flat": true})).unwrap();
    assert!(!nodes.to_string().contains("disk0-nbd"), "the leftover node is gone: {nodes}");
    assert_eq!(qemu.status().unwrap(), "running");
    let console = qemu.console.clone();
    assert_eq!(qemu.power_down(Duration::from_secs(60)).unwrap(), Stopped::Clean);
    let acknowledged = standby_guest::acknowledged(&console_text(&console)).unwrap();
    let report = check_disk(&disk, 4).unwrap();
    assert!(report.complete_through >= acknowledged, "{report} but {acknowledged} acknowledged");
}

/// A QEMU left in `prelaunch` (started with `-S` by a daemon that died
/// before letting it boot) is not adopted: the start never happened, so it
/// is killed; a running one is adopted.
#[test]
fn adopt_takes_a_running_qemu_and_kills_one_that_never_booted() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let qmp = run.join("never.qmp");
    let mut never = std::process::Command::new("qemu-system-x86_64")
        .args(["-name", "never", "-accel", "tcg", "-m", "64", "-display", "none", "-nodefaults", "-S"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .arg("-pidfile")
        .arg(run.join("never.pid"))
        .spawn()
        .expect("qemu-system-x86_64 runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(qmp.exists() && run.join("never.pid").exists()) {
        assert!(Instant::now() < deadline, "QEMU never opened its QMP socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(Qemu::adopt(&run, "never").unwrap().is_none(), "a QEMU in prelaunch was adopted");
    let deadline = Instant::now() + Duration::from_secs(10);
    while never.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the QEMU in prelaunch was left running");
        std::thread::sleep(Duration::from_millis(50));
    }

    let disk = dir.path().join("disk.raw");
    prepare_disk(&disk, 64 << 20).unwrap();
    // Started by a daemon that then died: its QMP connection goes with it.
    drop(Qemu::start(&test_guest_on(&disk, dir.path())).unwrap());
    let mut adopted = Qemu::adopt(&run, "web").unwrap().expect("a running QEMU is adopted");
    assert_eq!(adopted.status().unwrap(), "running");
    adopted.kill();
}

/// A daemon that died in the middle of moving a disk onto its splitter
/// leaves the new NBD node added and never opened. Once the splitter it
/// connects to stops, every `stop` of the guest (which flushes every node)
/// would wait out that node's reconnect delay: the next daemon removes it
/// when it adopts the QEMU, while its server still runs.
#[test]
fn adopt_removes_a_half_done_switch_before_its_server_goes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let disk = dir.path().join("disk.raw");
    let other = dir.path().join("other.raw");
    prepare_disk(&disk, 64 << 20).unwrap();
    prepare_disk(&other, 64 << 20).unwrap();
    let socket = dir.path().join("splitter.sock");
    let mut server = std::process::Command::new("qemu-nbd")
        .args(["--persistent", "--shared=4", "--format=raw", "--export-name=web.disk0", "--socket"])
        .arg(&socket)
        .arg(&other)
        .spawn()
        .expect("qemu-nbd runs");
    let mut qemu = Qemu::start(&test_guest_on(&disk, dir.path())).unwrap();
    wait_for_console(&qemu.console, "standby-guest: record 3\n", Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "qemu-nbd never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    // What `switch_drive` does first, with the guest paused; then the daemon dies.
    qemu.pause().unwrap();
    let node = serde_json::json!({
        "driver": "nbd", "node-name": "disk0-nbd-b", "export": "web.disk0",
        "server": {"type": "unix", "path": socket}, "reconnect-delay": 60,
    });
    qemu.qmp("blockdev-add", node).unwrap();
    drop(qemu);

    let mut adopted = Qemu::adopt(&run, "web").unwrap().expect("a running QEMU is adopted");
    server.kill().unwrap();
    server.wait().unwrap();
    let started = Instant::now();
    adopted.pause().expect("a paused guest pauses again at once");
    assert!(started.elapsed() < Duration::from_secs(5), "pausing took {:?}", started.elapsed());
    let nodes = adopted.qmp("query-named-block-nodes", serde_json::json!({"flat": true})).unwrap();
    assert!(!nodes.to_string().contains("disk0-nbd-b"), "the leftover node is gone: {nodes}");
    adopted.resume().unwrap();
    let console = adopted.console.clone();
    assert_eq!(adopted.power_down(Duration::from_secs(60)).unwrap(), Stopped::Clean);
    let acknowledged = standby_guest::acknowledged(&console_text(&console)).unwrap();
    let report = check_disk(&disk, 4).unwrap();
    assert!(report.complete_through >= acknowledged, "{report} but {acknowledged} acknowledged");
}
