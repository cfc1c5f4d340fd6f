//! The keyless key server: a drop-in replacement for Cloudflare's gokeyless.
//!
//! What it does: reads gokeyless's configuration ([`config`]), loads the keys,
//! builds the mutual-TLS listener ([`tls`]) and serves the keyless protocol on
//! one pinned executor per core ([`listener`], [`connection`]).
//!
//! What it does not do: decide what a request means (that is
//! `keyless-engine`'s handler) or hold key bytes itself (`keyless-keys`).

pub mod certmetrics;
pub mod config;
pub mod connection;
pub mod dial;
pub mod keystore;
pub mod listener;
pub mod metrics;
pub mod profile;
pub mod sandbox;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use keyless_engine::core::Core;
use keyless_engine::runtime::{run_per_core, RuntimeConfig, RuntimeError};
use keyless_engine::shared::Shared;
use keyless_keys::SharedKey;

pub use config::Settings;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Keys(#[from] keyless_keys::LoadError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    Startup(String),
}

/// A server whose cores are all listening.
pub struct RunningServer {
    thread: std::sync::Mutex<Option<JoinHandle<Result<(), RuntimeError>>>>,
    /// The TCP listener's address (`0.0.0.0:0` when the server does not
    /// listen: it only dials out).
    pub addr: SocketAddr,
    /// The edges it dials, with their connections' counters.
    pub dial: Vec<dial::Target>,
    pub key_count: usize,
    /// Per-core load and counters.
    pub shared: Arc<Shared>,
    /// Where `/metrics` is served, when it is.
    pub metrics_addr: Option<SocketAddr>,
    /// The TLS configuration new connections get (swapped on reload).
    pub tls: Arc<listener::LiveTls>,
    /// "serving N keys on ADDRESS with N cores": said once everything,
    /// metrics included, is up.
    pub serving: String,
}

impl RunningServer {
    /// Signatures made so far, over every core and signing opcode.
    pub fn signatures(&self) -> u64 {
        self.shared
            .counters
            .iter()
            .map(|c| {
                keyless_protocol::Opcode::SIGNING
                    .iter()
                    .map(|op| c.by_opcode[op.0 as usize].load(std::sync::atomic::Ordering::Relaxed))
                    .sum::<u64>()
            })
            .sum()
    }

    /// Block until every core has stopped.
    pub fn wait(self) -> Result<(), ServerError> {
        self.wait_by_ref()
    }

    /// [`wait`](RunningServer::wait) for a shared handle (the signal thread
    /// holds another); only the first caller waits.
    pub fn wait_by_ref(&self) -> Result<(), ServerError> {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        match thread.map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(r)) => Ok(r?),
            Some(Err(_)) => Err(ServerError::Startup("server thread panicked".into())),
        }
    }
}

/// Warnings about the settings themselves, said by start-up and by `-t`
/// alike.
fn warn_about(settings: &Settings) {
    if settings.activation_requested {
        tracing::warn!(
            "zone_id/origin_ca_api_key are set: activation through Cloudflare's API is not supported; \
             provide auth_cert, auth_key and cloudflare_ca_cert instead"
        );
    }
}

/// Load keys and TLS from `settings` and start serving.
pub fn start(settings: &Settings) -> Result<RunningServer, ServerError> {
    warn_about(settings);
    let usable = keyless_engine::runtime::available_cores();
    if settings.runtime.cores > usable {
        // More executors than CPUs only fight over the CPUs (and each takes
        // 1 MiB of locked memory): refuse rather than start slowly.
        return Err(ServerError::Startup(format!(
            "workers {}: this machine has {usable} usable {}; at most one worker per CPU",
            settings.runtime.cores,
            if usable == 1 { "CPU" } else { "CPUs" }
        )));
    }
    let tls = tls::server_config(&settings.auth_cert, &settings.auth_key, &settings.cloudflare_ca_cert)?;
    certmetrics::observe_files(&[&settings.auth_cert, &settings.cloudflare_ca_cert]);
    let load_started = std::time::Instant::now();
    let keys = load_keys(settings)?;
    let load_time = load_started.elapsed();
    if keys.is_empty() {
        tracing::warn!("no private keys configured: every signing request will get key-not-found");
    }
    let dial = match &settings.dial {
        Some(d) => Some(dial::Dialer {
            targets: dial::targets(d).map_err(ServerError::Startup)?,
            connections: d.connections.unwrap_or(settings.runtime.cores.max(1)),
            tls: dial_tls(settings)?,
            instance: dial::new_instance(),
        }),
        None => None,
    };
    // `port: 0` turns inbound listening off (a key server that only dials).
    let listen = Listen {
        tcp: (settings.listen.port() != 0).then_some(settings.listen),
        unix: settings.unix_socket.clone(),
        dial,
    };
    if listen.tcp.is_none() && listen.unix.is_none() && listen.dial.is_none() {
        return Err(ServerError::Startup(
            "port: 0 turns listening off, and neither unix_socket nor dial is set: nothing could reach this server"
                .into(),
        ));
    }
    let mut runtime = settings.runtime.clone();
    runtime.lanes = signing_path(settings)?;
    let mut running = launch(&listen, tls, keys, runtime, settings.limits.clone())?;
    running.shared.key_load.observe_duration(load_time);
    // `metrics_port: 0` turns the metrics listener off, as `port: 0` does the
    // keyless one: a key server that only dials has no listening socket.
    if settings.metrics.port() != 0 {
        let metrics = metrics::start(settings.metrics, running.shared.clone(), running.dial.clone())
            .map_err(ServerError::Startup)?;
        tracing::info!("metrics on http://{}/metrics", metrics.addr);
        running.metrics_addr = Some(metrics.addr);
    }
    // Only now: a metrics port in use stops start-up before this is said.
    tracing::info!("{}", running.serving);
    Ok(running)
}

