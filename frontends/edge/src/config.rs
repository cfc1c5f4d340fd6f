//! The edge's configuration: a YAML file (`edge.yaml`) and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use keyless_service::changed_settings;
use keyless_service::yaml::{duration, millis};
use serde::Deserialize;

/// Command line.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "keyless-edge",
    version = keyless_service::VERSION,
    about = "Keyless SSL edge: terminates TLS, signs with keys on remote key servers",
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the version and the commit, and exit (`-v` or `-V`).
    #[arg(short = 'v', short_alias = 'V', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,
    /// Configuration file (default: /etc/keyless/edge.yaml, where the
    /// Debian package installs it).
    #[arg(short = 'c', long = "config-file", env = "KEYLESS_EDGE_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Log level, as the key server's: 0 debug, 1 info, 2 warning, 3 error, 4 critical, 5 fatal.
    #[arg(short = 'l', long, env = "KEYLESS_LOGLEVEL", value_parser = clap::value_parser!(u8).range(0..=5))]
    pub loglevel: Option<u8>,
    /// Check the configuration and exit: load every certificate and key
    /// file it names, bind nothing (as `nginx -t`).
    #[arg(short = 't', long = "test-config")]
    pub test_config: bool,
    /// Development mode: the development PKI in --dev-dir (made if missing)
    /// and an edge on 127.0.0.1:8443 that signs with the key server on
    /// --dev-key-server-port (`keyless-server --dev`; `keyless-tool dev`
    /// runs both in one process).
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
    /// Time between key rotations (in memory; default 1h).
    #[serde(default, deserialize_with = "duration")]
    pub rotation: Option<Duration>,
    /// Ticket lifetime hint and window (default 18h).
    #[serde(default, deserialize_with = "duration")]
    pub lifetime: Option<Duration>,
    /// Old spellings, in seconds.
    #[serde(default, deserialize_with = "duration")]
    rotation_s: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    lifetime_s: Option<Duration>,
}

/// Where handshakes wait for their signature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandshakeMode {
    /// A coroutine on the core, suspended until the key server answers.
    #[default]
    Coroutine,
    /// A handshake thread, blocked until the key server answers.
    Threads,
}

