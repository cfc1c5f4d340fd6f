//! Configuration, drop-in compatible with gokeyless: the same YAML keys, the
//! same flags, the same `KEYLESS_*` environment variables and the same
//! precedence (flag, then environment, then file, then default).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::Parser;
use keyless_keys::{KeySource, Pkcs11Source};
use serde::Deserialize;

/// Where gokeyless looks for its configuration when `-c` is not given.
pub const SEARCH_PATH: &[&str] = &["gokeyless.yaml", "/etc/keyless/gokeyless.yaml"];

/// Command line. Every setting can also come from `KEYLESS_<NAME>`.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "keyless-server",
    version,
    about = "Keyless SSL key server, wire-compatible with gokeyless"
)]
pub struct Cli {
    /// Configuration file (default: ./gokeyless.yaml, then /etc/keyless/gokeyless.yaml).
    #[arg(short = 'c', long = "config-file", env = "KEYLESS_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// Log level: 0 debug, 1 info, 2 warning, 3 error, 4 critical, 5 fatal.
    #[arg(short = 'l', long, env = "KEYLESS_LOGLEVEL")]
    pub loglevel: Option<u8>,
    /// Key server hostname (used by gokeyless for activation).
    #[arg(long, env = "KEYLESS_HOSTNAME")]
    pub hostname: Option<String>,
    /// Cloudflare zone ID (activation through Cloudflare's API is not supported).
    #[arg(long = "zone-id", env = "KEYLESS_ZONE_ID")]
    pub zone_id: Option<String>,
    /// Origin CA API key (activation through Cloudflare's API is not supported).
    #[arg(long = "origin-ca-api-key", env = "KEYLESS_ORIGIN_CA_API_KEY")]
    pub origin_ca_api_key: Option<String>,
    /// Server certificate (PEM chain) presented to clients.
    #[arg(long = "auth-cert", env = "KEYLESS_AUTH_CERT")]
    pub auth_cert: Option<PathBuf>,
    /// Private key of the server certificate.
    #[arg(long = "auth-key", env = "KEYLESS_AUTH_KEY")]
    pub auth_key: Option<PathBuf>,
    /// CSR file (gokeyless activation; accepted and unused).
    #[arg(long = "auth-csr", env = "KEYLESS_AUTH_CSR")]
    pub auth_csr: Option<PathBuf>,
    /// CA that client certificates must chain to.
    #[arg(long = "cloudflare-ca-cert", env = "KEYLESS_CLOUDFLARE_CA_CERT")]
    pub cloudflare_ca_cert: Option<PathBuf>,
    /// Port of the keyless listener.
    #[arg(long, env = "KEYLESS_PORT")]
    pub port: Option<u16>,
    /// Port of the metrics listener.
    #[arg(long = "metrics-port", env = "KEYLESS_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Write the process ID here at start-up.
    #[arg(long = "pid-file", env = "KEYLESS_PID_FILE")]
    pub pid_file: Option<PathBuf>,
    /// Directories of `*.key` files, added to private_key_stores.
    #[arg(long = "private-key-dirs", env = "KEYLESS_PRIVATE_KEY_DIRS", value_delimiter = ',')]
    pub private_key_dirs: Vec<PathBuf>,
    /// Key files, added to private_key_stores.
    #[arg(long = "private-key-files", env = "KEYLESS_PRIVATE_KEY_FILES", value_delimiter = ',')]
    pub private_key_files: Vec<PathBuf>,
    /// Also serve the keyless protocol (over mutual TLS) on this Unix socket.
    #[arg(long = "unix-socket", env = "KEYLESS_UNIX_SOCKET")]
    pub unix_socket: Option<PathBuf>,
    /// Address to listen on (ours; gokeyless listens on all addresses).
    #[arg(long = "listen-host", env = "KEYLESS_LISTEN_HOST")]
    pub listen_host: Option<IpAddr>,
    /// Number of cores to serve on (ours; default: all).
    #[arg(long, env = "KEYLESS_WORKERS")]
    pub workers: Option<usize>,
    /// Microseconds a core spins for new work before sleeping (ours; default 0).
    #[arg(long = "spin-before-park-us", env = "KEYLESS_SPIN_BEFORE_PARK_US")]
    pub spin_before_park_us: Option<u64>,
    /// On SIGTERM/SIGINT, seconds to finish requests already received (ours; default 30).
    #[arg(long = "drain-timeout", env = "KEYLESS_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
    /// Seconds a client has to finish its TLS handshake (ours; default 10).
    #[arg(long = "handshake-timeout", env = "KEYLESS_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<u64>,
    /// Close a connection idle this many seconds (ours; default 300, 0: never).
    #[arg(long = "idle-timeout", env = "KEYLESS_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Connections one core holds at most, handshakes included (ours; default 16384).
    #[arg(long = "max-connections-per-core", env = "KEYLESS_MAX_CONNECTIONS_PER_CORE")]
    pub max_connections_per_core: Option<usize>,
    /// Longest request body accepted, bytes (ours; default 65535, the protocol's).
    #[arg(long = "max-request-body", env = "KEYLESS_MAX_REQUEST_BODY")]
    pub max_request_body: Option<usize>,
    /// Requests one core may queue for another at most (ours; default 1024).
    #[arg(long = "core-queue", env = "KEYLESS_CORE_QUEUE")]
    pub core_queue: Option<usize>,
    /// While a batch is being signed, write its answers at least this often,
    /// microseconds (ours; default 2000, 0: after every answer).
    #[arg(long = "batch-flush-us", env = "KEYLESS_BATCH_FLUSH_US")]
    pub batch_flush_us: Option<u64>,
    /// Milliseconds an HSM request may wait (queued, then signed) before it
    /// fails (ours; default 5000).
    #[arg(long = "pkcs11-timeout-ms", env = "KEYLESS_PKCS11_TIMEOUT_MS")]
    pub pkcs11_timeout_ms: Option<u64>,
    /// Sessions per HSM token when its URI has no max-sessions (ours; default 2).
    #[arg(long = "pkcs11-sessions", env = "KEYLESS_PKCS11_SESSIONS")]
    pub pkcs11_sessions: Option<usize>,
    /// Requests queued per HSM token at most (ours; default 1024).
    #[arg(long = "pkcs11-queue", env = "KEYLESS_PKCS11_QUEUE")]
    pub pkcs11_queue: Option<usize>,
    /// Development mode: create a throwaway PKI and keys in --dev-dir (if
    /// missing) and serve them on 127.0.0.1.
    #[arg(long)]
    pub dev: bool,
    /// Folder of the development PKI.
    #[arg(long = "dev-dir", default_value = "dev-pki")]
    pub dev_dir: PathBuf,
}

