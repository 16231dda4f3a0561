//! The wire's decoders and the vault service on random bytes (the fuzz
//! targets `vault_wire` and `vault_requests` run these for longer): no
//! panic, no hang, nothing written outside the vault folder.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use standby_link::server::{serve_connection, Peer};
use standby_link::vault_service::{parse_range, routes, Bandwidth, Listing, WireError};
use standby_vault::backend::LocalBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Plays `data` into the vault service as a host would send it; returns
/// what the service answered.
fn play(data: &[u8], dir: &std::path::Path) -> Vec<u8> {
    let backend = Arc::new(LocalBackend::new(dir.join("vault")));
    if !dir.join("vault/vault.config").exists() {
        standby_vault::backend::Backend::put_new(&*backend, "vault.config", bytes::Bytes::from_static(b"c")).unwrap();
    }
    let app = routes(backend, Arc::new(Bandwidth::default()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let serving = tokio::spawn(serve_connection(server, Peer::Host { site: "primary".into() }, app));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
            .await
            .expect("the service answers or closes")
            .ok();
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the connection ends").unwrap();
        answer
    })
}

fn escaped(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "vault")
        .collect()
}

#[test]
fn requests_are_answered_and_paths_stay_in_the_vault() {
    let dir = tempfile::tempdir().unwrap();
    let put = b"PUT /v1/vault/objects/a/b HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello";
    let answer = String::from_utf8(play(put, dir.path())).unwrap();
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(std::fs::read(dir.path().join("vault/a/b")).unwrap(), b"hello");
    for path in ["/v1/vault/objects/../escape", "/v1/vault/objects/%2e%2e/escape", "/v1/vault/objects/a//b"] {
        let request = format!("PUT {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx");
        let answer = String::from_utf8(play(request.as_bytes(), dir.path())).unwrap();
        assert!(!answer.starts_with("HTTP/1.1 2"), "{path}: {answer}");
    }
    let range = b"GET /v1/vault/objects/a/b HTTP/1.1\r\nhost: x\r\nrange: bytes=9-3\r\n\r\n";
    let answer = String::from_utf8(play(range, dir.path())).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("bad_request"), "{answer}");
    assert!(escaped(dir.path()).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_requests_never_panic_or_escape(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        play(&data, dir.path());
        prop_assert!(escaped(dir.path()).is_empty());
    }

    #[test]
    fn request_lines_with_random_paths_never_panic_or_escape(path in "[a-z./%0-9]{0,40}", method in "(GET|PUT|DELETE)") {
        let dir = tempfile::tempdir().unwrap();
        let request = format!("{method} /v1/vault/objects/{path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx");
        play(request.as_bytes(), dir.path());
        prop_assert!(escaped(dir.path()).is_empty());
    }

    #[test]
    fn wire_decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(listing) = serde_json::from_slice::<Listing>(&data) {
            for object in &listing.objects {
                let _ = object.info();
            }
        }
        let _ = serde_json::from_slice::<WireError>(&data);
        let text = String::from_utf8_lossy(&data);
        let _ = parse_range(&text);
        let _ = standby_link::Token::parse(&text);
        let _ = standby_link::RemoteLocation::parse(&text);
    }
}
