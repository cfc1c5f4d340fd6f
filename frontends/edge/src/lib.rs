//! The keyless edge: terminates TLS for sites whose private keys stay on
//! key servers.
//!
//! What it does: holds certificates only; for each full handshake asks a
//! key server ([`keyless_client`]) for the one signature, from a
//! coroutine the core suspends ([`coroutine`]) or a handshake thread
//! ([`handshake`]), so no core ever waits; resumes sessions
//! from tickets ([`tickets`]) without any key server; then proxies the
//! decrypted stream to an upstream ([`proxy`]) or answers HTTP itself.
//! Thread-per-core like the key server: every core accepts on the same
//! port and keeps its connections.

pub mod config;
pub mod conn;
pub mod coroutine;
pub mod dev;
pub mod h2;
pub mod handshake;
pub mod inbound;
pub mod key_server_listener;
pub mod metrics;
pub mod probe;
pub mod proxy;
pub mod signer;
pub mod tickets;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use keyless_client::core::Names;
use keyless_client::glommio::{Directory, KeyClient, Settings as KeyClientSettings};
use keyless_client::pool::{KeyServerPool, PoolConfig};
use keyless_client::tokio::dns::{self, Lookup, Resolving};
use keyless_client::ServerState;
use keyless_engine::accept::Admission;
use keyless_engine::drain::{Drain, DrainSignal};
use keyless_engine::runtime::{run_per_core, RuntimeConfig};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;

use crate::config::EdgeConfig;
use crate::metrics::EdgeMetrics;
use crate::tickets::{KeySource, Ticketer};

/// Certificates by SNI name (exact, then `*.` wildcard), else the default.
#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(k) = self.by_name.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = self.by_name.get(&format!("*.{parent}")) {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone()
    }
}

/// The certificates and TLS settings, as `config` says: each certificate
/// signs through `pool` (threads mode) or its core's coroutines, tickets
/// come from `ticketer`. Also says whether
/// every certificate signs locally (the benchmark baseline).
fn server_config(
    config: &EdgeConfig,
    pool: &Option<Arc<KeyServerPool>>,
    metrics: &Arc<EdgeMetrics>,
    ticketer: &Arc<Ticketer>,
) -> Result<(Arc<rustls::ServerConfig>, bool), String> {
    let mut resolver = SniResolver {
        by_name: HashMap::new(),
        default: None,
    };
    let all_local = config.certificates.iter().all(|c| c.local_key.is_some());
    for entry in &config.certificates {
        let (mut key, cert_names) = signer::load_certified(&entry.cert, pool.clone(), metrics.clone())?;
        if let Some(path) = &entry.local_key {
            let der =
                rustls_pki_types::PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            key = Arc::new(CertifiedKey::new(key.cert.clone(), signing));
        }
        let names = if entry.names.is_empty() {
            cert_names
        } else {
            entry.names.clone()
        };
        for name in names {
            resolver.by_name.insert(name.to_ascii_lowercase(), key.clone());
        }
        if entry.default || resolver.default.is_none() {
            resolver.default = Some(key);
        }
    }

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // Stateless resumption only: tickets, so that every edge sharing the
    // key file can resume every other's sessions.
    server.ticketer = ticketer.clone();
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 1;
    server.alpn_protocols = config.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok((Arc::new(server), all_local))
}

/// The TLS configuration new connections get, replaced on SIGHUP.
pub type LiveConfig = keyless_engine::versioned::Versioned<rustls::ServerConfig>;

/// A running edge.
pub struct RunningEdge {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// Every key server, dialed or dialed in, as all cores (or the threads
    /// mode's pool) see it.
    pub key_servers: Arc<Directory>,
    /// Where key servers dial in, when they may.
    pub key_server_listen: Option<SocketAddr>,
    pool: Option<Arc<KeyServerPool>>,
    pub metrics: Arc<EdgeMetrics>,
    pub ticketer: Arc<Ticketer>,
    live: Arc<LiveConfig>,
    drain: Arc<DrainSignal>,
    /// Looks the `key_servers` names up again and again (coroutine mode).
    resolving: Option<Resolving>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<Result<(), keyless_engine::runtime::RuntimeError>>>>,
}

