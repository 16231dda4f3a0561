//! A deployment's daemon (`standby serve`) under test, and its machines' consoles.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use standby_testkit::wait_for_console;

use super::{path, run, standby_command};

pub struct Daemon(Child);

impl Daemon {
    pub fn start(home: &Path) -> Daemon {
        let child = standby_command()
            .args(["serve", "--home", path(home)])
            .env("STANDBY_ACCEL", "tcg")
            .spawn()
            .expect("standby serve starts");
        let socket = home.join("run/standby.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the daemon never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon(child)
    }

    pub fn terminate(mut self) -> i32 {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for(console: &str, text: &str) {
    wait_for_console(Path::new(console), text, Duration::from_secs(120));
}

pub fn console_of(home: &Path, name: &str) -> String {
    let listed = run(&["machine", "list", "--home", path(home), "--json"]).ok().json();
    let machine = listed["machines"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap().clone();
    let console = machine["runtime"]["console"].as_str().expect("a running machine has a console").to_string();
    console
}

/// Defines machine `name` in the deployment at `home`: the project's test
/// guest running `workload` on a fresh 64 MiB disk. Returns the disk's
/// image at the primary site.
pub fn add_guest_machine(home: &Path, name: &str, workload: &standby_guest::Workload) -> std::path::PathBuf {
    let guest = standby_testkit::test_guest();
    let source = home.join(format!("{name}-source.raw"));
    standby_guest::prepare_disk(&source, 64 << 20).unwrap();
    run(&[
        "machine",
        "add",
        name,
        "--disk",
        path(&source),
        "--kernel",
        path(&guest.vmlinuz),
        "--initrd",
        path(&guest.initramfs),
        "--append",
        &workload.cmdline(),
        "--home",
        path(home),
    ])
    .ok();
    std::fs::remove_file(&source).unwrap();
    home.join(format!("sites/primary/disks/{name}-disk0.raw"))
}
