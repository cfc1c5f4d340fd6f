//! Key servers that dial in (`key_server_listen`): every core accepts on
//! the same port, finishes mutual TLS (the key server's certificate must
//! chain to `key_server_ca`), and hands the connection to its
//! [`KeyClient`], which waits for the key server's hello and then sends it
//! requests as it does to key servers the edge dials.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use keyless_client::glommio::KeyClient;
use keyless_engine::drain::Drain;

use crate::config::EdgeConfig;

/// Dialed-in connections one core holds at most; more are closed at once.
const MAX_PER_CORE: usize = 4096;

/// The TLS server key servers dial: the edge's own certificate, and only
/// key servers whose certificates chain to `key_server_ca`.
pub fn tls_config(config: &EdgeConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    keyless_service::tls::mutual_server_config(
        (&config.client_cert, "client_cert"),
        (&config.client_key, "client_key"),
        (&config.key_server_ca, "key_server_ca"),
    )
    .map_err(|e| format!("key_server_listen: {e}"))
}

/// Accept key servers' connections on this core until the edge drains.
/// Each gets `handshake_timeout` for its TLS handshake and again for its
/// hello; one that sends nothing or garbage is dropped then.
pub async fn accept(
    listener: glommio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    client: Rc<KeyClient>,
    drain: Rc<Drain>,
    handshake_timeout: Duration,
) {
    let acceptor = futures_rustls::TlsAcceptor::from(tls);
    let open = Rc::new(std::cell::Cell::new(0usize));
    let mut admission = keyless_engine::accept::Admission::new("key_server_listen");
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            drain.wait().await;
            None
        });
        let tcp = match accepted.await {
            None => return,
            Some(Ok(tcp)) => tcp,
            Some(Err(e)) => {
                let pause = admission.accept_failed(&format_args!("accept failed: {e}"));
                glommio::timer::sleep(pause).await;
                continue;
            }
        };
        let Ok(addr) = tcp.peer_addr() else { continue };
        if admission.over_capacity(open.get(), MAX_PER_CORE) {
            continue;
        }
        admission.accepted();
        let _ = tcp.set_nodelay(true);
        let (acceptor, client, open) = (acceptor.clone(), client.clone(), open.clone());
        open.set(open.get() + 1);
        glommio::spawn_local(async move {
            let handshake = glommio::timer::timeout(handshake_timeout, async {
                acceptor.accept(tcp).await.map_err(glommio::GlommioError::from)
            });
            match handshake.await {
                Ok(tls) => {
                    if let Err(e) = client.adopt(tls, addr, handshake_timeout).await {
                        tracing::warn!("key server {addr} dialed in and was dropped: {e}");
                    }
                }
                Err(glommio::GlommioError::TimedOut(_)) => {
                    tracing::warn!("key server {addr}: TLS handshake not finished within {handshake_timeout:?}; closed")
                }
                Err(e) => tracing::warn!("key server {addr}: TLS handshake failed: {e}"),
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}
