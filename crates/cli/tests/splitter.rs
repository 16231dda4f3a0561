//! `serve-disk` end to end: a real NBD client (qemu-io) writes through the
//! splitter; `mark` records points; the journal restores each point, the
//! latest state, and survives kill -9 of the splitter.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::{path, run, standby_command, Site};

struct Splitter {
    child: Child,
}

impl Splitter {
    fn start(site: &Site, socket: &Path) -> Splitter {
        let child = standby_command()
            .args(["serve-disk", path(&site.image), "--socket", path(socket), "--vault", path(&site.vault)])
            .args(["--disk", "d", "--bookmark-interval", "1s", "--seal-interval", "200ms"])
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

#[test]
fn mark_without_a_splitter_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    run(&["mark", "--socket", path(&socket)]).bad_input("no splitter is running");
}
