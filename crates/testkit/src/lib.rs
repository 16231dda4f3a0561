//! Test support shared by the workspace's integration tests: a real Azurite
//! server per test, deterministic pseudo-random data, and snapshots of a
//! directory tree (to prove a failed command left nothing behind).
//!
//! Only tests depend on this crate.

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
}

impl Azurite {
    /// Starts Azurite. Panics with the fix when it is not installed: the
    /// README's test command (`scripts/test`) installs it.
    pub fn start() -> Azurite {
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
        let child = spawn_azurite(&binary, port, storage.path());
        Azurite { child, endpoint: format!("http://127.0.0.1:{port}"), binary, port, storage }
    }

    /// Starts a stopped server again, on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_azurite(&self.binary, self.port, self.storage.path());
    }

    pub fn create_container(&self, name: &str) {
        let status = Command::new("python3")
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

    /// Stops the server (to test outages) the way an operator would, so it
    /// saves what it has acknowledged (a killed Azurite loses recent blobs,
    /// which Azure itself never does); `drop` does the same.
    pub fn stop(&mut self) {
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

fn spawn_azurite(binary: &Path, port: u16, storage: &Path) -> Child {
    let child = Command::new(binary)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--silent", "--skipApiVersionCheck"])
        .arg("--location")
        .arg(storage)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Azurite starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
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
