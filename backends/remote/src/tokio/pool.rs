//! A few long-lived connections to each of several key servers on a tokio
//! runtime; the policy (failover, backoff, health) is [`crate::core`]'s.
//!
//! The pool owns a small tokio runtime for its sockets. Callers on any
//! other thread submit with [`KeyServerPool::perform_blocking`] (the edge's
//! handshake threads, whose rustls signer is synchronous) or await
//! [`KeyServerPool::perform`]. Requests from every caller share the
//! connections, so many handshakes' requests leave in one write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use keyless_protocol::Message;
use rustls::ClientConfig;

use crate::core::{expect_response, Retry, ServerState, Supervision};
use crate::{connect, ClientError, Connection};

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

/// One key server's live connections.
#[derive(Default)]
struct Links(RwLock<Vec<Arc<Connection>>>);

impl Links {
    fn pick(&self, n: usize) -> Option<Arc<Connection>> {
        let conns = self.0.read().unwrap_or_else(|e| e.into_inner());
        let live: Vec<_> = conns.iter().filter(|c| c.closed().is_none()).collect();
        (!live.is_empty()).then(|| live[n % live.len()].clone())
    }
}

/// The key servers as of now, with their connections.
struct Servers {
    states: Vec<Arc<ServerState>>,
    links: Vec<Arc<Links>>,
}

/// Connections to every configured key server.
pub struct KeyServerPool {
    runtime: tokio::runtime::Runtime,
    servers: Arc<RwLock<Arc<Servers>>>,
    config: PoolConfig,
    next: AtomicUsize,
    request_timeout: Duration,
}

impl KeyServerPool {
    /// Resolve the servers and start connecting (in the background: a key
    /// server that is down at start-up is retried, not fatal).
    pub fn start(config: PoolConfig) -> Result<Arc<KeyServerPool>, ClientError> {
        let servers = crate::core::resolve(&config.servers, config.server_name.as_deref())?;
        Self::start_with(servers, config)
    }

    /// Start connecting to `servers` (resolved already; their counters may
    /// be shared with other drivers).
    pub fn start_with(servers: Vec<Arc<ServerState>>, config: PoolConfig) -> Result<Arc<KeyServerPool>, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("keyless-remote")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Config(format!("cannot start the key-server runtime: {e}")))?;
        let pool = Arc::new(KeyServerPool {
            runtime,
            servers: Arc::new(RwLock::new(Arc::new(Servers {
                states: Vec::new(),
                links: Vec::new(),
            }))),
            request_timeout: config.request_timeout,
            config,
            next: AtomicUsize::new(0),
        });
        pool.follow(&servers);
        Ok(pool)
    }

    /// The key servers are now `wanted` (DNS changed; the states may be
    /// shared with whoever else counts them, the edge's metrics): new ones
    /// get connections, those no longer wanted are retired (no new request;
    /// their connections close once what they carry is answered).
    pub fn follow(&self, wanted: &[Arc<ServerState>]) {
        let mut current = self.servers.write().unwrap_or_else(|e| e.into_inner());
        let same = |a: &ServerState, b: &ServerState| a.addr == b.addr && a.name == b.name;
        let mut next = Servers {
            states: Vec::new(),
            links: Vec::new(),
        };
        let mut retired = Servers {
            states: Vec::new(),
            links: Vec::new(),
        };
        for (state, links) in current.states.iter().zip(&current.links) {
            let into = if wanted.iter().any(|w| same(w, state)) {
                &mut next
            } else {
                // Kept (last) while its connections are up: it serves while
                // none in the answer is up.
                state.retire();
                if state.links_up() == 0 {
                    continue;
                }
                &mut retired
            };
            into.states.push(state.clone());
            into.links.push(links.clone());
        }
        for state in wanted {
            if next.states.iter().any(|s| same(s, state)) {
                continue;
            }
            let links = Arc::new(Links::default());
            for _ in 0..self.config.connections_per_server.max(1) {
                self.runtime.spawn(supervise(
                    state.clone(),
                    links.clone(),
                    self.servers.clone(),
                    self.config.clone(),
                ));
            }
            next.states.push(state.clone());
            next.links.push(links);
        }
        next.states.extend(retired.states);
        next.links.extend(retired.links);
        *current = Arc::new(next);
    }

    pub fn servers(&self) -> Vec<Arc<ServerState>> {
        self.current().states.clone()
    }

    fn current(&self) -> Arc<Servers> {
        self.servers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Servers with at least one live connection.
    pub fn healthy(&self) -> usize {
        self.current().states.iter().filter(|s| s.healthy()).count()
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

    /// Send `request`; its response payload, or why there is none (at once
    /// when no key server is reachable). Failover as [`Retry`] says.
    pub async fn perform(&self, request: Message) -> Result<Vec<u8>, ClientError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let timeout = self.request_timeout;
        let servers = self.current();
        let answer = Retry::new(n, servers.states.len())
            .run(request.ski.as_ref(), &servers.states, |i| {
                let conn = servers.links[i].pick(n)?;
                let request = request.clone();
                let addr = servers.states[i].addr;
                Some(async move {
                    tokio::time::timeout(timeout, conn.call(request))
                        .await
                        .unwrap_or_else(|_| Err(ClientError::Closed(format!("{addr}: no answer within {timeout:?}"))))
                })
            })
            .await?;
        expect_response(answer)
    }

    /// [`perform`](Self::perform) from a thread outside the pool's runtime,
    /// blocking it until the answer comes.
    pub fn perform_blocking(&self, request: Message) -> Result<Vec<u8>, ClientError> {
        self.runtime.handle().block_on(self.perform(request))
    }
}