/// Everything `start` would load, loaded and thrown away: the server
/// certificate, its key and the client CA, and every key store. Binds
/// nothing. What is there, or what is wrong (`keyless-server --test-config`).
pub fn check(settings: &Settings) -> Result<String, ServerError> {
    warn_about(settings);
    tls::server_config(&settings.auth_cert, &settings.auth_key, &settings.cloudflare_ca_cert)?;
    if let Some(d) = &settings.dial {
        dial_tls(settings)?;
        dial::targets(d).map_err(ServerError::Startup)?;
    }
    let keys = load_keys(settings)?;
    let lanes = signing_path(settings)?;
    Ok(format!(
        "{} {}, server certificate {}, {}",
        keys.len(),
        if keys.len() == 1 { "key" } else { "keys" },
        settings.auth_cert.display(),
        match lanes.0 {
            Some(_) => "multi-buffer signing",
            None => "single signatures",
        }
    ))
}

/// The `multibuffer` setting made real: the lanes every core signs with,
/// or none (logged once, with the reason). `on` without a usable
/// crypto_mb stops start-up and `--test-config`.
fn signing_path(settings: &Settings) -> Result<keyless_engine::runtime::Lanes, ServerError> {
    let selected = keyless_keys::multibuffer::select(settings.multibuffer, settings.multibuffer_library.as_deref())
        .map_err(ServerError::Startup)?;
    match &selected.math {
        Some(_) => tracing::info!("signing: multi-buffer on every core, {}", selected.reason),
        // A library the operator named and that cannot be used is a
        // configuration that did not take: a warning.
        None if settings.multibuffer_library.is_some()
            && settings.multibuffer != keyless_keys::multibuffer::Mode::Off =>
        {
            tracing::warn!("signing: AWS-LC single signatures on every core ({})", selected.reason)
        }
        None => tracing::info!("signing: AWS-LC single signatures on every core ({})", selected.reason),
    }
    Ok(keyless_engine::runtime::Lanes(selected.math))
}

/// The TLS client a key server dials its edges with: `auth_cert` and
/// `auth_key` prove it, `cloudflare_ca_cert` must have issued the edge's.
fn dial_tls(settings: &Settings) -> Result<Arc<rustls::ClientConfig>, ServerError> {
    keyless_client::client_config_from_files(&settings.cloudflare_ca_cert, &settings.auth_cert, &settings.auth_key)
        .map_err(|e| ServerError::Startup(format!("dial: {e}")))
}

/// Every configured key store: files and directories in memory, `uri:`
/// stores through PKCS#11 or a cloud provider.
pub fn load_keys(settings: &Settings) -> Result<Vec<SharedKey>, keyless_keys::LoadError> {
    keyless_keys::load_sources_with(&settings.key_sources, &|source| load_external(settings, source))
}

/// One `uri:` store, by the backend its URI names.
pub fn load_external(
    settings: &Settings,
    source: &keyless_keys::KeySource,
) -> Result<Vec<SharedKey>, keyless_keys::LoadError> {
    match source {
        keyless_keys::KeySource::Pkcs11(uri) => keyless_hsm::load(uri, &settings.pkcs11),
        keyless_keys::KeySource::Cloud(uri) => keyless_cloud::load(uri, &settings.cloud),
        keyless_keys::KeySource::Dir(_) | keyless_keys::KeySource::File(_) => {
            keyless_keys::load_sources(std::slice::from_ref(source))
        }
    }
}

