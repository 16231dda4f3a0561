//! `serve-disk` end to end: a real NBD client (qemu-io) writes through the
//! splitter; `mark` records points; the journal restores each point, the
//! latest state, and survives kill -9 of the splitter.

mod support;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::{path, run, standby_command, Mount, Site};

struct Splitter {
    child: Child,
}

impl Splitter {
    fn start(site: &Site, socket: &Path) -> Splitter {
        Splitter::start_with(&site.image, path(&site.vault), socket, &[], &[])
    }

    fn start_with(
        image: &Path,
        vault: &str,
        socket: &Path,
        extra: &[&str],
        environment: &[(String, String)],
    ) -> Splitter {
        let child = standby_command()
            .args(["serve-disk", path(image), "--socket", path(socket), "--vault", vault])
            .args(["--disk", "d", "--bookmark-interval", "1s", "--seal-interval", "200ms"])
            .args(extra)
            .envs(environment.iter().cloned())
            .spawn()
            .expect("serve-disk starts");
        let splitter = Splitter { child };
        // Ready once it can record a point (the refresh is done).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let probe = run(&["mark", "--socket", path(socket), "--label", "ready", "--json"]);
            if probe.code == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the splitter never became ready: {}", probe.stderr);
            std::thread::sleep(Duration::from_millis(100));
        }
        splitter
    }

    fn signal(&mut self, signal: i32) -> i32 {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Splitter {
    fn drop(&mut self) {
        // A failed test must not leave a splitter running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn qemu_io(socket: &Path, commands: &[&str]) {
    let mut command = Command::new("qemu-io");
    command.args(["-f", "raw"]);
    for c in commands {
        command.args(["-c", c]);
    }
    let output = command.arg(format!("nbd+unix:///d?socket={}", socket.display())).output().expect("qemu-io runs");
    assert!(output.status.success(), "qemu-io failed: {}", String::from_utf8_lossy(&output.stderr));
}

fn mark(socket: &Path, label: &str) -> u64 {
    let reply = run(&["mark", "--socket", path(socket), "--label", label, "--json"]).ok().json();
    reply["point"].as_u64().expect("a point id")
}

fn restore(site: &Site, point: &str) -> Vec<u8> {
    let out: PathBuf = site.path(&format!("restored-{point}"));
    run(&["restore", "--vault", path(&site.vault), "--disk", "d", "--point", point, path(&out), "--force"]).ok();
    std::fs::read(&out).unwrap()
}

fn fill(image: &mut [u8], offset: usize, len: usize, value: u8) {
    image[offset..offset + len].fill(value);
}

#[test]
fn writes_through_the_splitter_restore_at_every_mark() {
    let site = Site::new(8 << 20, 61);
    let socket = site.path("d.sock");
    let mut model = std::fs::read(&site.image).unwrap();
    let mut splitter = Splitter::start(&site, &socket);

    qemu_io(&socket, &["write -P 0x11 0 65536", "write -P 0x22 100000 5000", "flush"]);
    fill(&mut model, 0, 65536, 0x11);
    fill(&mut model, 100000, 5000, 0x22);
    let a = mark(&socket, "after A");
    let at_a = model.clone();

    qemu_io(&socket, &["write -P 0x33 65536 1048576", "write -z 3145728 524288", "discard 5242880 65536", "flush"]);
    fill(&mut model, 65536, 1048576, 0x33);
    fill(&mut model, 3145728, 524288, 0);
    fill(&mut model, 5242880, 65536, 0);
    let b = mark(&socket, "after B");
    assert!(b > a);

    assert_eq!(splitter.signal(libc::SIGTERM), 0, "serve-disk stops cleanly on SIGTERM");
    assert!(std::fs::read(&site.image).unwrap() == model, "the image holds every write");
    assert!(!socket.exists(), "the socket is removed on stop");

    let points = run(&["points", "--vault", path(&site.vault), "--disk", "d", "--json"]).ok().json();
    let labels: Vec<&str> = points["points"].as_array().unwrap().iter().filter_map(|p| p["label"].as_str()).collect();
    let rpo = points["journal"]["rpo_seconds"].as_f64().expect("the journal's RPO is reported");
    assert!((0.0..60.0).contains(&rpo), "{points}");
    assert!(!points["journal"]["gaps"].as_array().unwrap().is_empty(), "the start-up catch-up is listed as a gap");
    assert!(labels.contains(&"after A") && labels.contains(&"after B"), "{points}");
    assert!(restore(&site, &a.to_string()) == at_a, "point A differs");
    assert!(restore(&site, &b.to_string()) == model, "point B differs");
    assert!(restore(&site, "latest") == model, "latest differs");
    run(&["verify", "--vault", path(&site.vault)]).ok();
}

#[test]
fn kill_nine_and_restart_lose_no_flushed_write() {
    let site = Site::new(4 << 20, 62);
    let socket = site.path("d.sock");
    let mut model = std::fs::read(&site.image).unwrap();
    let mut splitter = Splitter::start(&site, &socket);
    qemu_io(&socket, &["write -P 0x44 4096 8192", "flush"]);
    fill(&mut model, 4096, 8192, 0x44);
    let before = mark(&socket, "before the kill");
    let at_before = model.clone();
    // Written and flushed, perhaps not yet in the vault when the splitter dies.
    qemu_io(&socket, &["write -P 0x55 2097152 65536", "flush"]);
    fill(&mut model, 2097152, 65536, 0x55);
    assert_eq!(splitter.signal(libc::SIGKILL), -1);
    assert!(std::fs::read(&site.image).unwrap() == model, "a flushed write is in the image");

    let mut splitter = Splitter::start(&site, &socket);
    qemu_io(&socket, &["write -P 0x66 0 4096", "flush"]);
    fill(&mut model, 0, 4096, 0x66);
    let after = mark(&socket, "after the restart");
    assert_eq!(splitter.signal(libc::SIGTERM), 0);

    assert!(restore(&site, &before.to_string()) == at_before, "a point from before the kill changed");
    assert!(restore(&site, &after.to_string()) == model, "the point after the restart differs");
    assert!(restore(&site, "latest") == model);
    run(&["verify", "--vault", path(&site.vault)]).ok();
}

fn status(socket: &Path) -> serde_json::Value {
    run(&["splitter-status", "--socket", path(socket), "--json"]).ok().json()
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|entries| entries.count()).unwrap_or(0)
}

#[test]
fn a_clean_restart_rereads_nothing_and_stores_no_data() {
    let site = Site::new(4 << 20, 63);
    let socket = site.path("d.sock");
    let mut splitter = Splitter::start(&site, &socket);
    qemu_io(&socket, &["write -P 0x77 8192 4096", "flush"]);
    mark(&socket, "one");
    assert_eq!(splitter.signal(libc::SIGTERM), 0);
    let packs = files_under(&site.vault.join("packs"));

    let mut splitter = Splitter::start(&site, &socket);
    let state = status(&socket);
    assert_eq!(state["refreshed"], true, "{state}");
    assert_eq!(state["catch_up_bytes"], 0);
    assert_eq!(splitter.signal(libc::SIGTERM), 0);
    assert_eq!(files_under(&site.vault.join("packs")), packs, "a clean restart stored data again");
    let out = site.path("latest");
    site.restore("d", "latest", &out).ok();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&site.image).unwrap());
}

