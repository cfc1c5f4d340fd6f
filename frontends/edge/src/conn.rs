//! One client connection on a core: the ClientHello is read here, the
//! handshake step that may sign goes to a handshake thread, the rest of the
//! handshake and the decrypted traffic stay here.

use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::server::{Acceptor, ServerConnection};
use rustls::{HandshakeKind, ServerConfig};

use crate::handshake::HandshakePool;
use crate::inbound::{Inbound, Next};
use crate::metrics::EdgeMetrics;
use crate::signer::{with_context, HandshakeContext};

/// What a core's connections share.
pub struct CoreContext {
    /// This core's view of SIGTERM: idle keep-alive connections close at once.
    pub drain: Rc<keyless_engine::drain::Drain>,
    /// Log one line per connection (`access_log: true`).
    pub access_log: bool,
    /// When this core last logged an unreachable upstream.
    pub upstream_logged: std::cell::Cell<Option<std::time::Instant>>,
    /// Failed handshakes, logged at most once a second per core (a flood
    /// of them is one line a second; the metric counts every one).
    pub failures_logged: keyless_engine::accept::LogLimit,
    /// This core's copy of the live TLS configuration.
    pub tls: keyless_engine::versioned::Cached<Arc<ServerConfig>>,
    pub live: Arc<crate::LiveConfig>,
    pub pool: Arc<HandshakePool>,
    pub metrics: Arc<EdgeMetrics>,
    pub handshake_timeout: Duration,
    /// A keep-alive connection idle this long is closed (zero: never).
    pub idle_timeout: Duration,
    pub upstream: Option<SocketAddr>,
    pub proxy_protocol: bool,
    pub mode: HandshakeMode,
    /// This core's coroutine stacks.
    pub stacks: crate::coroutine::Stacks,
    /// This core's own connections to the key servers (coroutine mode).
    pub key_client: Option<Rc<keyless_client::glommio::KeyClient>>,
}

/// Where the handshake step that may sign runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeMode {
    /// In a coroutine on the core, suspended while the key server answers.
    Coroutine,
    /// On a handshake thread, which blocks while the key server answers.
    Threads,
    /// On the core, in one go: every certificate signs locally (the
    /// benchmark baseline, a plain rustls server).
    Inline,
}

/// Bytes asked for per socket read once data flows (a TLS record's worth).
pub const CHUNK: usize = 16 * 1024;
/// What a connection waits for its next bytes with; the rest of what
/// arrived is read with a buffer the core lends ([`read_some`]).
pub const FIRST_READ: usize = 512;
/// A connection's pending input buffer grown past this is let go once empty.
const KEEP_PENDING: usize = 4 * 1024;

const CLOSED_BEFORE_HELLO: &str = "closed before the ClientHello";

/// Connections a core holds now (what a drain waits for).
pub type OpenCount = Rc<std::cell::Cell<usize>>;

struct Open(OpenCount);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl CoreContext {
    /// The TLS configuration for a new connection (reloaded on SIGHUP).
    fn tls(&self) -> Arc<ServerConfig> {
        self.tls.get(&self.live, |config| Some(config.clone()))
    }
}