/// SIGHUP: load the key stores, server certificate and client CA again
/// from `settings`. New keys and certificates serve the next request and
/// connection; nothing in flight is dropped. On any error nothing changes.
pub fn reload(settings: &Settings, running: &RunningServer) -> Result<usize, ServerError> {
    let tls = tls::server_config(&settings.auth_cert, &settings.auth_key, &settings.cloudflare_ca_cert)?;
    let load_started = std::time::Instant::now();
    let keys = load_keys(settings)?;
    running.shared.key_load.observe_duration(load_started.elapsed());
    let count = keys.len();
    certmetrics::observe_files(&[&settings.auth_cert, &settings.cloudflare_ca_cert]);
    running.tls.publish(tls);
    running.shared.publish_keys(keys);
    Ok(count)
}

/// Where connections come from.
#[derive(Clone)]
pub struct Listen {
    /// Every core listens here (SO_REUSEPORT). Port 0 picks a free port;
    /// `None`: no TCP listener.
    pub tcp: Option<SocketAddr>,
    /// Core 0 also listens on this Unix socket.
    pub unix: Option<PathBuf>,
    /// Edges the cores connect out to.
    pub dial: Option<dial::Dialer>,
}

impl From<SocketAddr> for Listen {
    fn from(tcp: SocketAddr) -> Listen {
        Listen {
            tcp: Some(tcp),
            unix: None,
            dial: None,
        }
    }
}

/// Start with already-loaded parts (tests and tools use this directly).
pub fn start_with(
    listen: &Listen,
    tls: Arc<rustls::ServerConfig>,
    keys: Vec<SharedKey>,
    runtime: RuntimeConfig,
    limits: connection::Limits,
) -> Result<RunningServer, ServerError> {
    let running = launch(listen, tls, keys, runtime, limits)?;
    tracing::info!("{}", running.serving);
    Ok(running)
}

