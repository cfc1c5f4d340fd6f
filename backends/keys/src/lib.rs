//! Private keys for the keyless key server.
//!
//! What it does: defines what a key backend answers — "which key?" (a
//! [`KeyStore`] looked up by SKI or certificate digest) and "sign this" (a
//! [`PrivateKey`] performing one [`Operation`]) — and implements the in-memory
//! backend on AWS-LC, loading gokeyless's `dir:` and `file:` key stores.
//!
//! What it does not do: speak the wire protocol, touch sockets, or decide
//! which thread signs. Key bytes are zeroized on drop and never printed.

mod error;
pub mod memory;
pub mod multibuffer;
mod operation;
mod public;
mod source;
pub mod spki;
pub mod stats;
mod store;

pub use error::{CryptoError, LoadError};
pub use keyless_protocol::{Hash, Ski};
pub use operation::Operation;
pub use public::{identifiers, KeyAlgorithm, PublicKeyInfo};
pub use source::{load_sources, load_sources_with, KeySource, Pkcs11Source};
pub use store::{KeyStore, LoadedKey, Offload, PendingOperation, PrivateKey, SharedKey};

/// Seed this thread's random generator now. AWS-LC seeds a per-thread DRBG
/// on first use, which gathers jitter entropy for ~20 ms: a core should pay
/// that at start-up, not inside its first request.
pub fn warm_up_thread() {
    let mut buf = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut buf);
}
