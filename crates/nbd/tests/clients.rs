//! The server against real NBD clients (qemu-img, qemu-io, nbdinfo,
//! nbdcopy) and against hand-written bad handshakes and requests.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use standby_nbd::protocol::*;
use standby_nbd::{FileExport, Server, ServerConfig, ServerStats};

struct Running {
    dir: tempfile::TempDir,
    image: PathBuf,
    socket: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    stats: Arc<ServerStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(data: &[u8], read_only: bool) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, data).unwrap();
        let socket = dir.path().join("nbd.sock");
        let export = Arc::new(FileExport::open(&image, read_only).unwrap());
        let server = Server::new(export, ServerConfig { name: "disk".into(), ..ServerConfig::default() });
        let (stop, stats) = (server.stopper(), server.stats());
        let listener = standby_nbd::server::bind_unix(&socket).unwrap();
        let thread = std::thread::spawn(move || server.serve_listener(listener).unwrap());
        Running { dir, image, socket, stop, stats, thread: Some(thread) }
    }

    fn uri(&self) -> String {
        format!("nbd+unix:///disk?socket={}", self.socket.display())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(program: &str, arguments: &[&str]) -> String {
    let output = Process::new(program).args(arguments).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {arguments:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn sample(bytes: usize) -> Vec<u8> {
    let mut data = standby_testkit::Random::new(11).disk_data(bytes);
    data[..4096].fill(0x5A);
    data
}

#[test]
fn nbdinfo_sees_size_flags_and_the_export_list() {
    let server = Running::start(&sample(8 << 20), false);
    let info: serde_json::Value = serde_json::from_str(&run("nbdinfo", &["--json", &server.uri()])).unwrap();
    let export = &info["exports"][0];
    assert_eq!(export["export-size"], 8 << 20);
    assert_eq!(export["is_read_only"], false);
    assert_eq!(export["can_flush"], true);
    assert_eq!(export["can_fua"], true);
    assert_eq!(export["can_trim"], true);
    assert_eq!(export["can_zero"], true);
    assert_eq!(export["can_multi_conn"], true);
    assert_eq!(export["block_size_maximum"], 32 << 20);
    let listed = run("nbdinfo", &["--list", "--json", &format!("nbd+unix://?socket={}", server.socket.display())]);
    assert!(listed.contains("\"export-name\": \"disk\""), "{listed}");
}

#[test]
fn qemu_img_reads_the_whole_image() {
    let data = sample(16 << 20);
    let server = Running::start(&data, false);
    let out = server.path("copy.img");
    run("qemu-img", &["convert", "-f", "raw", "-O", "raw", &server.uri(), out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn qemu_io_writes_zeroes_trims_and_flushes() {
    let data = sample(8 << 20);
    let server = Running::start(&data, false);
    run(
        "qemu-io",
        &[
            "--image-opts",
            &format!("driver=nbd,path={},export=disk", server.socket.display()),
            "-c",
            "write -P 0xab 65536 131072",
            "-c",
            "write -P 0xcd -f 1048576 4096",
            "-c",
            "write -z -u 2097152 65536",
            "-c",
            "discard 4194304 65536",
            "-c",
            "flush",
            "-c",
            "read -P 0xab 65536 131072",
            "-c",
            "read -P 0 2097152 65536",
        ],
    );
    let mut expected = data;
    expected[65536..65536 + 131072].fill(0xab);
    expected[1048576..1048576 + 4096].fill(0xcd);
    expected[2097152..2097152 + 65536].fill(0);
    let image = std::fs::read(&server.image).unwrap();
    // Trimmed bytes may read as anything: compare the rest.
    assert!(image[..4194304] == expected[..4194304]);
    assert!(image[4194304 + 65536..] == expected[4194304 + 65536..]);
}

#[test]
fn nbdcopy_writes_an_image_into_the_export_over_several_connections() {
    let server = Running::start(&vec![0u8; 32 << 20], false);
    let source = server.path("source.img");
    let data = sample(32 << 20);
    std::fs::write(&source, &data).unwrap();
    run("nbdcopy", &["--connections=4", "--requests=16", source.to_str().unwrap(), &server.uri()]);
    assert!(std::fs::read(&server.image).unwrap() == data);
    assert!(server.stats.connections.load(Ordering::Relaxed) >= 1);
    assert_eq!(server.stats.protocol_errors.load(Ordering::Relaxed), 0);
}

#[test]
fn read_only_exports_refuse_writes() {
    let server = Running::start(&sample(1 << 20), true);
    let output =
        Process::new("qemu-io").args(["-f", "raw", "-c", "write -P 1 0 4096", &server.uri()]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success() || text.contains("ermission") || text.contains("read-only"), "{text}");
    assert!(std::fs::read(&server.image).unwrap() == sample(1 << 20));
}

/// A minimal client for the abuse tests: handshake with NBD_OPT_GO.
struct RawClient {
    stream: UnixStream,
}

impl RawClient {
    fn connect(socket: &Path) -> RawClient {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut hello = [0u8; 18];
        stream.read_exact(&mut hello).unwrap();
        assert_eq!(u64::from_be_bytes(hello[0..8].try_into().unwrap()), NBD_MAGIC);
        assert_eq!(u64::from_be_bytes(hello[8..16].try_into().unwrap()), IHAVEOPT);
        stream.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes()).unwrap();
        RawClient { stream }
    }

    fn option(&mut self, option: u32, data: &[u8]) {
        let mut out = Vec::new();
        out.extend_from_slice(&IHAVEOPT.to_be_bytes());
        out.extend_from_slice(&option.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        self.stream.write_all(&out).unwrap();
    }

    /// Reads one option reply: (option, reply type, data).
    fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let mut header = [0u8; 20];
        self.stream.read_exact(&mut header).unwrap();
        assert_eq!(u64::from_be_bytes(header[0..8].try_into().unwrap()), OPTION_REPLY_MAGIC);
        let length = u32::from_be_bytes(header[16..20].try_into().unwrap());
        let mut data = vec![0u8; length as usize];
        self.stream.read_exact(&mut data).unwrap();
        (
            u32::from_be_bytes(header[8..12].try_into().unwrap()),
            u32::from_be_bytes(header[12..16].try_into().unwrap()),
            data,
        )
    }

    fn go(socket: &Path) -> RawClient {
        let mut client = RawClient::connect(socket);
        let mut data = Vec::new();
        data.extend_from_slice(&4u32.to_be_bytes());
        data.extend_from_slice(b"disk");
        data.extend_from_slice(&0u16.to_be_bytes());
        client.option(OPT_GO, &data);
        loop {
            let (_, reply, _) = client.option_reply();
            if reply == REP_ACK {
                return client;
            }
            assert_eq!(reply, REP_INFO);
        }
    }

    fn request(&mut self, command: Command, flags: u16, offset: u64, length: u32, cookie: u64) {
        let request = Request { flags, command, cookie, offset, length };
        self.stream.write_all(&request.encode()).unwrap();
    }

    /// Reads a simple reply: (cookie, error).
    fn simple_reply(&mut self) -> (u64, u32) {
        let mut reply = [0u8; 16];
        self.stream.read_exact(&mut reply).unwrap();
        assert_eq!(u32::from_be_bytes(reply[0..4].try_into().unwrap()), SIMPLE_REPLY_MAGIC);
        (u64::from_be_bytes(reply[8..16].try_into().unwrap()), u32::from_be_bytes(reply[4..8].try_into().unwrap()))
    }

    fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

#[test]
fn bad_options_get_error_replies_and_the_handshake_goes_on() {
    let server = Running::start(&sample(1 << 20), false);
    let mut client = RawClient::connect(&server.socket);
    client.option(999, b"");
    assert_eq!(client.option_reply().1, REP_ERR_UNSUP);
    client.option(OPT_GO, &[0, 0]);
    assert_eq!(client.option_reply().1, REP_ERR_INVALID);
    let mut unknown = 5u32.to_be_bytes().to_vec();
    unknown.extend_from_slice(b"other");
    unknown.extend_from_slice(&0u16.to_be_bytes());
    client.option(OPT_INFO, &unknown);
    let (_, reply, message) = client.option_reply();
    assert_eq!(reply, REP_ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&message).contains("other"));
    client.option(OPT_STARTTLS, b"");
    assert_eq!(client.option_reply().1, REP_ERR_POLICY);
    client.option(OPT_LIST, b"");
    assert_eq!(client.option_reply().1, REP_SERVER);
    assert_eq!(client.option_reply().1, REP_ACK);
    client.option(OPT_ABORT, b"");
    assert_eq!(client.option_reply().1, REP_ACK);
    assert!(client.closed());
}

#[test]
fn garbage_and_oversized_options_close_only_that_connection() {
    let server = Running::start(&sample(1 << 20), false);
    let mut garbage = RawClient::connect(&server.socket);
    garbage.stream.write_all(&[0xFF; 64]).unwrap();
    assert!(garbage.closed());
    let mut huge = RawClient::connect(&server.socket);
    let mut header = IHAVEOPT.to_be_bytes().to_vec();
    header.extend_from_slice(&OPT_GO.to_be_bytes());
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    huge.stream.write_all(&header).unwrap();
    assert!(huge.closed());
    let mut bad_flags = UnixStream::connect(&server.socket).unwrap();
    let mut hello = [0u8; 18];
    bad_flags.read_exact(&mut hello).unwrap();
    bad_flags.write_all(&0xFFFF_FFFFu32.to_be_bytes()).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(bad_flags.read(&mut byte), Ok(0) | Err(_)));
    // A well-behaved client is unaffected.
    let out = server.path("copy.img");
    run("qemu-img", &["convert", "-f", "raw", "-O", "raw", &server.uri(), out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == sample(1 << 20));
    assert!(server.stats.protocol_errors.load(Ordering::Relaxed) >= 3);
}

#[test]
fn bad_requests_get_errors_and_bad_frames_close_the_connection() {
    let size = 1u64 << 20;
    let server = Running::start(&sample(size as usize), false);
    let mut client = RawClient::go(&server.socket);
    client.request(Command::Read, 0, size - 100, 4096, 1);
    assert_eq!(client.simple_reply(), (1, EINVAL));
    client.request(Command::Read, 0, u64::MAX - 10, 4096, 2);
    assert_eq!(client.simple_reply(), (2, EINVAL));
    client.request(Command::Write, 0, size, 1, 3);
    client.stream.write_all(&[1]).unwrap();
    assert_eq!(client.simple_reply(), (3, ENOSPC));
    client.request(Command::Other(77), 0, 0, 0, 4);
    assert_eq!(client.simple_reply(), (4, EINVAL));
    client.request(Command::Flush, 1 << 9, 0, 0, 5);
    assert_eq!(client.simple_reply(), (5, EINVAL));
    client.request(Command::Read, 0, 0, 64 << 20, 6);
    assert_eq!(client.simple_reply(), (6, EINVAL));
    // The connection still works.
    client.request(Command::Read, 0, 0, 4096, 7);
    assert_eq!(client.simple_reply(), (7, 0));
    let mut data = vec![0u8; 4096];
    client.stream.read_exact(&mut data).unwrap();
    assert!(data.iter().all(|&b| b == 0x5A));
    // A write too large to skip closes the connection, having changed nothing.
    client.request(Command::Write, 0, 0, u32::MAX, 8);
    assert_eq!(client.simple_reply(), (8, EINVAL));
    assert!(client.closed());
    // A short frame followed by a hang-up ends quietly.
    let mut short = RawClient::go(&server.socket);
    short.stream.write_all(&REQUEST_MAGIC.to_be_bytes()).unwrap();
    drop(short);
    // A request with a bad magic closes the connection.
    let mut bad = RawClient::go(&server.socket);
    bad.stream.write_all(&[0u8; REQUEST_BYTES]).unwrap();
    assert!(bad.closed());
    assert!(std::fs::read(&server.image).unwrap() == sample(size as usize));
}

#[test]
fn pipelined_requests_all_get_their_own_replies() {
    let data = sample(4 << 20);
    let server = Running::start(&data, false);
    let mut client = RawClient::go(&server.socket);
    for cookie in 0..64u64 {
        client.request(Command::Read, 0, cookie * 65536, 65536, cookie);
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..64 {
        let (cookie, error) = client.simple_reply();
        assert_eq!(error, 0);
        let mut buffer = vec![0u8; 65536];
        client.stream.read_exact(&mut buffer).unwrap();
        let at = cookie as usize * 65536;
        assert!(buffer == data[at..at + 65536], "reply {cookie} carries another request's data");
        assert!(seen.insert(cookie));
    }
    client.request(Command::Disconnect, 0, 0, 0, 99);
    assert!(client.closed());
}

#[test]
fn tcp_serves_the_same_protocol() {
    let data = sample(4 << 20);
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, &data).unwrap();
    let server = Server::new(Arc::new(FileExport::open(&image, false).unwrap()), ServerConfig::default());
    let stop = server.stopper();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || server.serve_tcp(listener).unwrap());
    let uri = format!("nbd://127.0.0.1:{port}/");
    run("qemu-io", &["-f", "raw", "-c", "write -P 0x42 0 65536", &uri]);
    let out = dir.path().join("copy.img");
    run("qemu-img", &["convert", "-f", "raw", "-O", "raw", &uri, out.to_str().unwrap()]);
    let mut expected = data;
    expected[..65536].fill(0x42);
    assert!(std::fs::read(&out).unwrap() == expected);
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
}

#[test]
fn a_stale_socket_file_is_replaced_but_a_live_one_or_a_file_is_not() {
    let server = Running::start(&sample(1 << 20), false);
    let error = standby_nbd::server::bind_unix(&server.socket).unwrap_err();
    assert!(error.to_string().contains("in use"), "{error}");
    let plain = server.path("plain");
    std::fs::write(&plain, b"keep me").unwrap();
    let error = standby_nbd::server::bind_unix(&plain).unwrap_err();
    assert!(error.to_string().contains("not a socket"), "{error}");
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
    let stale = server.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    standby_nbd::server::bind_unix(&stale).unwrap();
}
