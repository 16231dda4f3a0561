//! Keys derived from an operator's key file. The vault never stores key
//! material: only a key check value, so a wrong key is named as such instead of
//! surfacing as a pile of decryption failures.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::{ChunkId, FormatError};

const CONTEXT_CHUNK_ID: &str = "standby vault 2026-11 chunk id key";
const CONTEXT_ENCRYPTION: &str = "standby vault 2026-11 encryption key";
const CONTEXT_KEY_CHECK: &str = "standby vault 2026-11 key check";

/// Bytes of nonce in front of every encrypted payload (XChaCha20-Poly1305).
pub const NONCE_BYTES: usize = 24;
/// Bytes of authentication tag after every encrypted payload.
pub const TAG_BYTES: usize = 16;

/// The contents of a key file: at least 16 bytes of secret, any encoding.
pub struct KeyMaterial(Vec<u8>);

impl KeyMaterial {
    pub const BYTES_MIN: usize = 16;

    pub fn new(secret: Vec<u8>) -> Result<Self, String> {
        if secret.len() < Self::BYTES_MIN {
            return Err(format!("key file holds {} bytes; a key needs at least {}", secret.len(), Self::BYTES_MIN));
        }
        Ok(KeyMaterial(secret))
    }

    /// The value stored in the vault config to recognise this key later.
    pub fn key_check(&self, vault_id: &str) -> String {
        let check_key = blake3::derive_key(CONTEXT_KEY_CHECK, &self.0);
        blake3::keyed_hash(&check_key, vault_id.as_bytes()).to_hex().to_string()
    }
}

/// What a vault needs to name and protect its chunks. Without encryption,
/// chunk ids are plain BLAKE3 hashes; with it, keyed BLAKE3 hashes so that ids
/// reveal nothing about content, and every payload is sealed with
/// XChaCha20-Poly1305 under a random nonce.
#[derive(Clone)]
pub struct Keys {
    id_key: Option<[u8; 32]>,
    cipher: Option<XChaCha20Poly1305>,
}

impl Keys {
    pub fn plain() -> Self {
        Keys { id_key: None, cipher: None }
    }

    pub fn from_material(material: &KeyMaterial) -> Self {
        let id_key = blake3::derive_key(CONTEXT_CHUNK_ID, &material.0);
        let encryption_key = blake3::derive_key(CONTEXT_ENCRYPTION, &material.0);
        let cipher = XChaCha20Poly1305::new((&encryption_key).into());
        Keys { id_key: Some(id_key), cipher: Some(cipher) }
    }

    pub fn encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        let hash = match &self.id_key {
            Some(key) => blake3::keyed_hash(key, data),
            None => blake3::hash(data),
        };
        ChunkId(*hash.as_bytes())
    }

    /// Seals `plaintext` as `nonce || ciphertext || tag`, binding `aad`.
    /// Without a cipher this returns the plaintext unchanged.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let Some(cipher) = &self.cipher else { return plaintext.to_vec() };
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the operating system's random source is available");
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .expect("encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`Keys::seal`] produced. Fails on a wrong key or damage.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, FormatError> {
        let Some(cipher) = &self.cipher else { return Err(FormatError::KeyRequired) };
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            return Err(FormatError::Truncated { context: "encrypted payload" });
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad }).map_err(|_| FormatError::DecryptFailed)
    }
}
