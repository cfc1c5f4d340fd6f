//! Client for the keyless protocol over mutual TLS. It speaks gokeyless's
//! wire format, so it talks to gokeyless as well as to our server.
//!
//! One client, cut as quinn cuts QUIC: [`core`] holds every decision (IDs,
//! answer matching, failover, backoff, health) and does no I/O; thin
//! drivers run it on a runtime:
//! - [`tokio`](crate::tokio): a [`Connection`] carries many requests at once
//!   and a [`pool::KeyServerPool`] keeps connections to several key servers
//!   (tools, the load generator, the edge's threads mode);
//! - [`glommio`](crate::glommio) (feature `glommio`): each core's own
//!   connections, for the edge's handshake coroutines.

pub mod core;
mod error;
#[cfg(feature = "glommio")]
pub mod glommio;
mod tls;
pub mod tokio;

pub use crate::core::{expect_pong, expect_response, ServerState};
pub use crate::tokio::connection::{connect, connect_stream, connect_unix, Connection, TlsStream};
pub use crate::tokio::pool;
pub use error::ClientError;
pub use tls::{client_config, client_config_from_files};
