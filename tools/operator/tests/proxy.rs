//! The edge's proxy in front of an HTTP/1.1 upstream, driven the way
//! browsers and curl drive it: the first request written with the
//! handshake's end (a TLS 1.3 client sends it in the same flight as its
//! Finished), full and resumed handshakes, TLS 1.3 and 1.2, pipelined
//! requests, 1 MiB bodies both ways, a client that half-closes after its
//! request. Every response is checked byte for byte, and a request left
//! without an answer (a hang) fails the test within seconds.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection};
use support::*;

/// Body bytes: each says where it is, so a lost or repeated byte shows.
fn body(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| b'a' + ((seed * 31 + j * 7) % 26) as u8).collect()
}

/// An HTTP/1.1 upstream on loopback: `GET /N` answers N bytes of
/// `body(N, N)` (`GET /slow/N` the same, 3 s later); a `POST` answers
/// its own body back. Keep-alive; a client
/// that closes its side still gets the answers to what it sent.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || serve_upstream(conn));
        }
    });
    addr
}

fn serve_upstream(mut conn: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        // Answer every complete request buffered.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ")?.parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + length {
                break;
            }
            let request_body: Vec<u8> = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            if head.starts_with("GET /slow") {
                std::thread::sleep(Duration::from_secs(3));
            }
            let answer = if head.starts_with("POST") {
                request_body
            } else {
                let n: usize = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.trim_start_matches('/').trim_start_matches("slow/").parse().ok())
                    .unwrap_or(0);
                body(n, n)
            };
            let mut response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", answer.len()).into_bytes();
            response.extend_from_slice(&answer);
            if conn.write_all(&response).is_err() {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return, // the edge closed its side: done
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What one connection asks and what it must get back.
struct Exchange {
    requests: Vec<u8>,
    responses: Vec<Vec<u8>>,
}

/// `count` requests, the k-th of a kind chosen by `seed`: small GETs,
/// a POST echoed, sometimes 1 MiB either way.
fn exchange(seed: usize, count: usize, big: bool) -> Exchange {
    let mut requests = Vec::new();
    let mut responses = Vec::new();
    for k in 0..count {
        let pick = seed.wrapping_mul(7).wrapping_add(k * 13);
        if big && k == 0 {
            if seed.is_multiple_of(2) {
                let n = 1 << 20;
                requests.extend_from_slice(format!("GET /{n} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes());
                responses.push(body(n, n));
            } else {
                let upload = body(seed, 1 << 20);
                requests.extend_from_slice(
                    format!(
                        "POST /up HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
                        upload.len()
                    )
                    .as_bytes(),
                );
                requests.extend_from_slice(&upload);
                responses.push(upload);
            }
        } else if pick.is_multiple_of(3) {
            let upload = body(pick, 1 + pick % 3000);
            requests.extend_from_slice(
                format!(
                    "POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
                    upload.len()
                )
                .as_bytes(),
            );
            requests.extend_from_slice(&upload);
            responses.push(upload);
        } else {
            let n = pick % 5000;
            requests.extend_from_slice(format!("GET /{n} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes());
            responses.push(body(n, n));
        }
    }
    Exchange { requests, responses }
}

/// A client of the development CA, TLS 1.3 or 1.2; it keeps sessions, so
/// its connections after the first resume (with a ticket).
fn client_config(tls13: bool) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in keyless_server::tls::load_certs(&fixture().pki.ca_cert).unwrap() {
        roots.add(c).unwrap();
    }
    let version = if tls13 {
        &rustls::version::TLS13
    } else {
        &rustls::version::TLS12
    };
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Why a connection failed; a hang is a read that timed out.
#[derive(Debug)]
enum Failure {
    Hang(String),
    Other(String),
}

/// One connection: every request is written to rustls before the
/// handshake starts, so its first record leaves with the client's
/// Finished (TLS 1.3) or right after it (TLS 1.2), then the responses are
/// read and compared; `half_close` sends close_notify after the requests.
fn run_exchange(
    edge: SocketAddr,
    config: &Arc<ClientConfig>,
    ex: &Exchange,
    half_close: bool,
) -> Result<bool, Failure> {
    let tcp = TcpStream::connect(edge).map_err(|e| Failure::Other(e.to_string()))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut conn = ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).unwrap();
    // rustls holds up to 64 KiB before the handshake ends; the rest of a
    // large upload follows it.
    let early = conn.writer().write(&ex.requests).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(&ex.requests[early..]).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            Failure::Hang(format!("the edge took no more of the requests: {e}"))
        }
        _ => Failure::Other(format!("writing the requests: {e}")),
    })?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let expected: usize = ex
        .responses
        .iter()
        .map(|r| format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", r.len()).len() + r.len())
        .sum();
    let mut closed = false;
    while got.len() < expected {
        if half_close && !closed && !tls.conn.is_handshaking() && !tls.conn.wants_write() {
            tls.conn.send_close_notify();
            closed = true;
        }
        match tls.read(&mut buf) {
            Ok(0) => {
                return Err(Failure::Other(format!(
                    "closed after {} of {expected} bytes",
                    got.len()
                )))
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(Failure::Hang(format!(
                    "no answer after {} of {expected} bytes",
                    got.len()
                )))
            }
            Err(e) => return Err(Failure::Other(format!("{e} after {} of {expected} bytes", got.len()))),
        }
    }
    let mut at = 0;
    for (i, r) in ex.responses.iter().enumerate() {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", r.len());
        if got[at..at + head.len()] != *head.as_bytes() || got[at + head.len()..at + head.len() + r.len()] != r[..] {
            return Err(Failure::Other(format!("response {i} differs")));
        }
        at += head.len() + r.len();
    }
    let resumed = tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(resumed)
}

/// `connections` exchanges from `threads` client threads, each thread with
/// its own client configuration (a full handshake, then seven resumed with
/// its tickets, then a fresh configuration).
/// Returns (requests, hangs, other failures, resumed connections).
fn load(edge: SocketAddr, tls13: bool, threads: usize, connections: usize) -> (usize, Vec<String>, Vec<String>, usize) {
    let requests = Arc::new(AtomicUsize::new(0));
    let resumed = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (requests, resumed) = (requests.clone(), resumed.clone());
            std::thread::spawn(move || {
                let mut config = client_config(tls13);
                let (mut hangs, mut others) = (Vec::new(), Vec::new());
                for c in 0..connections / threads {
                    let seed = t * 100_000 + c;
                    if c % 8 == 7 {
                        config = client_config(tls13); // no session: a full handshake
                    }
                    let ex = exchange(seed, 1 + seed % 4, seed % 97 == 5);
                    match run_exchange(edge, &config, &ex, seed % 5 == 1) {
                        Ok(r) => {
                            requests.fetch_add(ex.responses.len(), Ordering::Relaxed);
                            resumed.fetch_add(usize::from(r), Ordering::Relaxed);
                        }
                        Err(Failure::Hang(e)) => hangs.push(format!("connection {seed}: {e}")),
                        Err(Failure::Other(e)) => others.push(format!("connection {seed}: {e}")),
                    }
                }
                (hangs, others)
            })
        })
        .collect();
    let (mut hangs, mut others) = (Vec::new(), Vec::new());
    for h in handles {
        let (h, o) = h.join().unwrap();
        hangs.extend(h);
        others.extend(o);
    }
    (
        requests.load(Ordering::Relaxed),
        hangs,
        others,
        resumed.load(Ordering::Relaxed),
    )
}

