//! Configuration, drop-in compatible with gokeyless: the same YAML keys, the
//! same flags, the same `KEYLESS_*` environment variables and the same
//! precedence (flag, then environment, then file, then default).
//!
//! One type, [`Options`], is both the command line (flags and environment,
//! through clap) and the file (through serde): each setting is declared
//! once, with its range in its type, so a value out of range is refused
//! where it was written — `path:line:column: field: reason` for the file,
//! the flag or variable's name for the command line. [`resolve`] layers the
//! two over the defaults, which live in one place: the `Default` of the
//! type each setting lands in ([`RuntimeConfig`], [`Limits`],
//! [`keyless_hsm::Options`]) or [`DEFAULTS`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::{NonZeroU16, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use keyless_engine::runtime::RuntimeConfig;
use keyless_keys::{KeySource, Pkcs11Source};
use keyless_service::changed_settings;
use serde::Deserialize;

use crate::connection::Limits;

/// Where gokeyless looks for its configuration when `-c` is not given.
pub const SEARCH_PATH: &[&str] = &["gokeyless.yaml", "/etc/keyless/gokeyless.yaml"];

/// Defaults of the settings that do not land in an engine type.
pub struct Defaults {
    pub loglevel: u8,
    pub port: u16,
    pub metrics_port: u16,
    pub metrics_host: IpAddr,
    pub auth_cert: &'static str,
    pub auth_key: &'static str,
    pub cloudflare_ca_cert: &'static str,
}

/// gokeyless's defaults.
pub const DEFAULTS: Defaults = Defaults {
    loglevel: 1,
    port: 2407,
    metrics_port: 2406,
    // Not gokeyless's (all addresses): metrics and CPU profiles of a process
    // that holds private keys stay on this machine unless configured.
    metrics_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
    auth_cert: "server.pem",
    auth_key: "server-key.pem",
    cloudflare_ca_cert: "keyless_cacert.pem",
};