#[test]
fn guest_writes_go_on_through_a_vault_outage_and_the_splitter_catches_up() {
    let mut azurite = standby_testkit::Azurite::start();
    azurite.create_container("drsite");
    let environment = azurite.environment();
    let vault = "az://drsite/vault";
    support::run_with(&["vault", "init", vault], &environment).ok();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let mut model = standby_testkit::Random::new(64).disk_data(8 << 20);
    std::fs::write(&image, &model).unwrap();
    let socket = dir.path().join("d.sock");
    // A 1 MiB queue: the outage overflows it at once.
    let mut splitter = Splitter::start_with(&image, vault, &socket, &["--queue-mib", "1"], &environment);
    qemu_io(&socket, &["write -P 0x12 0 65536", "flush"]);
    fill(&mut model, 0, 65536, 0x12);
    let before = mark(&socket, "before the outage");
    let at_before = model.clone();

    azurite.stop();
    // Guest writes complete while the vault is down.
    let started = Instant::now();
    qemu_io(&socket, &["write -P 0x34 1048576 4194304", "write -P 0x56 6291456 65536", "flush"]);
    fill(&mut model, 1048576, 4194304, 0x34);
    fill(&mut model, 6291456, 65536, 0x56);
    assert!(started.elapsed() < Duration::from_secs(20), "guest writes waited for the vault");
    std::thread::sleep(Duration::from_millis(1500));
    let behind = status(&socket);
    assert_eq!(behind["refreshed"], false, "{behind}");
    assert!(behind["lag_seconds"].as_f64().unwrap() > 0.5, "{behind}");
    assert!(behind["error"].is_string(), "the vault error is reported: {behind}");
    let refused = run(&["mark", "--socket", path(&socket), "--label", "during"]);
    assert_ne!(refused.code, 0, "a point was offered while the journal cannot rebuild the disk");

    azurite.restart();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = status(&socket);
        if state["refreshed"] == true && state["lag_bytes"] == 0 && state["catch_up_bytes"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the splitter did not catch up: {state}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = mark(&socket, "after the outage");
    assert_eq!(splitter.signal(libc::SIGTERM), 0);

    let restore = |point: &str| {
        let out = dir.path().join(format!("restored-{point}"));
        support::run_with(
            &["restore", "--vault", vault, "--disk", "d", "--point", point, path(&out), "--force"],
            &environment,
        )
        .ok();
        std::fs::read(&out).unwrap()
    };
    assert!(restore(&before.to_string()) == at_before, "the point before the outage changed");
    assert!(restore(&after.to_string()) == model, "the point after catching up differs");
    support::run_with(&["verify", "--vault", vault], &environment).ok();
}

#[test]
fn mark_without_a_splitter_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    run(&["mark", "--socket", path(&socket)]).bad_input("no splitter is running");
}

struct Exporting {
    child: Child,
}

impl Drop for Exporting {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Exporting {
    fn start(vault: &Path, point: &str, socket: &Path) -> Exporting {
        Exporting::start_with(vault, point, socket, &[], None)
    }

    /// With more arguments, and its stderr in `log` when given.
    fn start_with(vault: &Path, point: &str, socket: &Path, more: &[&str], log: Option<&Path>) -> Exporting {
        Exporting::start_in(standby_command(), vault, point, socket, more, log)
    }

