//! A deployment's daemon (`standby serve`) under test, and its machines' consoles.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use standby_testkit::wait_for_console;

use super::{path, run, standby_command};

pub struct Daemon(Child);

impl Daemon {
    pub fn start(home: &Path) -> Daemon {
        Daemon::start_with(home, &[] as &[(&str, &str)])
    }

    /// With extra environment variables (e.g. a short retention interval).
    pub fn start_with(home: &Path, environment: &[(impl AsRef<OsStr>, impl AsRef<OsStr>)]) -> Daemon {
        Daemon::start_in(home, None, environment)
    }

    /// In network namespace `netns` when given (`ip netns exec`).
    pub fn start_in(
        home: &Path,
        netns: Option<&str>,
        environment: &[(impl AsRef<OsStr>, impl AsRef<OsStr>)],
    ) -> Daemon {
        let mut command = match netns {
            Some(netns) => {
                let mut command = std::process::Command::new("ip");
                command.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_standby")]);
                command
            }
            None => standby_command(),
        };
        command.envs(environment.iter().map(|(key, value)| (key, value)));
        Daemon::start_command(home, command)
    }

    /// `command` (the `standby` binary, or what runs it) with `serve --home
    /// HOME` added; waits until it serves.
    pub fn start_command(home: &Path, command: std::process::Command) -> Daemon {
        Daemon::start_serving(home, command, &[])
    }

    /// [`Daemon::start_command`] with `serve`'s flags `flags` (as `--listen ADDR`).
    pub fn start_serving(home: &Path, mut command: std::process::Command, flags: &[&str]) -> Daemon {
        let child = command
            .args(["serve", "--home", path(home)])
            .args(flags)
            .env("STANDBY_ACCEL", "tcg")
            .spawn()
            .expect("standby serve starts");
        reap_at_exit(home);
        let socket = home.join("run/standby.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the daemon never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon(child)
    }

    /// Waits up to `timeout` for the daemon to end by itself (a test's
    /// `STANDBY_TEST_CRASH_AT`); whether it did.
    pub fn wait_dead(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.0.try_wait().expect("the daemon can be waited for").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
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

/// Deployments whose processes the test process kills when it exits.
static DEPLOYMENTS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Makes sure nothing a test's deployment started outlives the test: when
/// the test process exits (pass or fail), every process whose command line
/// names the deployment's folder (QEMU, splitters, exports, daemons) is
/// killed. Not in `Daemon`'s drop, which stands for a daemon killed -9 and
/// must leave the machines running for the next daemon to adopt.
fn reap_at_exit(home: &Path) {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    extern "C" fn reap() {
        let homes = DEPLOYMENTS.lock().map(|homes| homes.clone()).unwrap_or_default();
        let Ok(processes) = std::fs::read_dir("/proc") else { return };
        for entry in processes.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline);
            if pid != std::process::id() as i32 && homes.iter().any(|home| cmdline.contains(home.as_str())) {
                // SAFETY: kill(2) with a pid read from /proc.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    DEPLOYMENTS.lock().unwrap().push(path(home).to_string());
    // SAFETY: registers a plain function with no captured state.
    REGISTERED.call_once(|| unsafe {
        libc::atexit(reap);
    });
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
    add_guest_machine_args(home, name, append, &[])
}

/// Like [`add_guest_machine_with`] with more `machine add` arguments.
pub fn add_guest_machine_args(home: &Path, name: &str, append: &str, more: &[&str]) -> std::path::PathBuf {
    let guest = standby_testkit::test_guest();
    let source = home.join(format!("{name}-source.raw"));
    standby_guest::prepare_disk(&source, 64 << 20).unwrap();
    let mut arguments = vec![
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
    ];
    arguments.extend_from_slice(more);
    run(&arguments).ok();
    std::fs::remove_file(&source).unwrap();
    home.join(format!("sites/primary/disks/{name}-disk0.raw"))
}

/// Waits until the vault holds every write machine `name` made before `moment`.
pub fn wait_replicated_past(home: &str, name: &str, moment: jiff::Timestamp) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = run(&["status", name, "--home", home, "--json"]).ok().json();
        let latest =
            status["machines"][0]["disks"][0]["latest"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if latest.is_some_and(|latest| latest >= moment) {
            return;
        }
        assert!(Instant::now() < deadline, "replication never caught up with {moment}: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
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

/// Waits up to a minute until a restore of `disk`'s latest point from the
/// vault at `vault` equals `image` byte for byte (a splitter ships a
/// stopped guest's last writes within a second or two); panics naming
/// `what` otherwise, after keeping the deployment at `home` and the
/// restored image (`STANDBY_KEEP_FAILED`).
pub fn wait_replica_equals(home: &Path, vault: &Path, disk: &str, image: &Path, what: &str) {
    let restored = home.with_file_name(format!("{disk}.restored.raw"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = std::fs::remove_file(&restored);
        super::run_on_vault("restore", vault, &["--disk", disk, "--point", "latest", path(&restored)]).ok();
        if std::fs::read(&restored).unwrap() == std::fs::read(image).unwrap() {
            let _ = std::fs::remove_file(&restored);
            return;
        }
        if Instant::now() > deadline {
            super::keep_failed(home, &[&restored]);
            panic!("{what}: the replica in {} differs from {}", vault.display(), image.display());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Waits until the newest job is `command` with step `step` past pending.
pub fn wait_for_step(home: &str, command: &str, step: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let jobs = run(&["jobs", "--home", home, "--json"]).ok().json();
        let job = &jobs["jobs"][0];
        if job["command"] == command && job["steps"][step]["state"] != "pending" {
            return;
        }
        assert!(Instant::now() < deadline, "the {command} job never reached step {step}: {jobs}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the process whose pid `pid_file` holds runs.
pub fn pid_alive(pid_file: &Path) -> bool {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}