#[test]
fn requests_sent_with_the_handshakes_end_are_all_answered() {
    let _serial = serial();
    let server = key_server("127.0.0.1:0".parse().unwrap());
    let up = upstream();
    let edge = edge(&[server.addr], &format!("upstream: \"{up}\"\n"));
    for (tls13, connections) in [(true, 4000), (false, 800)] {
        let started = Instant::now();
        let (requests, hangs, others, resumed) = load(edge.addr, tls13, 4, connections);
        eprintln!(
            "TLS {}: {connections} connections ({resumed} resumed), {requests} requests answered, {} hung, {} failed, {:.1} s",
            if tls13 { "1.3" } else { "1.2" },
            hangs.len(),
            others.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            hangs.is_empty(),
            "{} requests hung: {:?}",
            hangs.len(),
            &hangs[..hangs.len().min(5)]
        );
        assert!(others.is_empty(), "{:?}", &others[..others.len().min(5)]);
        assert!(
            resumed > connections / 2 && resumed < connections * 15 / 16,
            "{resumed} of {connections} resumed: both kinds of handshake are tested"
        );
    }
}

/// `curl` at the edge on `localhost`: (HTTP version, status, body).
fn curl(edge: SocketAddr, args: &[&str]) -> (String, String, Vec<u8>) {
    let port = edge.port();
    let body = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "%{http_version} %{http_code}", "-o"])
        .arg(body.path())
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1"), "--cacert"])
        .arg(&fixture().pki.ca_cert)
        .args(args)
        .arg(format!("https://localhost:{port}/1234"))
        .output()
        .expect("curl");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let (version, status) = said.split_once(' ').unwrap_or(("", ""));
    (
        version.to_string(),
        status.to_string(),
        std::fs::read(body.path()).unwrap(),
    )
}