/// Serve one accepted TCP connection to the end.
pub async fn serve(tcp: TcpStream, ctx: Rc<CoreContext>, open: OpenCount) {
    open.set(open.get() + 1);
    let _open = Open(open);
    let peer = tcp.peer_addr().ok();
    let local = tcp.local_addr().ok();
    let _ = tcp.set_nodelay(true);
    let (Some(peer), Some(local)) = (peer, local) else {
        return;
    };
    // Each phase's state lives in a box of its own, freed when the phase
    // ends: the task itself would be as large as its largest phase (the
    // handshake's, about 20 KB) for the connection's whole life.
    let handshake = Box::pin(glommio::timer::timeout(ctx.handshake_timeout, {
        let ctx = ctx.clone();
        async move { Ok(handshake(tcp, &ctx, peer, local).await) }
    }))
    .await;
    let started = std::time::Instant::now();
    let (tcp, conn, inbound, step_time) = match handshake {
        Ok(Ok(done)) => done,
        Ok(Err(reason)) => {
            ctx.metrics.failed_handshakes.inc();
            // A bare TCP connect and close (a health check, a port scan, a
            // flood) is not worth a line at the default level.
            if reason == CLOSED_BEFORE_HELLO {
                tracing::debug!(%peer, "TLS handshake failed: {reason}");
            } else if let Some(more) = ctx.failures_logged.allow() {
                tracing::info!(%peer, "TLS handshake failed: {reason}{more}");
            }
            return;
        }
        Err(_) => {
            ctx.metrics.failed_handshakes.inc();
            if let Some(more) = ctx.failures_logged.allow() {
                tracing::info!(%peer, "TLS handshake not finished within {:?}; closed{more}", ctx.handshake_timeout);
            }
            return;
        }
    };
    match conn.handshake_kind() {
        Some(HandshakeKind::Resumed) => ctx.metrics.resumed_handshakes.inc(),
        _ => ctx.metrics.full_handshakes.inc(),
    };
    let facts = ctx.access_log.then(|| crate::proxy::TlsFacts::of(&conn));
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let traffic = Rc::new(Traffic::default());
    let session = Session {
        tcp,
        conn,
        inbound,
        traffic: traffic.clone(),
    };
    let result = match ctx.upstream {
        Some(upstream) => {
            Box::pin(crate::proxy::run(
                session,
                upstream,
                ctx.proxy_protocol,
                peer,
                local,
                ctx.idle_timeout,
                &ctx.drain,
            ))
            .await
        }
        None => Box::pin(answer_http(session, &ctx.drain, ctx.idle_timeout)).await,
    };
    match result {
        Err(e) if e.get_ref().is_some_and(|e| e.is::<crate::proxy::UpstreamDown>()) => {
            ctx.metrics.upstream_failures.inc();
            // At most one line a second per core: a dead upstream under
            // load must not flood the log.
            let now = std::time::Instant::now();
            if ctx
                .upstream_logged
                .get()
                .is_none_or(|t| now - t >= Duration::from_secs(1))
            {
                ctx.upstream_logged.set(Some(now));
                tracing::warn!(%peer, "{e}; answered 502 (keyless_edge_upstream_failures counts them all)");
            }
        }
        Err(e) => tracing::debug!(%peer, "connection ended: {e}"),
        Ok(()) => {}
    }
    if let Some(tls) = facts {
        // One line a connection, key=value, on its own target so a filter
        // (KEYLESS_LOG=access=info,warn) can keep just these.
        tracing::info!(
            target: "access",
            "client={peer} sni={} tls={} cipher={} alpn={} handshake={} sign_ms={:.3} request=\"{}\" status={} \
             in={} out={} ms={}",
            tls.sni.as_deref().unwrap_or("-"),
            tls.version.as_deref().unwrap_or("-"),
            tls.cipher.as_deref().unwrap_or("-"),
            tls.alpn.as_deref().map_or("-".into(), String::from_utf8_lossy),
            if resumed { "resumed" } else { "full" },
            if resumed { 0.0 } else { step_time.as_secs_f64() * 1e3 },
            traffic.request.borrow().as_deref().unwrap_or("-"),
            traffic.status.get().map_or("-".to_string(), |s| s.to_string()),
            traffic.from_client.get(),
            traffic.to_client.get(),
            started.elapsed().as_millis(),
        );
    }
}