/// The YAML file. A top-level key it does not know is ignored and said at
/// start-up (the key server's rule, gokeyless's files' too); inside an
/// entry (a certificate, `tickets`) it is an error, since a typo there
/// would change what is served.
#[derive(Debug, Clone, Deserialize)]
pub struct EdgeConfig {
    /// Where clients connect (every core listens, SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Metrics, `/healthz`, `/readyz` (default: none).
    pub metrics_listen: Option<SocketAddr>,
    /// Cores to serve on (default: all).
    pub workers: Option<usize>,
    pub certificates: Vec<CertEntry>,
    /// Key servers to dial, `HOST:PORT`; a name with several addresses
    /// counts as several. May be empty when key servers dial in.
    #[serde(default)]
    pub key_servers: Vec<String>,
    /// Where key servers that dial out (`dial` in their configuration)
    /// connect to this edge (default: none). Mutual TLS: the edge presents
    /// `client_cert` (it needs serverAuth and the name the key servers
    /// dial) and accepts key servers whose certificates chain to
    /// `key_server_ca`.
    pub key_server_listen: Option<SocketAddr>,
    /// Name the key servers' certificates carry (default: each HOST).
    pub key_server_name: Option<String>,
    /// CA of the key servers' certificates.
    pub key_server_ca: PathBuf,
    /// The edge's client certificate and key for mutual TLS to key servers.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Connections to each dialed key server for the whole edge process,
    /// spread over its cores; a core holding none hands its requests to one
    /// that does (default 2, or the number of cores if fewer). What a fleet
    /// wants: a key server's connections grow with the edge processes, not
    /// with their cores.
    pub key_server_connections: Option<std::num::NonZeroUsize>,
    /// Connections to each dialed key server from every core instead
    /// (`key_server_connections` times the cores, and no core hands
    /// requests to another); set one or the other.
    pub connections_per_server: Option<std::num::NonZeroUsize>,
    /// DNS servers to ask for the `key_servers` names, `IP:PORT` each
    /// (default: the system's, as /etc/resolv.conf and /etc/hosts say).
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// Time between lookups of the `key_servers` names (default 30s); a
    /// SIGHUP looks them up at once. Key servers new in the answer get
    /// connections, those gone from it finish what they carry and close.
    #[serde(default, deserialize_with = "duration")]
    pub resolve_interval: Option<Duration>,
    /// How long a remote signature may take (default 2s).
    #[serde(default, deserialize_with = "duration")]
    pub request_timeout: Option<Duration>,
    /// Time between health pings per connection (default 1s).
    #[serde(default, deserialize_with = "duration")]
    pub health_interval: Option<Duration>,
    /// Where handshakes wait for their signature (default `coroutine`).
    #[serde(default)]
    pub handshake_mode: HandshakeMode,
    /// `threads` mode: signatures in flight at once (default 256).
    pub handshake_threads: Option<usize>,
    /// How long a client has to finish its handshake (default 10s).
    #[serde(default, deserialize_with = "duration")]
    pub handshake_timeout: Option<Duration>,
    /// On SIGTERM, how long open connections may take to finish (default 30s).
    #[serde(default, deserialize_with = "duration")]
    pub drain_timeout: Option<Duration>,
    /// A keep-alive connection with no request (built-in answer) or no
    /// traffic either way (proxy) for this long is closed (default 60s;
    /// 0: never).
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// Connections one core holds at most, handshakes included; more are
    /// closed at once (default 16384, as the key server's).
    pub max_connections_per_core: Option<std::num::NonZeroUsize>,
    /// Old spellings of the durations above, with their unit in the name;
    /// still accepted.
    #[serde(default, deserialize_with = "millis")]
    request_timeout_ms: Option<Duration>,
    #[serde(default, deserialize_with = "millis")]
    health_interval_ms: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    handshake_timeout_s: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    drain_timeout_s: Option<Duration>,
    /// Let a crash write a core file (which holds the session-ticket keys)
    /// and let other processes of the user ptrace this one: for a bug
    /// report only (default false).
    #[serde(default)]
    pub allow_core_dumps: bool,
    /// Do not lock memory (mlockall), so ticket keys may be swapped to disk
    /// (default false).
    #[serde(default)]
    pub disable_mlock: bool,
    /// Proxy decrypted traffic here; without it, answer HTTP/1.1 with a built-in page.
    pub upstream: Option<SocketAddr>,
    /// Prefix each upstream connection with a PROXY protocol v2 header.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// One log line per connection (target `access`): client, SNI, TLS
    /// version, cipher, ALPN, full or resumed, the signing step's time,
    /// bytes each way, duration. Default: off.
    #[serde(default)]
    pub access_log: bool,
    /// ALPN protocols offered to clients, in order of preference (`[h2,
    /// http/1.1]`); the one negotiated reaches the upstream in the PROXY
    /// header. Default: none (no ALPN).
    #[serde(default)]
    pub alpn: Vec<String>,
    /// The ALPN protocols the upstream speaks (default `[http/1.1]`): the
    /// edge passes bytes, so `alpn` may offer only these. The built-in
    /// page (no upstream) speaks http/1.1 only.
    pub upstream_protocols: Option<Vec<String>>,
    #[serde(default)]
    pub tickets: TicketSettings,
    /// Top-level keys this edge does not know, ignored.
    #[serde(skip)]
    pub unknown_keys: Vec<String>,
}