/// The YAML file. Unknown keys are ignored, as gokeyless (viper) does.
#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    pub loglevel: Option<u8>,
    pub hostname: Option<String>,
    pub zone_id: Option<String>,
    pub origin_ca_api_key: Option<String>,
    pub private_key_stores: Option<Vec<StoreEntry>>,
    pub auth_cert: Option<PathBuf>,
    pub auth_key: Option<PathBuf>,
    pub auth_csr: Option<PathBuf>,
    pub cloudflare_ca_cert: Option<PathBuf>,
    pub port: Option<u16>,
    pub metrics_port: Option<u16>,
    pub pid_file: Option<PathBuf>,
    pub unix_socket: Option<PathBuf>,
    pub listen_host: Option<IpAddr>,
    pub workers: Option<usize>,
    pub spin_before_park_us: Option<u64>,
    pub drain_timeout: Option<u64>,
    pub handshake_timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub pkcs11_timeout_ms: Option<u64>,
    pub pkcs11_sessions: Option<usize>,
    pub pkcs11_queue: Option<usize>,
    pub max_connections_per_core: Option<usize>,
    pub max_request_body: Option<usize>,
    pub core_queue: Option<usize>,
    pub batch_flush_us: Option<u64>,
}

/// One `private_key_stores` entry: exactly one of `dir`, `file`, `uri`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawStoreEntry")]
pub struct StoreEntry(pub KeySource);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStoreEntry {
    dir: Option<PathBuf>,
    file: Option<PathBuf>,
    uri: Option<String>,
}