/// Keep one connection slot to `server` alive, as [`Supervision`] says,
/// until the server is retired and one in the answer is up (then what the
/// connection carries is answered first).
async fn supervise(
    server: Arc<ServerState>,
    links: Arc<Links>,
    servers: Arc<RwLock<Arc<Servers>>>,
    config: PoolConfig,
) {
    // A server in the answer is up: a retired one's connections may close.
    let answer_up = || {
        let servers = servers.read().unwrap_or_else(|e| e.into_inner()).clone();
        servers.states.iter().any(|s| !s.retired() && s.healthy())
    };
    let mut life = Supervision::new(server.clone());
    while !server.retired() {
        let connected = tokio::time::timeout(
            config.connect_timeout,
            connect(server.addr, &server.name, config.tls.clone()),
        )
        .await
        .unwrap_or_else(|_| Err(ClientError::Closed("connect timed out".into())));
        // A ping proves the mutual TLS handshake was accepted (TLS 1.3
        // reports a refused client certificate only on the first read).
        let proven = match connected {
            Ok(conn) => tokio::time::timeout(config.connect_timeout, conn.ping(b"hello"))
                .await
                .unwrap_or_else(|_| Err(ClientError::Closed("no answer to the first ping".into())))
                .map(|_| Arc::new(conn)),
            Err(e) => Err(e),
        };
        let conn = match proven {
            Ok(conn) => conn,
            Err(e) => {
                tokio::time::sleep(life.attempt_failed(&e)).await;
                continue;
            }
        };
        links.0.write().unwrap_or_else(|e| e.into_inner()).push(conn.clone());
        life.up();
        let reason = loop {
            tokio::time::sleep(config.health_interval).await;
            if server.retired() && answer_up() {
                break "no longer in the DNS answer".to_string();
            }
            let ping = tokio::time::timeout(config.request_timeout, conn.ping(b"health")).await;
            match (ping, conn.closed()) {
                (_, Some(reason)) => break reason,
                (Ok(Ok(_)), None) => {}
                (Ok(Err(e)), None) => break format!("health check: {e}"),
                (Err(_), None) => break "health check: no answer".to_string(),
            }
        };
        links
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| !Arc::ptr_eq(c, &conn));
        if server.retired() {
            let deadline = Instant::now() + config.request_timeout;
            while conn.closed().is_none() && conn.in_flight() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        drop(conn);
        life.down(&reason);
    }
}

impl std::fmt::Debug for KeyServerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyServerPool")
            .field("servers", &self.servers().iter().map(|s| s.addr).collect::<Vec<_>>())
            .field("healthy", &self.healthy())
            .finish()
    }
}

impl KeyServerPool {
    /// [`perform`](Self::perform) polled on the calling thread (any
    /// thread, one inside another runtime included), blocking it for at
    /// most `deadline`. A PKCS#11 module's C_Sign is this. The connections
    /// stay on the pool's runtime; the answer wakes this thread directly.
    pub fn perform_waiting(&self, request: Message, deadline: Duration) -> Result<Vec<u8>, ClientError> {
        // The runtime's context, for the timers `perform` sets.
        let _context = self.runtime.enter();
        super::blocking::block_until(self.perform(request), Instant::now() + deadline)
            .unwrap_or_else(|| Err(ClientError::Closed(format!("no answer within {deadline:?}"))))
    }

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