/// Every setting, as the command line (every flag can also come from
/// `KEYLESS_<NAME>`) and as the YAML file: `None` where that layer does not
/// set it. Unknown file keys are ignored, as gokeyless (viper) does.
#[derive(Debug, Clone, Default, Parser, Deserialize)]
#[command(
    name = "keyless-server",
    version = keyless_service::VERSION,
    about = "Keyless SSL key server, wire-compatible with gokeyless",
    // gokeyless's `-v`/`--version`.
    disable_version_flag = true
)]
#[serde(default)]
pub struct Options {
    /// Print the version and the commit, and exit (`-v`, as gokeyless, or `-V`).
    #[arg(short = 'v', short_alias = 'V', long = "version", action = clap::ArgAction::Version)]
    #[serde(skip)]
    pub version: Option<bool>,
    /// List every key store and its keys, or what failed, and exit
    /// (gokeyless's --keystore-debug).
    #[arg(short = 'd', long = "keystore-debug")]
    #[serde(skip)]
    pub keystore_debug: bool,
    /// Print the effective configuration (flags over environment over file
    /// over defaults) and exit (gokeyless's -o, --output-config).
    #[arg(short = 'o', long = "output-config")]
    #[serde(skip)]
    pub output_config: bool,
    /// gokeyless flags that mean nothing here: refused with the reason
    /// ([`UNSUPPORTED`]).
    #[arg(long = "config-only", hide = true)]
    #[serde(skip)]
    pub config_only: bool,
    #[arg(long = "current-time", hide = true)]
    #[serde(skip)]
    pub current_time: Option<String>,
    #[arg(long = "tracing-enabled", hide = true, num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip)]
    pub tracing_enabled: Option<String>,
    #[arg(long = "tracing-address", hide = true)]
    #[serde(skip)]
    pub tracing_address: Option<String>,
    #[arg(long = "tracing-sample-rate", hide = true)]
    #[serde(skip)]
    pub tracing_sample_rate: Option<String>,
    #[arg(long = "manual-activation", hide = true, num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip)]
    pub manual_activation: Option<String>,
    #[arg(long = "init-endpoint", hide = true)]
    #[serde(skip)]
    pub init_endpoint: Option<String>,
    /// Configuration file (default: ./gokeyless.yaml, then /etc/keyless/gokeyless.yaml).
    #[arg(short = 'c', long = "config-file", env = "KEYLESS_CONFIG_FILE")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// Log level: 0 debug, 1 info, 2 warning, 3 error, 4 critical, 5 fatal.
    #[arg(short = 'l', long, env = "KEYLESS_LOGLEVEL", value_parser = clap::value_parser!(u8).range(0..=5))]
    #[serde(deserialize_with = "loglevel")]
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
    /// Port of the keyless listener; 0 turns listening off (a key server
    /// that only dials out).
    #[arg(long, env = "KEYLESS_PORT")]
    pub port: Option<u16>,
    /// Edges to connect out to and serve, `HOST:PORT` each (a name with
    /// several addresses is several edges): no inbound port is needed.
    #[arg(long, env = "KEYLESS_DIAL", value_delimiter = ',')]
    pub dial: Option<Vec<String>>,
    /// Connections to each edge, spread over the cores (default: one per core).
    #[arg(long = "dial-connections", env = "KEYLESS_DIAL_CONNECTIONS")]
    pub dial_connections: Option<NonZeroUsize>,
    /// HTTP CONNECT proxy for dialing, `http://[user:password@]host:port`
    /// (default: HTTPS_PROXY/https_proxy, minus NO_PROXY; `direct`: none).
    #[arg(long = "dial-proxy", env = "KEYLESS_DIAL_PROXY")]
    pub dial_proxy: Option<String>,
    /// The name the edges' certificates must carry (default: each HOST dialed).
    #[arg(long = "dial-server-name", env = "KEYLESS_DIAL_SERVER_NAME")]
    pub dial_server_name: Option<String>,
    /// Port of the metrics listener; 0 turns it off.
    #[arg(long = "metrics-port", env = "KEYLESS_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Address of the metrics listener (ours; default 127.0.0.1, local
    /// only; 0.0.0.0 for a remote Prometheus, as gokeyless listens). CPU
    /// profiles are served to local clients only, whatever this is.
    #[arg(long = "metrics-host", env = "KEYLESS_METRICS_HOST")]
    pub metrics_host: Option<IpAddr>,
    /// Write the process ID here at start-up.
    #[arg(long = "pid-file", env = "KEYLESS_PID_FILE")]
    pub pid_file: Option<PathBuf>,
    /// Key stores (file only): `dir`, `file` or PKCS#11 `uri` entries.
    #[arg(skip)]
    pub private_key_stores: Option<Vec<StoreEntry>>,
    /// Directories of `*.key` files, added to private_key_stores.
    #[arg(long = "private-key-dirs", env = "KEYLESS_PRIVATE_KEY_DIRS", value_delimiter = ',')]
    #[serde(skip)]
    pub private_key_dirs: Vec<PathBuf>,
    /// Key files, added to private_key_stores.
    #[arg(long = "private-key-files", env = "KEYLESS_PRIVATE_KEY_FILES", value_delimiter = ',')]
    #[serde(skip)]
    pub private_key_files: Vec<PathBuf>,
    /// Also serve the keyless protocol (over mutual TLS) on this Unix socket.
    #[arg(long = "unix-socket", env = "KEYLESS_UNIX_SOCKET")]
    pub unix_socket: Option<PathBuf>,
    /// Address to listen on (ours; gokeyless listens on all addresses).
    #[arg(long = "listen-host", env = "KEYLESS_LISTEN_HOST")]
    pub listen_host: Option<IpAddr>,
    /// Number of cores to serve on (ours; default: all).
    #[arg(long, env = "KEYLESS_WORKERS")]
    pub workers: Option<NonZeroUsize>,
    /// Microseconds a core spins for new work before sleeping (ours; default 0).
    #[arg(long = "spin-before-park-us", env = "KEYLESS_SPIN_BEFORE_PARK_US")]
    pub spin_before_park_us: Option<u64>,
    /// On SIGTERM/SIGINT, seconds to finish requests already received (ours; default 30).
    #[arg(long = "drain-timeout", env = "KEYLESS_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
    /// Seconds a client has to finish its TLS handshake (ours; default 10).
    #[arg(long = "handshake-timeout", env = "KEYLESS_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<NonZeroU64>,
    /// Close a connection idle this many seconds (ours; default 300, 0: never).
    #[arg(long = "idle-timeout", env = "KEYLESS_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Connections one core holds at most, handshakes included (ours; default 16384).
    #[arg(long = "max-connections-per-core", env = "KEYLESS_MAX_CONNECTIONS_PER_CORE")]
    pub max_connections_per_core: Option<NonZeroUsize>,
    /// Longest request body accepted, bytes (ours; default 65535, the protocol's).
    #[arg(long = "max-request-body", env = "KEYLESS_MAX_REQUEST_BODY")]
    pub max_request_body: Option<NonZeroU16>,
    /// Requests one core may queue for another at most (ours; default 1024).
    #[arg(long = "core-queue", env = "KEYLESS_CORE_QUEUE")]
    pub core_queue: Option<NonZeroUsize>,
    /// While a batch is being signed, write its answers at least this often,
    /// microseconds (ours; default 2000, 0: after every answer).
    #[arg(long = "batch-flush-us", env = "KEYLESS_BATCH_FLUSH_US")]
    pub batch_flush_us: Option<u64>,
    /// Milliseconds an HSM request may wait (queued, then signed) before it
    /// fails (ours; default 5000).
    #[arg(long = "pkcs11-timeout-ms", env = "KEYLESS_PKCS11_TIMEOUT_MS")]
    pub pkcs11_timeout_ms: Option<NonZeroU64>,
    /// Sessions per HSM token when its URI has no max-sessions (ours; default 2).
    #[arg(long = "pkcs11-sessions", env = "KEYLESS_PKCS11_SESSIONS")]
    pub pkcs11_sessions: Option<NonZeroUsize>,
    /// Requests queued per HSM token at most (ours; default 1024).
    #[arg(long = "pkcs11-queue", env = "KEYLESS_PKCS11_QUEUE")]
    pub pkcs11_queue: Option<NonZeroUsize>,
    /// Milliseconds a cloud key store request may take in all (waiting for a
    /// slot, every attempt, the pauses between retries) before it fails
    /// (ours; default 3000).
    #[arg(long = "cloud-timeout-ms", env = "KEYLESS_CLOUD_TIMEOUT_MS")]
    pub cloud_timeout_ms: Option<NonZeroU64>,
    /// Calls in flight per cloud key store at most; more wait their turn
    /// (ours; default 64).
    #[arg(long = "cloud-concurrency", env = "KEYLESS_CLOUD_CONCURRENCY")]
    pub cloud_concurrency: Option<NonZeroUsize>,
    /// Multi-buffer signing with Intel's crypto_mb on CPUs with AVX-512
    /// IFMA: auto uses it where it can run, on refuses to start without it,
    /// off never uses it (ours; default auto).
    #[arg(long, env = "KEYLESS_MULTIBUFFER")]
    pub multibuffer: Option<Multibuffer>,
    /// crypto_mb's path when it is not where the dynamic loader looks
    /// (ours; default: libcrypto_mb.so.11 from the library path).
    #[arg(long = "multibuffer-library", env = "KEYLESS_MULTIBUFFER_LIBRARY")]
    pub multibuffer_library: Option<PathBuf>,
    /// Microseconds requests too few for a multi-buffer call may wait for
    /// other connections' requests, while more keep arriving; an idle core
    /// never waits (ours; default 200, like CryptoMB's poll_delay).
    #[arg(long = "batch-delay-us", env = "KEYLESS_BATCH_DELAY_US")]
    pub batch_delay_us: Option<u64>,
    /// Let a crash write a core file (which holds the keys) and let other
    /// processes of the user ptrace this one: for a bug report only (ours;
    /// default false).
    #[arg(long = "allow-core-dumps", env = "KEYLESS_ALLOW_CORE_DUMPS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_core_dumps: Option<bool>,
    /// Do not lock memory (mlockall), so key pages may be swapped to disk;
    /// Vault's name for it (ours; default false).
    #[arg(long = "disable-mlock", env = "KEYLESS_DISABLE_MLOCK", num_args = 0..=1, default_missing_value = "true")]
    pub disable_mlock: Option<bool>,
    /// The sandbox the server puts itself in: Landlock (files and TCP
    /// ports) and a seccomp allow-list of system calls (ours; default on;
    /// off only to rule it out while debugging).
    #[arg(long, env = "KEYLESS_SANDBOX")]
    #[serde(deserialize_with = "on_off")]
    pub sandbox: Option<OnOff>,
    /// More files or folders the sandbox lets the server read: what a
    /// PKCS#11 module reads (its configuration, a token folder), a cloud
    /// SDK's credentials file (ours).
    #[arg(
        long = "sandbox-read-paths",
        env = "KEYLESS_SANDBOX_READ_PATHS",
        value_delimiter = ','
    )]
    pub sandbox_read_paths: Option<Vec<PathBuf>>,
    /// More files or folders the sandbox lets the server write (a PKCS#11
    /// module's token folder or lock files) (ours).
    #[arg(
        long = "sandbox-write-paths",
        env = "KEYLESS_SANDBOX_WRITE_PATHS",
        value_delimiter = ','
    )]
    pub sandbox_write_paths: Option<Vec<PathBuf>>,
    /// More TCP ports the server may connect to (a network HSM's); with a
    /// PKCS#11 store and none listed, connections are not restricted (ours).
    #[arg(
        long = "sandbox-connect-ports",
        env = "KEYLESS_SANDBOX_CONNECT_PORTS",
        value_delimiter = ','
    )]
    pub sandbox_connect_ports: Option<Vec<u16>>,
    /// Check the configuration and exit: load the TLS files and every key
    /// store, bind nothing (as `nginx -t`).
    #[arg(short = 't', long = "test-config")]
    #[serde(skip)]
    pub test_config: bool,
    /// Development mode: create a throwaway PKI and keys in --dev-dir (if
    /// missing) and serve them on 127.0.0.1.
    #[arg(long)]
    #[serde(skip)]
    pub dev: bool,
    /// Folder of the development PKI.
    #[arg(long = "dev-dir", default_value = "dev-pki")]
    #[serde(skip)]
    pub dev_dir: PathBuf,
    /// Top-level keys of the file this server does not know (ignored, as
    /// gokeyless ignores them, and said once each at start-up).
    #[arg(skip)]
    #[serde(skip)]
    pub unknown_keys: Vec<String>,
}