impl TryFrom<RawStoreEntry> for StoreEntry {
    type Error = String;

    fn try_from(raw: RawStoreEntry) -> Result<Self, String> {
        match (raw.dir, raw.file, raw.uri) {
            (Some(d), None, None) => Ok(StoreEntry(KeySource::Dir(d))),
            (None, Some(f), None) => Ok(StoreEntry(KeySource::File(f))),
            (None, None, Some(uri)) => match keyless_pkcs11::Pkcs11Uri::parse(&uri) {
                Ok(_) => Ok(StoreEntry(KeySource::Pkcs11(Pkcs11Source::new(uri)))),
                Err(e) => Err(format!("bad PKCS#11 URI: {e}")),
            },
            _ => Err("each entry needs exactly one of `dir`, `file` or `uri`".into()),
        }
    }
}

/// Everything the server needs, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub config_file: Option<PathBuf>,
    pub loglevel: u8,
    pub hostname: Option<String>,
    pub activation_requested: bool,
    pub auth_cert: PathBuf,
    pub auth_key: PathBuf,
    pub cloudflare_ca_cert: PathBuf,
    pub listen: SocketAddr,
    pub metrics_port: u16,
    pub pid_file: Option<PathBuf>,
    pub unix_socket: Option<PathBuf>,
    pub key_sources: Vec<KeySource>,
    pub workers: Option<usize>,
    pub spin_before_park_us: u64,
    pub drain_timeout_s: u64,
    pub handshake_timeout_s: u64,
    pub idle_timeout_s: u64,
    /// How HSM (PKCS#11) key stores are served.
    pub pkcs11: keyless_pkcs11::Options,
    pub max_connections_per_core: usize,
    pub max_request_body: usize,
    pub core_queue: usize,
    pub batch_flush_us: u64,
}

/// A configuration that cannot be used. Names the file, where, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read configuration: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Other(String),
}

/// Parse YAML text from `path` (the path is for messages only).
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        // serde_yaml_ng appends " at line L column C"; we put it in front instead.
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_string();
        ConfigError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })
}