impl RunningEdge {
    /// SIGHUP: load the certificates again; new connections get them,
    /// connections in flight keep theirs. On any error nothing changes.
    /// The `key_servers` names are looked up again at once. (The
    /// `key_servers` list and listeners change with a restart.)
    pub fn reload(&self, config: &EdgeConfig) -> Result<usize, String> {
        let (server, _) = server_config(config, &self.pool, &self.metrics, &self.ticketer)?;
        self.live.publish(server);
        self.ticketer.refresh()?;
        if let Some(resolving) = &self.resolving {
            resolving.resolve_now();
        }
        Ok(config.certificates.len())
    }

    /// SIGTERM: stop accepting; each core finishes its connections (within
    /// `drain_timeout`) and stops, and [`wait`](Self::wait) returns.
    pub fn start_drain(&self) {
        self.drain.start();
    }

    /// Key servers with at least one connection up.
    pub fn healthy(&self) -> usize {
        self.key_servers.states().iter().filter(|s| s.healthy()).count()
    }

    /// Wait until at least one key server is reachable, or `timeout` passes.
    pub fn wait_healthy(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.healthy() == 0 {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Block until every core has stopped; the first core's error, if any.
    /// Only the first caller waits (a signal thread may hold another handle).
    pub fn wait(&self) -> Result<(), String> {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        match thread.map(std::thread::JoinHandle::join) {
            None => Ok(()),
            Some(Ok(r)) => r.map_err(|e| e.to_string()),
            Some(Err(_)) => Err("edge thread panicked".into()),
        }
    }
}

/// Everything `start` would load, loaded and thrown away: the key servers'
/// CA and the edge's client identity, the key servers' addresses, every
/// certificate chain (and local key), the ticket keys. Binds nothing. What
/// is there, or what is wrong (`keyless-edge --test-config`).
pub fn check(config: &EdgeConfig) -> Result<String, String> {
    keyless_client::client_config_from_files(&config.key_server_ca, &config.client_cert, &config.client_key)
        .map_err(|e| format!("key server TLS: {e}"))?;
    let names = resolve(config)?;
    let unresolved = names.unresolved();
    if !unresolved.is_empty() {
        return Err(format!(
            "key_servers: {}: no address (DNS); the edge would start and keep looking",
            unresolved.join(", ")
        ));
    }
    let servers = names.wanted();
    if config.key_server_listen.is_some() {
        key_server_listener::tls_config(config)?;
    }
    let source = match &config.tickets.key_file {
        Some(path) => KeySource::File(path.clone()),
        None => KeySource::Memory,
    };
    let ticketer = Ticketer::new(source, config.ticket_rotation(), config.ticket_lifetime())?;
    server_config(config, &None, &Arc::new(EdgeMetrics::default()), &ticketer)?;
    Ok(format!(
        "{} certificates, {} key server addresses",
        config.certificates.len(),
        servers.len()
    ))
}

/// What each core's context is made from.
#[derive(Clone)]
struct CoreTemplate {
    live: Arc<LiveConfig>,
    drain: Arc<DrainSignal>,
    handshakes: Arc<handshake::HandshakePool>,
    metrics: Arc<EdgeMetrics>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    upstream: Option<SocketAddr>,
    proxy_protocol: bool,
    mode: conn::HandshakeMode,
    directory: Arc<Directory>,
    listen_tls: Option<Arc<rustls::ServerConfig>>,
}

/// The key servers `names` resolve to now.
fn states(names: &Names) -> Vec<Arc<ServerState>> {
    names
        .wanted()
        .into_iter()
        .map(|(addr, name)| Arc::new(ServerState::new(addr, name)))
        .collect()
}

/// Where the `key_servers` names are looked up, and how often.
fn lookup(config: &EdgeConfig) -> Lookup {
    Lookup {
        nameservers: config.nameservers.clone(),
        every: config.resolve_interval(),
    }
}

/// The key servers the edge dials (none when all dial in), looked up once.
fn resolve(config: &EdgeConfig) -> Result<Names, String> {
    let mut names = Names::parse(&config.key_servers, config.key_server_name.as_deref()).map_err(|e| e.to_string())?;
    dns::resolve_once(&mut names, &lookup(config)).map_err(|e| e.to_string())?;
    Ok(names)
}

/// Start an edge as `config` says.
pub fn start(config: &EdgeConfig) -> Result<RunningEdge, String> {
    let tls = keyless_client::client_config_from_files(&config.key_server_ca, &config.client_cert, &config.client_key)
        .map_err(|e| format!("key server TLS: {e}"))?;
    let key_server_tls = tls.clone();
    // A name that does not resolve yet (a key server not scheduled yet) is
    // looked up again each period: the edge starts, /readyz says when a
    // key server is up.
    let names = resolve(config)?;
    let key_servers = states(&names);
    let directory = Directory::new(key_servers.clone());
    let listen_tls = match config.key_server_listen {
        Some(_) => Some(key_server_listener::tls_config(config)?),
        None => None,
    };
    let health_interval = config.health_interval();
    // The threads mode signs through a pool on its own tokio runtime; the
    // coroutine mode through each core's own connections (below).
    let pool = if config.handshake_mode == config::HandshakeMode::Threads {
        let mut pool_config = PoolConfig::new(config.key_servers.clone(), tls);
        // One pool for the process: its connections are the process's.
        pool_config.connections_per_server = config
            .key_server_connections
            .or(config.connections_per_server)
            .map_or(2, std::num::NonZeroUsize::get);
        pool_config.request_timeout = config.request_timeout();
        pool_config.health_interval = health_interval;
        Some(KeyServerPool::start_with(key_servers.clone(), pool_config).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let metrics = Arc::new(EdgeMetrics::default());

    let source = match &config.tickets.key_file {
        Some(path) => KeySource::File(path.clone()),
        None => KeySource::Memory,
    };
    let ticketer = Ticketer::new(source, config.ticket_rotation(), config.ticket_lifetime())?;
    tickets::spawn_refresher(ticketer.clone());

    let (server, all_local) = server_config(config, &pool, &metrics, &ticketer)?;
    let live = Arc::new(LiveConfig::new(server));
    let drain = Arc::new(DrainSignal::default());

    let mode = match (all_local, config.handshake_mode) {
        (true, _) => conn::HandshakeMode::Inline,
        (false, config::HandshakeMode::Coroutine) => conn::HandshakeMode::Coroutine,
        (false, config::HandshakeMode::Threads) => conn::HandshakeMode::Threads,
    };
    let threads = if mode == conn::HandshakeMode::Threads {
        config.handshake_threads.unwrap_or(256)
    } else {
        0
    };
    let handshakes = handshake::HandshakePool::start(threads, 4096)?;
    let metrics_addr = match config.metrics_listen {
        Some(addr) => Some(metrics::start(
            addr,
            metrics.clone(),
            directory.clone(),
            ticketer.clone(),
        )?),
        None => None,
    };

    let mut runtime = RuntimeConfig {
        name: "keyless-edge".into(),
        ring_depth: 4096,
        ..RuntimeConfig::default()
    };
    if let Some(w) = config.workers {
        runtime.cores = w.max(1);
    }
    let reservation = keyless_service::ports::reserve(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = reservation
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(config.listen);
    let key_server_reservation = match config.key_server_listen {
        Some(listen) => Some(
            keyless_service::ports::reserve(listen)
                .map_err(|e| format!("key_server_listen: cannot listen on {listen}: {e}"))?,
        ),
        None => None,
    };
    let key_server_addr = key_server_reservation
        .as_ref()
        .map(|r| r.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(config.listen));
    let cores = runtime.cores;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let drain_timeout = config.drain_timeout();
    let access_log = config.access_log;
    let key_client_settings = KeyClientSettings {
        tls: key_server_tls,
        links: config.links(cores),
        request_timeout: config.request_timeout(),
        health_interval,
        connect_timeout: Duration::from_secs(2),
    };
    // What every core starts from (each core builds its own context).
    let core_template = CoreTemplate {
        live: live.clone(),
        drain: drain.clone(),
        handshakes,
        metrics: metrics.clone(),
        handshake_timeout: config.handshake_timeout(),
        idle_timeout: config.idle_timeout(),
        max_connections: config.max_connections_per_core(),
        upstream: config.upstream,
        proxy_protocol: config.proxy_protocol,
        mode,
        directory: directory.clone(),
        listen_tls,
    };
    let thread = std::thread::Builder::new()
        .name("keyless-edge-main".into())
        .spawn(move || {
            run_per_core(&runtime, move |index| {
                let CoreTemplate {
                    live,
                    drain,
                    handshakes: pool,
                    directory,
                    listen_tls,
                    ..
                } = core_template.clone();
                let t = core_template.clone();
                let key_client_settings = key_client_settings.clone();
                let ready = ready_tx.clone();
                async move {
                    keyless_keys::warm_up_thread();
                    let bind = |at: SocketAddr, what: &str| {
                        glommio::net::TcpListener::bind(at).map_err(|e| format!("{what}cannot listen on {at}: {e}"))
                    };
                    let bound = bind(addr, "").and_then(|listener| {
                        let for_key_servers = key_server_addr.map(|at| bind(at, "key_server_listen: ")).transpose()?;
                        Ok((listener, for_key_servers))
                    });
                    let (listener, key_server_listener) = match bound {
                        Ok(bound) => bound,
                        Err(e) => {
                            let _ = ready.send(Err(e.clone()));
                            return Err(e);
                        }
                    };
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    let drain = Drain::watch(drain);
                    let key_client = (mode == conn::HandshakeMode::Coroutine)
                        .then(|| KeyClient::start(directory.clone(), key_client_settings.clone(), index, cores));
                    if let (Some(listener), Some(tls), Some(client)) = (key_server_listener, listen_tls, &key_client) {
                        glommio::spawn_local(key_server_listener::accept(
                            listener,
                            tls,
                            client.clone(),
                            drain.clone(),
                            t.handshake_timeout,
                        ))
                        .detach();
                    }
                    let ctx = Rc::new(conn::CoreContext {
                        drain: drain.clone(),
                        upstream_logged: std::cell::Cell::new(None),
                        failures_logged: keyless_engine::accept::LogLimit::default(),
                        access_log,
                        tls: keyless_engine::versioned::Cached::new(&live, Arc::clone),
                        live,
                        pool,
                        metrics: t.metrics,
                        handshake_timeout: t.handshake_timeout,
                        idle_timeout: t.idle_timeout,
                        upstream: t.upstream,
                        proxy_protocol: t.proxy_protocol,
                        mode: t.mode,
                        stacks: coroutine::Stacks::default(),
                        key_client,
                    });
                    let open = conn::OpenCount::default();
                    let mut admission = Admission::new(format!("core {index}"));
                    loop {
                        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
                            drain.wait().await;
                            None
                        });
                        match accepted.await {
                            None => break,
                            Some(Ok(tcp)) => {
                                if admission.over_capacity(open.get(), t.max_connections) {
                                    ctx.metrics.refused_connections.inc();
                                    continue;
                                }
                                admission.accepted();
                                glommio::spawn_local(conn::serve(tcp, ctx.clone(), open.clone())).detach();
                            }
                            Some(Err(e)) => {
                                ctx.metrics.refused_connections.inc();
                                let pause = admission.accept_failed(&format_args!("accept failed: {e}"));
                                glommio::timer::sleep(pause).await;
                            }
                        }
                    }
                    drop(listener);
                    // Draining: let open connections finish, within the bound.
                    let deadline = std::time::Instant::now() + drain_timeout;
                    while open.get() > 0 && std::time::Instant::now() < deadline {
                        glommio::timer::sleep(Duration::from_millis(20)).await;
                    }
                    if open.get() > 0 {
                        tracing::warn!("{} connections still open after the drain timeout", open.get());
                    }
                    Ok::<(), String>(())
                }
            })
        })
        .map_err(|e| e.to_string())?;
    for _ in 0..cores {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("edge cores did not start within 30 s".into()),
        }
    }
    drop(reservation);
    drop(key_server_reservation);
    // Names, not addresses: follow what they resolve to (the cores'
    // directory, and the threads mode's pool).
    let resolving = if names.lookups().is_empty() {
        None
    } else {
        let directory = directory.clone();
        let pool = pool.clone();
        Some(
            dns::spawn(names, lookup(config), move |wanted| {
                directory.set_dialed(wanted);
                if let Some(pool) = &pool {
                    let states: Vec<_> = directory.dialed().iter().map(|d| d.route.state.clone()).collect();
                    pool.follow(&states);
                }
            })
            .map_err(|e| e.to_string())?,
        )
    };
    let mut sources = config.key_servers.clone();
    if let Some(at) = key_server_addr {
        sources.push(format!("those that dial in on {at}"));
    }
    tracing::info!(
        "edge serving TLS on {addr} with {}; key servers: {}",
        keyless_service::count(cores, "core", "cores"),
        sources.join(", ")
    );
    Ok(RunningEdge {
        addr,
        metrics_addr,
        key_servers: directory,
        key_server_listen: key_server_addr,
        pool,
        metrics,
        ticketer,
        live,
        drain,
        resolving,
        thread: std::sync::Mutex::new(Some(thread)),
    })
}
