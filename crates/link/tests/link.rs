//! A site's vault served over a real TLS listener on loopback, reached by
//! the remote backend as another host would: the backend suite, and every
//! way in that must be refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use standby_link::identity::{operator_client_config, Authority, Identity, TLS_DIR};
use standby_link::vault_service::{self, Bandwidth};
use standby_link::{Refusals, RemoteBackend, RemoteLocation};
use standby_vault::backend::{Backend, LocalBackend, StorageError};

/// A host of site `site` under `authority`, its files in `dir/tls`.
fn host(authority: &Authority, dir: &Path, site: &str) -> Identity {
    let tls = dir.join(TLS_DIR);
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::write(tls.join("ca.pem"), &authority.cert_pem).unwrap();
    authority.issue(site).unwrap().write(&tls).unwrap();
    Identity::load(&tls).unwrap()
}

struct Served {
    address: SocketAddr,
    refusals: Arc<Refusals>,
    bandwidth: Arc<Bandwidth>,
    _runtime: tokio::runtime::Runtime,
}

/// Serves the vault folder `vault` as `identity`'s host on a loopback port.
fn serve(identity: &Identity, vault: &Path) -> Served {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let address = listener.local_addr().unwrap();
    let backend = Arc::new(LocalBackend::new(vault.to_path_buf()));
    backend.put_new("vault.config", Bytes::from_static(b"config")).unwrap();
    let bandwidth = Arc::new(Bandwidth::default());
    let refusals = Arc::new(Refusals::default());
    let app = vault_service::routes(backend, bandwidth.clone());
    let tls = identity.server_config().unwrap();
    runtime.spawn(standby_link::server::serve(listener, tls, app, refusals.clone(), std::future::pending()));
    Served { address, refusals, bandwidth, _runtime: runtime }
}

fn remote(identity: &Identity, address: SocketAddr, site: &str) -> RemoteBackend {
    RemoteBackend::new(RemoteLocation { address, site: site.into() }, identity).unwrap()
}

#[test]
fn a_vault_served_to_another_host_passes_the_backend_suite() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::create("test").unwrap();
    let recovery = host(&authority, &dir.path().join("recovery"), "recovery");
    let primary = host(&authority, &dir.path().join("primary"), "primary");
    let vault = dir.path().join("vault");
    let served = serve(&recovery, &vault);
    let backend = remote(&primary, served.address, "recovery");
    standby_vault::backend::conformance::suite(&backend);
    // What the remote backend wrote is in the folder, byte for byte.
    assert_eq!(std::fs::read(vault.join("a/one")).unwrap(), b"second");

    // Many requests at once share the connection.
    let backend = Arc::new(backend);
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let backend = backend.clone();
            std::thread::spawn(move || backend.put_new(&format!("many/{i}"), Bytes::from(vec![i as u8; 1 << 20])))
        })
        .collect();
    for writer in writers {
        writer.join().unwrap().unwrap();
    }
    assert_eq!(backend.list("many/").unwrap().len(), 16);
    assert_eq!(served.refusals.handshakes.load(Ordering::Relaxed), 0);
}