/// The configuration file to read: `-c` if given (it must exist), else the
/// first of the search path that exists, else none.
pub fn locate(cli: &Cli) -> Option<PathBuf> {
    if let Some(p) = &cli.config_file {
        return Some(p.clone());
    }
    SEARCH_PATH.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Merge flags and environment (already folded together by clap) over the file over defaults.
pub fn resolve(cli: &Cli, file_path: Option<&Path>, file: FileConfig) -> Result<Settings, ConfigError> {
    let loglevel = cli.loglevel.or(file.loglevel).unwrap_or(1);
    if loglevel > 5 {
        let message = format!("loglevel {loglevel} is out of range (0 debug ... 5 fatal)");
        return Err(match (cli.loglevel, file_path) {
            (None, Some(p)) => ConfigError::Invalid {
                path: p.to_owned(),
                message: format!("field `loglevel`: {message}"),
            },
            _ => ConfigError::Other(message),
        });
    }
    let mut key_sources: Vec<KeySource> = file
        .private_key_stores
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.0)
        .collect();
    key_sources.extend(cli.private_key_dirs.iter().cloned().map(KeySource::Dir));
    key_sources.extend(cli.private_key_files.iter().cloned().map(KeySource::File));
    let host = cli
        .listen_host
        .or(file.listen_host)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let port = cli.port.or(file.port).unwrap_or(2407);
    let file_config_pkcs11 = (file.pkcs11_timeout_ms, file.pkcs11_sessions, file.pkcs11_queue);
    let max_connections = cli
        .max_connections_per_core
        .or(file.max_connections_per_core)
        .unwrap_or(16384);
    if max_connections == 0 {
        return Err(ConfigError::Other("max_connections_per_core must be at least 1".into()));
    }
    let max_body = cli.max_request_body.or(file.max_request_body).unwrap_or(65535);
    if !(1..=65535).contains(&max_body) {
        return Err(ConfigError::Other("max_request_body must be 1 to 65535".into()));
    }
    let core_queue = cli.core_queue.or(file.core_queue).unwrap_or(1024);
    if core_queue == 0 {
        return Err(ConfigError::Other("core_queue must be at least 1".into()));
    }
    if let Some(0) = cli.workers.or(file.workers) {
        return Err(ConfigError::Other("workers must be at least 1".into()));
    }
    Ok(Settings {
        config_file: file_path.map(Path::to_owned),
        loglevel,
        hostname: cli.hostname.clone().or(file.hostname),
        activation_requested: cli.zone_id.is_some()
            || cli.origin_ca_api_key.is_some()
            || file.zone_id.is_some()
            || file.origin_ca_api_key.is_some(),
        auth_cert: cli
            .auth_cert
            .clone()
            .or(file.auth_cert)
            .unwrap_or_else(|| "server.pem".into()),
        auth_key: cli
            .auth_key
            .clone()
            .or(file.auth_key)
            .unwrap_or_else(|| "server-key.pem".into()),
        cloudflare_ca_cert: cli
            .cloudflare_ca_cert
            .clone()
            .or(file.cloudflare_ca_cert)
            .unwrap_or_else(|| "keyless_cacert.pem".into()),
        listen: SocketAddr::new(host, port),
        metrics_port: cli.metrics_port.or(file.metrics_port).unwrap_or(2406),
        pid_file: cli.pid_file.clone().or(file.pid_file),
        unix_socket: cli.unix_socket.clone().or(file.unix_socket),
        key_sources,
        workers: cli.workers.or(file.workers),
        spin_before_park_us: cli.spin_before_park_us.or(file.spin_before_park_us).unwrap_or(0),
        drain_timeout_s: cli.drain_timeout.or(file.drain_timeout).unwrap_or(30),
        handshake_timeout_s: cli.handshake_timeout.or(file.handshake_timeout).unwrap_or(10).max(1),
        idle_timeout_s: cli.idle_timeout.or(file.idle_timeout).unwrap_or(300),
        pkcs11: pkcs11_options(cli, &file_config_pkcs11)?,
        max_connections_per_core: max_connections,
        max_request_body: max_body,
        core_queue,
        batch_flush_us: cli.batch_flush_us.or(file.batch_flush_us).unwrap_or(2000),
    })
}

fn pkcs11_options(
    cli: &Cli,
    file: &(Option<u64>, Option<usize>, Option<usize>),
) -> Result<keyless_pkcs11::Options, ConfigError> {
    let defaults = keyless_pkcs11::Options::default();
    let timeout_ms = cli.pkcs11_timeout_ms.or(file.0);
    let sessions = cli.pkcs11_sessions.or(file.1).unwrap_or(defaults.sessions);
    let queue = cli.pkcs11_queue.or(file.2).unwrap_or(defaults.queue);
    if timeout_ms == Some(0) || sessions == 0 || queue == 0 {
        return Err(ConfigError::Other(
            "pkcs11_timeout_ms, pkcs11_sessions and pkcs11_queue must be at least 1".into(),
        ));
    }
    Ok(keyless_pkcs11::Options {
        sessions,
        queue,
        timeout: timeout_ms.map_or(defaults.timeout, std::time::Duration::from_millis),
    })
}

/// Read the configuration the way gokeyless does.
pub fn load(cli: &Cli) -> Result<Settings, ConfigError> {
    match locate(cli) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let file = parse_file(&path, &text)?;
            resolve(cli, Some(&path), file)
        }
        None => resolve(cli, None, FileConfig::default()),
    }
}
