//! What every keyless binary (the key server, the edge, the tools that run
//! them) does around its engine, written once: logging from the cores
//! without blocking them ([`logging`]), reading TLS files ([`tls`]), a port
//! every core can share ([`ports`]), SIGHUP/SIGTERM ([`signals`]), and
//! configuration files whose errors say where ([`yaml`]).
//!
//! What it does not do: anything about the keyless protocol, keys or
//! connections.

pub mod harden;
pub mod http;
pub mod logging;
pub mod ports;
pub mod sandbox;
pub mod signals;
pub mod tls;
pub mod yaml;

pub use logging::{flush_logs, init_logging};

/// `<version> (commit <sha>)`: what `--version` prints.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("KEYLESS_COMMIT"), ")");

/// `1 key`, `2 keys`: counts in log lines read as English.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The names of the settings marked as changed, in order (for "changed, and
/// applied only by a restart: ...").
pub fn changed_settings<const N: usize>(checks: [(&'static str, bool); N]) -> Vec<&'static str> {
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}
