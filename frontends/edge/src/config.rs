//! The edge's configuration: a YAML file (`edge.yaml`) and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Command line.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "keyless-edge",
    version,
    about = "Keyless SSL edge: terminates TLS, signs with keys on remote key servers"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long = "config-file", env = "KEYLESS_EDGE_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Log level: 0 debug, 1 info, 2 warning, 3 error.
    #[arg(short = 'l', long)]
    pub loglevel: Option<u8>,
    /// Development mode: create the development PKI in --dev-dir (if
    /// missing), start a key server with its keys in this process, and an
    /// edge in front of it on 127.0.0.1:8443.
    #[arg(long)]
    pub dev: bool,
    #[arg(long = "dev-dir", default_value = "dev-pki")]
    pub dev_dir: PathBuf,
    /// Development mode: the edge's TLS port.
    #[arg(long = "dev-port", default_value_t = 8443)]
    pub dev_port: u16,
    /// Development mode: the key server's port.
    #[arg(long = "dev-key-server-port", default_value_t = 2407)]
    pub dev_key_server_port: u16,
    /// Development mode: the edge's metrics port.
    #[arg(long = "dev-metrics-port", default_value_t = 8406)]
    pub dev_metrics_port: u16,
}

/// One certificate chain and the names it serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertEntry {
    /// PEM chain, leaf first. The leaf's public key names the remote key.
    pub cert: PathBuf,
    /// SNI names (default: the certificate's DNS names).
    #[serde(default)]
    pub names: Vec<String>,
    /// Serve this one when SNI is absent or matches nothing.
    #[serde(default)]
    pub default: bool,
    /// Benchmark baseline only: sign with this local private key, in the
    /// handshake, as a plain rustls server would (no key server).
    pub local_key: Option<PathBuf>,
}

/// Session tickets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketSettings {
    /// A key file shared by several edges (`keyless-tool ticket-keys`);
    /// without one, keys live in memory.
    pub key_file: Option<PathBuf>,
    /// Seconds between key rotations (in memory; default 3600).
    pub rotation_s: Option<u64>,
    /// Ticket lifetime hint and window in seconds (default 64800).
    pub lifetime_s: Option<u64>,
}

/// The YAML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Where clients connect (every core listens, SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Metrics, `/healthz`, `/readyz` (default: none).
    pub metrics_listen: Option<SocketAddr>,
    /// Cores to serve on (default: all).
    pub workers: Option<usize>,
    pub certificates: Vec<CertEntry>,
    /// Key servers, `HOST:PORT`; a name with several addresses counts as several.
    pub key_servers: Vec<String>,
    /// Name the key servers' certificates carry (default: each HOST).
    pub key_server_name: Option<String>,
    /// CA of the key servers' certificates.
    pub key_server_ca: PathBuf,
    /// The edge's client certificate and key for mutual TLS to key servers.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Connections to each key server (default 2).
    pub connections_per_server: Option<usize>,
    /// Milliseconds a remote signature may take (default 2000).
    pub request_timeout_ms: Option<u64>,
    /// Milliseconds between health pings per connection (default 1000).
    pub health_interval_ms: Option<u64>,
    /// Where handshakes wait for their signature: `coroutine` (default: a
    /// coroutine on the core, suspended) or `threads` (a blocked thread).
    pub handshake_mode: Option<String>,
    /// `threads` mode: signatures in flight at once (default 256).
    pub handshake_threads: Option<usize>,
    /// Seconds a client has to finish its handshake (default 10).
    pub handshake_timeout_s: Option<u64>,
    /// On SIGTERM, seconds open connections may take to finish (default 30).
    pub drain_timeout_s: Option<u64>,
    /// Proxy decrypted traffic here; without it, answer HTTP/1.1 with a built-in page.
    pub upstream: Option<SocketAddr>,
    /// Prefix each upstream connection with a PROXY protocol v2 header.
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default)]
    pub tickets: TicketSettings,
}

impl EdgeConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.unwrap_or(2000))
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_s.unwrap_or(10).max(1))
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_s.unwrap_or(30))
    }

    pub fn ticket_rotation(&self) -> Duration {
        Duration::from_secs(self.tickets.rotation_s.unwrap_or(3600).max(1))
    }

    pub fn ticket_lifetime(&self) -> Duration {
        Duration::from_secs(self.tickets.lifetime_s.unwrap_or(64800).max(1))
    }
}

/// Read and check a configuration file; errors name the file, line and field.
pub fn load(path: &Path) -> Result<EdgeConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<EdgeConfig, String> {
    let config: EdgeConfig = serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_string();
        format!("{}:{line}:{column}: {message}", path.display())
    })?;
    if config.certificates.is_empty() {
        return Err(format!("{}: certificates: at least one is needed", path.display()));
    }
    if config.key_servers.is_empty() {
        return Err(format!("{}: key_servers: at least one is needed", path.display()));
    }
    Ok(config)
}