impl EdgeConfig {
    /// Settings `next` changes that a reload (SIGHUP) cannot apply: they
    /// need a restart. Certificates and ticket keys reload.
    pub fn restart_needed(&self, next: &EdgeConfig) -> Vec<&'static str> {
        changed_settings([
            ("listen", self.listen != next.listen),
            ("metrics_listen", self.metrics_listen != next.metrics_listen),
            ("workers", self.workers != next.workers),
            ("key_servers", self.key_servers != next.key_servers),
            ("key_server_listen", self.key_server_listen != next.key_server_listen),
            ("key_server_name", self.key_server_name != next.key_server_name),
            (
                "key_server_connections or connections_per_server",
                (self.key_server_connections, self.connections_per_server)
                    != (next.key_server_connections, next.connections_per_server),
            ),
            (
                "nameservers or resolve_interval",
                (&self.nameservers, self.resolve_interval()) != (&next.nameservers, next.resolve_interval()),
            ),
            (
                "key_server_ca, client_cert or client_key",
                (&self.key_server_ca, &self.client_cert, &self.client_key)
                    != (&next.key_server_ca, &next.client_cert, &next.client_key),
            ),
            ("handshake_mode", self.handshake_mode != next.handshake_mode),
            (
                "allow_core_dumps or disable_mlock",
                (self.allow_core_dumps, self.disable_mlock) != (next.allow_core_dumps, next.disable_mlock),
            ),
            (
                "upstream, upstream_protocols or proxy_protocol",
                (self.upstream, &self.upstream_protocols, self.proxy_protocol)
                    != (next.upstream, &next.upstream_protocols, next.proxy_protocol),
            ),
            (
                "timeouts or max_connections_per_core",
                (
                    self.request_timeout(),
                    self.handshake_timeout(),
                    self.drain_timeout(),
                    self.health_interval(),
                    self.idle_timeout(),
                    self.max_connections_per_core(),
                ) != (
                    next.request_timeout(),
                    next.handshake_timeout(),
                    next.drain_timeout(),
                    next.health_interval(),
                    next.idle_timeout(),
                    next.max_connections_per_core(),
                ),
            ),
        ])
    }

    /// What the bytes behind the edge speak: the upstream's protocols, or
    /// the built-in page's.
    pub fn upstream_protocols(&self) -> Vec<String> {
        match (&self.upstream, &self.upstream_protocols) {
            (Some(_), Some(protocols)) => protocols.clone(),
            _ => vec!["http/1.1".to_string()],
        }
    }

    pub fn resolve_interval(&self) -> Duration {
        self.resolve_interval
            .unwrap_or(Duration::from_secs(30))
            .max(Duration::from_secs(1))
    }

    /// Who holds the connections to the dialed key servers, on `cores` cores.
    pub fn links(&self, cores: usize) -> keyless_client::glommio::Links {
        use keyless_client::glommio::Links;
        match (self.connections_per_server, self.key_server_connections) {
            (Some(per_core), _) => Links::PerCore(per_core.get()),
            (None, Some(n)) => Links::PerProcess(n.get()),
            (None, None) => Links::PerProcess(2.min(cores.max(1))),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
            .or(self.request_timeout_ms)
            .unwrap_or(Duration::from_secs(2))
    }

    pub fn health_interval(&self) -> Duration {
        self.health_interval
            .or(self.health_interval_ms)
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(10))
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
            .or(self.handshake_timeout_s)
            .unwrap_or(Duration::from_secs(10))
            .max(Duration::from_secs(1))
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout.unwrap_or(Duration::from_secs(60))
    }

    pub fn max_connections_per_core(&self) -> usize {
        self.max_connections_per_core.map_or(16384, std::num::NonZeroUsize::get)
    }

    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
            .or(self.drain_timeout_s)
            .unwrap_or(Duration::from_secs(30))
    }

    pub fn ticket_rotation(&self) -> Duration {
        let t = &self.tickets;
        t.rotation
            .or(t.rotation_s)
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_secs(1))
    }

    pub fn ticket_lifetime(&self) -> Duration {
        let t = &self.tickets;
        t.lifetime
            .or(t.lifetime_s)
            .unwrap_or(Duration::from_secs(64800))
            .max(Duration::from_secs(1))
    }
}

/// Read and check a configuration file; errors name the file, line and field.
pub fn load(path: &Path) -> Result<EdgeConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<EdgeConfig, String> {
    let (mut config, unknown): (EdgeConfig, _) =
        keyless_service::yaml::parse_noting_unknown(path, text).map_err(|e| e.to_string())?;
    // Unknown keys inside entries are refused by the entries themselves.
    config.unknown_keys = unknown;
    if config.certificates.is_empty() {
        return Err(format!("{}: certificates: at least one is needed", path.display()));
    }
    if config.key_servers.is_empty() && config.key_server_listen.is_none() {
        return Err(format!(
            "{}: key_servers: at least one is needed, or key_server_listen for key servers that dial in",
            path.display()
        ));
    }
    if config.key_server_listen.is_some() && config.handshake_mode == HandshakeMode::Threads {
        return Err(format!(
            "{}: key_server_listen: key servers that dial in serve the coroutine handshake mode only; \
             remove handshake_mode: threads",
            path.display()
        ));
    }
    if config.key_server_connections.is_some() && config.connections_per_server.is_some() {
        return Err(format!(
            "{}:{}: connections_per_server: key_server_connections says how many connections the whole \
             process keeps to each key server, connections_per_server how many every core keeps: set one",
            path.display(),
            top_level_line(text, "connections_per_server"),
        ));
    }
    if config.upstream.is_none() && config.upstream_protocols.is_some() {
        return Err(format!(
            "{}:{}: upstream_protocols: there is no upstream (the built-in page speaks http/1.1)",
            path.display(),
            top_level_line(text, "upstream_protocols"),
        ));
    }
    let speaks = config.upstream_protocols();
    if let Some(other) = config.alpn.iter().find(|p| !speaks.contains(p)) {
        let behind = if config.upstream.is_some() {
            format!(
                "the upstream speaks {} (upstream_protocols); add {other} there if it speaks it too",
                speaks.join(", ")
            )
        } else {
            "the built-in page speaks http/1.1 only".to_string()
        };
        return Err(format!(
            "{}:{}: alpn: {other} would be offered to clients, but {behind}: the edge passes bytes and \
             cannot translate",
            path.display(),
            top_level_line(text, "alpn"),
        ));
    }
    Ok(config)
}