/// Read the ClientHello, run the signing step on a handshake thread, then
/// finish the handshake here.
async fn handshake(
    mut stream: TcpStream,
    ctx: &CoreContext,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<(TcpStream, ServerConnection, Inbound, Duration), String> {
    let mut acceptor = Acceptor::default();
    let mut buf = keyless_engine::buffers::lend(CHUNK);
    let accepted = loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(CLOSED_BEFORE_HELLO.to_string());
        }
        let mut rd = &buf[..n];
        while !rd.is_empty() {
            acceptor
                .read_tls(&mut rd)
                .map_err(|e| format!("reading the ClientHello: {e}"))?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => continue,
            Err((e, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = stream.write_all(&out).await;
                return Err(e.to_string());
            }
        }
    };
    let hctx = HandshakeContext {
        sni: accepted.client_hello().server_name().map(str::to_owned),
        client_ip: peer.ip(),
        server_ip: local.ip(),
    };
    let config = ctx.tls();
    // The one step that may sign (ServerKeyExchange in TLS 1.2,
    // CertificateVerify in TLS 1.3): off the core.
    let step = move || {
        with_context(hctx, move || {
            accepted.into_connection(config).map_err(|(e, mut alert)| {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                (e, out)
            })
        })
    };
    let step_started = std::time::Instant::now();
    let processed = match ctx.mode {
        HandshakeMode::Inline => step(),
        HandshakeMode::Coroutine => {
            let client = ctx.key_client.as_ref().ok_or("no key-server client on this core")?;
            crate::coroutine::run(&ctx.stacks, client, step).await?
        }
        HandshakeMode::Threads => ctx.pool.run(step).await.ok_or("the handshake threads have stopped")?,
    };
    // The step that may sign: the signature's round trip, for a full handshake.
    let step_time = step_started.elapsed();
    let mut conn = match processed {
        Ok(conn) => conn,
        Err((e, alert)) => {
            let _ = stream.write_all(&alert).await;
            return Err(e.to_string());
        }
    };
    drop(buf);
    // The rest of the handshake never signs: it runs here. What the client
    // sends with its Finished stays in `inbound` (or decrypted in rustls).
    let mut inbound = Inbound::default();
    while conn.is_handshaking() {
        flush(&mut conn, &mut stream).await.map_err(|e| e.to_string())?;
        if conn.wants_read() {
            let n = read_some(&mut stream, inbound.buffer(KEEP_PENDING))
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed during the handshake".into());
            }
            if let Err(e) = inbound.handshake(&mut conn) {
                let _ = flush(&mut conn, &mut stream).await;
                return Err(e.to_string());
            }
        }
    }
    flush(&mut conn, &mut stream).await.map_err(|e| e.to_string())?;
    Ok((stream, conn, inbound, step_time))
}

/// Write everything rustls has queued for the peer.
pub async fn flush(conn: &mut ServerConnection, tcp: &mut TcpStream) -> std::io::Result<()> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    if !out.is_empty() {
        tcp.write_all(&out).await?;
    }
    Ok(())
}

/// Plaintext bytes a connection carried, each way, and for HTTP/1.x its
/// first request line and the status of the first answer (for the access
/// log).
#[derive(Debug, Default)]
pub struct Traffic {
    pub from_client: std::cell::Cell<u64>,
    pub to_client: std::cell::Cell<u64>,
    pub request: std::cell::RefCell<Option<String>>,
    pub status: std::cell::Cell<Option<u16>>,
}

impl Traffic {
    pub fn add(counter: &std::cell::Cell<u64>, n: usize) {
        counter.set(counter.get() + n as u64);
    }

    /// Note the request line, if `bytes` start the connection's first
    /// request (`GET /path HTTP/1.1`; quoted in the log, at most 200 bytes).
    pub fn saw_request(&self, bytes: &[u8]) {
        if self.from_client.get() == 0 && self.request.borrow().is_none() {
            let line = bytes.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
            let line: String = String::from_utf8_lossy(&line[..line.len().min(200)])
                .chars()
                .map(|c| if c.is_control() || c == '"' { '?' } else { c })
                .collect();
            *self.request.borrow_mut() = Some(line);
        }
    }

    /// Note the status, if `bytes` start the first answer (`HTTP/1.1 200 OK`).
    pub fn saw_answer(&self, bytes: &[u8]) {
        if self.to_client.get() == 0 && self.status.get().is_none() {
            let status = bytes
                .strip_prefix(b"HTTP/1.")
                .and_then(|rest| rest.get(2..5))
                .and_then(|code| std::str::from_utf8(code).ok()?.parse().ok());
            self.status.set(status);
        }
    }
}

/// An established TLS session over a socket of this core.
pub struct Session {
    pub tcp: TcpStream,
    pub conn: ServerConnection,
    /// Bytes from the client not yet given to rustls, and its plaintext.
    pub inbound: Inbound,
    pub traffic: Rc<Traffic>,
}

