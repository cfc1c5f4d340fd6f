//! The remote backend: a few long-lived connections to each of several key
//! servers, health-checked by ping, with retry on another server, reconnect
//! with backoff and a per-request timeout.
//!
//! The pool owns a small tokio runtime for its sockets. Callers on any
//! other thread submit with [`KeyServerPool::perform_blocking`] (the edge's
//! handshake threads, whose rustls signer is synchronous) or await
//! [`KeyServerPool::perform`]. Requests from every caller share the
//! connections, so many handshakes' requests leave in one write.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use keyless_protocol::{ErrorCode, Message};
use rustls::ClientConfig;

use crate::{connect, expect_response, ClientError, Connection};

/// How to reach the key servers.
#[derive(Clone)]
pub struct PoolConfig {
    /// `HOST:PORT` entries; a name with several addresses is several servers.
    pub servers: Vec<String>,
    /// Name the key servers' certificates must carry (default: each HOST).
    pub server_name: Option<String>,
    pub tls: Arc<ClientConfig>,
    /// Long-lived connections per server.
    pub connections_per_server: usize,
    /// A request fails if no answer comes within this.
    pub request_timeout: Duration,
    /// Ping each connection this often; a failed ping replaces it.
    pub health_interval: Duration,
    /// Connecting (TCP and TLS) must finish within this.
    pub connect_timeout: Duration,
    /// Threads of the pool's own runtime.
    pub threads: usize,
}

impl PoolConfig {
    pub fn new(servers: Vec<String>, tls: Arc<ClientConfig>) -> PoolConfig {
        PoolConfig {
            servers,
            server_name: None,
            tls,
            connections_per_server: 2,
            request_timeout: Duration::from_secs(2),
            health_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            threads: 1,
        }
    }
}

/// One key server and its live connections.
pub struct ServerState {
    pub addr: SocketAddr,
    pub name: String,
    conns: RwLock<Vec<Arc<Connection>>>,
    /// Requests answered with a protocol error, by error code byte.
    pub errors: Vec<AtomicU64>,
    /// Requests lost with their connection or timed out.
    pub failures: AtomicU64,
    pub answered: AtomicU64,
}

impl ServerState {
    /// At least one connection is open (and passed its last health check).
    pub fn healthy(&self) -> bool {
        let conns = self.conns.read().unwrap_or_else(|e| e.into_inner());
        conns.iter().any(|c| c.closed().is_none())
    }

    fn pick(&self, n: usize) -> Option<Arc<Connection>> {
        let conns = self.conns.read().unwrap_or_else(|e| e.into_inner());
        let live: Vec<_> = conns.iter().filter(|c| c.closed().is_none()).collect();
        if live.is_empty() {
            return None;
        }
        Some(live[n % live.len()].clone())
    }
}

/// Connections to every configured key server.
pub struct KeyServerPool {
    runtime: tokio::runtime::Runtime,
    servers: Vec<Arc<ServerState>>,
    next: AtomicUsize,
    request_timeout: Duration,
}

