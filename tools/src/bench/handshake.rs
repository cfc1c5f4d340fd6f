//! Handshake load against a TLS server (the keyless edge, or any other):
//! full or resumed handshakes, TLS 1.2 or 1.3, N concurrent clients, an
//! optional client certificate. Reports handshakes/s, how many actually
//! resumed, and handshake latency percentiles.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::{ClientConfig, HandshakeKind};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::report::{Latency, LatencyHistogram};

/// What to run.
#[derive(Clone)]
pub struct HandshakeSpec {
    pub server: SocketAddr,
    pub server_name: String,
    pub tls: Arc<ClientConfig>,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Ask for a page after each handshake, so that TLS 1.3 tickets (sent
    /// after the handshake) reach the client. TLS 1.2 tickets come inside
    /// the handshake and need no request.
    pub fetch_after: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct HandshakeReport {
    pub handshakes: u64,
    pub resumed: u64,
    pub failures: u64,
    pub duration_s: f64,
    pub handshakes_per_sec: f64,
    pub latency: Latency,
    pub first_error: Option<String>,
}

/// A client configuration: our CA, the protocol version, resumption on or off.
pub fn client_config(
    roots: rustls::RootCertStore,
    version: &'static rustls::SupportedProtocolVersion,
    resumed: bool,
    client_auth: Option<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(&[version])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client_auth {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    config.resumption = if resumed {
        Resumption::in_memory_sessions(1024)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

pub async fn run(spec: HandshakeSpec) -> Result<HandshakeReport, String> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let handshakes = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let histogram = Arc::new(Mutex::new(LatencyHistogram::new_ns()));
    let name = rustls_pki_types::ServerName::try_from(spec.server_name.clone()).map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    for _ in 0..spec.concurrency.max(1) {
        let (spec, name) = (spec.clone(), name.clone());
        let (measuring, stop, handshakes, resumed, failures, first_error, histogram) = (
            measuring.clone(),
            stop.clone(),
            handshakes.clone(),
            resumed.clone(),
            failures.clone(),
            first_error.clone(),
            histogram.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let connector = tokio_rustls::TlsConnector::from(spec.tls.clone());
            let mut local = LatencyHistogram::new_ns();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let attempt = async {
                    let tcp = tokio::net::TcpStream::connect(spec.server).await?;
                    tcp.set_nodelay(true)?;
                    let mut tls = connector.connect(name.clone(), tcp).await?;
                    let took = started.elapsed();
                    let kind = tls.get_ref().1.handshake_kind();
                    if spec.fetch_after {
                        tls.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
                            .await?;
                        let mut sink = Vec::new();
                        let _ = tls.read_to_end(&mut sink).await;
                    } else {
                        let _ = tls.shutdown().await;
                    }
                    Ok::<_, std::io::Error>((took, kind))
                };
                match attempt.await {
                    Ok((took, kind)) => {
                        if measuring.load(Ordering::Relaxed) {
                            handshakes.fetch_add(1, Ordering::Relaxed);
                            if kind == Some(HandshakeKind::Resumed) {
                                resumed.fetch_add(1, Ordering::Relaxed);
                            }
                            let _ = local.record(took.as_nanos() as u64);
                        }
                    }
                    Err(e) => {
                        if measuring.load(Ordering::Relaxed) {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            let _ = histogram.lock().unwrap_or_else(|p| p.into_inner()).add(&local);
        }));
    }
    tokio::time::sleep(spec.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(spec.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let n = handshakes.load(Ordering::Relaxed);
    let h = histogram.lock().unwrap_or_else(|p| p.into_inner());
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(HandshakeReport {
        handshakes: n,
        resumed: resumed.load(Ordering::Relaxed),
        failures: failures.load(Ordering::Relaxed),
        duration_s: secs,
        handshakes_per_sec: n as f64 / secs,
        latency: Latency::from_histogram(&h),
        first_error,
    })
}

/// A TCP proxy that delays every chunk by `delay` in each direction (order
/// kept): a key server "5 ms away" on loopback, for benchmarks.
pub async fn delay_proxy(listen: SocketAddr, to: SocketAddr, delay: Duration) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| e.to_string())?;
    loop {
        let (inbound, _) = listener.accept().await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let Ok(outbound) = tokio::net::TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(delayed_copy(ri, wo, delay));
            tokio::spawn(delayed_copy(ro, wi, delay));
        });
    }
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
