//! `standby demo`: the whole disaster-recovery journey on a real guest, in
//! a temporary deployment, narrated. Every step is the command an operator
//! would type (printed, then run as a child process of this binary), and
//! every step is checked: the guest writes numbered records to its disk and
//! files to ext4, and each copy must hold every record acknowledged before
//! its point.
//!
//! protect → drill and clean-up → failover (source shut down) → commit →
//! reprotect (only differing blocks move) → planned failback with sync
//! first → commit → reprotect → the disk checked with e2fsck.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The guest's disk.
const DISK_MIB: u64 = 64;

pub fn run(dir: Option<PathBuf>) -> anyhow::Result<u8> {
    let missing = missing_tools();
    if !missing.is_empty() {
        return Err(crate::bad_input(format!(
            "the demo runs a real guest under QEMU and needs: apt-get install {} (scripts/demo installs them)",
            missing.join(" ")
        )));
    }
    let (root, _temporary) = match dir {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
                return Err(crate::bad_input(format!("{} is not empty; choose an empty --dir", dir.display())));
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            (dir, None)
        }
        None => {
            let temporary =
                tempfile::Builder::new().prefix("standby-demo-").tempdir().context("creating a temporary directory")?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    let mut demo = Demo { root: root.clone(), home: root.join("deployment"), daemon: None };
    let outcome = demo.journey();
    demo.stop_everything();
    outcome?;
    if _temporary.is_none() {
        println!("\ndemo complete; its deployment is in {}", demo.home.display());
    } else {
        println!("\ndemo complete (pass --dir DIR to keep its deployment)");
    }
    Ok(0)
}

/// Debian packages the demo needs that this machine lacks.
fn missing_tools() -> Vec<&'static str> {
    let mut missing = Vec::new();
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("mke2fs", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
    ] {
        let found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"].iter().any(|dir| Path::new(dir).join(tool).exists());
        if !found && !missing.contains(&package) {
            missing.push(package);
        }
    }
    if standby_guest::busybox().is_err() {
        missing.push("busybox-static");
    }
    missing
}

struct Demo {
    root: PathBuf,
    home: PathBuf,
    daemon: Option<Child>,
}

fn say(text: &str) {
    println!("\n== {text}");
}

impl Demo {
    /// Runs `standby ARGS --home HOME`, printing the command and its output.
    fn standby(&self, arguments: &[&str]) -> anyhow::Result<()> {
        println!("$ standby {}", arguments.join(" "));
        let status = Command::new(std::env::current_exe()?)
            .args(arguments)
            .arg("--home")
            .arg(&self.home)
            .status()
            .context("running standby")?;
        if !status.success() {
            bail!("`standby {}` failed", arguments.join(" "));
        }
        Ok(())
    }

