//! Per-core listeners: every core binds the same port with SO_REUSEPORT and
//! the kernel spreads connections across them. A connection stays on the
//! core that accepted it.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};

use futures_rustls::TlsAcceptor;
use glommio::net::{TcpListener, UnixListener};
use keyless_keys::memory::KeyMaterial;
use keyless_keys::KeyStore;

use keyless_engine::sharing::Core;

use crate::connection::{self, Closed, Limits};

/// Build this core's own copy of the keys.
pub fn core_key_store(keys: &[KeyMaterial]) -> Result<KeyStore, String> {
    let mut store = KeyStore::new();
    for k in keys {
        let key = k.instantiate().map_err(|e| format!("{}: {e}", k.path().display()))?;
        store.insert(Box::new(key));
    }
    Ok(store)
}

/// Accept TCP connections forever, serving each on this core.
pub async fn accept_tcp(listener: TcpListener, tls: Arc<rustls::ServerConfig>, core: Rc<Core>, limits: Rc<Limits>) {
    let acceptor = TlsAcceptor::from(tls);
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
                spawn_connection(acceptor.clone(), tcp, core.clone(), limits.clone(), peer);
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

/// Accept Unix-socket connections forever (one core listens on the socket).
pub async fn accept_unix(listener: UnixListener, tls: Arc<rustls::ServerConfig>, core: Rc<Core>, limits: Rc<Limits>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let Some(accepted) = until_drain(&core, listener.accept()).await else {
            return;
        };
        match accepted {
            Ok(stream) => spawn_connection(
                acceptor.clone(),
                stream,
                core.clone(),
                limits.clone(),
                "unix".to_string(),
            ),
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
        let tls = match acceptor.accept(stream).await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(%peer, "TLS handshake failed: {e}");
                return;
            }
        };
        tracing::debug!(%peer, "connection established");
        match connection::serve(tls, core, &limits).await {
            Ok(Closed::Clean) => tracing::debug!(%peer, "connection closed"),
            Ok(Closed::MidFrame { buffered }) => {
                tracing::warn!(%peer, "connection closed mid-frame ({buffered} bytes unread)")
            }
            Err(e) => tracing::info!(%peer, "connection ended: {e}"),
        }
    })
    .detach();
}
