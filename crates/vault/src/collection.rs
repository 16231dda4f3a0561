//! Collection sets: the packs a `prune` marked as referenced by no point
//! (`collection/<time>-<id>.set`, see `prune.rs` for mark and sweep). Every
//! writer reads them: a sync or a journal never reuses a chunk of a pack in
//! a set, so a sweep can delete it once the grace period is over.
//!
//! Its own module so that the writers (sync, journal) and the collector
//! (prune) all depend on it and not on each other.

use std::collections::HashSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use standby_format::{Envelope, Keys, ObjectKind, PackId};

use crate::lease::now_micros;
use crate::{Vault, VaultError};

const COLLECTION_FOLDER: &str = "collection/";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CollectionSet {
    pub(crate) created_micros: i64,
    pub(crate) packs: Vec<String>,
}

/// Packs in collection sets: syncs do not reuse their chunks.
pub(crate) fn collection_candidates(vault: &Vault) -> Result<HashSet<PackId>, VaultError> {
    Ok(read_sets(vault)?
        .into_iter()
        .flat_map(|(_, set)| set.packs.into_iter().filter_map(|hex| PackId::from_hex(&hex)))
        .collect())
}

/// Every collection set with its path.
pub(crate) fn read_sets(vault: &Vault) -> Result<Vec<(String, CollectionSet)>, VaultError> {
    let mut sets = Vec::new();
    for object in vault.backend().list(COLLECTION_FOLDER)? {
        let bytes = vault.backend().get(&object.path)?;
        let json = Envelope::open(ObjectKind::CollectionSet, &bytes, &Keys::plain())
            .map_err(|e| VaultError::decoding(&vault.location(), &object.path, e))?;
        let set: CollectionSet = serde_json::from_slice(&json).map_err(|e| VaultError::damaged(&object.path, e))?;
        sets.push((object.path, set));
    }
    Ok(sets)
}

/// Marks `packs` for collection: a new set, now.
pub(crate) fn write_set(vault: &Vault, packs: &[PackId]) -> Result<(), VaultError> {
    let set = CollectionSet { created_micros: now_micros(), packs: packs.iter().map(PackId::to_hex).collect() };
    let json = serde_json::to_vec(&set).expect("a collection set always serialises");
    let sealed = Envelope::seal(ObjectKind::CollectionSet, &json, &Keys::plain(), true);
    let path = format!("{COLLECTION_FOLDER}{:020}-{}.set", set.created_micros, PackId::random());
    vault.backend().put(&path, Bytes::from(sealed))?;
    Ok(())
}