#[test]
fn only_the_deployments_hosts_reach_the_vault() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::create("test").unwrap();
    let recovery = host(&authority, &dir.path().join("recovery"), "recovery");
    let primary = host(&authority, &dir.path().join("primary"), "primary");
    let served = serve(&recovery, &dir.path().join("vault"));
    let good = remote(&primary, served.address, "recovery");
    good.put("kept", Bytes::from_static(b"kept")).unwrap();

    // A host of another deployment (another CA) refuses this server...
    let stranger_authority = Authority::create("other").unwrap();
    let stranger = host(&stranger_authority, &dir.path().join("stranger"), "primary");
    let refused = remote(&stranger, served.address, "recovery").put("kept", Bytes::from_static(b"overwritten"));
    assert!(matches!(refused, Err(StorageError::Unreachable { .. })), "{refused:?}");
    // ... and this server refuses its certificate, even from a client that
    // trusts this deployment's CA.
    let impostor_dir = dir.path().join("impostor/tls");
    std::fs::create_dir_all(&impostor_dir).unwrap();
    std::fs::write(impostor_dir.join("ca.pem"), &authority.cert_pem).unwrap();
    stranger_authority.issue("primary").unwrap().write(&impostor_dir).unwrap();
    let impostor = remote(&Identity::load(&impostor_dir).unwrap(), served.address, "recovery");
    let refused = impostor.put("kept", Bytes::from_static(b"overwritten"));
    assert!(refused.is_err(), "{refused:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while served.refusals.handshakes.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "the server never refused the impostor's handshake");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The right CA but the wrong site: the server is not the host asked for.
    let wrong_site = remote(&primary, served.address, "primary").get("kept");
    assert!(wrong_site.is_err(), "{wrong_site:?}");

    // An expired certificate of the right CA.
    let expired_dir = dir.path().join("expired/tls");
    std::fs::create_dir_all(&expired_dir).unwrap();
    std::fs::write(expired_dir.join("ca.pem"), &authority.cert_pem).unwrap();
    let yesterday = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    authority.issue_valid("primary", yesterday).unwrap().write(&expired_dir).unwrap();
    let expired = remote(&Identity::load(&expired_dir).unwrap(), served.address, "recovery");
    assert!(expired.get("kept").is_err());

    // No certificate (an operator's connection): TLS is fine, the vault is not theirs.
    let anonymous = anonymous_get(&authority, served.address, "/v1/vault/objects/kept");
    assert_eq!(anonymous.0, 401, "{anonymous:?}");
    assert!(anonymous.1.contains("\"code\":\"unauthenticated\""), "{anonymous:?}");

    // Plain HTTP on the TLS port: a clear answer, not a reset.
    let mut plain = TcpStream::connect(served.address).unwrap();
    plain.write_all(b"GET /v1/vault/objects/kept HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"code\":\"tls_required\""), "{answer}");

    // Garbage, a truncated handshake, and a client that says nothing.
    for bytes in [&b"\x16\x03\x01\x00\x05hello-garbage"[..], &b"\x16\x03\x01\x02\x00\x01"[..], &[0u8; 64][..]] {
        let mut stream = TcpStream::connect(served.address).unwrap();
        let _ = stream.write_all(bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }
    let silent = TcpStream::connect(served.address).unwrap();

    // Nothing changed, and the listener serves its hosts as before.
    assert_eq!(&good.get("kept").unwrap()[..], b"kept");
    drop(silent);
}

#[test]
fn writes_keep_to_the_sites_bandwidth_limit_changed_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::create("test").unwrap();
    let recovery = host(&authority, &dir.path().join("recovery"), "recovery");
    let primary = host(&authority, &dir.path().join("primary"), "primary");
    let served = serve(&recovery, &dir.path().join("vault"));
    let backend = remote(&primary, served.address, "recovery");
    let object = Bytes::from(vec![7u8; 4 << 20]);
    served.bandwidth.set(4 << 20);
    let started = std::time::Instant::now();
    backend.put("limited", object.clone()).unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(800), "4 MiB at 4 MiB/s took {took:?}");
    served.bandwidth.set(0);
    let started = std::time::Instant::now();
    backend.put("unlimited", object).unwrap();
    assert!(started.elapsed() < took, "without the limit it took {:?}", started.elapsed());
}

/// A GET with no client certificate (as an operator connects): status and body.
fn anonymous_get(authority: &Authority, address: SocketAddr, path: &str) -> (u16, String) {
    let tls = operator_client_config(&authority.cert_pem, Path::new("ca.pem")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let name = standby_link::identity::host_name("recovery");
        let client = reqwest::Client::builder().tls_backend_preconfigured(tls).resolve(&name, address).build().unwrap();
        let response = client.get(format!("https://{name}:{}{path}", address.port())).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    })
}