/// gokeyless's log levels: 0 debug ... 5 fatal. Checked inside the
/// deserializer, so the error carries the field and its line.
/// gokeyless's settings that mean nothing here, each with why: as a flag
/// they stop start-up, as a key of the file they are said once.
pub const UNSUPPORTED: [(&str, &str); 7] = [
    ("current-time", "gokeyless's clock override for tests"),
    ("tracing-enabled", "gokeyless's Jaeger tracing"),
    ("tracing-address", "gokeyless's Jaeger tracing"),
    ("tracing-sample-rate", "gokeyless's Jaeger tracing"),
    ("manual-activation", "activation through Cloudflare's API"),
    ("init-endpoint", "activation through Cloudflare's API"),
    (
        "config-only",
        "gokeyless's interactive activation through Cloudflare's API; -o (--output-config) prints the \
         effective configuration",
    ),
];

impl Options {
    /// Which of [`UNSUPPORTED`] this command line set, if any.
    pub fn unsupported_flag(&self) -> Option<(&'static str, &'static str)> {
        let set = [
            self.current_time.is_some(),
            self.tracing_enabled.is_some(),
            self.tracing_address.is_some(),
            self.tracing_sample_rate.is_some(),
            self.manual_activation.is_some(),
            self.init_endpoint.is_some(),
            self.config_only,
        ];
        UNSUPPORTED.iter().zip(set).find(|(_, set)| *set).map(|(u, _)| *u)
    }
}

