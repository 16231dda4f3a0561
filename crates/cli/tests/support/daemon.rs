//! A deployment's daemon (`standby serve`) under test, and its machines' consoles.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use standby_testkit::wait_for_console;

use super::{path, run, standby_command};

pub struct Daemon(Child);

impl Daemon {
    pub fn start(home: &Path) -> Daemon {
        Daemon::start_with(home, &[])
    }

    /// With extra environment variables (e.g. a short retention interval).
    pub fn start_with(home: &Path, environment: &[(&str, &str)]) -> Daemon {
        let child = standby_command()
            .args(["serve", "--home", path(home)])
            .env("STANDBY_ACCEL", "tcg")
            .envs(environment.iter().copied())
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

/// The workload the lifecycle tests run: a record every 100 ms, 4 KiB files.
pub fn test_workload() -> standby_guest::Workload {
    standby_guest::Workload { count: 0, interval: Duration::from_millis(100), file_kib: 4 }
}

/// Defines machine `name` in the deployment at `home`: the project's test
/// guest running `workload` on a fresh 64 MiB disk. Returns the disk's
/// image at the primary site.
pub fn add_guest_machine(home: &Path, name: &str, workload: &standby_guest::Workload) -> std::path::PathBuf {
    add_guest_machine_with(home, name, &workload.cmdline())
}

/// Like [`add_guest_machine`] with the kernel command line `append`.
pub fn add_guest_machine_with(home: &Path, name: &str, append: &str) -> std::path::PathBuf {
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
        append,
        "--home",
        path(home),
    ])
    .ok();
    std::fs::remove_file(&source).unwrap();
    home.join(format!("sites/primary/disks/{name}-disk0.raw"))
}

/// The highest record a guest's console says was acknowledged.
pub fn acknowledged(console: &str) -> u64 {
    standby_guest::acknowledged(&standby_testkit::console_text(Path::new(console)))
        .expect("the guest acknowledged records")
}

/// A deployment in `root/d` with machine `web` (the test guest) running
/// under a daemon and protected. Returns the deployment's folder, the
/// machine's image at the primary site, and the daemon.
pub fn protected_guest(root: &Path) -> (std::path::PathBuf, std::path::PathBuf, Daemon) {
    let home = root.join("d");
    run(&["init", path(&home)]).ok();
    let image = add_guest_machine(&home, "web", &test_workload());
    let daemon = Daemon::start(&home);
    run(&["machine", "start", "web", "--home", path(&home)]).ok();
    wait_for(&console_of(&home, "web"), "standby-guest: record 3\n");
    run(&["protect", "web", "--home", path(&home)]).ok();
    (home, image, daemon)
}
