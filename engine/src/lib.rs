//! The engine of the keyless key server.
//!
//! What it does: [`handler`] turns one decoded [`request`] into one response
//! against a core's [`KeyStore`](keyless_keys::KeyStore) — pure, no I/O, no
//! clock — and [`runtime`] runs one pinned glommio executor per core, each
//! owning its own copy of the keys ([`core`]). Cores share load and
//! counters ([`shared`], [`routing`], [`counters`]) and hand requests to
//! each other over [`links`]; keys and configuration reach them as
//! [`versioned`] values.
//!
//! What it does not do: parse configuration, accept connections or speak
//! TLS (that is `keyless-server`), or load keys (that is `keyless-keys`).

pub mod accept;
pub mod batch;
pub mod buffers;
pub mod core;
pub mod counters;
pub mod drain;
pub mod handler;
mod lanes;
pub mod links;
pub mod offload;
pub mod request;
pub mod routing;
pub mod runtime;
pub mod shared;
/// Lock-free histograms (they live with the key backends, which time their own calls).
pub use keyless_keys::stats;
pub mod versioned;
pub mod watchdog;