/// [`start_with`] without saying "serving ...": [`start`] says it once
/// the metrics listener is up too.
fn launch(
    listen: &Listen,
    tls: Arc<rustls::ServerConfig>,
    keys: Vec<SharedKey>,
    runtime: RuntimeConfig,
    limits: connection::Limits,
) -> Result<RunningServer, ServerError> {
    // With port 0, reserve a port all cores can share: a SO_REUSEPORT socket
    // that is bound but never listens, held until every core has bound.
    let reservation = match listen.tcp {
        Some(tcp) => {
            let reservation =
                keyless_service::ports::reserve(tcp).map_err(|source| ServerError::Bind { addr: tcp, source })?;
            let bound = reservation
                .local_addr()
                .map_err(|source| ServerError::Bind { addr: tcp, source })?;
            Some((reservation, bound.as_socket().unwrap_or(tcp)))
        }
        None => None,
    };
    let tcp = reservation.as_ref().map(|(_, addr)| *addr);
    let dialer = listen.dial.clone();
    let unix = listen.unix.clone();
    if let Some(path) = &unix {
        remove_stale_socket(path)?;
    }
    // Seed AWS-LC's global entropy tree here, off the cores (about 20 ms).
    let t = std::time::Instant::now();
    keyless_keys::warm_up_thread();
    tracing::debug!("entropy seeded in {:?}", t.elapsed());
    let key_count = keys.len();
    let tls = Arc::new(listener::LiveTls::new(tls));
    let tls_handle = tls.clone();
    let cores = runtime.cores.max(1);
    let shared = Shared::new(cores, runtime.core_queue.max(1));
    if let Some(math) = &runtime.lanes.0 {
        shared.use_lanes(math.clone(), runtime.batch_delay);
    }
    shared.publish_keys(keys);
    let shared_for_cores = shared.clone();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, String>>();
    let thread = std::thread::Builder::new()
        .name("keyless-main".into())
        .spawn(move || {
            run_per_core(&runtime, move |index| {
                let tls = tls.clone();
                let shared = shared_for_cores.clone();
                let limits = Rc::new(limits.clone());
                let ready = ready_tx.clone();
                let unix = unix.clone().filter(|_| index == 0);
                let dialer = dialer.clone();
                async move {
                    let setup = core_setup(tcp, unix.as_deref());
                    let (listener, unix_listener) = match setup {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = ready.send(Err(e.clone()));
                            return Err(e);
                        }
                    };
                    let t = std::time::Instant::now();
                    let joined = Core::join(shared, index).await;
                    tracing::debug!("core {index} joined the mesh in {:?}", t.elapsed());
                    let core = match joined {
                        Ok(core) => core,
                        Err(e) => {
                            let _ = ready.send(Err(e.clone()));
                            return Err(e);
                        }
                    };
                    let _ = ready.send(Ok(core.id()));
                    drop(ready);
                    let open = listener::OpenCount::default();
                    if let Some(u) = unix_listener {
                        glommio::spawn_local(listener::accept_unix(
                            u,
                            tls.clone(),
                            core.clone(),
                            limits.clone(),
                            open.clone(),
                        ))
                        .detach();
                    }
                    if let Some(dialer) = &dialer {
                        dial::spawn_all(dialer, &core, &limits, cores);
                    }
                    let drain_timeout = limits.drain_timeout;
                    match listener {
                        Some(listener) => listener::accept_tcp(listener, tls, core.clone(), limits, open).await,
                        None => core.drain().wait().await,
                    }
                    // Draining: wait for this core's connections and for work
                    // other cores handed it, within the drain timeout.
                    let deadline = std::time::Instant::now() + drain_timeout + Duration::from_secs(1);
                    // Idle twice, 20 ms apart: a hand-off another core made just
                    // before it saw the drain has landed by then.
                    let mut idle_checks = 0;
                    while idle_checks < 2 && std::time::Instant::now() < deadline {
                        glommio::timer::sleep(Duration::from_millis(20)).await;
                        idle_checks = if core.busy() == (0, 0) { idle_checks + 1 } else { 0 };
                    }
                    if core.busy() != (0, 0) {
                        tracing::warn!("core {} stopped with work in flight: {:?}", core.id(), core.busy());
                    }
                    Ok::<(), String>(())
                }
            })
        })
        .map_err(|e| ServerError::Startup(e.to_string()))?;
    for _ in 0..cores {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ServerError::Startup(e)),
            Err(_) => {
                return Err(match thread.is_finished() {
                    true => match thread.join() {
                        Ok(Err(e)) => ServerError::Runtime(e),
                        _ => ServerError::Startup("server thread stopped during start-up".into()),
                    },
                    false => ServerError::Startup("cores did not start within 30 s".into()),
                })
            }
        }
    }
    drop(reservation);
    let mut places: Vec<String> = tcp.iter().map(|a| format!("on {a}")).collect();
    places.extend(listen.unix.iter().map(|p| format!("on {}", p.display())));
    if let Some(d) = &listen.dial {
        let edges: Vec<&str> = d.targets.iter().map(|t| t.entry.as_str()).collect();
        places.push(format!(
            "dialing {} ({} each)",
            edges.join(", "),
            keyless_service::count(d.connections, "connection", "connections")
        ));
    }
    let serving = format!(
        "serving {} {} with {}",
        keyless_service::count(key_count, "key", "keys"),
        places.join(", "),
        keyless_service::count(cores, "core", "cores")
    );
    Ok(RunningServer {
        serving,
        addr: tcp.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        dial: listen.dial.as_ref().map(|d| d.targets.clone()).unwrap_or_default(),
        key_count,
        shared,
        metrics_addr: None,
        tls: tls_handle,
        thread: std::sync::Mutex::new(Some(thread)),
    })
}

type CoreSetup = (Option<glommio::net::TcpListener>, Option<glommio::net::UnixListener>);

fn core_setup(tcp: Option<SocketAddr>, unix: Option<&Path>) -> Result<CoreSetup, String> {
    let t = std::time::Instant::now();
    keyless_keys::warm_up_thread();
    tracing::debug!("core entropy seeded in {:?}", t.elapsed());
    let listener = match tcp {
        Some(addr) => Some(glommio::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?),
        None => None,
    };
    let unix_listener = match unix {
        Some(path) => Some(
            glommio::net::UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?,
        ),
        None => None,
    };
    Ok((listener, unix_listener))
}

/// A socket file left by a previous run would make bind fail; remove it, but
/// never anything that is not a socket.
fn remove_stale_socket(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| ServerError::Startup(format!("{}: cannot remove old socket: {e}", path.display()))),
        Ok(_) => Err(ServerError::Startup(format!(
            "{}: exists and is not a socket",
            path.display()
        ))),
        Err(_) => Ok(()),
    }
}