#[test]
fn h2_is_offered_only_where_the_upstream_speaks_it_and_its_502_is_h2() {
    let _serial = serial();
    let server = key_server("127.0.0.1:0".parse().unwrap());
    let up = upstream();
    // The pairing operators copy, in front of an HTTP/1.1-only upstream:
    // refused at start-up (and by -t, which parses the same way), naming
    // the line.
    let yaml = edge_yaml(&[server.addr], &format!("upstream: \"{up}\"\nalpn: [h2, http/1.1]\n"));
    let refused = keyless_edge::config::parse(std::path::Path::new("edge.yaml"), &yaml).unwrap_err();
    assert!(
        refused.starts_with("edge.yaml:") && refused.contains("alpn: h2 would be offered to clients"),
        "{refused}"
    );
    // HTTP/1.1 only: an h2 client falls back and is answered by the upstream.
    let e = edge(
        &[server.addr],
        &format!("upstream: \"{up}\"\nalpn: [http/1.1]\naccess_log: true\n"),
    );
    let (version, status, body_got) = curl(e.addr, &["--http2"]);
    assert_eq!((version.as_str(), status.as_str()), ("1.1", "200"));
    assert_eq!(body_got, body(1234, 1234));
    access_line(&["alpn=http/1.1", "request=\"GET /1234 HTTP/1.1\" status=200 "]);
    drop(e);
    // An upstream said to speak h2 that is down: the 502 comes as HTTP/2.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let e = edge(
        &[server.addr],
        &format!(
            "upstream: \"{closed}\"\nupstream_protocols: [h2, http/1.1]\nalpn: [h2, http/1.1]\naccess_log: true\n"
        ),
    );
    let (version, status, _) = curl(e.addr, &["--http2"]);
    assert_eq!((version.as_str(), status.as_str()), ("2", "502"));
    access_line(&["alpn=h2", "status=502 "]);
    let (version, status, said) = curl(e.addr, &["--http1.1"]);
    assert_eq!((version.as_str(), status.as_str()), ("1.1", "502"));
    assert_eq!(said, b"upstream unreachable\n");
    access_line(&["alpn=http/1.1", "status=502 "]);
}

/// Wait for an access log line holding every one of `parts`.
fn access_line(parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = ACCESS
            .lock()
            .unwrap()
            .iter()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .cloned();
        match found {
            Some(line) => return line,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => panic!("no access line with {parts:?}: {:#?}", ACCESS.lock().unwrap()),
        }
    }
}

/// A TLS connection to the edge (TLS 1.3) that has sent `request`.
fn open(edge: SocketAddr, request: &[u8]) -> rustls::StreamOwned<ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(edge).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut conn = ClientConnection::new(client_config(true), "localhost".try_into().unwrap()).unwrap();
    conn.writer().write_all(request).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.flush().unwrap();
    tls
}

/// Read one response of `n` body bytes (as the upstream writes them).
fn read_response(tls: &mut rustls::StreamOwned<ClientConnection, TcpStream>, n: usize) -> Vec<u8> {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
    let mut got = vec![0u8; head.len() + n];
    tls.read_exact(&mut got).unwrap();
    assert_eq!(&got[..head.len()], head.as_bytes());
    got.split_off(head.len())
}

