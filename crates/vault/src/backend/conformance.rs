//! The checks every backend passes (`tests/backends.rs` runs them on each;
//! `standby-link` on a vault served over the network): each verb's contract
//! as the vault engine relies on it. Test code, behind the `conformance`
//! feature.

use bytes::Bytes;

use super::{Backend, StorageError};

/// Runs every check on `backend`, an empty vault folder (or one holding
/// only `vault.config`). Panics at the first that fails.
pub fn suite(backend: &dyn Backend) {
    // put / get round trip, overwrite replaces.
    backend.put("a/one", Bytes::from_static(b"first")).unwrap();
    assert_eq!(&backend.get("a/one").unwrap()[..], b"first");
    backend.put("a/one", Bytes::from_static(b"second")).unwrap();
    assert_eq!(&backend.get("a/one").unwrap()[..], b"second");

    // Ranged get returns exactly the range.
    backend.put("a/range", Bytes::from((0u8..=255).collect::<Vec<u8>>())).unwrap();
    assert_eq!(&backend.get_range("a/range", 10..20).unwrap()[..], &(10u8..20).collect::<Vec<u8>>()[..]);

    // put_new refuses an existing name and leaves the object alone.
    backend.put_new("a/new", Bytes::from_static(b"original")).unwrap();
    assert!(matches!(backend.put_new("a/new", Bytes::from_static(b"other")), Err(StorageError::AlreadyExists { .. })));
    assert_eq!(&backend.get("a/new").unwrap()[..], b"original");

    // Missing objects are NotFound; deleting one is fine.
    assert!(matches!(backend.get("a/missing"), Err(StorageError::NotFound { .. })));
    assert!(matches!(backend.get_range("a/missing", 0..1), Err(StorageError::NotFound { .. })));
    backend.delete("a/missing").unwrap();

    // Listing: by folder prefix, sorted, with sizes, nested folders included.
    backend.put("b/x/deep", Bytes::from_static(b"12345")).unwrap();
    backend.put("b/y", Bytes::from_static(b"1")).unwrap();
    backend.put("bb/z", Bytes::from_static(b"1")).unwrap();
    let listed: Vec<(String, u64)> = backend.list("b/").unwrap().into_iter().map(|o| (o.path, o.bytes)).collect();
    assert_eq!(listed, vec![("b/x/deep".to_string(), 5), ("b/y".to_string(), 1)]);
    assert_eq!(backend.list("nothing/").unwrap(), vec![]);
    // (A local vault folder holds its config besides.)
    let everything = backend.list("").unwrap();
    assert_eq!(everything.iter().filter(|object| object.path != "vault.config").count(), 6);

    // Delete removes.
    backend.delete("b/y").unwrap();
    assert!(matches!(backend.get("b/y"), Err(StorageError::NotFound { .. })));

    // Bad paths are refused before reaching storage.
    assert!(backend.put("../escape", Bytes::new()).is_err());
    assert!(backend.get("a//b").is_err());

    // Larger objects survive intact.
    let big: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i.wrapping_mul(31) >> 3) as u8).collect();
    backend.put("big", Bytes::from(big.clone())).unwrap();
    assert_eq!(&backend.get("big").unwrap()[..], &big[..]);
}
