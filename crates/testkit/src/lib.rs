//! Test support shared by the workspace's integration tests: a real Azurite
//! server per test, deterministic pseudo-random data, and snapshots of a
//! directory tree (to prove a failed command left nothing behind).
//!
//! Only tests depend on this crate.

pub mod seaweedfs;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (where `tools/` and `scripts/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root exists")
}

/// A running Azurite blob server on a free loopback port, stopped on drop.
pub struct Azurite {
    child: Child,
    pub endpoint: String,
    binary: PathBuf,
    port: u16,
    storage: tempfile::TempDir,
    /// The network namespace it runs in and its address there, when not
    /// the test's own loopback.
    netns: Option<(String, String)>,
}

impl Azurite {
    /// Starts Azurite. Panics with the fix when it is not installed: the
    /// README's test command (`scripts/test`) installs it.
    pub fn start() -> Azurite {
        Azurite::start_at(None)
    }

    /// Starts Azurite in network namespace `netns` listening on `host` (an
    /// address of that namespace): a vault at another site.
    pub fn start_in(netns: &str, host: &str) -> Azurite {
        Azurite::start_at(Some((netns.to_string(), host.to_string())))
    }

    fn start_at(netns: Option<(String, String)>) -> Azurite {
        let binary = std::env::var_os("STANDBY_AZURITE_BLOB")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("tools/node_modules/.bin/azurite-blob"));
        assert!(
            binary.exists(),
            "Azurite is not installed at {}: run scripts/test (or npm ci --prefix tools)",
            binary.display()
        );
        let storage = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let child = spawn_azurite(&binary, port, storage.path(), netns.as_ref());
        let host = netns.as_ref().map_or("127.0.0.1", |(_, host)| host.as_str());
        Azurite { child, endpoint: format!("http://{host}:{port}"), binary, port, storage, netns }
    }

    /// Starts a stopped server again, on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_azurite(&self.binary, self.port, self.storage.path(), self.netns.as_ref());
    }

    pub fn create_container(&self, name: &str) {
        let status = in_netns(self.netns.as_ref(), "python3")
            .arg(workspace_root().join("scripts/azurite-container.py"))
            .args([&self.endpoint, name])
            .status()
            .expect("python3 runs");
        assert!(status.success(), "creating container {name} in Azurite failed");
    }

    /// Environment that points `standby` (and `object_store`) at this server.
    pub fn environment(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), self.endpoint.clone()),
        ]
    }

    /// Freezes the server (SIGSTOP) at once, as a network partition would:
    /// requests in flight and new ones get no answer until [`Azurite::thaw`].
    /// Unlike [`Azurite::stop`], which lets it finish what it is answering,
    /// nothing more is stored from this moment.
    pub fn freeze(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    /// Lets a frozen server go on.
    pub fn thaw(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// Stops the server (to test outages) the way an operator would, so it
    /// saves what it has acknowledged (a killed Azurite loses recent blobs,
    /// which Azure itself never does); `drop` does the same.
    pub fn stop(&mut self) {
        self.thaw();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program`, run in network namespace `netns` when given (`ip netns exec`).
fn in_netns(netns: Option<&(String, String)>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match netns {
        Some((netns, _)) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn spawn_azurite(binary: &Path, port: u16, storage: &Path, netns: Option<&(String, String)>) -> Child {
    let host = netns.map_or("127.0.0.1", |(_, host)| host.as_str());
    let child = in_netns(netns, binary)
        .args(["--blobHost", host, "--blobPort", &port.to_string(), "--silent", "--skipApiVersionCheck"])
        .arg("--location")
        .arg(storage)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Azurite starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let listening = || match netns {
        None => TcpStream::connect(("127.0.0.1", port)).is_ok(),
        Some(_) => in_netns(netns, "bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/{host}/{port}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success()),
    };
    while !listening() {
        assert!(Instant::now() < deadline, "Azurite did not start listening on port {port} within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nothing listens on (right now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// SplitMix64: small, seedable, good enough to make test data.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Random(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    pub fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// Disk-like data: a mix of random, repetitive (compressible) and zero regions.
    pub fn disk_data(&mut self, bytes: usize) -> Vec<u8> {
        let mut data = vec![0u8; bytes];
        let mut offset = 0;
        while offset < bytes {
            let len = (4096 * (1 + self.below(64)) as usize).min(bytes - offset);
            match self.below(3) {
                0 => self.fill(&mut data[offset..offset + len]),
                1 => {
                    let text = format!("record {offset} of a test disk; ");
                    for (i, byte) in data[offset..offset + len].iter_mut().enumerate() {
                        *byte = text.as_bytes()[i % text.len()];
                    }
                }
                _ => {}
            }
            offset += len;
        }
        data
    }
}

/// Every file under `root` with its contents: compare two snapshots to prove
/// a command changed nothing.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&directory) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.insert(path.clone(), Vec::new());
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    files
}

/// The project's test guest: Debian's kernel (fetched once into
/// `target/standby-guest`) and the initramfs built from it.
pub struct TestGuest {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
}

/// Builds (once per workspace; several test processes may ask at once) the
/// test guest. Panics with the fix when a part is missing: the README's test
/// command installs busybox-static and qemu-system-x86.
pub fn test_guest() -> TestGuest {
    let cache = workspace_root().join("target/standby-guest");
    let kernel = standby_guest::Kernel::debian(&cache).unwrap_or_else(|e| panic!("test guest kernel: {e}"));
    let busybox = standby_guest::busybox().unwrap_or_else(|e| panic!("test guest: {e}"));
    let agent = standby_guest::GuestAgent::from_host().unwrap_or_else(|e| panic!("test guest: {e}"));
    let initramfs =
        standby_guest::initramfs(&kernel, &busybox, agent.as_ref()).unwrap_or_else(|e| panic!("test guest: {e}"));
    // One file per content, written once: concurrent tests never see a
    // half-written initramfs.
    let name = &blake3::hash(&initramfs).to_hex()[..16];
    let path = cache.join(format!("initramfs-{name}.cpio"));
    if !path.exists() {
        let partial = cache.join(format!(".initramfs-{}.partial", std::process::id()));
        std::fs::write(&partial, &initramfs).expect("write the initramfs");
        std::fs::rename(&partial, &path).expect("publish the initramfs");
    }
    TestGuest { vmlinuz: kernel.vmlinuz, initramfs: path }
}

/// A guest's serial console log, with its \r\n line ends made \n (empty
/// while the file does not exist yet).
pub fn console_text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).replace("\r\n", "\n")
}

/// Waits until the console log at `path` shows `text`; panics with the
/// console after `timeout`.
pub fn wait_for_console(path: &Path, text: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let console = console_text(path);
        if console.contains(text) {
            return;
        }
        assert!(Instant::now() < deadline, "the guest did not print {text:?} within {timeout:?}; console:\n{console}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A QEMU guest under software emulation (TCG), its serial console in a
/// file, killed on drop.
pub struct Qemu {
    child: Child,
    pub console: PathBuf,
    _directory: tempfile::TempDir,
}

impl Qemu {
    /// Boots `guest` with `workload`, its one virtio disk opened from
    /// `drive` (a QEMU `-drive file=` value: a path or an NBD URL).
    pub fn boot(guest: &TestGuest, workload: &standby_guest::Workload, drive: &str) -> Qemu {
        let directory = tempfile::tempdir().expect("temporary directory");
        let console = directory.path().join("console.log");
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "256", "-smp", "1", "-display", "none", "-no-reboot", "-nodefaults"])
            .arg("-kernel")
            .arg(&guest.vmlinuz)
            .arg("-initrd")
            .arg(&guest.initramfs)
            .args(["-append", &workload.cmdline()])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(["-drive", &format!("file={drive},format=raw,if=virtio,cache=none,discard=unmap")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 starts (scripts/test installs qemu-system-x86)");
        Qemu { child, console, _directory: directory }
    }

    pub fn console_text(&self) -> String {
        console_text(&self.console)
    }

    /// Waits until the console shows `text`; panics with the console after `timeout`.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let console = self.console_text();
            if console.contains(text) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the guest exited ({status}) before printing {text:?}; console:\n{console}");
            }
            assert!(
                Instant::now() < deadline,
                "the guest did not print {text:?} within {timeout:?}; console:\n{console}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for QEMU to exit (the guest powered off); returns its stderr.
    pub fn wait_exit(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                assert!(status.success(), "QEMU failed ({status}): {stderr}\nconsole:\n{}", self.console_text());
                return stderr;
            }
            assert!(
                Instant::now() < deadline,
                "the guest did not power off within {timeout:?}; console:\n{}",
                self.console_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bootable disk image of the test guest, as an operator's own machine
/// would bring one: a FAT filesystem with SYSLINUX in its boot sector (the
/// BIOS boots it from the first disk, no `-kernel` involved), holding the
/// kernel, the initramfs and a `syslinux.cfg` booting them with `append`.
/// Needs syslinux, mtools and dosfstools (the README's test command
/// installs them).
pub fn bootable_image(path: &Path, append: &str) {
    let guest = test_guest();
    let run = |program: &str, arguments: &[&std::ffi::OsStr]| {
        let output = std::process::Command::new(program)
            .args(arguments)
            .output()
            .unwrap_or_else(|e| panic!("{program} (apt-get install syslinux mtools dosfstools): {e}"));
        assert!(output.status.success(), "{program}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let image = path.as_os_str();
    std::fs::File::create(path).and_then(|f| f.set_len(64 << 20)).expect("create the boot image");
    run("/usr/sbin/mkfs.vfat", &["-n".as_ref(), "BOOT".as_ref(), image]);
    run("syslinux", &["--install".as_ref(), image]);
    let config = path.with_extension("syslinux.cfg");
    std::fs::write(
        &config,
        format!(
            "DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL vmlinuz\n  INITRD initrd\n  APPEND {append}\n"
        ),
    )
    .expect("write syslinux.cfg");
    for (from, to) in [(&guest.vmlinuz, "::vmlinuz"), (&guest.initramfs, "::initrd"), (&config, "::syslinux.cfg")] {
        run("mcopy", &["-i".as_ref(), image, from.as_os_str(), to.as_ref()]);
    }
    std::fs::remove_file(&config).expect("remove the staged syslinux.cfg");
}
