//! What every keyless binary (the key server, the edge, the tools that run
//! them) does around its engine, written once: logging from the cores
//! without blocking them ([`logging`]), reading TLS files ([`tls`]), a port
//! every core can share ([`ports`]), and SIGHUP/SIGTERM ([`signals`]).
//!
//! What it does not do: anything about the keyless protocol, keys or
//! connections.

pub mod logging;
pub mod ports;
pub mod signals;
pub mod tls;

pub use logging::{flush_logs, init_logging};
