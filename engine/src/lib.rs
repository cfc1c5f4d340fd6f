//! The engine of the keyless key server.
//!
//! What it does: [`handler`] turns one decoded request into one response
//! against a core's [`KeyStore`](keyless_keys::KeyStore) — pure, no I/O, no
//! clock — and [`runtime`] runs one pinned glommio executor per core, each
//! owning its own copy of the keys.
//!
//! What it does not do: parse configuration, accept connections or speak
//! TLS (that is `keyless-server`), or load keys (that is `keyless-keys`).

pub mod drain;
pub mod handler;
pub mod runtime;
pub mod sharing;
pub mod stats;
pub mod watchdog;