/// The line of top-level `key:` in `text` (1 if not found: a flow mapping).
fn top_level_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listen: 127.0.0.1:0\ncertificates: [{cert: c.pem}]\nkey_servers: [\"k:1\"]\n\
                        key_server_ca: ca.pem\nclient_cert: c.pem\nclient_key: k.pem\n";

    fn parse_with(extra: &str) -> Result<EdgeConfig, String> {
        parse(Path::new("edge.yaml"), &format!("{BASE}{extra}"))
    }

    #[test]
    fn alpn_offers_only_what_the_upstream_speaks() {
        let e = parse_with("upstream: 127.0.0.1:8080\nalpn: [h2, http/1.1]\n").unwrap_err();
        assert_eq!(
            e,
            "edge.yaml:8: alpn: h2 would be offered to clients, but the upstream speaks http/1.1 \
             (upstream_protocols); add h2 there if it speaks it too: the edge passes bytes and cannot translate"
        );
        let e = parse_with("alpn: [h2]\n").unwrap_err();
        assert!(
            e.starts_with("edge.yaml:7: alpn: h2") && e.contains("built-in page"),
            "{e}"
        );
        let e = parse_with("upstream_protocols: [h2]\n").unwrap_err();
        assert!(
            e.starts_with("edge.yaml:7: upstream_protocols: there is no upstream"),
            "{e}"
        );
        let c =
            parse_with("upstream: 127.0.0.1:8080\nupstream_protocols: [h2, http/1.1]\nalpn: [h2, http/1.1]\n").unwrap();
        assert_eq!(c.upstream_protocols(), ["h2", "http/1.1"]);
        assert_eq!(
            parse_with("alpn: [http/1.1]\n").unwrap().upstream_protocols(),
            ["http/1.1"]
        );
    }

    #[test]
    fn durations_follow_one_convention_and_old_spellings_still_work() {
        let c = parse_with("drain_timeout: 5\nrequest_timeout: 250ms\nhealth_interval: 2s\ntickets: {rotation: 30m}\n")
            .unwrap();
        assert_eq!(c.drain_timeout(), Duration::from_secs(5));
        assert_eq!(c.request_timeout(), Duration::from_millis(250));
        assert_eq!(c.health_interval(), Duration::from_secs(2));
        assert_eq!(c.ticket_rotation(), Duration::from_secs(1800));
        let old = parse_with(
            "drain_timeout_s: 7\nrequest_timeout_ms: 1500\nhealth_interval_ms: 100\nhandshake_timeout_s: 3\n\
             tickets: {rotation_s: 60, lifetime_s: 120}\n",
        )
        .unwrap();
        assert_eq!(old.drain_timeout(), Duration::from_secs(7));
        assert_eq!(old.request_timeout(), Duration::from_millis(1500));
        assert_eq!(old.health_interval(), Duration::from_millis(100));
        assert_eq!(old.handshake_timeout(), Duration::from_secs(3));
        assert_eq!(
            (old.ticket_rotation(), old.ticket_lifetime()),
            (Duration::from_secs(60), Duration::from_secs(120))
        );
        let defaults = parse_with("").unwrap();
        assert_eq!(defaults.drain_timeout(), Duration::from_secs(30));
        assert_eq!(defaults.handshake_mode, HandshakeMode::Coroutine);
    }

    #[test]
    fn a_reload_says_which_changes_need_a_restart() {
        let before = parse_with("").unwrap();
        let more_certs = parse(
            Path::new("edge.yaml"),
            &BASE.replace(
                "certificates: [{cert: c.pem}]",
                "certificates: [{cert: c.pem}, {cert: d.pem}]",
            ),
        )
        .unwrap();
        assert!(before.restart_needed(&more_certs).is_empty(), "certificates reload");
        let moved = parse(Path::new("edge.yaml"), &BASE.replace("127.0.0.1:0", "0.0.0.0:443")).unwrap();
        assert_eq!(before.restart_needed(&moved), ["listen"]);
        let slower = parse_with("request_timeout: 5s\n").unwrap();
        assert_eq!(before.restart_needed(&slower), ["timeouts or max_connections_per_core"]);
    }

    #[test]
    fn unknown_keys_are_ignored_at_the_top_and_refused_inside_entries() {
        let c = parse_with("colour: blue\n").unwrap();
        assert_eq!(c.unknown_keys, ["colour"]);
        let e = parse(
            Path::new("edge.yaml"),
            &BASE.replace("{cert: c.pem}", "{cert: c.pem, nmaes: [x]}"),
        )
        .unwrap_err();
        assert!(e.contains("nmaes"), "{e}");
    }

    #[test]
    fn key_servers_may_dial_in_instead_of_being_dialed() {
        let only_dialed_in = BASE.replace("key_servers: [\"k:1\"]\n", "key_server_listen: 127.0.0.1:0\n");
        let c = parse(Path::new("edge.yaml"), &only_dialed_in).unwrap();
        assert!(c.key_servers.is_empty() && c.key_server_listen.is_some());
        let neither = BASE.replace("key_servers: [\"k:1\"]\n", "");
        let e = parse(Path::new("edge.yaml"), &neither).unwrap_err();
        assert!(e.contains("key_server_listen"), "{e}");
        let e = parse_with("key_server_listen: 127.0.0.1:0\nhandshake_mode: threads\n").unwrap_err();
        assert!(e.contains("coroutine"), "{e}");
    }

    #[test]
    fn connections_are_per_process_unless_per_core_is_asked_for() {
        use keyless_client::glommio::Links;
        assert_eq!(parse_with("").unwrap().links(8), Links::PerProcess(2));
        assert_eq!(parse_with("").unwrap().links(1), Links::PerProcess(1));
        assert_eq!(
            parse_with("key_server_connections: 4\n").unwrap().links(2),
            Links::PerProcess(4)
        );
        assert_eq!(
            parse_with("connections_per_server: 3\n").unwrap().links(2),
            Links::PerCore(3)
        );
        let e = parse_with("key_server_connections: 4\nconnections_per_server: 1\n").unwrap_err();
        assert!(
            e.starts_with("edge.yaml:8: connections_per_server:") && e.contains("set one"),
            "{e}"
        );
        let e = parse_with("key_server_connections: 0\n").unwrap_err();
        assert!(
            e.starts_with("edge.yaml:7:") && e.contains("key_server_connections"),
            "{e}"
        );
        let c = parse_with("nameservers: [\"127.0.0.1:5353\"]\nresolve_interval: 5s\n").unwrap();
        assert_eq!(c.resolve_interval(), Duration::from_secs(5));
        assert_eq!(c.nameservers, ["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(parse_with("").unwrap().resolve_interval(), Duration::from_secs(30));
        assert_eq!(
            parse_with("").unwrap().restart_needed(&c),
            ["nameservers or resolve_interval"]
        );
    }

    #[test]
    fn a_bad_value_names_file_line_field_and_reason() {
        let e = parse_with("handshake_mode: fibers\n").unwrap_err();
        assert!(
            e.starts_with("edge.yaml:7:") && e.contains("handshake_mode") && e.contains("threads"),
            "{e}"
        );
        let e = parse_with("workers: 1\ndrain_timeout: soon\n").unwrap_err();
        assert!(
            e.starts_with("edge.yaml:8:") && e.contains("drain_timeout") && e.contains("not a duration"),
            "{e}"
        );
        assert_eq!(
            parse_with("handshake_mode: threads\n").unwrap().handshake_mode,
            HandshakeMode::Threads
        );
    }
}