#[test]
fn sigterm_closes_idle_proxied_connections_at_once_and_busy_ones_after_their_answer() {
    let _serial = serial();
    let server = key_server("127.0.0.1:0".parse().unwrap());
    let up = upstream();
    let e = edge(&[server.addr], &format!("upstream: \"{up}\"\ndrain_timeout: 30\n"));
    // Idle: one request answered, kept alive.
    let mut idle = open(e.addr, b"GET /100 HTTP/1.1\r\nhost: localhost\r\n\r\n");
    assert_eq!(read_response(&mut idle, 100), body(100, 100));
    // Busy: its request is still with the upstream when SIGTERM comes.
    let mut busy = open(e.addr, b"GET /slow/5000 HTTP/1.1\r\nhost: localhost\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    e.start_drain();
    let busy = std::thread::spawn(move || {
        let answer = read_response(&mut busy, 5000);
        let mut rest = Vec::new();
        let end = busy.read_to_end(&mut rest);
        (
            answer,
            end.map(|_| rest.len()).map_err(|e| e.to_string()),
            started.elapsed(),
        )
    });
    let mut rest = Vec::new();
    let end = idle.read_to_end(&mut rest);
    let idle_closed = started.elapsed();
    assert_eq!(
        end.map_err(|e| e.to_string()),
        Ok(0),
        "the idle connection ends with close_notify"
    );
    assert!(
        idle_closed < Duration::from_millis(2500),
        "idle closed after {idle_closed:?}"
    );
    let (answer, end, busy_closed) = busy.join().unwrap();
    assert_eq!(answer, body(5000, 5000), "the request in flight got its whole answer");
    assert_eq!(end, Ok(0), "then close_notify");
    assert!(
        busy_closed < Duration::from_secs(8),
        "busy closed after {busy_closed:?}"
    );
    e.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the edge stopped after {:?} (drain_timeout 30 s)",
        started.elapsed()
    );
}

/// A browser's trust store: an NSS database under `home` (where Chromium
/// on Linux looks, `$HOME/.pki/nssdb`) trusting the development CA.
fn nss_home(home: &std::path::Path) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db = format!("sql:{}", db.display());
    let certutil = |args: &[&str]| {
        let out = std::process::Command::new("certutil")
            .args(args)
            .output()
            .expect("certutil (libnss3-tools; .ci/run installs it)");
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    certutil(&["-d", &db, "-N", "--empty-password"]);
    let ca = fixture().pki.ca_cert.display().to_string();
    certutil(&["-d", &db, "-A", "-t", "C,,", "-n", "keyless test CA", "-i", &ca]);
}

/// Headless Chromium loads `url` (its first request leaves with the TLS
/// 1.3 Finished, several connections at once): the page's DOM as text.
fn chromium(home: &std::path::Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("chromium")
        .env("HOME", home)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP localhost 127.0.0.1",
            "--timeout=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium (Debian's chromium; .ci/run installs it)");
    let mut dom = String::new();
    child.stdout.take().unwrap().read_to_string(&mut dom).unwrap();
    child.wait().unwrap();
    dom
}

#[test]
fn chromium_loads_pages_through_the_edge_from_http1_and_h2_upstreams() {
    let _serial = serial();
    let server = key_server("127.0.0.1:0".parse().unwrap());
    let home = tempfile::tempdir().unwrap();
    nss_home(home.path());
    // HTTP/1.1: the test upstream's page of 3000 letters.
    let up = upstream();
    let e = edge(
        &[server.addr],
        &format!("upstream: \"{up}\"\nalpn: [http/1.1]\naccess_log: true\n"),
    );
    let page = String::from_utf8(body(3000, 3000)).unwrap();
    for load in 0..5 {
        let dom = chromium(home.path(), &format!("https://localhost:{}/3000", e.addr.port()));
        assert!(dom.contains(&page), "load {load} over HTTP/1.1: {dom:.300}");
    }
    access_line(&[
        "tls=TLSv1.3",
        "alpn=http/1.1",
        "request=\"GET /3000 HTTP/1.1\" status=200 ",
    ]);
    drop(e);
    // h2 end to end: nghttpd (nghttp2-server) speaking h2 without TLS behind
    // an edge that offers h2.
    let dir = tempfile::tempdir().unwrap();
    let token = "keyless-h2-page-7f3a91";
    std::fs::write(
        dir.path().join("index.html"),
        format!("<html><body><p id=t>{token}</p></body></html>"),
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _nghttpd = keyless_tools::process::KillOnDrop(
        std::process::Command::new("nghttpd")
            .args(["--no-tls", "-a", "127.0.0.1", "-d"])
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nghttpd (nghttp2-server; .ci/run installs it)"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nghttpd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = edge(
        &[server.addr],
        &format!(
            "upstream: \"127.0.0.1:{port}\"\nupstream_protocols: [h2, http/1.1]\nalpn: [h2, http/1.1]\naccess_log: true\n"
        ),
    );
    for load in 0..5 {
        let dom = chromium(home.path(), &format!("https://localhost:{}/", e.addr.port()));
        assert!(dom.contains(token), "load {load} over h2: {dom:.300}");
    }
    access_line(&["tls=TLSv1.3", "alpn=h2"]);
}
