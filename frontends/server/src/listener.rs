//! Per-core listeners: every core binds the same port with SO_REUSEPORT and
//! the kernel spreads connections across them. A connection stays on the
//! core that accepted it.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use futures_rustls::TlsAcceptor;
use glommio::net::TcpListener;
use keyless_keys::memory::KeyMaterial;
use keyless_keys::KeyStore;

use crate::connection::{self, Closed};

/// Build this core's own copy of the keys.
pub fn core_key_store(keys: &[KeyMaterial]) -> Result<KeyStore, String> {
    let mut store = KeyStore::new();
    for k in keys {
        let key = k
            .instantiate()
            .map_err(|e| format!("{}: {e}", k.path().display()))?;
        store.insert(Box::new(key));
    }
    Ok(store)
}

/// Accept connections forever on `addr`, serving each on this core.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    store: Rc<KeyStore>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let tcp = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving.
                tracing::warn!("accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer: Option<SocketAddr> = tcp.peer_addr().ok();
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let store = store.clone();
        glommio::spawn_local(async move {
            let mut tls = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(?peer, "TLS handshake failed: {e}");
                    return;
                }
            };
            tracing::debug!(?peer, "connection established");
            match connection::serve(&mut tls, &store).await {
                Ok(Closed::Clean) => tracing::debug!(?peer, "connection closed"),
                Ok(Closed::MidFrame { buffered }) => {
                    tracing::warn!(
                        ?peer,
                        "connection closed mid-frame ({buffered} bytes unread)"
                    )
                }
                Err(e) => tracing::info!(?peer, "connection ended: {e}"),
            }
        })
        .detach();
    }
}