/// The command line as gokeyless's: pflag there turns every `-` of a flag
/// name into `_`, so `--metrics_port` and `--metrics-port` are one flag.
/// Every long flag here takes its underscore spelling as an alias.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Options::command().mut_args(|arg| match arg.get_long().filter(|l| l.contains('-')) {
        Some(long) => {
            let underscored: &'static str = Box::leak(long.replace('-', "_").into_boxed_str());
            arg.alias(underscored)
        }
        None => arg,
    })
}

/// Parse this process's arguments (see [`command`]); on a bad one, print
/// clap's message and exit as clap does.
pub fn parse_args() -> Options {
    try_parse_args_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`parse_args`] from `args`, without exiting. A bad value that came from
/// a `KEYLESS_*` variable, not from a flag, is blamed on the variable
/// (`KEYLESS_PORT=abc`), where clap would name the flag the operator never
/// typed.
pub fn try_parse_args_from<I, T>(args: I) -> Result<Options, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::FromArgMatches;
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let cmd = command();
    let mut matches = cmd
        .clone()
        .try_get_matches_from(&args)
        .map_err(|e| blame_the_variable(&cmd, &args, e))?;
    Options::from_arg_matches_mut(&mut matches)
}

fn blame_the_variable(cmd: &clap::Command, args: &[std::ffi::OsString], error: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(error.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        return error;
    }
    let (Some(ContextValue::String(flag)), Some(ContextValue::String(value))) =
        (error.get(ContextKind::InvalidArg), error.get(ContextKind::InvalidValue))
    else {
        return error;
    };
    let typed = |long: &str| {
        args.iter().skip(1).any(|a| {
            let a = a.to_string_lossy();
            let name = a
                .split('=')
                .next()
                .unwrap_or_default()
                .trim_start_matches('-')
                .replace('_', "-");
            a.starts_with("--") && name == long
        })
    };
    let from_env = cmd.get_arguments().find(|arg| {
        let (Some(long), Some(var)) = (arg.get_long(), arg.get_env()) else {
            return false;
        };
        flag.starts_with(&format!("--{long} "))
            && !typed(long)
            && std::env::var_os(var).is_some_and(|v| v.to_string_lossy() == value.as_str())
    });
    let Some(arg) = from_env else {
        return error;
    };
    let var = arg
        .get_env()
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reason = std::error::Error::source(&error)
        .map(|e| e.to_string())
        .unwrap_or_else(|| "not a valid value".into());
    let mut cmd = cmd.clone();
    cmd.error(
        ErrorKind::ValueValidation,
        format!("{var}={value}: {reason} (the environment's value for {flag})"),
    )
}

