//! Per-core listeners: every core binds the same port with SO_REUSEPORT and
//! the kernel spreads connections across them. A connection stays on the
//! core that accepted it.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};

use futures_rustls::TlsAcceptor;
use glommio::net::{TcpListener, UnixListener};

use keyless_engine::core::Core;
use keyless_engine::versioned::{Cached, Versioned};

use crate::connection::{self, Closed, Limits};

/// The TLS configuration for new connections, replaced on SIGHUP.
pub type LiveTls = Versioned<rustls::ServerConfig>;

/// An accept loop's acceptor, rebuilt when the configuration changes.
struct Acceptor<'a> {
    live: &'a LiveTls,
    cached: Cached<TlsAcceptor>,
}

impl<'a> Acceptor<'a> {
    fn new(live: &'a LiveTls) -> Self {
        let cached = Cached::new(live, |config| TlsAcceptor::from(config.clone()));
        Acceptor { live, cached }
    }

    fn get(&mut self) -> TlsAcceptor {
        self.cached
            .get(self.live, |config| Some(TlsAcceptor::from(config.clone())))
    }
}

/// Connections a core holds now, handshakes included (for its cap).
pub type OpenCount = Rc<std::cell::Cell<usize>>;

/// Counts one connection while alive.
struct Open(OpenCount);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// At the cap: close the new connection at once (counted as failed; logged
/// at most once a second), so memory stays bounded whatever arrives.
fn over_capacity(
    core: &Core,
    limits: &Limits,
    open: &OpenCount,
    last_log: &std::cell::Cell<Option<std::time::Instant>>,
) -> bool {
    if open.get() < limits.max_connections {
        return false;
    }
    core.shared().counters[core.id()]
        .failed_connections
        .fetch_add(1, Ordering::Relaxed);
    if last_log.get().is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
        last_log.set(Some(std::time::Instant::now()));
        tracing::warn!(
            "core {}: {} connections open (max_connections_per_core); closing new ones",
            core.id(),
            open.get()
        );
    }
    true
}

/// Accept TCP connections forever, serving each on this core.
pub async fn accept_tcp(listener: TcpListener, tls: Arc<LiveTls>, core: Rc<Core>, limits: Rc<Limits>, open: OpenCount) {
    let last_log = std::cell::Cell::new(None);
    let mut acceptor = Acceptor::new(&tls);
    loop {
        let Some(accepted) = until_drain(&core, listener.accept()).await else {
            return; // draining: the listener closes when dropped
        };
        match accepted {
            Ok(tcp) => {
                if over_capacity(&core, &limits, &open, &last_log) {
                    drop(tcp);
                    continue;
                }
                let peer = tcp
                    .peer_addr()
                    .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
                let _ = tcp.set_nodelay(true);
                spawn_connection(acceptor.get(), tcp, core.clone(), limits.clone(), peer, &open);
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

/// Accept Unix-socket connections forever (one core listens on the socket).
pub async fn accept_unix(
    listener: UnixListener,
    tls: Arc<LiveTls>,
    core: Rc<Core>,
    limits: Rc<Limits>,
    open: OpenCount,
) {
    let mut acceptor = Acceptor::new(&tls);
    let last_log = std::cell::Cell::new(None);
    loop {
        let Some(accepted) = until_drain(&core, listener.accept()).await else {
            return;
        };
        match accepted {
            Ok(stream) => {
                if over_capacity(&core, &limits, &open, &last_log) {
                    drop(stream);
                    continue;
                }
                spawn_connection(
                    acceptor.get(),
                    stream,
                    core.clone(),
                    limits.clone(),
                    "unix".to_string(),
                    &open,
                )
            }
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
fn spawn_connection<S>(
    acceptor: TlsAcceptor,
    stream: S,
    core: Rc<Core>,
    limits: Rc<Limits>,
    peer: String,
    open: &OpenCount,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    open.set(open.get() + 1);
    let counted = Open(open.clone());
    glommio::spawn_local(async move {
        let _counted = counted;
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
            // A client that just closes its socket (no close_notify) is
            // ordinary: not worth an INFO line, nor rustls's manual link.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::debug!(%peer, "connection closed by the client without close_notify")
            }
            Err(e) => tracing::info!(%peer, "connection ended: {e}"),
        }
    })
    .detach();
}
