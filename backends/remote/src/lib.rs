//! Client for the keyless protocol over mutual TLS.
//!
//! What it does: one [`Connection`] carries many requests at once, each
//! with its own ID; answers are matched by ID in whatever order they come,
//! and requests queued together leave in one write. It speaks gokeyless's
//! wire format, so it talks to gokeyless as well as to our server.
//!
//! What it does not do (yet): pools, health checks, retries and failover
//! across key servers — the edge's remote backend builds those on top.

mod connection;
mod error;
mod tls;

pub use connection::{connect, connect_stream, connect_unix, expect_response, Connection, TlsStream};
pub use error::ClientError;
pub use tls::{client_config, client_config_from_files};
