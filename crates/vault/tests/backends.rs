//! One suite of backend checks, run against every backend: a local directory
//! and Azure Blob on a real Azurite server. Each check exercises one verb's
//! contract as the vault engine relies on it.

use std::sync::Arc;

use bytes::Bytes;
use standby_testkit::seaweedfs::SeaweedFs;
use standby_testkit::Azurite;
use standby_vault::backend::conformance::suite;
use standby_vault::backend::{open_location, Backend, LocalBackend, StorageError, VaultLocation};

/// A local vault folder: a folder holding the vault's config.
fn local_vault(root: &std::path::Path) -> LocalBackend {
    let backend = LocalBackend::new(root.to_path_buf());
    backend.put_new("vault.config", Bytes::from_static(b"config")).unwrap();
    backend
}

#[test]
fn local_directory_backend() {
    let dir = tempfile::tempdir().unwrap();
    suite(&local_vault(&dir.path().join("vault")));
}

/// A local vault's folder that is gone (moved away), emptied, or an empty
/// mount point (its filesystem unmounted) is an outage that names it:
/// writes fail and create nothing, until it is back; only the vault's
/// config (`vault init`) makes a folder a vault.
#[test]
fn a_local_vault_folder_that_is_gone_or_empty_takes_no_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vault");
    let backend = local_vault(&root);
    backend.put("journal/one", Bytes::from_static(b"1")).unwrap();
    let away = dir.path().join("vault.away");
    std::fs::rename(&root, &away).unwrap();
    let refused = |backend: &LocalBackend| {
        for result in [
            backend.put("journal/two", Bytes::from_static(b"2")),
            backend.put_new("packs/three", Bytes::from_static(b"3")),
        ] {
            let error = result.unwrap_err().to_string();
            let named = format!("the vault folder {} has no vault.config", root.display());
            assert!(error.contains(&named), "{error}");
        }
    };
    refused(&backend);
    assert!(!root.exists(), "a write recreated the vault's folder");
    // An empty mount point: the folder is there, without the vault's files.
    std::fs::create_dir(&root).unwrap();
    refused(&backend);
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "a write went into the empty mount point");
    std::fs::remove_dir(&root).unwrap();
    std::fs::rename(&away, &root).unwrap();
    backend.put("journal/two", Bytes::from_static(b"2")).unwrap();
    backend.put_new("packs/three", Bytes::from_static(b"3")).unwrap();
    assert_eq!(&backend.get("journal/two").unwrap()[..], b"2");
}

#[test]
fn local_backend_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local_vault(dir.path());
    backend.put("x/y", Bytes::from_static(b"data")).unwrap();
    let _ = backend.put_new("x/y", Bytes::from_static(b"again"));
    let names: Vec<_> = std::fs::read_dir(dir.path().join("x")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec!["y"]);
}

fn azure_backend(azurite: &Azurite, container: &str, prefix: &str) -> Arc<dyn Backend> {
    for (key, value) in azurite.environment() {
        // Each test runs in its own process under nextest.
        std::env::set_var(key, value);
    }
    open_location(&VaultLocation::Azure { container: container.into(), prefix: prefix.into() }).unwrap()
}

#[test]
fn azure_blob_backend_on_azurite() {
    let azurite = Azurite::start();
    azurite.create_container("suite");
    suite(azure_backend(&azurite, "suite", "").as_ref());
    // The same again under a prefix: nothing outside it is visible.
    suite(azure_backend(&azurite, "suite", "tenant/site-b").as_ref());
}

#[test]
fn azure_outage_is_named_with_its_endpoint() {
    let mut azurite = Azurite::start();
    azurite.create_container("outage");
    let backend = azure_backend(&azurite, "outage", "");
    backend.put("x", Bytes::from_static(b"1")).unwrap();
    azurite.stop();
    match backend.get("x") {
        Err(StorageError::Unreachable { endpoint, .. }) => assert_eq!(endpoint, azurite.endpoint),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

fn s3_backend(cluster: &SeaweedFs, bucket: &str, prefix: &str) -> Arc<dyn Backend> {
    for (key, value) in cluster.environment() {
        // Each test runs in its own process under nextest.
        std::env::set_var(key, value);
    }
    open_location(&VaultLocation::S3 { bucket: bucket.into(), prefix: prefix.into() }).unwrap()
}

/// S3 on a real cluster: SeaweedFS with three storage nodes, three copies
/// of every object (`standby_testkit::seaweedfs`).
#[test]
fn s3_backend_on_a_seaweedfs_cluster() {
    let cluster = SeaweedFs::start();
    cluster.create_bucket("suite");
    suite(s3_backend(&cluster, "suite", "").as_ref());
    suite(s3_backend(&cluster, "suite", "tenant/site-b").as_ref());
}

/// A storage node of the cluster killed (SIGKILL): every object written
/// before is still read from the others, and writes go on at once.
#[test]
fn s3_on_seaweedfs_survives_a_killed_storage_node() {
    let mut cluster = SeaweedFs::start();
    cluster.create_bucket("nodes");
    let backend = s3_backend(&cluster, "nodes", "");
    let object = |i: u32| Bytes::from(vec![i as u8; 100_000 + i as usize]);
    for i in 0..20 {
        backend.put_new(&format!("packs/{i}"), object(i)).unwrap();
    }
    cluster.kill_node(1);
    for i in 0..20 {
        assert_eq!(backend.get(&format!("packs/{i}")).unwrap(), object(i), "object {i} after a node was killed");
    }
    for i in 20..40 {
        backend.put_new(&format!("packs/{i}"), object(i)).unwrap();
    }
    cluster.restart_node(1);
    for i in 0..40 {
        assert_eq!(backend.get(&format!("packs/{i}")).unwrap(), object(i), "object {i} after the node returned");
    }
}

/// An S3 endpoint on plain HTTP is refused unless `AWS_ALLOW_HTTP=true`
/// says it is meant (a store on a private network).
#[test]
fn s3_on_plain_http_is_refused_unless_allowed() {
    let cluster = SeaweedFs::start();
    cluster.create_bucket("plain");
    for (key, value) in cluster.environment().into_iter().filter(|(key, _)| key != "AWS_ALLOW_HTTP") {
        std::env::set_var(key, value);
    }
    std::env::remove_var("AWS_ALLOW_HTTP");
    let backend = open_location(&VaultLocation::S3 { bucket: "plain".into(), prefix: String::new() }).unwrap();
    let refused = backend.put("x", Bytes::from_static(b"1")).unwrap_err().to_string();
    assert!(refused.contains("URL scheme is not allowed"), "{refused}");
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    let backend = open_location(&VaultLocation::S3 { bucket: "plain".into(), prefix: String::new() }).unwrap();
    backend.put("x", Bytes::from_static(b"1")).unwrap();
}
