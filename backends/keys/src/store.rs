//! Finding a key: by SKI first, then by certificate digest.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use keyless_protocol::{Ski, CERT_DIGEST_LEN};

use crate::{CryptoError, Operation, PublicKeyInfo};

/// A private key one core can use. Implemented by every backend.
pub trait PrivateKey {
    fn public(&self) -> &PublicKeyInfo;
    /// Perform `op` on `input` (a digest, a message, or a ciphertext),
    /// blocking this thread until done. An offloaded key (HSM, cloud) need
    /// not implement it: this submits and waits, for tools and tests; the
    /// cores never call it for such a key.
    fn perform(&self, op: Operation, input: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self.offload() {
            Some(offload) => futures_lite::future::block_on(offload.submit(op, input.to_vec())),
            None => Err(CryptoError("this key performs no operation")),
        }
    }
    /// Keys whose operations block for long (an HSM) perform them elsewhere:
    /// a core submits and awaits instead of calling [`perform`](Self::perform).
    fn offload(&self) -> Option<&dyn Offload> {
        None
    }
    /// This key's material for multi-buffer calls, if its type has lanes
    /// (in-memory RSA 2048/3072/4096 and ECDSA P-256/P-384 keys). Built on
    /// first use, on the core that owns the key.
    fn lane_key(&self) -> Option<&crate::multibuffer::LaneKey> {
        None
    }
}

/// The result of an offloaded operation, awaited on the core that asked.
pub type PendingOperation = Pin<Box<dyn Future<Output = Result<Vec<u8>, CryptoError>>>>;

/// A queue that performs operations on worker threads.
pub trait Offload {
    /// Queue `op`; the future waits for room in the queue, then for the result.
    fn submit(&self, op: Operation, input: Vec<u8>) -> PendingOperation;
    /// How long a request may wait in all (queue and operation) before it fails.
    fn timeout(&self) -> Duration;
    /// Whether the key can perform `op` at all. A cloud key version is made
    /// for one algorithm: a request for another is refused with a protocol
    /// error (bad opcode) instead of a call that is bound to fail.
    fn supports(&self, _op: Operation) -> bool {
        true
    }
    /// Whether the backend logs its own failures (once per cause), so the
    /// core need not log each failed request again.
    fn reports_failures(&self) -> bool {
        false
    }
}

/// A key as loaded, shared by every core; each core makes its own instance
/// so no two cores touch the same key object.
pub trait LoadedKey: Send + Sync {
    fn public(&self) -> &PublicKeyInfo;
    /// Where the key came from, for logs: a path, or a PKCS#11 URI without its PIN.
    fn origin(&self) -> String;
    /// This core's instance.
    fn instantiate(&self) -> Result<Box<dyn PrivateKey>, CryptoError>;
}

/// A loaded key, shared between cores.
pub type SharedKey = Arc<dyn LoadedKey>;

impl std::fmt::Debug for dyn LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("origin", &self.origin())
            .field("algorithm", &self.public().algorithm)
            .field("ski", &self.public().ski_hex())
            .finish()
    }
}

/// One core's keys, indexed by the identifiers clients send.
#[derive(Default)]
pub struct KeyStore {
    keys: Vec<Box<dyn PrivateKey>>,
    by_ski: HashMap<Ski, usize>,
    by_digest: HashMap<[u8; CERT_DIGEST_LEN], usize>,
    offloaded: usize,
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
        if key.offload().is_some() {
            self.offloaded += 1;
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

    /// Whether any key performs its operations off the core (an HSM key):
    /// when none does, the request path need not look.
    pub fn has_offloaded(&self) -> bool {
        self.offloaded > 0
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
