//! Client for the keyless protocol over mutual TLS.
//!
//! What it does: one [`Connection`] carries many requests at once, each
//! with its own ID; answers are matched by ID in whatever order they come,
//! and requests queued together leave in one write. It speaks gokeyless's
//! wire format, so it talks to gokeyless as well as to our server.
//!
//! [`pool::KeyServerPool`] is the edge's remote backend: several key
//! servers, a few connections each, health checks, retry and failover.

mod connection;
mod error;
pub mod pool;
mod tls;

pub use connection::{connect, connect_stream, connect_unix, expect_response, Connection, TlsStream};
pub use error::ClientError;
pub use tls::{client_config, client_config_from_files};
