//! Hold many idle connections open, as a CDN's clients (at an edge) or a
//! fleet of edges (at a key server) do: each connection does one exchange
//! and then sits idle. `perf/connections.sh` reads the server's memory
//! before and while they are held.
//!
//! - `edge`: TLS, one keep-alive `GET /` answered, then idle.
//! - `key-server`: mutual TLS, one ping answered, then idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What each held connection did before going idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Edge,
    KeyServer,
}

#[derive(Clone)]
pub struct HoldSpec {
    pub server: SocketAddr,
    pub server_name: String,
    pub tls: Arc<ClientConfig>,
    pub kind: Kind,
    pub connections: usize,
    /// Handshakes in progress at once while opening.
    pub parallel: usize,
    /// How long to hold them once all are open.
    pub hold: Duration,
    /// Connect from this local address: connections held from
    /// another loopback address leave the kernel's port search for a new
    /// client's connection as it was (on one address, each connect scans
    /// past every port held to the same server).
    pub bind: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HoldReport {
    pub opened: usize,
    pub failed: usize,
    pub open_seconds: f64,
    /// Still open (the server did not close them) when the hold ended.
    pub still_open: usize,
    pub first_error: Option<String>,
}

/// One held connection, whatever it is.
enum Held {
    Edge(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
    KeyServer(keyless_client::Connection),
}

impl Held {
    /// Whether the server still keeps it (nothing to read, not closed).
    async fn open(&mut self) -> bool {
        match self {
            Held::Edge(tls) => {
                let mut buf = [0u8; 64];
                // No data and no EOF within the timeout: still open.
                tokio::time::timeout(Duration::from_millis(1), tls.read(&mut buf))
                    .await
                    .is_err()
            }
            Held::KeyServer(conn) => conn.closed().is_none(),
        }
    }
}

async fn open_one(spec: &HoldSpec) -> Result<Held, String> {
    let name = rustls_pki_types::ServerName::try_from(spec.server_name.clone()).map_err(|e| e.to_string())?;
    match spec.kind {
        Kind::KeyServer => {
            let tcp = tcp(spec).await?;
            let tls = tokio_rustls::TlsConnector::from(spec.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let conn = keyless_client::Connection::start(tls, spec.server.to_string());
            conn.ping(b"hold").await.map_err(|e| e.to_string())?;
            Ok(Held::KeyServer(conn))
        }
        Kind::Edge => {
            let tcp = tcp(spec).await?;
            let mut tls = tokio_rustls::TlsConnector::from(spec.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"GET / HTTP/1.1\r\nhost: hold\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
            read_response(&mut tls).await?;
            Ok(Held::Edge(Box::new(tls)))
        }
    }
}

/// A TCP connection to the server, from `spec.bind` if given.
async fn tcp(spec: &HoldSpec) -> Result<tokio::net::TcpStream, String> {
    match spec.bind {
        Some(ip) => {
            let socket = match ip {
                std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .map_err(|e| e.to_string())?;
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| e.to_string())?;
            socket.connect(spec.server).await
        }
        None => tokio::net::TcpStream::connect(spec.server).await,
    }
    .map_err(|e| e.to_string())
}

/// Read one HTTP/1.1 response with a content-length body.
async fn read_response(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Result<(), String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tls.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the answer".into());
        }
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("no content-length")?;
        if got.len() >= end + 4 + length {
            return if head.starts_with("http/1.1 200") {
                Ok(())
            } else {
                Err(head.lines().next().unwrap_or_default().to_string())
            };
        }
    }
}

/// Open `connections`, say so on stdout (`held N`), hold them, report.
pub async fn run(spec: HoldSpec) -> HoldReport {
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(spec.parallel.max(1)));
    let mut tasks = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let (spec, gate) = (spec.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _turn = gate.acquire().await;
            open_one(&spec).await
        }));
    }
    let mut held = Vec::with_capacity(spec.connections);
    let mut failed = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(h) => held.push(h),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    println!("held {}", held.len());
    tokio::time::sleep(spec.hold).await;
    let mut still_open = 0;
    for h in &mut held {
        if h.open().await {
            still_open += 1;
        }
    }
    HoldReport {
        opened: held.len(),
        failed,
        open_seconds,
        still_open,
        first_error,
    }
}
