//! Per-core listeners: every core binds the same port with SO_REUSEPORT and
//! the kernel spreads connections across them. A connection stays on the
//! core that accepted it.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};

use futures_rustls::TlsAcceptor;
use glommio::net::{TcpListener, UnixListener};

use keyless_engine::sharing::Core;

use crate::connection::{self, Closed, Limits};

/// The TLS configuration for new connections, replaceable at run time:
/// accept loops compare a version number (one atomic load per accept) and
/// take the lock only when it changed.
pub struct LiveTls {
    config: RwLock<Arc<rustls::ServerConfig>>,
    version: AtomicU64,
}

impl LiveTls {
    pub fn new(config: Arc<rustls::ServerConfig>) -> LiveTls {
        LiveTls {
            config: RwLock::new(config),
            version: AtomicU64::new(0),
        }
    }

    /// Use this configuration for every connection accepted from now on.
    pub fn publish(&self, config: Arc<rustls::ServerConfig>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    fn current(&self) -> (u64, TlsAcceptor) {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        (self.version.load(Ordering::SeqCst), TlsAcceptor::from(config.clone()))
    }
}

/// An accept loop's acceptor, refreshed when the configuration changes.
struct Acceptor<'a> {
    live: &'a LiveTls,
    version: u64,
    acceptor: TlsAcceptor,
}

impl<'a> Acceptor<'a> {
    fn new(live: &'a LiveTls) -> Self {
        let (version, acceptor) = live.current();
        Acceptor {
            live,
            version,
            acceptor,
        }
    }

    fn get(&mut self) -> TlsAcceptor {
        if self.live.version.load(Ordering::SeqCst) != self.version {
            (self.version, self.acceptor) = self.live.current();
        }
        self.acceptor.clone()
    }
}

/// Accept TCP connections forever, serving each on this core.
pub async fn accept_tcp(listener: TcpListener, tls: Arc<LiveTls>, core: Rc<Core>, limits: Rc<Limits>) {
    let mut acceptor = Acceptor::new(&tls);
    loop {
        let Some(accepted) = until_drain(&core, listener.accept()).await else {
            return; // draining: the listener closes when dropped
        };
        match accepted {
            Ok(tcp) => {
                let peer = tcp
                    .peer_addr()
                    .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
                let _ = tcp.set_nodelay(true);
                spawn_connection(acceptor.get(), tcp, core.clone(), limits.clone(), peer);
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

/// Accept Unix-socket connections forever (one core listens on the socket).
pub async fn accept_unix(listener: UnixListener, tls: Arc<LiveTls>, core: Rc<Core>, limits: Rc<Limits>) {
    let mut acceptor = Acceptor::new(&tls);
    loop {
        let Some(accepted) = until_drain(&core, listener.accept()).await else {
            return;
        };
        match accepted {
            Ok(stream) => spawn_connection(acceptor.get(), stream, core.clone(), limits.clone(), "unix".to_string()),
            Err(e) => accept_failed(e).await,
        }
    }
}

/// `fut`'s output, or `None` once the core starts draining.
pub async fn until_drain<T>(core: &Core, fut: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        core.drain().wait().await;
        None
    })
    .await
}

/// EMFILE and friends: log, back off briefly, keep serving.
async fn accept_failed(e: glommio::GlommioError<()>) {
    tracing::warn!("accept failed: {e}");
    glommio::timer::sleep(Duration::from_millis(10)).await;
}

/// TLS handshake, then the keyless protocol, on a task of this core.
fn spawn_connection<S>(acceptor: TlsAcceptor, stream: S, core: Rc<Core>, limits: Rc<Limits>, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    glommio::spawn_local(async move {
        let handshake = glommio::timer::timeout(limits.handshake_timeout, async {
            acceptor.accept(stream).await.map_err(glommio::GlommioError::from)
        });
        let tls = match handshake.await {
            Ok(s) => s,
            Err(glommio::GlommioError::TimedOut(_)) => {
                core.shared().counters[core.id()]
                    .failed_connections
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, "TLS handshake not finished within {:?}; closed", limits.handshake_timeout);
                return;
            }
            Err(e) => {
                core.shared().counters[core.id()]
                    .failed_connections
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, "TLS handshake failed: {e}");
                return;
            }
        };
        tracing::debug!(%peer, "connection established");
        match connection::serve(tls, core, &limits).await {
            Ok(Closed::Clean) => tracing::debug!(%peer, "connection closed"),
            Ok(Closed::Idle) => tracing::info!(%peer, "connection idle for {:?}; closed", limits.idle_timeout),
            Ok(Closed::MidFrame { buffered }) => {
                tracing::warn!(%peer, "connection closed mid-frame ({buffered} bytes unread)")
            }
            Err(e) => tracing::info!(%peer, "connection ended: {e}"),
        }
    })
    .detach();
}
