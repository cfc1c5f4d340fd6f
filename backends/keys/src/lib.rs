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
mod operation;
mod public;
mod source;
mod store;

pub use error::{CryptoError, LoadError};
pub use keyless_protocol::{Hash, Ski};
pub use operation::Operation;
pub use public::{KeyAlgorithm, PublicKeyInfo};
pub use source::{load_sources, KeySource};
pub use store::{KeyStore, PrivateKey};
