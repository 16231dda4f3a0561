//! A host's vault service from untrusted bytes: the input is what a client
//! sends after the TLS handshake (HTTP/1.1 or HTTP/2 frames), played into
//! the service over an in-memory stream, as an authenticated host, against
//! a vault folder. The service must never panic or hang; objects may change
//! (a host may write), nothing outside the folder may.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use standby_link::server::{serve_connection, Peer};
use standby_link::vault_service::{routes, Bandwidth};
use standby_vault::backend::LocalBackend;
use tokio::io::AsyncWriteExt;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(LocalBackend::new(dir.path().join("vault")));
    standby_vault::backend::Backend::put_new(&*backend, "vault.config", bytes::Bytes::from_static(b"c")).unwrap();
    let app = routes(backend, Arc::new(Bandwidth::default()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let serving = tokio::spawn(serve_connection(server, Peer::Host { site: "primary".into() }, app));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut client, &mut sink),
        )
        .await;
        drop(client);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), serving).await;
    });
    // Nothing escaped the vault folder.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        assert_eq!(entry.unwrap().file_name(), "vault");
    }
});
