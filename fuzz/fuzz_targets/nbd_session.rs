//! A whole NBD session from untrusted bytes: the input is what a client
//! sends (handshake, options, requests, payloads), played into the server
//! over a socket pair against a 1 MiB in-memory export. The server must
//! never panic or hang, whatever it is sent.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use standby_nbd::server::serve_stream;
use standby_nbd::{MemoryExport, ServerConfig};

fuzz_target!(|data: &[u8]| {
    let (mut client, server) = UnixStream::pair().unwrap();
    let export = Arc::new(MemoryExport::new(vec![7u8; 1 << 20]));
    let config =
        ServerConfig { name: "disk".into(), request_bytes_max: 1 << 20, workers: 2, ..ServerConfig::default() };
    let serving = std::thread::spawn(move || serve_stream(server, export, &config));
    // Drain replies on another thread so the server never blocks on a full socket.
    let mut reader = client.try_clone().unwrap();
    let draining = std::thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 16];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    });
    let _ = client.write_all(data);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = serving.join().expect("the server does not panic");
    let _ = client.shutdown(std::net::Shutdown::Both);
    draining.join().unwrap();
});
