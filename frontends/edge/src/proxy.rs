//! Decrypted traffic to an upstream TCP service (as hitch or stunnel do),
//! optionally announced with a PROXY protocol v2 header carrying the
//! client's address and what it negotiated (ALPN, SNI, TLS version and
//! cipher), as hitch sends it.
//!
//! Two tasks on the connection's core, one per direction, share the TLS
//! state (borrowed only between awaits, never across one); a third writes
//! TLS records to the client in the order they were made.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use rustls::ServerConnection;

use crate::conn::{Session, Traffic};
use crate::inbound::Next;

const CHUNK: usize = 16 * 1024;
/// On SIGTERM, an HTTP/1.x connection whose last bytes were an answer and
/// that has been quiet this long is closed (its request is answered).
const DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(200);

/// What the client negotiated, passed to the upstream in PROXY v2 TLVs as
/// hitch passes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TlsFacts {
    pub alpn: Option<Vec<u8>>,
    pub sni: Option<String>,
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: Option<String>,
    /// The IANA name (`TLS13_AES_256_GCM_SHA384`).
    pub cipher: Option<String>,
}

impl TlsFacts {
    pub fn of(conn: &ServerConnection) -> TlsFacts {
        TlsFacts {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            sni: conn.server_name().map(str::to_owned),
            version: conn.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
                other => format!("{other:?}"),
            }),
            cipher: conn.negotiated_cipher_suite().map(|s| {
                s.suite()
                    .as_str()
                    .map_or_else(|| format!("{:?}", s.suite()), str::to_owned)
            }),
        }
    }
}

/// PROXY v2 TLV types (the spec's PP2_TYPE_* / PP2_SUBTYPE_SSL_*).
const PP2_TYPE_ALPN: u8 = 0x01;
const PP2_TYPE_AUTHORITY: u8 = 0x02;
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
/// `client` bit of PP2_TYPE_SSL: the client connected over TLS.
const PP2_CLIENT_SSL: u8 = 0x01;

/// The PROXY protocol v2 header for a TCP connection from `client` to
/// `local` over TLS: addresses, then ALPN, SNI (authority) and the TLS
/// version and cipher.
pub fn proxy_v2_header(client: SocketAddr, local: SocketAddr, tls: &TlsFacts) -> std::io::Result<Vec<u8>> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    let client = SocketAddr::new(client.ip().to_canonical(), client.port());
    let local = SocketAddr::new(local.ip().to_canonical(), local.port());
    let addresses = match (client, local) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => (client, local),
        // Mixed families: both as IPv6.
        _ => (to_v6(client), to_v6(local)),
    };
    let mut builder = Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses);
    if let Some(alpn) = &tls.alpn {
        builder = builder.write_tlv(PP2_TYPE_ALPN, alpn)?;
    }
    if let Some(sni) = &tls.sni {
        builder = builder.write_tlv(PP2_TYPE_AUTHORITY, sni.as_bytes())?;
    }
    // struct pp2_tlv_ssl: client (u8), verify (u32, 0: no client
    // certificate asked, so none failed), then sub-TLVs.
    let mut ssl = vec![PP2_CLIENT_SSL, 0, 0, 0, 0];
    for (kind, value) in [
        (PP2_SUBTYPE_SSL_VERSION, &tls.version),
        (PP2_SUBTYPE_SSL_CIPHER, &tls.cipher),
    ] {
        if let Some(value) = value {
            ssl.push(kind);
            ssl.extend_from_slice(&(value.len() as u16).to_be_bytes());
            ssl.extend_from_slice(value.as_bytes());
        }
    }
    builder.write_tlv(PP2_TYPE_SSL, &ssl)?.build()
}

fn to_v6(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    }
}

/// Take TLS records rustls has queued for the client.
fn take_output(conn: &RefCell<ServerConnection>) -> std::io::Result<Vec<u8>> {
    let mut conn = conn.borrow_mut();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    Ok(out)
}

/// What an HTTP/1.x client gets when the upstream cannot be reached (an
/// h2 client gets [`crate::h2::bad_gateway`]; another protocol a close).
const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: 21\r\n\
connection: close\r\n\r\nupstream unreachable\n";

/// The upstream could not be reached (counted and logged by the caller).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamDown(pub String);

impl From<UpstreamDown> for std::io::Error {
    fn from(e: UpstreamDown) -> Self {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e)
    }
}