    /// Waits until the vault holds every write made before `moment`.
    fn wait_replicated_past(&self, moment: jiff::Timestamp) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        wait_until(Duration::from_secs(120), "replication to catch up", || {
            let output = Command::new(&exe).args(["status", "web", "--json", "--home"]).arg(&self.home).output();
            let Ok(output) = output else { return false };
            let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
            let disks = status["machines"][0]["disks"].as_array().cloned().unwrap_or_default();
            !disks.is_empty()
                && disks.iter().all(|disk| {
                    disk["latest"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()).is_some_and(|t| t >= moment)
                })
        })
    }

    fn console(&self, site: &str) -> PathBuf {
        let key = format!("web@{site}");
        self.home.join("run/machines").join(&key).join(format!("{key}.console"))
    }

    fn journey(&mut self) -> anyhow::Result<()> {
        let (guest, workload) = self.build_guest()?;
        self.deploy(&guest, &workload)?;
        let primary = self.protect_and_drill()?;
        let recovery = self.fail_over(&primary)?;
        let back = self.fail_back(&recovery)?;
        self.check_the_disk(back, &workload)
    }

    /// The test guest: Debian's kernel, a busybox initramfs (with
    /// qemu-guest-agent when the host has it), a disk.
    fn build_guest(&self) -> anyhow::Result<(Guest, standby_guest::Workload)> {
        say("building the test guest: Debian's kernel, a busybox initramfs, and a workload writing numbered records");
        let cache = guest_cache();
        let kernel = standby_guest::Kernel::debian(&cache).context("fetching the guest kernel")?;
        let busybox = standby_guest::busybox()?;
        let agent = standby_guest::GuestAgent::from_host()?;
        let initramfs = standby_guest::initramfs(&kernel, &busybox, agent.as_ref())?;
        let initramfs_path = self.root.join("initramfs.cpio");
        std::fs::write(&initramfs_path, initramfs)?;
        let disk = self.root.join("web.raw");
        standby_guest::prepare_disk(&disk, DISK_MIB << 20)?;
        let workload = standby_guest::Workload { count: 0, interval: Duration::from_millis(200), file_kib: 4 };
        println!(
            "kernel {}, {}",
            kernel.vmlinuz.display(),
            if agent.is_some() { "with qemu-guest-agent" } else { "without a guest agent (crash-consistent points)" }
        );
        Ok((Guest { vmlinuz: kernel.vmlinuz.clone(), initramfs: initramfs_path, disk }, workload))
    }

    /// A deployment with the machine defined, and its daemon running.
    fn deploy(&mut self, guest: &Guest, workload: &standby_guest::Workload) -> anyhow::Result<()> {
        say("a deployment: SQLite state, a primary and a recovery site, the recovery site's vault");
        println!("$ standby init {}", self.home.display());
        let status = Command::new(std::env::current_exe()?).arg("init").arg(&self.home).status()?;
        if !status.success() {
            bail!("standby init failed");
        }
        let (vmlinuz, initrd, disk_path) = (path(&guest.vmlinuz)?, path(&guest.initramfs)?, path(&guest.disk)?);
        let append = workload.cmdline();
        say("one NIC on the primary site's LAN: it lands on recovery-lan after a failover, drills on recovery-test");
        self.standby(&[
            "machine",
            "add",
            "web",
            "--disk",
            disk_path,
            "--kernel",
            vmlinuz,
            "--initrd",
            initrd,
            "--append",
            &append,
            "--nic",
            "primary-lan",
        ])?;
        say("the daemon runs both sites' agents; lifecycle commands talk to it");
        println!("$ standby serve --home {} &", self.home.display());
        let log = std::fs::File::create(self.root.join("daemon.log"))?;
        self.daemon = Some(
            Command::new(std::env::current_exe()?)
                .arg("serve")
                .arg("--home")
                .arg(&self.home)
                .stderr(log)
                .spawn()
                .context("starting the daemon")?,
        );
        let socket = self.home.join("run/standby.sock");
        wait_until(Duration::from_secs(60), "the daemon to listen", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        })
    }

    /// Started, protected while it runs, drilled; returns its console.
    fn protect_and_drill(&mut self) -> anyhow::Result<PathBuf> {
        say("start the machine; it boots and writes a record every 200 ms");
        self.standby(&["machine", "start", "web"])?;
        let primary = self.console("primary");
        wait_for_record(&primary, 3)?;

        say("protect it while it runs: its disk moves onto a splitter without a restart, then initial replication");
        self.standby(&["protect", "web"])?;
        wait_for_record(&primary, acknowledged(&primary) + 5)?;
        self.standby(&["status", "web"])?;

        say("a drill: a copy boots at the recovery site from the vault, at once, isolated, while replication goes on");
        let before = acknowledged(&primary);
        self.wait_replicated_past(jiff::Timestamp::now())?;
        self.standby(&["test-failover", "web"])?;
        let drill = self.console("drill");
        let found = found_at_boot(&drill)?;
        println!(
            "the drill copy found {found} records on its disk ({before} were acknowledged before the vault's latest)"
        );
        if found < before {
            bail!("the drill lost records: {found} found, {before} acknowledged");
        }
        self.standby(&["cleanup-test-failover", "web"])?;
        Ok(primary)
    }

    /// Failed over with the source shut down, committed, reprotected;
    /// returns the recovery VM's console.
    fn fail_over(&mut self, primary: &Path) -> anyhow::Result<PathBuf> {
        say("disaster: fail over to the recovery site, shutting the source down and shipping its last writes");
        self.standby(&["failover", "web", "--shutdown-source"])?;
        let at_source = acknowledged(primary);
        let recovery = self.console("recovery");
        let found = found_at_boot(&recovery)?;
        println!("the recovery VM found {found} records; the source acknowledged {at_source}: nothing lost");
        if found < at_source {
            bail!("the failover lost records: {found} found, {at_source} acknowledged");
        }
        self.standby(&["commit", "web"])?;

        say("reprotect: replicate back to the primary site, moving only the blocks that differ");
        wait_for_record(&recovery, found + 5)?;
        self.standby(&["reprotect", "web"])?;
        Ok(recovery)
    }

    /// Failed back with sync first, committed, reprotected; returns the
    /// records found back at the primary site.
    fn fail_back(&mut self, recovery: &Path) -> anyhow::Result<u64> {
        say("failback, planned: keep replicating, then stop, ship the last writes, start at the primary site");
        self.standby(&["planned-failover", "web", "--sync-first"])?;
        wait_for_record(recovery, acknowledged(recovery) + 3)?;
        self.standby(&["complete-failover", "web"])?;
        let at_recovery = acknowledged(recovery);
        let back = found_at_boot(&primary_after_failback(self))?;
        println!("back at the primary site with {back} records; {at_recovery} were acknowledged: nothing lost");
        if back < at_recovery {
            bail!("the failback lost records: {back} found, {at_recovery} acknowledged");
        }
        self.standby(&["commit", "web"])?;
        self.standby(&["reprotect", "web"])?;
        self.standby(&["status", "web"])?;
        Ok(back)
    }

    /// The machine stopped and its disk checked: every acknowledged record
    /// and file, a clean ext4.
    fn check_the_disk(&mut self, back: u64, workload: &standby_guest::Workload) -> anyhow::Result<()> {
        say("stop the machine and check its disk: every acknowledged record and file, a clean ext4");
        let console = primary_after_failback(self);
        wait_for_record(&console, back + 3)?;
        self.standby(&["machine", "stop", "web"])?;
        let image = self.home.join("sites/primary/disks/web-disk0.raw");
        let report = standby_guest::check_disk(&image, workload.file_kib)?;
        let acknowledged = acknowledged(&console);
        println!("{report}; {acknowledged} acknowledged");
        if report.complete_through < acknowledged {
            bail!("the disk lacks acknowledged records");
        }
        self.standby(&["jobs"])?;
        Ok(())
    }

    fn stop_everything(&mut self) {
        // Machines and agents outlive the daemon: stop them too, and wait
        // until they are gone (a splitter ships what it holds first).
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        let running =
            || Command::new("pgrep").arg("-f").arg(self.home.as_os_str()).output().is_ok_and(|o| !o.stdout.is_empty());
        let _ = Command::new("pkill").arg("-f").arg(self.home.as_os_str()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if running() {
            let _ = Command::new("pkill").arg("-9").arg("-f").arg(self.home.as_os_str()).status();
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// After a failback the machine runs as `web@primary` again; its console
/// file starts afresh with that boot.
fn primary_after_failback(demo: &Demo) -> PathBuf {
    demo.console("primary")
}

/// Where the guest's kernel is kept between runs: `$STANDBY_GUEST_CACHE`,
/// else `~/.cache/standby/guest`.
fn guest_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("STANDBY_GUEST_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("standby").join("guest")
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}

fn console_text(console: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(console).unwrap_or_default()).replace("\r\n", "\n")
}

fn acknowledged(console: &Path) -> u64 {
    standby_guest::acknowledged(&console_text(console)).unwrap_or(0)
}

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} after {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn wait_for_record(console: &Path, record: u64) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(180), &format!("record {record} on {}", console.display()), || {
        acknowledged(console) >= record
    })
}

/// The records a booted copy found on its disk ("ready, next record N").
fn found_at_boot(console: &Path) -> anyhow::Result<u64> {
    let marker = "standby-guest: ready, next record ";
    wait_until(Duration::from_secs(180), &format!("the guest to boot ({})", console.display()), || {
        console_text(console).contains(marker)
    })?;
    let text = console_text(console);
    let line = text.lines().rfind(|l| l.contains(marker)).unwrap_or_default();
    Ok(line.rsplit(' ').next().unwrap_or("1").trim().parse::<u64>().unwrap_or(1) - 1)
}

/// The test guest's files.
struct Guest {
    vmlinuz: PathBuf,
    initramfs: PathBuf,
    disk: PathBuf,
}
