//! Finding a key: by SKI first, then by certificate digest.

use std::collections::HashMap;

use keyless_protocol::{Ski, CERT_DIGEST_LEN};

use crate::{CryptoError, Operation, PublicKeyInfo};

/// A private key one core can use. Implemented by every backend.
pub trait PrivateKey {
    fn public(&self) -> &PublicKeyInfo;
    /// Perform `op` on `input` (a digest, a message, or a ciphertext).
    fn perform(&self, op: Operation, input: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

/// One core's keys, indexed by the identifiers clients send.
#[derive(Default)]
pub struct KeyStore {
    keys: Vec<Box<dyn PrivateKey>>,
    by_ski: HashMap<Ski, usize>,
    by_digest: HashMap<[u8; CERT_DIGEST_LEN], usize>,
}

impl KeyStore {
    pub fn new() -> KeyStore {
        KeyStore::default()
    }

    /// Add a key. Returns `false` (and keeps the first) when a key with the
    /// same SKI is already present.
    pub fn insert(&mut self, key: Box<dyn PrivateKey>) -> bool {
        let ski = key.public().ski;
        if self.by_ski.contains_key(&ski) {
            return false;
        }
        let index = self.keys.len();
        self.by_ski.insert(ski, index);
        if let Some(d) = key.public().cert_digest {
            self.by_digest.entry(d).or_insert(index);
        }
        self.keys.push(key);
        true
    }

    /// The key named by `ski`, or failing that by `cert_digest`.
    pub fn find(&self, ski: Option<&Ski>, cert_digest: Option<&[u8; CERT_DIGEST_LEN]>) -> Option<&dyn PrivateKey> {
        let index = ski
            .and_then(|s| self.by_ski.get(s))
            .or_else(|| cert_digest.and_then(|d| self.by_digest.get(d)))?;
        Some(self.keys[*index].as_ref())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn PrivateKey> {
        self.keys.iter().map(|k| k.as_ref())
    }
}