/// Proxy `session` to `upstream` until both sides are done.
pub async fn run(
    session: Session,
    upstream: SocketAddr,
    proxy_protocol: bool,
    client: SocketAddr,
    local: SocketAddr,
    idle_timeout: std::time::Duration,
    drain: &keyless_engine::drain::Drain,
) -> std::io::Result<()> {
    let Session {
        tcp,
        conn,
        inbound,
        traffic,
    } = session;
    let mut up = match TcpStream::connect(upstream).await {
        Ok(up) => up,
        Err(e) => {
            // Say why in the client's protocol, as an HTTP proxy would,
            // then close.
            let mut session = Session {
                tcp,
                conn,
                inbound,
                traffic,
            };
            match session.conn.alpn_protocol() {
                None | Some(b"http/1.1") | Some(b"http/1.0") => {
                    let _ = session.write_all(BAD_GATEWAY).await;
                }
                Some(b"h2") => {
                    let _ = glommio::timer::timeout(std::time::Duration::from_secs(2), async {
                        crate::h2::bad_gateway(&mut session).await;
                        session.traffic.status.set(Some(502));
                        Ok(())
                    })
                    .await;
                }
                // Another protocol: no answer we could write; a clean close.
                Some(_) => {}
            }
            session.close().await;
            return Err(UpstreamDown(format!("upstream {upstream}: {e}")).into());
        }
    };
    let _ = up.set_nodelay(true);
    if proxy_protocol {
        up.write_all(&proxy_v2_header(client, local, &TlsFacts::of(&conn))?)
            .await?;
    }
    let conn = Rc::new(RefCell::new(conn));
    let (mut client_r, mut client_w) = futures_lite::io::split(tcp);
    let (mut up_r, mut up_w) = futures_lite::io::split(up);
    let (records_tx, records_rx) = local_channel::new_unbounded::<Vec<u8>>();
    let records_tx = Rc::new(records_tx);
    // When bytes last went either way: a connection idle for the idle
    // timeout is closed. And when they last went to the client: an HTTP/1.x
    // connection whose last bytes were an answer, quiet since, has no
    // request in flight, and closes at once on SIGTERM.
    let last_traffic = Rc::new(std::cell::Cell::new(std::time::Instant::now()));
    let answered = Rc::new(std::cell::Cell::new(false));
    let keep_alive = matches!(
        conn.borrow().alpn_protocol(),
        None | Some(b"http/1.1") | Some(b"http/1.0")
    );

    // Records to the client, in order.
    let writer = glommio::spawn_local(async move {
        while let Some(bytes) = records_rx.recv().await {
            client_w.write_all(&bytes).await?;
        }
        client_w.close().await
    });

    // Upstream -> client.
    let downstream = glommio::spawn_local({
        let (conn, records_tx, traffic, last_traffic, answered) = (
            conn.clone(),
            records_tx.clone(),
            traffic.clone(),
            last_traffic.clone(),
            answered.clone(),
        );
        async move {
            let mut buf = Vec::new();
            loop {
                // An idle upstream is waited for with a small buffer.
                let n = crate::conn::read_some(&mut up_r, &mut buf).await?;
                if n == 0 {
                    conn.borrow_mut().send_close_notify();
                    let _ = records_tx.try_send(take_output(&conn)?);
                    return Ok::<(), std::io::Error>(());
                }
                conn.borrow_mut().writer().write_all(&buf)?;
                if keep_alive {
                    traffic.saw_answer(&buf);
                }
                Traffic::add(&traffic.to_client, n);
                last_traffic.set(std::time::Instant::now());
                answered.set(true);
                buf.clear();
                keyless_engine::buffers::release_if_empty(&mut buf, 4096);
                let _ = records_tx.try_send(take_output(&conn)?);
            }
        }
    });

    // Client -> upstream, here: everything rustls holds or can make from
    // bytes already read goes out before the socket is waited on.
    let upstream_result: std::io::Result<()> = async {
        let mut inbound = inbound;
        loop {
            {
                // Lent while plaintext flows; given back before the wait.
                let mut plain = keyless_engine::buffers::lend(CHUNK);
                loop {
                    let next = inbound.poll(&mut conn.borrow_mut(), &mut plain);
                    let out = take_output(&conn)?;
                    if !out.is_empty() {
                        let _ = records_tx.try_send(out);
                    }
                    match next? {
                        Next::Plaintext(m) => {
                            if keep_alive {
                                traffic.saw_request(&plain[..m]);
                            }
                            Traffic::add(&traffic.from_client, m);
                            answered.set(false);
                            up_w.write_all(&plain[..m]).await?;
                        }
                        Next::Finished => {
                            up_w.close().await?;
                            return Ok(());
                        }
                        Next::NeedInput => break,
                    }
                }
            }
            let read = crate::conn::read_some(&mut client_r, inbound.buffer(4096));
            let idle = async {
                if idle_timeout.is_zero() {
                    std::future::pending::<()>().await;
                }
                // Traffic the other way keeps the connection open.
                while last_traffic.get().elapsed() < idle_timeout {
                    glommio::timer::sleep(idle_timeout.saturating_sub(last_traffic.get().elapsed())).await;
                }
            };
            // SIGTERM: an HTTP/1.x connection closes once its last request
            // is answered and nothing has moved for DRAIN_QUIET; anything
            // else waits for the drain timeout.
            let drained = async {
                drain.wait().await;
                loop {
                    let quiet = last_traffic.get().elapsed();
                    if keep_alive && answered.get() && quiet >= DRAIN_QUIET {
                        break;
                    }
                    glommio::timer::sleep(DRAIN_QUIET.saturating_sub(quiet).max(DRAIN_QUIET / 4)).await;
                }
            };
            let idle = futures_lite::future::or(idle, drained);
            match futures_lite::future::or(async { Some(read.await) }, async {
                idle.await;
                None
            })
            .await
            {
                Some(n) => {
                    if n? == 0 {
                        inbound.received_eof();
                    }
                }
                None => {
                    // Idle both ways, or draining with nothing in flight:
                    // close both, close_notify first.
                    conn.borrow_mut().send_close_notify();
                    let _ = records_tx.try_send(take_output(&conn)?);
                    up_w.close().await?;
                    return Ok(());
                }
            }
            last_traffic.set(std::time::Instant::now());
        }
    }
    .await;
    // The upstream finishes its answer (or closes too); then the client
    // gets our close_notify and the socket closes.
    // An upstream that never closes cannot hold the connection forever.
    let downstream_result = glommio::timer::timeout(std::time::Duration::from_secs(60), async {
        downstream.await.map_err(glommio::GlommioError::from)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()));
    drop(records_tx);
    let written = writer.await;
    upstream_result.and(downstream_result).and(written)
}