/// An `on`/`off` setting as written (YAML's `true`/`false` too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

fn on_off<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<OnOff>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Bool(bool),
        Word(String),
    }
    match Option::<Written>::deserialize(d)? {
        None => Ok(None),
        Some(Written::Bool(b)) => Ok(Some(if b { OnOff::On } else { OnOff::Off })),
        Some(Written::Word(w)) => match w.as_str() {
            "on" => Ok(Some(OnOff::On)),
            "off" => Ok(Some(OnOff::Off)),
            other => Err(serde::de::Error::custom(format!("`{other}` is neither on nor off"))),
        },
    }
}

/// The `multibuffer` setting as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Multibuffer {
    Auto,
    On,
    Off,
}

impl From<Multibuffer> for keyless_keys::multibuffer::Mode {
    fn from(m: Multibuffer) -> Self {
        match m {
            Multibuffer::Auto => Self::Auto,
            Multibuffer::On => Self::On,
            Multibuffer::Off => Self::Off,
        }
    }
}

fn loglevel<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    struct Level;
    impl<'de> serde::de::Visitor<'de> for Level {
        type Value = Option<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a log level, 0 debug to 5 fatal")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_u8(self)
        }
        fn visit_u64<E: serde::de::Error>(self, l: u64) -> Result<Self::Value, E> {
            match u8::try_from(l) {
                Ok(l) if l <= 5 => Ok(Some(l)),
                _ => Err(E::custom(format!(
                    "{l} is not a log level (0 debug, 1 info, 2 warning, 3 error, 4 critical, 5 fatal)"
                ))),
            }
        }
    }
    d.deserialize_option(Level)
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
            (None, None, Some(uri)) if keyless_cloud::CloudUri::looks_like(&uri) => {
                match keyless_cloud::CloudUri::parse(&uri) {
                    Ok(_) => Ok(StoreEntry(KeySource::Cloud(uri))),
                    Err(e) => Err(e.to_string()),
                }
            }
            (None, None, Some(uri)) => match keyless_hsm::Pkcs11Uri::parse(&uri) {
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
    /// gokeyless settings accepted and not used (activation through
    /// Cloudflare's API, its CSR), as set; secrets as `***`. `-o` prints them.
    pub not_used: Vec<(&'static str, String)>,
    pub auth_cert: PathBuf,
    pub auth_key: PathBuf,
    pub cloudflare_ca_cert: PathBuf,
    /// Where the keyless listener listens (port 0: it does not).
    pub listen: SocketAddr,
    /// Edges to connect out to (`dial`), with how.
    pub dial: Option<crate::dial::DialSettings>,
    /// Where `/metrics`, `/healthz`, `/readyz` and profiles are served.
    pub metrics: SocketAddr,
    pub pid_file: Option<PathBuf>,
    pub unix_socket: Option<PathBuf>,
    pub key_sources: Vec<KeySource>,
    /// Keys of the file this server ignores (to be said at start-up).
    pub unknown_keys: Vec<String>,
    /// The cores: how many, and how they share work.
    pub runtime: RuntimeConfig,
    /// Each connection's bounds and timeouts.
    pub limits: Limits,
    /// How HSM (PKCS#11) key stores are served.
    pub pkcs11: keyless_hsm::Options,
    /// How cloud key stores are called (applies on reload).
    pub cloud: keyless_cloud::Options,
    pub multibuffer: keyless_keys::multibuffer::Mode,
    pub multibuffer_library: Option<PathBuf>,
    /// Core files and ptrace by the same user allowed (else forbidden).
    pub allow_core_dumps: bool,
    /// Memory left unlocked (else mlockall).
    pub disable_mlock: bool,
    /// The sandbox applied (Landlock and seccomp).
    pub sandbox: bool,
    /// The operator's additions to what the sandbox allows.
    pub sandbox_read_paths: Vec<PathBuf>,
    pub sandbox_write_paths: Vec<PathBuf>,
    pub sandbox_connect_ports: Vec<u16>,
}

impl Settings {
    /// Settings `next` changes that a reload (SIGHUP) cannot apply: they
    /// need a restart. Keys, the server certificate and the client CA reload.
    pub fn restart_needed(&self, next: &Settings) -> Vec<&'static str> {
        changed_settings([
            ("listen_host/port", self.listen != next.listen),
            ("metrics_host/metrics_port", self.metrics != next.metrics),
            ("unix_socket", self.unix_socket != next.unix_socket),
            ("dial settings", self.dial != next.dial),
            ("pid_file", self.pid_file != next.pid_file),
            ("loglevel", self.loglevel != next.loglevel),
            (
                "workers, spin_before_park_us or core_queue",
                self.runtime != next.runtime,
            ),
            ("connection limits and timeouts", self.limits != next.limits),
            ("pkcs11 options", self.pkcs11 != next.pkcs11),
            (
                "allow_core_dumps or disable_mlock",
                (self.allow_core_dumps, self.disable_mlock) != (next.allow_core_dumps, next.disable_mlock),
            ),
            // The sandbox's files and ports are fixed at start: a new key
            // folder, module or endpoint is readable after a restart.
            (
                "sandbox, or what it allows (a new key folder, module, certificate or endpoint)",
                self.sandbox != next.sandbox || (self.sandbox && crate::sandbox::widens(self, next)),
            ),
        ])
    }

    /// The effective configuration as a file would write it, every default
    /// filled in (`--config-only`). PKCS#11 PINs are not printed.
    pub fn to_yaml(&self) -> String {
        let path = |p: &Path| p.display().to_string();
        let mut out = format!(
            "# effective configuration of keyless-server{}\n",
            self.config_file
                .as_deref()
                .map_or(String::new(), |p| format!(" (file: {})", p.display()))
        );
        let mut line = |key: &str, value: String| out.push_str(&format!("{key}: {value}\n"));
        line("loglevel", self.loglevel.to_string());
        if let Some(h) = &self.hostname {
            line("hostname", h.clone());
        }
        line("auth_cert", path(&self.auth_cert));
        line("auth_key", path(&self.auth_key));
        line("cloudflare_ca_cert", path(&self.cloudflare_ca_cert));
        line("listen_host", self.listen.ip().to_string());
        line("port", self.listen.port().to_string());
        line("metrics_host", self.metrics.ip().to_string());
        line("metrics_port", self.metrics.port().to_string());
        if let Some(p) = &self.pid_file {
            line("pid_file", path(p));
        }
        if let Some(p) = &self.unix_socket {
            line("unix_socket", path(p));
        }
        if let Some(d) = &self.dial {
            line("dial", format!("[{}]", d.edges.join(", ")));
            if let Some(n) = d.connections {
                line("dial_connections", n.to_string());
            }
            if let Some(p) = &d.proxy {
                // Credentials are shown as set, never printed.
                let shown = crate::dial::Proxy::parse(p).map_or_else(
                    |_| p.clone(),
                    |p| {
                        let who = if p.credentials.is_some() { "***@" } else { "" };
                        format!("http://{who}{}:{}", p.host, p.port)
                    },
                );
                line("dial_proxy", shown);
            }
            if let Some(n) = &d.server_name {
                line("dial_server_name", n.clone());
            }
        }
        line("workers", self.runtime.cores.to_string());
        line(
            "spin_before_park_us",
            self.runtime.spin_before_park.as_micros().to_string(),
        );
        line("core_queue", self.runtime.core_queue.to_string());
        line("batch_delay_us", self.runtime.batch_delay.as_micros().to_string());
        line("drain_timeout", self.limits.drain_timeout.as_secs().to_string());
        line("handshake_timeout", self.limits.handshake_timeout.as_secs().to_string());
        line("idle_timeout", self.limits.idle_timeout.as_secs().to_string());
        line("max_connections_per_core", self.limits.max_connections.to_string());
        line("max_request_body", self.limits.max_body.to_string());
        line("batch_flush_us", self.limits.batch_flush.as_micros().to_string());
        line("pkcs11_timeout_ms", self.pkcs11.timeout.as_millis().to_string());
        line("pkcs11_sessions", self.pkcs11.sessions.to_string());
        line("cloud_timeout_ms", self.cloud.timeout.as_millis().to_string());
        line("cloud_concurrency", self.cloud.concurrency.to_string());
        line("multibuffer", self.multibuffer.to_string());
        if let Some(p) = &self.multibuffer_library {
            line("multibuffer_library", p.display().to_string());
        }
        line("pkcs11_queue", self.pkcs11.queue.to_string());
        line("allow_core_dumps", self.allow_core_dumps.to_string());
        line("disable_mlock", self.disable_mlock.to_string());
        line("sandbox", if self.sandbox { "on" } else { "off" }.to_string());
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        if !self.sandbox_read_paths.is_empty() {
            line(
                "sandbox_read_paths",
                list(self.sandbox_read_paths.iter().map(|p| path(p)).collect()),
            );
        }
        if !self.sandbox_write_paths.is_empty() {
            line(
                "sandbox_write_paths",
                list(self.sandbox_write_paths.iter().map(|p| path(p)).collect()),
            );
        }
        if !self.sandbox_connect_ports.is_empty() {
            line(
                "sandbox_connect_ports",
                list(self.sandbox_connect_ports.iter().map(u16::to_string).collect()),
            );
        }
        if !self.not_used.is_empty() || !self.unknown_keys.is_empty() {
            line(
                "# set, and not used by keyless-server (start-up says why)",
                String::new(),
            );
        }
        for (key, value) in &self.not_used {
            line(key, value.clone());
        }
        for key in &self.unknown_keys {
            line(&format!("# {key}"), "(ignored)".into());
        }
        out.push_str("private_key_stores:");
        if self.key_sources.is_empty() {
            out.push_str(" []");
        }
        out.push('\n');
        for source in &self.key_sources {
            out.push_str(&match source {
                KeySource::Dir(d) => format!("  - dir: {}\n", d.display()),
                KeySource::File(f) => format!("  - file: {}\n", f.display()),
                KeySource::Pkcs11(uri) => format!("  - uri: \"{}\"\n", uri.redacted()),
                KeySource::Cloud(uri) => format!("  - uri: \"{uri}\"\n"),
            });
        }
        out
    }
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
    /// `path:line:column: field: reason`.
    #[error(transparent)]
    Syntax(#[from] keyless_service::yaml::YamlError),
}

/// Parse YAML text from `path` (the path is for messages only).
pub fn parse_file(path: &Path, text: &str) -> Result<Options, ConfigError> {
    let (mut options, unknown): (Options, _) = keyless_service::yaml::parse_noting_unknown(path, text)?;
    options.unknown_keys = unknown;
    Ok(options)
}

/// The configuration file to read: `-c` if given (it must exist), else the
/// first of the search path that exists, else none.
pub fn locate(cli: &Options) -> Option<PathBuf> {
    if let Some(p) = &cli.config_file {
        return Some(p.clone());
    }
    SEARCH_PATH.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Layer flags and environment (already folded together by clap) over
/// the file over the defaults. Every value was checked where it was read.
pub fn resolve(cli: &Options, file_path: Option<&Path>, file: Options) -> Result<Settings, ConfigError> {
    macro_rules! pick {
        ($field:ident) => {
            cli.$field.clone().or(file.$field.clone())
        };
    }
    let mut key_sources: Vec<KeySource> = file
        .private_key_stores
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.0)
        .collect();
    key_sources.extend(cli.private_key_dirs.iter().cloned().map(KeySource::Dir));
    key_sources.extend(cli.private_key_files.iter().cloned().map(KeySource::File));
    let host = pick!(listen_host).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let runtime = RuntimeConfig::default();
    let runtime = RuntimeConfig {
        cores: pick!(workers).map_or(runtime.cores, NonZeroUsize::get),
        spin_before_park: pick!(spin_before_park_us).map_or(runtime.spin_before_park, Duration::from_micros),
        core_queue: pick!(core_queue).map_or(runtime.core_queue, NonZeroUsize::get),
        batch_delay: pick!(batch_delay_us).map_or(runtime.batch_delay, Duration::from_micros),
        ..runtime
    };
    let limits = Limits::default();
    let limits = Limits {
        drain_timeout: pick!(drain_timeout).map_or(limits.drain_timeout, Duration::from_secs),
        handshake_timeout: pick!(handshake_timeout).map_or(limits.handshake_timeout, |s| Duration::from_secs(s.get())),
        idle_timeout: pick!(idle_timeout).map_or(limits.idle_timeout, Duration::from_secs),
        max_connections: pick!(max_connections_per_core).map_or(limits.max_connections, NonZeroUsize::get),
        max_body: pick!(max_request_body).map_or(limits.max_body, |b| b.get().into()),
        batch_flush: pick!(batch_flush_us).map_or(limits.batch_flush, Duration::from_micros),
        ..limits
    };
    let pkcs11 = keyless_hsm::Options::default();
    let pkcs11 = keyless_hsm::Options {
        sessions: pick!(pkcs11_sessions).map_or(pkcs11.sessions, NonZeroUsize::get),
        queue: pick!(pkcs11_queue).map_or(pkcs11.queue, NonZeroUsize::get),
        timeout: pick!(pkcs11_timeout_ms).map_or(pkcs11.timeout, |ms| Duration::from_millis(ms.get())),
    };
    let cloud = keyless_cloud::Options::default();
    let cloud = keyless_cloud::Options {
        timeout: pick!(cloud_timeout_ms).map_or(cloud.timeout, |ms| Duration::from_millis(ms.get())),
        concurrency: pick!(cloud_concurrency).map_or(cloud.concurrency, NonZeroUsize::get),
    };
    Ok(Settings {
        config_file: file_path.map(Path::to_owned),
        loglevel: pick!(loglevel).unwrap_or(DEFAULTS.loglevel),
        hostname: pick!(hostname),
        activation_requested: [
            &cli.zone_id,
            &cli.origin_ca_api_key,
            &file.zone_id,
            &file.origin_ca_api_key,
        ]
        .iter()
        .any(|v| v.is_some()),
        not_used: [
            ("zone_id", pick!(zone_id)),
            ("origin_ca_api_key", pick!(origin_ca_api_key).map(|_| "***".to_string())),
            ("auth_csr", pick!(auth_csr).map(|p| p.display().to_string())),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v)))
        .collect(),
        auth_cert: pick!(auth_cert).unwrap_or_else(|| DEFAULTS.auth_cert.into()),
        auth_key: pick!(auth_key).unwrap_or_else(|| DEFAULTS.auth_key.into()),
        cloudflare_ca_cert: pick!(cloudflare_ca_cert).unwrap_or_else(|| DEFAULTS.cloudflare_ca_cert.into()),
        listen: SocketAddr::new(host, pick!(port).unwrap_or(DEFAULTS.port)),
        metrics: SocketAddr::new(
            pick!(metrics_host).unwrap_or(DEFAULTS.metrics_host),
            pick!(metrics_port).unwrap_or(DEFAULTS.metrics_port),
        ),
        pid_file: pick!(pid_file),
        unix_socket: pick!(unix_socket),
        dial: pick!(dial).filter(|edges| !edges.is_empty()).map(|edges| {
            crate::dial::DialSettings {
                edges,
                connections: pick!(dial_connections).map(NonZeroUsize::get),
                server_name: pick!(dial_server_name),
                ..Default::default()
            }
            .with_proxy_from(pick!(dial_proxy), |name| std::env::var(name).ok())
        }),
        key_sources,
        unknown_keys: file.unknown_keys.clone(),
        runtime,
        limits,
        pkcs11,
        cloud,
        multibuffer: pick!(multibuffer).map_or_else(Default::default, Into::into),
        multibuffer_library: pick!(multibuffer_library),
        allow_core_dumps: pick!(allow_core_dumps).unwrap_or(false),
        disable_mlock: pick!(disable_mlock).unwrap_or(false),
        sandbox: pick!(sandbox) != Some(OnOff::Off),
        sandbox_read_paths: pick!(sandbox_read_paths).unwrap_or_default(),
        sandbox_write_paths: pick!(sandbox_write_paths).unwrap_or_default(),
        sandbox_connect_ports: pick!(sandbox_connect_ports).unwrap_or_default(),
    })
}

/// Read the configuration the way gokeyless does.
pub fn load(cli: &Options) -> Result<Settings, ConfigError> {
    match locate(cli) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let file = parse_file(&path, &text)?;
            resolve(cli, Some(&path), file)
        }
        None => resolve(cli, None, Options::default()),
    }
}
