//! Per-core listeners: every core binds the same port with SO_REUSEPORT and
//! the kernel spreads connections across them. A connection stays on the
//! core that accepted it.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_lite::{AsyncRead, AsyncWrite};

use futures_rustls::TlsAcceptor;
use glommio::net::{TcpListener, UnixListener};

use keyless_engine::accept::Admission;
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

/// Accept TCP connections forever, serving each on this core.
pub async fn accept_tcp(listener: TcpListener, tls: Arc<LiveTls>, core: Rc<Core>, limits: Rc<Limits>, open: OpenCount) {
    let mut admission = Admission::new(format!("core {}", core.id()));
    let mut acceptor = Acceptor::new(&tls);
    let source: Rc<str> = match listener.local_addr() {
        Ok(a) => format!("listener: {a}").into(),
        Err(_) => "listener".into(),
    };
    loop {
        let Some(accepted) = until_drain(&core, listener.accept()).await else {
            return; // draining: the listener closes when dropped
        };
        match accepted {
            Ok(tcp) => {
                if refuse(&core, &mut admission, &limits, &open) {
                    drop(tcp);
                    continue;
                }
                let peer = tcp
                    .peer_addr()
                    .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
                let _ = tcp.set_nodelay(true);
                spawn_connection(
                    acceptor.get(),
                    tcp,
                    core.clone(),
                    limits.clone(),
                    (peer, source.clone()),
                    &open,
                );
            }
            Err(e) => accept_failed(&core, &mut admission, e).await,
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
    let mut admission = Admission::new(format!("core {} (unix socket)", core.id()));
    loop {
        let Some(accepted) = until_drain(&core, listener.accept()).await else {
            return;
        };
        match accepted {
            Ok(stream) => {
                if refuse(&core, &mut admission, &limits, &open) {
                    drop(stream);
                    continue;
                }
                spawn_connection(
                    acceptor.get(),
                    stream,
                    core.clone(),
                    limits.clone(),
                    ("unix".to_string(), Rc::from("listener: unix")),
                    &open,
                )
            }
            Err(e) => accept_failed(&core, &mut admission, e).await,
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

/// At the cap: close the new connection at once (counted; said once per
/// episode), so memory stays bounded whatever arrives.
fn refuse(core: &Core, admission: &mut Admission, limits: &Limits, open: &OpenCount) -> bool {
    if admission.over_capacity(open.get(), limits.max_connections) {
        core.counters().refused_connections.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    admission.accepted();
    false
}

/// EMFILE and friends: stop accepting for a while (said once per
/// episode), keep serving what the core holds.
async fn accept_failed(core: &Core, admission: &mut Admission, e: glommio::GlommioError<()>) {
    core.counters().refused_connections.fetch_add(1, Ordering::Relaxed);
    let pause = admission.accept_failed(&format_args!("accept failed: {e}"));
    glommio::timer::sleep(pause).await;
}

thread_local! {
    /// Failed handshakes on this core, logged at most once a second (the
    /// metric counts every one).
    static FAILURES_LOGGED: keyless_engine::accept::LogLimit = keyless_engine::accept::LogLimit::default();
}

/// TLS handshake, then the keyless protocol, on a task of this core.
fn spawn_connection<S>(
    acceptor: TlsAcceptor,
    stream: S,
    core: Rc<Core>,
    limits: Rc<Limits>,
    (peer, source): (String, Rc<str>),
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
                    .failed_handshakes
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(more) = FAILURES_LOGGED.with(|l| l.allow()) {
                    tracing::info!(%peer, "TLS handshake not finished within {:?}; closed{more}", limits.handshake_timeout);
                }
                return;
            }
            Err(e) => {
                core.shared().counters[core.id()]
                    .failed_handshakes
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(more) = FAILURES_LOGGED.with(|l| l.allow()) {
                    tracing::info!(%peer, "TLS handshake failed: {e}{more}");
                }
                return;
            }
        };
        tracing::debug!(%peer, "connection established");
        if let Some(chain) = tls.get_ref().1.peer_certificates() {
            crate::certmetrics::observe(&source, chain);
        }
        let closed = connection::serve(tls, core.clone(), &limits).await;
        // gokeyless's keyless_failed_connection: a connection that ended
        // other than by its idle timeout (or our drain) counts, the
        // client's own close included, as gokeyless counts its read errors.
        if !matches!(closed, Ok(Closed::Idle | Closed::Drained)) {
            core.shared().counters[core.id()]
                .failed_connections
                .fetch_add(1, Ordering::Relaxed);
        }
        match closed {
            Ok(Closed::Clean) => tracing::debug!(%peer, "connection closed"),
            Ok(Closed::Drained) => tracing::debug!(%peer, "connection closed: draining"),
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
