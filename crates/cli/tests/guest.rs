//! A real Linux guest (Debian's kernel under `qemu-system-x86_64 -accel
//! tcg`) whose virtio disk is the splitter's NBD socket, writing records and
//! files to ext4. Every bookmark, every mark and random times restore to a
//! disk that `e2fsck -fn` passes (after the ext4 journal is replayed, as a
//! mount would) and that holds every record acknowledged before the point.

mod support;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use standby_guest::{check_disk, Workload};
use standby_testkit::{test_guest, Qemu};
use support::{path, run, standby_command};

const FILE_KIB: u64 = 8;

struct Splitter(Child);

impl Splitter {
    fn start(image: &Path, vault: &Path, socket: &Path) -> Splitter {
        let child = standby_command()
            .args(["serve-disk", path(image), "--socket", path(socket), "--vault", path(vault), "--disk", "d"])
            .args(["--bookmark-interval", "1s", "--seal-interval", "200ms"])
            .spawn()
            .expect("serve-disk starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while run(&["splitter-status", "--socket", path(socket)]).code != 0 {
            assert!(Instant::now() < deadline, "the splitter never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        Splitter(child)
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        assert!(self.0.wait().unwrap().success(), "serve-disk stops cleanly");
    }
}

impl Drop for Splitter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn restore(vault: &Path, point: &str, out: &Path) {
    run(&["restore", "--vault", path(vault), "--disk", "d", "--point", point, path(out), "--force"]).ok();
}

#[test]
fn a_linux_guest_writes_ext4_through_the_splitter_and_every_point_restores_clean() {
    let guest = test_guest();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let vault = dir.path().join("vault");
    let socket = dir.path().join("d.sock");
    standby_guest::prepare_disk(&image, 96 << 20).unwrap();
    run(&["vault", "init", path(&vault)]).ok();
    let splitter = Splitter::start(&image, &vault, &socket);

    let workload = Workload { count: 24, interval: Duration::from_millis(150), file_kib: FILE_KIB };
    let drive = format!("nbd+unix:///d?socket={}", socket.display());
    let mut qemu = Qemu::boot(&guest, &workload, &drive);
    // Marks taken once the guest has acknowledged a record: restoring the
    // mark must give back at least that record and its file.
    let mut marks = Vec::new();
    for record in [3, 11, 19] {
        qemu.wait_for(&format!("standby-guest: record {record}\n"), Duration::from_secs(120));
        let reply = run(&["mark", "--socket", path(&socket), "--label", &format!("after {record}"), "--json"]).ok();
        marks.push((record, reply.json()["point"].as_u64().expect("a point id")));
    }
    qemu.wait_for("standby-guest: stopped cleanly after record 24", Duration::from_secs(120));
    qemu.wait_exit(Duration::from_secs(30));
    splitter.stop();

    let listing = run(&["points", "--vault", path(&vault), "--disk", "d", "--json"]).ok().json();
    let points = listing["points"].as_array().unwrap();
    assert!(points.len() >= 8, "bookmarks every second over the run: {listing}");
    let out = dir.path().join("restored.img");

    for (record, point) in &marks {
        restore(&vault, &point.to_string(), &out);
        let report = check_disk(&out, FILE_KIB).unwrap_or_else(|e| panic!("mark after record {record}: {e}"));
        assert!(report.complete_through >= *record, "mark after record {record}: {report}");
    }

    // Every bookmark, in order: clean, and never fewer records than before.
    let mut previous = 0;
    for point in points {
        let id = point["id"].as_u64().unwrap().to_string();
        restore(&vault, &id, &out);
        let report = check_disk(&out, FILE_KIB).unwrap_or_else(|e| panic!("point {id}: {e}"));
        assert!(report.complete_through >= previous, "point {id} went back in time: {report}");
        previous = report.complete_through;
    }

    // Times between bookmarks (any moment in the window is a point).
    let times: Vec<jiff::Timestamp> = points.iter().map(|p| p["time"].as_str().unwrap().parse().unwrap()).collect();
    for pair in times.windows(2).step_by(3) {
        let middle = (pair[0].as_microsecond() + pair[1].as_microsecond()) / 2;
        let middle = jiff::Timestamp::from_microsecond(middle).unwrap();
        restore(&vault, &middle.to_string(), &out);
        check_disk(&out, FILE_KIB).unwrap_or_else(|e| panic!("time {middle}: {e}"));
    }

    restore(&vault, "latest", &out);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&image).unwrap(), "latest equals the image");
    let report = check_disk(&image, FILE_KIB).unwrap();
    assert_eq!(report.complete_through, 24, "every record and file is on the image: {report}");
}