/// Wait for bytes on `tcp` with a small buffer, then take what else has
/// arrived with a buffer the core lends, appending all to `pending`. An
/// idle connection so holds no big buffer. `Ok(0)`: the peer closed.
pub async fn read_some<R: futures_lite::AsyncRead + Unpin>(
    tcp: &mut R,
    pending: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut first = [0u8; FIRST_READ];
    let n = tcp.read(&mut first).await?;
    pending.extend_from_slice(&first[..n]);
    if n == 0 {
        return Ok(0);
    }
    let mut chunk = keyless_engine::buffers::lend(CHUNK);
    let mut total = n;
    while total < CHUNK {
        match futures_lite::future::poll_once(tcp.read(&mut chunk)).await {
            Some(Ok(m)) if m > 0 => {
                pending.extend_from_slice(&chunk[..m]);
                total += m;
            }
            // Closed or an error: the next read says so.
            _ => break,
        }
    }
    Ok(total)
}

impl Session {
    /// Plaintext from the client; `Ok(0)` when it closed (close_notify or EOF).
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let next = self.inbound.poll(&mut self.conn, buf);
            // What rustls queued meanwhile (an alert, a key update) goes
            // out before anything waits.
            if next.is_err() {
                let _ = flush(&mut self.conn, &mut self.tcp).await;
            }
            let next = next?;
            flush(&mut self.conn, &mut self.tcp).await?;
            match next {
                Next::Plaintext(n) => {
                    self.traffic.saw_request(&buf[..n]);
                    Traffic::add(&self.traffic.from_client, n);
                    return Ok(n);
                }
                Next::Finished => return Ok(0),
                Next::NeedInput => {
                    if read_some(&mut self.tcp, self.inbound.buffer(KEEP_PENDING)).await? == 0 {
                        self.inbound.received_eof();
                    }
                }
            }
        }
    }

    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.conn.writer().write_all(data)?;
        self.traffic.saw_answer(data);
        Traffic::add(&self.traffic.to_client, data.len());
        flush(&mut self.conn, &mut self.tcp).await
    }

    pub async fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = flush(&mut self.conn, &mut self.tcp).await;
        let _ = self.tcp.close().await;
    }
}

/// Without an upstream: answer each HTTP/1.1 request with a small page
/// (demos and benchmarks), keeping the connection alive — until SIGTERM:
/// then a connection waiting for its next request closes at once, and one
/// in the middle of a request gets its answer with `connection: close`.
async fn answer_http(
    mut session: Session,
    drain: &keyless_engine::drain::Drain,
    idle_timeout: Duration,
) -> std::io::Result<()> {
    const BODY: &str = "hello from keyless-edge\n";
    let mut request = Vec::new();
    // Small: it is what a keep-alive connection waits with.
    let mut buf = [0u8; 512];
    loop {
        let idle = request.is_empty();
        let read = futures_lite::future::or(async { Some(session.read(&mut buf).await) }, async {
            if idle {
                // Waiting for the next request: SIGTERM or the idle
                // timeout ends it.
                futures_lite::future::or(drain.wait(), async {
                    if idle_timeout.is_zero() {
                        std::future::pending::<()>().await;
                    }
                    glommio::timer::sleep(idle_timeout).await;
                })
                .await;
            } else {
                std::future::pending::<()>().await;
            }
            None
        });
        let n = match read.await {
            Some(n) => n?,
            None => 0, // draining or idle, and nothing half-read: close
        };
        if n == 0 {
            session.close().await;
            return Ok(());
        }
        keyless_engine::buffers::release_if_empty(&mut request, KEEP_PENDING);
        request.extend_from_slice(&buf[..n]);
        while let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            request.drain(..end + 4);
            let close = head.contains("\r\nconnection: close") || drain.is_set();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{BODY}",
                BODY.len(),
                if close { "connection: close\r\n" } else { "" }
            );
            session.write_all(response.as_bytes()).await?;
            if close {
                session.close().await;
                return Ok(());
            }
        }
        if request.len() > 64 * 1024 {
            session.close().await;
            return Ok(()); // not HTTP we answer
        }
    }
}