impl KeyServerPool {
    /// Resolve the servers and start connecting (in the background: a key
    /// server that is down at start-up is retried, not fatal).
    pub fn start(config: PoolConfig) -> Result<Arc<KeyServerPool>, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("keyless-remote")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Config(format!("cannot start the key-server runtime: {e}")))?;
        let mut servers = Vec::new();
        for entry in &config.servers {
            let host = entry
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
                .ok_or_else(|| ClientError::Config(format!("key server {entry:?}: expected HOST:PORT")))?;
            let addrs: Vec<SocketAddr> = runtime
                .block_on(tokio::net::lookup_host(entry.as_str()))
                .map_err(|e| ClientError::Config(format!("key server {entry:?}: {e}")))?
                .collect();
            if addrs.is_empty() {
                return Err(ClientError::Config(format!("key server {entry:?}: no address")));
            }
            for addr in addrs {
                servers.push(Arc::new(ServerState {
                    addr,
                    name: config.server_name.clone().unwrap_or_else(|| host.clone()),
                    conns: RwLock::new(Vec::new()),
                    errors: (0..256).map(|_| AtomicU64::new(0)).collect(),
                    failures: AtomicU64::new(0),
                    answered: AtomicU64::new(0),
                }));
            }
        }
        if servers.is_empty() {
            return Err(ClientError::Config("no key servers configured".into()));
        }
        for server in &servers {
            for slot in 0..config.connections_per_server.max(1) {
                runtime.spawn(supervise(server.clone(), slot, config.clone()));
            }
        }
        Ok(Arc::new(KeyServerPool {
            runtime,
            servers,
            next: AtomicUsize::new(0),
            request_timeout: config.request_timeout,
        }))
    }

    pub fn servers(&self) -> &[Arc<ServerState>] {
        &self.servers
    }

    /// Servers with at least one live connection.
    pub fn healthy(&self) -> usize {
        self.servers.iter().filter(|s| s.healthy()).count()
    }

    /// Wait until at least one server is reachable, or `timeout` passes.
    pub fn wait_healthy(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.healthy() == 0 {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Send `request`; its response payload, or why there is none. A request
    /// whose connection fails is retried once on another server; protocol
    /// errors (the key server's answer) are not retried.
    pub async fn perform(&self, request: Message) -> Result<Vec<u8>, ClientError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.servers.len();
        let mut tried: Option<usize> = None;
        let mut last_error = None;
        for attempt in 0..2 {
            // Healthy servers round-robin, skipping the one that just failed.
            let pick = (0..count)
                .map(|i| (n + i + attempt) % count)
                .find(|&i| Some(i) != tried && self.servers[i].healthy());
            let Some(index) = pick else { break };
            let server = &self.servers[index];
            let Some(conn) = server.pick(n) else {
                tried = Some(index);
                continue;
            };
            let answer = tokio::time::timeout(self.request_timeout, conn.call(request.clone())).await;
            match answer {
                Ok(Ok(message)) => {
                    server.answered.fetch_add(1, Ordering::Relaxed);
                    if let Some(code) = message.error_code() {
                        let byte = code.map_or_else(|b| b, |c| c as u8);
                        server.errors[byte as usize].fetch_add(1, Ordering::Relaxed);
                    }
                    return expect_response(message);
                }
                Ok(Err(e)) => {
                    server.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("key server {}: {e}; retrying elsewhere", server.addr);
                    last_error = Some(e);
                }
                Err(_) => {
                    server.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "key server {}: no answer within {:?}",
                        server.addr,
                        self.request_timeout
                    );
                    last_error = Some(ClientError::Closed(format!(
                        "{}: no answer within {:?}",
                        server.addr, self.request_timeout
                    )));
                }
            }
            tried = Some(index);
        }
        Err(last_error.unwrap_or_else(|| ClientError::Closed("no key server is reachable".into())))
    }

    /// [`perform`](Self::perform) from a thread outside the pool's runtime,
    /// blocking it until the answer comes.
    pub fn perform_blocking(&self, request: Message) -> Result<Vec<u8>, ClientError> {
        self.runtime.handle().block_on(self.perform(request))
    }
}

/// Keep one connection slot to `server` alive: connect, ping every
/// `health_interval`, replace it when it fails, back off while the server
/// is down (100 ms doubling to 5 s).
async fn supervise(server: Arc<ServerState>, slot: usize, config: PoolConfig) {
    let mut backoff = Duration::from_millis(100);
    let mut was_down_logged = false;
    loop {
        let connected = tokio::time::timeout(
            config.connect_timeout,
            connect(server.addr, &server.name, config.tls.clone()),
        )
        .await;
        let conn = match connected {
            Ok(Ok(conn)) => Arc::new(conn),
            Ok(Err(e)) => {
                if !was_down_logged && slot == 0 {
                    tracing::warn!("key server {}: {e}; retrying", server.addr);
                    was_down_logged = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(_) => {
                if !was_down_logged && slot == 0 {
                    tracing::warn!("key server {}: connect timed out; retrying", server.addr);
                    was_down_logged = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // A ping proves the mutual TLS handshake was accepted (TLS 1.3
        // reports a refused client certificate only on the first read).
        if tokio::time::timeout(config.connect_timeout, conn.ping(b"hello"))
            .await
            .map_or(true, |r| r.is_err())
        {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        if was_down_logged || slot == 0 {
            tracing::info!("key server {}: connected", server.addr);
        }
        was_down_logged = false;
        backoff = Duration::from_millis(100);
        server
            .conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn.clone());
        loop {
            tokio::time::sleep(config.health_interval).await;
            let ping = tokio::time::timeout(config.request_timeout, conn.ping(b"health")).await;
            if !matches!(ping, Ok(Ok(_))) || conn.closed().is_some() {
                tracing::warn!(
                    "key server {}: connection failed its health check ({}); reconnecting",
                    server.addr,
                    conn.closed().unwrap_or_else(|| "ping failed".into())
                );
                break;
            }
        }
        let mut conns = server.conns.write().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !Arc::ptr_eq(c, &conn));
    }
}

/// The key server's error code, if `e` carries one (for logs and metrics).
pub fn error_code(e: &ClientError) -> Option<ErrorCode> {
    match e {
        ClientError::Remote(code) => Some(*code),
        _ => None,
    }
}

impl std::fmt::Debug for KeyServerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyServerPool")
            .field("servers", &self.servers.iter().map(|s| s.addr).collect::<Vec<_>>())
            .field("healthy", &self.healthy())
            .finish()
    }
}

impl KeyServerPool {
    /// [`perform`](Self::perform) on the pool's runtime; the returned future
    /// can be awaited on any executor (the edge's cores).
    pub fn spawn_perform(
        self: &Arc<Self>,
        request: Message,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, ClientError>> + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pool = self.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(pool.perform(request).await);
        });
        async move {
            rx.await
                .unwrap_or_else(|_| Err(ClientError::Closed("the key-server runtime stopped".into())))
        }
    }
}