    /// As [`Exporting::start_with`], from `command` (with its environment).
    fn start_in(
        mut command: std::process::Command,
        vault: &Path,
        point: &str,
        socket: &Path,
        more: &[&str],
        log: Option<&Path>,
    ) -> Exporting {
        command
            .args(["export", "--vault", path(vault), "--disk", "d", "--point", point, "--socket", path(socket)])
            .args(more);
        if let Some(log) = log {
            command.stderr(std::fs::File::create(log).unwrap());
        }
        let child = command.spawn().expect("export starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(Instant::now() < deadline, "export never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Exporting { child }
    }

    fn stop(mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(self.child.wait().unwrap().code(), Some(0));
    }

    fn kill_nine(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_export(socket: &Path, out: &Path) -> Vec<u8> {
    let uri = format!("nbd+unix:///d?socket={}", socket.display());
    let status =
        Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw", &uri, path(out)]).status().unwrap();
    assert!(status.success());
    std::fs::read(out).unwrap()
}

#[test]
fn export_serves_journal_and_sync_points_and_keeps_writes_in_an_overlay() {
    // A journal point.
    let site = Site::new(4 << 20, 65);
    let socket = site.path("d.sock");
    let mut splitter = Splitter::start(&site, &socket);
    qemu_io(&socket, &["write -P 0x71 12345 70000", "flush"]);
    let point = mark(&socket, "exported");
    qemu_io(&socket, &["write -P 0x72 0 1048576", "flush"]);
    assert_eq!(splitter.signal(libc::SIGTERM), 0);
    let expected = restore(&site, &point.to_string());

    let export_socket = site.path("export.sock");
    let exporting = Exporting::start(&site.vault, &point.to_string(), &export_socket);
    assert!(read_export(&export_socket, &site.path("read.img")) == expected, "the export differs from the restore");
    qemu_io(&export_socket, &["write -P 0x99 4096 8192", "flush", "read -P 0x99 4096 8192"]);
    let mut written = expected.clone();
    written[4096..4096 + 8192].fill(0x99);
    assert!(read_export(&export_socket, &site.path("read2.img")) == written, "writes are not read back");
    exporting.stop();
    assert!(restore(&site, &point.to_string()) == expected, "a write through the export reached the vault");
    let overlay = site.path("export.sock.overlay");
    assert!(overlay.exists(), "the overlay is kept after the export stops");
    // An export of another point refuses the overlay.
    let refused = run(&[
        "export",
        "--vault",
        path(&site.vault),
        "--disk",
        "d",
        "--point",
        "latest",
        "--socket",
        path(&export_socket),
    ]);
    refused.bad_input("holds writes to point");

    // A sync point.
    let synced = Site::new(3 << 20, 66);
    synced.sync("d");
    let socket = synced.path("sync.sock");
    let exporting = Exporting::start(&synced.vault, "latest", &socket);
    assert!(read_export(&socket, &synced.path("read.img")) == std::fs::read(&synced.image).unwrap());
    exporting.stop();
}

#[test]
fn retention_compacts_the_journal_under_a_running_splitter() {
    let site = Site::new(4 << 20, 67);
    let socket = site.path("d.sock");
    let mut model = std::fs::read(&site.image).unwrap();
    let mut splitter = Splitter::start(&site, &socket);
    qemu_io(&socket, &["write -P 0x21 0 131072", "flush"]);
    fill(&mut model, 0, 131072, 0x21);
    let old = mark(&socket, "old");
    let old_at = Instant::now();
    // Bookmarks (every second) seal segments after the old mark.
    std::thread::sleep(Duration::from_millis(4000));
    qemu_io(&socket, &["write -P 0x22 65536 4096", "flush"]);
    fill(&mut model, 65536, 4096, 0x22);
    let recent = mark(&socket, "recent");
    let at_recent = model.clone();

    // The window's edge 2 s after the old mark, 2 s before the write
    // (however long the marks and the prune's start take).
    let retention = old_at.elapsed() - Duration::from_millis(2000);
    let retention = format!("{}ms", retention.as_millis());
    let vault = path(&site.vault);
    let report = run(&["prune", "--vault", vault, "--retention", &retention, "--grace", "0s", "--json"]).ok().json();
    let compacted = &report["journals_compacted"][0];
    assert_eq!(compacted["disk"], "d", "{report}");
    let base = compacted["base_sequence"].as_u64().unwrap();
    assert!(old < base && base < recent, "{report}");
    assert!(compacted["segments_removed"].as_u64().unwrap() >= 2, "{report}");

    // The splitter carries on after the base.
    qemu_io(&socket, &["write -P 0x23 2097152 65536", "flush"]);
    fill(&mut model, 2097152, 65536, 0x23);
    let newest = mark(&socket, "newest");
    assert_eq!(splitter.signal(libc::SIGTERM), 0);

    let refused =
        run(&["restore", "--vault", vault, "--disk", "d", "--point", &old.to_string(), path(&site.path("x"))]);
    refused.bad_input("older than the retention window");
    assert!(!site.path("x").exists() && !site.path("x.standby-partial").exists());
    assert!(
        restore(&site, &base.to_string()) == {
            let mut at_base = at_recent.clone();
            at_base[65536..65536 + 4096].copy_from_slice(&[0x21; 4096]);
            at_base
        }
    );
    assert!(restore(&site, &recent.to_string()) == at_recent, "a point inside the window changed");
    assert!(restore(&site, &newest.to_string()) == model);
    let points = run(&["points", "--vault", vault, "--disk", "d", "--json"]).ok().json();
    assert_eq!(points["points"][0]["id"].as_u64(), Some(base), "{points}");
    assert_eq!(points["journal"]["first_sequence"].as_u64(), Some(base), "{points}");
    run(&["verify", "--vault", vault]).ok();

    // After a restart the journal continues from where it was.
    let mut splitter = Splitter::start(&site, &socket);
    let after_restart = mark(&socket, "after restart");
    assert!(after_restart > newest);
    assert_eq!(splitter.signal(libc::SIGTERM), 0);
    assert!(restore(&site, "latest") == model);
}

#[test]
fn an_export_resumes_its_overlay_after_a_stop_or_a_kill_nine() {
    let site = Site::new(2 << 20, 68);
    let socket = site.path("d.sock");
    let mut splitter = Splitter::start(&site, &socket);
    qemu_io(&socket, &["write -P 0x41 0 65536", "flush"]);
    let point = mark(&socket, "drill").to_string();
    assert_eq!(splitter.signal(libc::SIGTERM), 0);
    let mut expected = restore(&site, &point);

    let export_socket = site.path("drill.sock");
    let exporting = Exporting::start(&site.vault, &point, &export_socket);
    qemu_io(&export_socket, &["write -P 0x31 8192 4096", "flush"]);
    expected[8192..8192 + 4096].fill(0x31);
    exporting.stop();

    let exporting = Exporting::start(&site.vault, &point, &export_socket);
    assert!(read_export(&export_socket, &site.path("r1.img")) == expected, "a flushed write was lost on stop");
    qemu_io(&export_socket, &["write -P 0x32 65536 4096", "write -z 0 512", "flush"]);
    expected[65536..65536 + 4096].fill(0x32);
    expected[..512].fill(0);
    exporting.kill_nine();

    // A torn append at the end of the map (a crash mid-flush) is dropped.
    let map = site.path("drill.sock.overlay.map");
    let mut bytes = std::fs::read(&map).unwrap();
    let length = bytes.len();
    bytes.extend_from_slice(&[0xAB; 13]);
    std::fs::write(&map, &bytes).unwrap();
    let exporting = Exporting::start(&site.vault, &point, &export_socket);
    assert!(read_export(&export_socket, &site.path("r2.img")) == expected, "a flushed write was lost on kill -9");
    exporting.stop();
    assert_eq!(std::fs::metadata(&map).unwrap().len() as usize, length, "the torn tail is truncated");

    // Another point, or a damaged map, is refused and changes nothing.
    let before = standby_testkit::snapshot(site.dir.path());
    let points = run(&["points", "--vault", path(&site.vault), "--disk", "d", "--json"]).ok().json();
    let earlier = points["points"][0]["id"].as_u64().unwrap().to_string();
    assert_ne!(earlier, point);
    let other = run(&[
        "export",
        "--vault",
        path(&site.vault),
        "--disk",
        "d",
        "--point",
        &earlier,
        "--socket",
        path(&export_socket),
    ]);
    other.bad_input("holds writes to point");
    let mut damaged = std::fs::read(&map).unwrap();
    damaged[9] ^= 0xFF;
    std::fs::write(&map, &damaged).unwrap();
    let refused = run(&[
        "export",
        "--vault",
        path(&site.vault),
        "--disk",
        "d",
        "--point",
        &point,
        "--socket",
        path(&export_socket),
    ]);
    refused.bad_input("cannot be read");
    std::fs::write(&map, std::fs::read(&map).map(|_| bytes[..length].to_vec()).unwrap()).unwrap();
    assert_eq!(standby_testkit::snapshot(site.dir.path()), before);
}

/// A mark that does not wait for the vault (what an app-consistent point
/// needs: the guest is frozen until it answers) answers at once while the
/// vault is down, and the point it placed reaches the vault afterwards,
/// restoring exactly the writes before it.
#[test]
fn a_mark_that_does_not_wait_answers_at_once_through_an_outage_and_lands_later() {
    let mut azurite = standby_testkit::Azurite::start();
    azurite.create_container("drsite");
    let environment = azurite.environment();
    let vault = "az://drsite/vault";
    support::run_with(&["vault", "init", vault], &environment).ok();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let mut model = standby_testkit::Random::new(65).disk_data(8 << 20);
    std::fs::write(&image, &model).unwrap();
    let socket = dir.path().join("d.sock");
    let mut splitter = Splitter::start_with(&image, vault, &socket, &[], &environment);
    mark(&socket, "caught up");

    azurite.stop();
    qemu_io(&socket, &["write -P 0x21 65536 131072", "flush"]);
    fill(&mut model, 65536, 131072, 0x21);
    let at_mark = model.clone();
    let started = Instant::now();
    let queued = run(&["mark", "--socket", path(&socket), "--app-consistent", "--label", "frozen", "--no-wait"]).ok();
    assert!(started.elapsed() < Duration::from_secs(5), "the mark waited for the vault: {:?}", started.elapsed());
    assert!(queued.stdout.contains("point queued (app-consistent)"), "{}", queued.stdout);
    qemu_io(&socket, &["write -P 0x43 0 65536", "flush"]);
    fill(&mut model, 0, 65536, 0x43);

    // A mark that waits for the vault (as a protect job's first point
    // does) holds its connection up to 120 s; the splitter's status, what
    // the operator asks for during the outage, answers meanwhile.
    let mut waiting = std::process::Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(["mark", "--socket", path(&socket), "--label", "waits"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = standby_splitter::control_status(&socket).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "status waited for the mark: {:?}", started.elapsed());
    assert!(status["lag_bytes"].as_u64().is_some(), "{status}");
    assert!(waiting.try_wait().unwrap().is_none(), "the waiting mark answered while the vault was down");

    azurite.restart();
    let deadline = Instant::now() + Duration::from_secs(90);
    let point = loop {
        let points =
            support::run_with(&["points", "--vault", vault, "--disk", "d", "--json"], &environment).ok().json();
        let frozen = points["points"].as_array().unwrap().iter().find(|p| p["label"] == "frozen").cloned();
        if let Some(point) = frozen {
            assert_eq!(point["kind"], "app-consistent", "{point}");
            break point["id"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "the queued point never reached the vault: {points}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(waiting.wait().unwrap().success(), "the waiting mark failed once the vault was back");
    assert_eq!(splitter.signal(libc::SIGTERM), 0);
    let out = dir.path().join("restored");
    support::run_with(
        &["restore", "--vault", vault, "--disk", "d", "--point", &point.to_string(), path(&out), "--force"],
        &environment,
    )
    .ok();
    assert!(std::fs::read(&out).unwrap() == at_mark, "the queued point does not restore the writes before it");
}

fn wait_for_log(log: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(log).unwrap_or_default().contains(text) {
        assert!(
            Instant::now() < deadline,
            "{} never said {text:?}: {}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `export --hydrate` copies the point into the overlay while the guest
/// reads and writes, until it needs no vault at all: with the vault gone,
/// the export still serves the point with the guest's writes, and the
/// overlay's map still names only what the guest wrote (what a reprotect
/// ships). Killed and started again, it hydrates again and serves the same.
#[test]
fn a_hydrating_export_ends_up_needing_no_vault() {
    let site = Site::new(24 << 20, 68);
    let socket = site.path("d.sock");
    let mut splitter = Splitter::start(&site, &socket);
    qemu_io(&socket, &["write -P 0x31 3000000 500000", "write -z 8388608 1048576", "flush"]);
    let point = mark(&socket, "hydrated").to_string();
    qemu_io(&socket, &["write -P 0x32 0 1048576", "flush"]);
    assert_eq!(splitter.signal(libc::SIGTERM), 0);
    let mut expected = restore(&site, &point);

    let export_socket = site.path("export.sock");
    let log = site.path("export.log");
    let exporting = Exporting::start_with(&site.vault, &point, &export_socket, &["--hydrate"], Some(&log));
    // Guest writes while the hydration runs, all over the disk.
    let mut commands = vec!["write -P 0x5a 20000000 131072".to_string(), "write -P 0x5b 4096 8192".to_string()];
    expected[20_000_000..20_000_000 + 131_072].fill(0x5a);
    expected[4096..4096 + 8192].fill(0x5b);
    let mut guest_writes = vec![(4096, 4096 + 8192), (20_000_000, 20_000_000 + 131_072)];
    for n in 0..60u64 {
        let offset = (n * 397 * 65536 + 65536 * 7) % (24 << 20) / 65536 * 65536;
        if guest_writes.iter().any(|&(s, e)| offset < e && offset + 65536 > s) {
            continue;
        }
        commands.push(format!("write -P {} {offset} 65536", 0x60 + n % 16));
        expected[offset as usize..offset as usize + 65536].fill((0x60 + n % 16) as u8);
        guest_writes.push((offset, offset + 65536));
    }
    commands.push("flush".into());
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    qemu_io(&export_socket, &commands);
    wait_for_log(&log, "standby: hydrated: the whole disk is in the overlay");

    let gone = site.path("vault.gone");
    std::fs::rename(&site.vault, &gone).unwrap();
    assert!(read_export(&export_socket, &site.path("read.img")) == expected, "the hydrated export differs");
    let map = std::fs::read(site.path("export.sock.overlay.map")).unwrap();
    let mut written = standby_format::OverlayMap::decode(&map).unwrap().ranges;
    written.sort_unstable();
    guest_writes.sort_unstable();
    assert_eq!(written, guest_writes, "the map names only the guest's writes");

    // Killed, then started again on the same overlay: it hydrates again.
    exporting.kill_nine();
    std::fs::rename(&gone, &site.vault).unwrap();
    let log = site.path("export2.log");
    let exporting = Exporting::start_with(&site.vault, &point, &export_socket, &["--hydrate"], Some(&log));
    wait_for_log(&log, "standby: hydrated: the whole disk is in the overlay");
    std::fs::rename(&site.vault, &gone).unwrap();
    assert!(read_export(&export_socket, &site.path("read2.img")) == expected, "the export differs after a restart");
    exporting.stop();

    // A hydration whose vault goes away under it (its reads fail) tries
    // again, and ends once the vault is back.
    let mut command = standby_command();
    command.env("STANDBY_TEST_HYDRATE_PACE_MS", "300");
    let socket = site.path("third.sock");
    let log = site.path("export3.log");
    std::fs::rename(&gone, &site.vault).unwrap();
    let untouched = restore(&site, &point);
    let exporting = Exporting::start_in(command, &site.vault, &point, &socket, &["--hydrate"], Some(&log));
    std::fs::rename(&site.vault, &gone).unwrap();
    wait_for_log(&log, "standby: hydration stopped: ");
    std::fs::rename(&gone, &site.vault).unwrap();
    wait_for_log(&log, "standby: hydrated: the whole disk is in the overlay");
    std::fs::rename(&site.vault, &gone).unwrap();
    assert!(read_export(&socket, &site.path("read3.img")) == untouched, "the export differs after the outage");
    exporting.stop();
}

/// Overlapping writes in flight together (libnbd at queue depth 32 into a
/// hot MiB, writes, zeroes and trims of 512 B to 64 KiB) reach the image
/// and the journal in the same order: a point marked after each burst
/// restores exactly the disk the client reads back at that moment.
#[test]
fn overlapping_writes_in_flight_together_restore_as_the_disk_read_back() {
    let site = Site::new(4 << 20, 63);
    let socket = site.path("d.sock");
    let mut splitter = Splitter::start(&site, &socket);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/overlapping_writes.py");
    let uri = format!("nbd+unix:///d?socket={}", socket.display());
    let mut client = Command::new("/usr/bin/python3")
        .args([path(&script), &uri, &(4 << 20).to_string(), "6", "64"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (python3-libnbd: scripts/test installs it)");
    let mut lines = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let mut stdin = client.stdin.take().unwrap();
    let mut marked = Vec::new();
    for burst in 0..6 {
        let line = lines.next().expect("a line per burst").unwrap();
        let digest = line.strip_prefix(&format!("burst {burst} sha256 ")).expect("burst N sha256 HEX").to_string();
        marked.push((mark(&socket, &format!("burst {burst}")), digest));
        writeln!(stdin, "go").unwrap();
    }
    assert!(client.wait().unwrap().success(), "the client failed");
    assert_eq!(splitter.signal(libc::SIGTERM), 0);
    assert_eq!(sha256(&site.image), marked[5].1, "the image is not what the client read back");
    for (point, digest) in marked {
        let restored = site.path(&format!("restored-{point}"));
        std::fs::write(&restored, restore(&site, &point.to_string())).unwrap();
        assert_eq!(sha256(&restored), digest, "point {point} differs from the disk read back when it was marked");
    }
}

fn sha256(file: &Path) -> String {
    let output = Command::new("sha256sum").arg(file).output().expect("sha256sum runs");
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().expect("a digest").to_string()
}

/// A local vault whose filesystem is unmounted under a running splitter
/// (a tmpfs, bind-mounted at the vault's folder): the folder left behind is
/// an empty mount point, and the splitter writes nothing into it (which
/// would land on the host's own filesystem, where the vault never sees
/// it); it reports the outage while the guest writes on; once the vault is
/// mounted again it catches up, and every point restores.
#[test]
fn a_vault_whose_filesystem_is_unmounted_takes_no_writes_and_catches_up_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let vault = dir.path().join("vault");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&vault).unwrap();
    let _tmpfs = Mount::new(&["-t", "tmpfs", "-o", "size=64m", "tmpfs"], &store);
    let mounted = Mount::new(&["--bind", path(&store)], &vault);
    run(&["vault", "init", path(&vault)]).ok();
    let image = dir.path().join("disk.img");
    let mut model = standby_testkit::Random::new(65).disk_data(8 << 20);
    std::fs::write(&image, &model).unwrap();
    let socket = dir.path().join("d.sock");
    let mut splitter = Splitter::start_with(&image, path(&vault), &socket, &["--queue-mib", "1"], &[]);
    qemu_io(&socket, &["write -P 0x21 0 65536", "flush"]);
    fill(&mut model, 0, 65536, 0x21);
    let before = mark(&socket, "before the unmount");
    let at_before = model.clone();

    mounted.unmount();
    assert_eq!(std::fs::read_dir(&vault).unwrap().count(), 0, "the mount point is empty");
    let started = Instant::now();
    qemu_io(&socket, &["write -P 0x43 1048576 2097152", "write -P 0x65 6291456 65536", "flush"]);
    fill(&mut model, 1048576, 2097152, 0x43);
    fill(&mut model, 6291456, 65536, 0x65);
    assert!(started.elapsed() < Duration::from_secs(20), "guest writes waited for the vault");
    let deadline = Instant::now() + Duration::from_secs(60);
    let reported = loop {
        let state = status(&socket);
        if let Some(error) = state["error"].as_str() {
            break error.to_string();
        }
        assert!(Instant::now() < deadline, "the outage was never reported: {state}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(reported.contains("has no vault.config"), "{reported}");
    assert_eq!(std::fs::read_dir(&vault).unwrap().count(), 0, "the splitter wrote into the empty mount point");

    let _mounted = Mount::new(&["--bind", path(&store)], &vault);
    wait_caught_up(&socket);
    let after = mark(&socket, "after the remount");
    assert_eq!(splitter.signal(libc::SIGTERM), 0);
    let restore = |point: u64| {
        let out = dir.path().join(format!("restored-{point}"));
        run(&["restore", "--vault", path(&vault), "--disk", "d", "--point", &point.to_string(), path(&out), "--force"])
            .ok();
        std::fs::read(&out).unwrap()
    };
    assert!(restore(before) == at_before, "the point before the unmount changed");
    assert!(restore(after) == model, "the point after the remount differs from the disk");
    run(&["verify", "--vault", path(&vault)]).ok();
}

/// What qemu-io said running `commands` on the splitter at `socket`, and
/// whether every command succeeded.
fn qemu_io_said(socket: &Path, commands: &[&str]) -> (bool, String) {
    let mut command = Command::new("qemu-io");
    command.args(["-f", "raw"]);
    for c in commands {
        command.args(["-c", c]);
    }
    let output = command.arg(format!("nbd+unix:///d?socket={}", socket.display())).output().expect("qemu-io runs");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success() && !said.contains("failed"), said)
}

/// Waits until the splitter at `socket` has caught up with everything.
fn wait_caught_up(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = status(socket);
        if state["refreshed"] == true && state["lag_bytes"] == 0 && state["catch_up_bytes"] == 0 {
            assert!(state["error"].is_null(), "{state}");
            return;
        }
        assert!(Instant::now() < deadline, "the splitter did not catch up: {state}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The vault's filesystem filled to the last byte under a running
/// splitter: the guest's writes go on, the splitter reports the outage
/// naming it (no space left), and once space is freed it catches up;
/// every point restores and the vault verifies (no half-written object is
/// taken for a whole one).
#[test]
fn a_full_vault_filesystem_queues_and_catches_up_once_given_space() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let _tmpfs = Mount::new(&["-t", "tmpfs", "-o", "size=48m", "tmpfs"], &store);
    let vault = store.join("vault");
    run(&["vault", "init", path(&vault)]).ok();
    let image = dir.path().join("disk.img");
    let mut model = standby_testkit::Random::new(66).disk_data(8 << 20);
    std::fs::write(&image, &model).unwrap();
    let socket = dir.path().join("d.sock");
    let mut splitter = Splitter::start_with(&image, path(&vault), &socket, &["--queue-mib", "1"], &[]);
    let before = mark(&socket, "before the disk filled");
    let at_before = model.clone();

    // Everything left on the vault's filesystem taken by another file.
    let filler = store.join("filler");
    let filled = Command::new("dd").arg("if=/dev/zero").arg(format!("of={}", filler.display())).arg("bs=64k").output();
    assert!(!filled.unwrap().status.success(), "dd stops when the filesystem is full");
    let started = Instant::now();
    qemu_io(&socket, &["write -P 0x77 1048576 3145728", "flush"]);
    fill(&mut model, 1048576, 3145728, 0x77);
    assert!(started.elapsed() < Duration::from_secs(20), "guest writes waited for the vault");
    let deadline = Instant::now() + Duration::from_secs(60);
    let reported = loop {
        if let Some(error) = status(&socket)["error"].as_str() {
            break error.to_string();
        }
        assert!(Instant::now() < deadline, "the full vault was never reported");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(reported.contains("No space left on device"), "{reported}");

    std::fs::remove_file(&filler).unwrap();
    wait_caught_up(&socket);
    let after = mark(&socket, "after space was freed");
    assert_eq!(splitter.signal(libc::SIGTERM), 0);
    let restore = |point: u64| {
        let out = dir.path().join(format!("restored-{point}"));
        run(&["restore", "--vault", path(&vault), "--disk", "d", "--point", &point.to_string(), path(&out), "--force"])
            .ok();
        std::fs::read(&out).unwrap()
    };
    assert!(restore(before) == at_before, "the point before the disk filled changed");
    assert!(restore(after) == model, "the point after space came back differs from the disk");
    run(&["verify", "--vault", path(&vault)]).ok();
}

/// The image's filesystem full: a guest write that cannot be stored fails
/// to the guest with "no space" (never a silent loss), the journal never
/// holds a write the image does not, and once there is space the disk and
/// its latest point are the same again.
#[test]
fn a_full_image_filesystem_fails_the_write_to_the_guest_and_the_journal_follows_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let disks = dir.path().join("disks");
    std::fs::create_dir_all(&disks).unwrap();
    let _tmpfs = Mount::new(&["-t", "tmpfs", "-o", "size=8m", "tmpfs"], &disks);
    let vault = dir.path().join("vault");
    run(&["vault", "init", path(&vault)]).ok();
    // A sparse 32 MiB image on 8 MiB of space.
    let image = disks.join("disk.img");
    std::fs::File::create(&image).unwrap().set_len(32 << 20).unwrap();
    let socket = dir.path().join("d.sock");
    let mut splitter = Splitter::start_with(&image, path(&vault), &socket, &[], &[]);

    let (stored, said) = qemu_io_said(&socket, &["write -P 0x5a 0 16777216", "flush"]);
    assert!(!stored, "16 MiB were stored on 8 MiB: {said}");
    assert!(said.contains("No space left on device"), "the guest was not told why: {said}");

    let remount = Command::new("mount").args(["-o", "remount,size=64m"]).arg(&disks).status().unwrap();
    assert!(remount.success());
    qemu_io(&socket, &["write -P 0x6b 20971520 65536", "flush"]);
    wait_caught_up(&socket);
    mark(&socket, "after space came back");
    assert_eq!(splitter.signal(libc::SIGTERM), 0);
    let out = dir.path().join("restored");
    run(&["restore", "--vault", path(&vault), "--disk", "d", "--point", "latest", path(&out), "--force"]).ok();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&image).unwrap(), "the journal and the image differ");
}

/// Whether the splitter's intent log beside `image` names the MiB region
/// at `offset` (may hold changes the vault lacks).
fn intent_names(image: &Path, offset: u64) -> bool {
    let log = standby_splitter::default_intent_log(image);
    let size = std::fs::metadata(image).unwrap().len();
    let dirty = standby_splitter::dirty::read_intent_log(&log, size).unwrap().unwrap_or_default();
    dirty.iter().any(|&(start, length)| (start..start + length).contains(&offset))
}

/// I/O errors injected into the splitter (`STANDBY_TEST_IO_FAULTS`): an
/// image write that fails after its data reached the image fails to the
/// client and its range is re-read, so the journal follows the image; a
/// failed image read fails to the client; a failed catch-up read is tried
/// again; a failed intent-log sync fails the write before the image
/// changes, and the same write tried again is made durable first. Each is
/// counted in `splitter-status`; every point restores the image as it was
/// when it was marked.
#[test]
fn injected_image_and_intent_log_errors_fail_to_the_client_or_are_read_again() {
    let site = Site::new(8 << 20, 67);
    let socket = site.path("d.sock");
    let faults = site.path("faults");
    std::fs::write(&faults, "").unwrap();
    let environment = [("STANDBY_TEST_IO_FAULTS".to_string(), path(&faults).to_string())];
    let _splitter = Splitter::start_with(&site.image, path(&site.vault), &socket, &[], &environment);
    let mut model = std::fs::read(&site.image).unwrap();
    let failed = |commands: &[&str], what: &str| {
        let (ok, said) = qemu_io_said(&socket, commands);
        assert!(!ok && said.contains("Input/output error"), "{what} did not fail to the client: {said}");
    };
    qemu_io(&socket, &["write -P 0x11 0 65536", "flush"]);
    fill(&mut model, 0, 65536, 0x11);

    std::fs::write(&faults, "image-write 1\n").unwrap();
    failed(&["write -P 0x22 1048576 65536"], "an image write");
    fill(&mut model, 1048576, 65536, 0x22);
    assert!(std::fs::read(&site.image).unwrap() == model, "the failed write is not on the image");
    std::fs::write(&faults, "image-read 1\n").unwrap();
    failed(&["read -P 0x11 0 4096"], "an image read");
    qemu_io(&socket, &["read -P 0x11 0 65536", "read -P 0x22 1048576 65536"]);
    std::fs::write(&faults, "image-write 1\nimage-read 1\n").unwrap();
    failed(&["write -P 0x44 3145728 65536"], "an image write");
    fill(&mut model, 3145728, 65536, 0x44);
    wait_caught_up(&socket);
    let a = mark(&socket, "after image errors");
    let at_a = model.clone();
    assert!(restore(&site, &a.to_string()) == at_a, "the point differs from the image");

    // A region with no intent (its changes sealed long enough ago).
    let deadline = Instant::now() + Duration::from_secs(90);
    while intent_names(&site.image, 6 << 20) {
        assert!(Instant::now() < deadline, "the intent log kept naming the region");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::fs::write(&faults, "intent-sync 1\n").unwrap();
    failed(&["write -P 0x33 6291456 65536"], "a write whose intent could not be made durable");
    assert!(std::fs::read(&site.image).unwrap() == model, "a write without a durable intent changed the image");
    qemu_io(&socket, &["write -P 0x33 6291456 65536", "flush"]);
    fill(&mut model, 6291456, 65536, 0x33);
    assert!(intent_names(&site.image, 6 << 20), "the write went ahead without its intent in the log");
    wait_caught_up(&socket);
    let b = mark(&socket, "after an intent-log error");

    let state = status(&socket);
    assert_eq!(state["io_errors"], 5, "{state}");
    assert!(state["last_io_error"].as_str().unwrap().contains("intent-sync failed"), "{state}");
    assert_eq!(std::fs::read_to_string(&faults).unwrap(), "intent-sync 0\n", "an injected fault was not met");
    assert!(restore(&site, &a.to_string()) == at_a, "the first point changed");
    assert!(restore(&site, &b.to_string()) == model, "the latest point differs from the image");
    assert!(restore(&site, "latest") == std::fs::read(&site.image).unwrap(), "latest differs from the image");
    run(&["verify", "--vault", path(&site.vault)]).ok();
}

/// Starts `serve-disk --wait-for-vault` and waits until it serves (it
/// cannot record a point before its vault opens).
fn start_waiting_for_vault(image: &Path, vault: &Path, socket: &Path) -> Splitter {
    let child = standby_command()
        .args(["serve-disk", path(image), "--socket", path(socket), "--vault", path(vault), "--disk", "d"])
        .args(["--bookmark-interval", "1s", "--seal-interval", "200ms", "--wait-for-vault"])
        .spawn()
        .expect("serve-disk starts");
    let splitter = Splitter { child };
    let deadline = Instant::now() + Duration::from_secs(30);
    while run(&["splitter-status", "--socket", path(socket), "--json"]).code != 0 {
        assert!(Instant::now() < deadline, "the splitter never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    splitter
}

/// A splitter started while its vault cannot be opened (its folder moved
/// away; without `--wait-for-vault` that is refused at start) serves the
/// disk at once, reports the vault, records no point, and once the vault
/// is back ships what it must: only what its intent log names when the
/// journal holds the rest, the whole disk when the journal turns out
/// empty (a vault made anew while an intent log from before stands, where
/// trusting the log would leave the disk's older data out of every point).
#[test]
fn a_splitter_started_without_its_vault_serves_at_once_and_ships_what_it_must_once_it_opens() {
    for fresh_vault in [false, true] {
        let site = Site::new(8 << 20, 68);
        let socket = site.path("d.sock");
        let mut model = std::fs::read(&site.image).unwrap();
        let mut splitter = Splitter::start(&site, &socket);
        qemu_io(&socket, &["write -P 0x11 0 65536", "flush"]);
        fill(&mut model, 0, 65536, 0x11);
        mark(&socket, "before");
        assert_eq!(splitter.signal(libc::SIGTERM), 0);
        let vault = match fresh_vault {
            false => site.vault.clone(),
            true => {
                let vault = site.path("fresh-vault");
                run(&["vault", "init", path(&vault)]).ok();
                vault
            }
        };
        let gone = site.path("vault.gone");
        std::fs::rename(&vault, &gone).unwrap();
        let refused = run(&["serve-disk", path(&site.image), "--socket", path(&socket), "--vault", path(&vault)]);
        assert_eq!(refused.code, 2, "a missing vault is refused without --wait-for-vault: {}", refused.stderr);

        let started = Instant::now();
        let mut splitter = start_waiting_for_vault(&site.image, &vault, &socket);
        eprintln!("splitter: serving without its vault after {} ms", started.elapsed().as_millis());
        qemu_io(&socket, &["write -P 0x22 2097152 65536", "flush"]);
        fill(&mut model, 2097152, 65536, 0x22);
        let state = status(&socket);
        assert!(state["error"].as_str().is_some_and(|e| e.contains("cannot be opened")), "{state}");
        let refused = run(&["mark", "--socket", path(&socket), "--label", "without the vault", "--json"]);
        assert_ne!(refused.code, 0, "a point was recorded before the journal was known: {}", refused.stdout);

        std::fs::rename(&gone, &vault).unwrap();
        wait_caught_up(&socket);
        let point = mark(&socket, "after");
        let shipped = status(&socket)["bytes_shipped"].as_u64().unwrap();
        eprintln!("splitter: vault back (fresh: {fresh_vault}), {shipped} bytes shipped");
        assert_eq!(splitter.signal(libc::SIGTERM), 0);
        let out = site.path("restored");
        run(&["restore", "--vault", path(&vault), "--disk", "d", "--point", &point.to_string(), path(&out)]).ok();
        assert!(std::fs::read(&out).unwrap() == model, "the point differs from the disk (fresh vault: {fresh_vault})");
        if !fresh_vault {
            assert!(shipped < 2 << 20, "the whole disk was read again: {shipped} bytes shipped");
        }
    }
}
