//! Errors. Crypto errors are opaque and `Copy` on purpose: a detailed reason
//! for a failed private-key operation can be a side channel.

use std::path::PathBuf;

/// A private-key operation failed. The reason is a static string for logs;
/// it never contains key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("crypto error: {0}")]
pub struct CryptoError(pub &'static str);

/// A key could not be loaded. Names the file and why, never the key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}
