//! The edge end to end, with real key servers over real sockets and the
//! real `openssl` binary as the TLS client: full handshakes ask the key
//! server for exactly one signature, resumed ones ask for none; tickets are
//! shared through a key file and expire with their window; losing a key
//! server fails over, losing all fails fast, and service comes back; the
//! decrypted stream is proxied with a correct PROXY v2 header.
//!
//! Tests here run one at a time (a lock): they count signatures on shared
//! key servers, and each glommio core locks memory (`ulimit -l` is small).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod support;

use support::*;

/// An upstream that cannot be reached: the client gets a 502 that says so,
/// the edge counts it and logs it (at most once a second).
#[test]
fn an_unreachable_upstream_answers_502_and_is_counted() {
    let _serial = serial();
    let server = shared_key_server();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = edge(
        &[server.addr],
        &format!("upstream: \"{closed}\"\nmetrics_listen: 127.0.0.1:0\n"),
    );
    let rt = runtime();
    for _ in 0..2 {
        let answer = rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tls = connect(e.addr, &[]).await;
            tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).await.expect("closed cleanly");
            String::from_utf8(answer).unwrap()
        });
        assert!(answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{answer}");
        assert!(answer.ends_with("upstream unreachable\n"), "{answer}");
    }
    // Counted as the connection ends, just after the client read its 502.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while e.metrics.upstream_failures.get() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(e.metrics.upstream_failures.get(), 2);
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(e.metrics_addr.unwrap()).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(
        metrics.contains("\nkeyless_edge_upstream_failures_total 2\n"),
        "{metrics}"
    );
    // The key server's exposition format.
    assert!(
        metrics.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{metrics}"
    );
    let help: Vec<&str> = metrics.lines().filter(|l| l.starts_with("# HELP")).collect();
    assert!(!help.is_empty() && help.iter().all(|l| !l.ends_with("..")), "{help:#?}");
}

/// `access_log: true`: one line per connection with what an operator
/// greps for.
#[test]
fn the_access_log_has_a_line_per_connection() {
    let _serial = serial();
    let server = shared_key_server();
    let e = edge(&[server.addr], "access_log: true\nalpn: [http/1.1]\n");
    let rt = runtime();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = connect(e.addr, &[b"http/1.1"]).await;
        tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut page = Vec::new();
        tls.read_to_end(&mut page).await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let found = ACCESS
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("sni=localhost") && l.contains("alpn=http/1.1"))
            .cloned();
        match found {
            Some(line) => break line,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => panic!("no access line: {:?}", ACCESS.lock().unwrap()),
        }
    };
    for part in [
        "client=127.0.0.1:",
        "tls=TLSv1.3",
        "cipher=TLS13_",
        "handshake=full",
        "request=\"GET / HTTP/1.1\" status=200 ",
        "in=",
        "out=",
        "ms=",
    ] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
    let bytes_in: u64 = line
        .split(" in=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes_in >= 40, "{line}");
}

/// SIGTERM: an idle keep-alive connection is closed at once (with
/// close_notify), so the edge stops long before the drain timeout (30 s
/// here; about 0.2 s is usual, the bounds leave room for a loaded machine).
#[test]
fn a_drain_closes_idle_keep_alive_connections_at_once() {
    let _serial = serial();
    let server = shared_key_server();
    let e = edge(&[server.addr], "drain_timeout: 30\n");
    let rt = runtime();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = connect(e.addr, &[]).await;
        tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut page = vec![0u8; 4096];
        let n = tls.read(&mut page).await.unwrap();
        assert!(
            page[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&page[..n])
        );
        // Idle, kept alive; now SIGTERM.
        let started = Instant::now();
        e.start_drain();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest))
            .await
            .expect("the idle connection was not closed")
            .expect("closed cleanly with close_notify");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "closed after {:?}",
            started.elapsed()
        );
    });
    let started = Instant::now();
    e.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped after {:?}",
        started.elapsed()
    );
}

/// `--test-config` loads what the edge would and binds nothing: a good
/// configuration says what it holds, a broken one names the file at fault.
#[test]
fn checking_a_configuration_loads_everything_and_binds_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut config = edge_config(&["127.0.0.1:2407".parse().unwrap()], "");
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let ok = keyless_edge::check(&config).unwrap();
    assert_eq!(ok, "2 certificates, 1 key server addresses");
    let missing = Path::new("/nonexistent/site.pem");
    config.certificates[1].cert = missing.into();
    let e = keyless_edge::check(&config).unwrap_err();
    assert!(e.contains("/nonexistent/site.pem"), "{e}");
    config.certificates[1].cert = fixture().pki.sites_dir.join("rsa2048.pem");
    config.client_key = missing.into();
    let e = keyless_edge::check(&config).unwrap_err();
    assert!(
        e.contains("key server TLS") && e.contains("/nonexistent/site.pem"),
        "{e}"
    );
    drop(taken);
}

/// `-t` asks the key servers for a signature per certificate, as `nginx -t`
/// catches a certificate whose key does not match.
#[test]
fn checking_a_configuration_asks_the_key_servers_for_every_certificates_key() {
    let _serial = serial();
    let server = shared_key_server();
    let config = edge_config(&[server.addr], "");
    let ok = keyless_edge::probe::probe(&config).unwrap();
    assert_eq!(ok, "every certificate's key signs on 1 of 1 key servers");
    // A certificate of the same CA whose key is on no key server.
    let other = fixture()
        .pki
        .ca()
        .unwrap()
        .issue("other.localhost", &["other.localhost"], keyless_pki::Usage::Server)
        .unwrap();
    let path = fixture().dir.path().join("other.pem");
    std::fs::write(&path, &other.cert_pem).unwrap();
    let mut lacking = edge_config(&[server.addr], "");
    lacking.certificates[1].cert = path.clone();
    let e = keyless_edge::probe::probe(&lacking).unwrap_err();
    assert!(
        e.starts_with(&format!(
            "{}: no key server holds the key of this certificate (SKI ",
            path.display()
        )) && e.contains("key not found"),
        "{e}"
    );
    // Nothing to ask: -t says so instead of passing.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = keyless_edge::probe::probe(&edge_config(&[closed], "")).unwrap_err();
    assert!(e.starts_with("no key server answered within 3 s"), "{e}");
}

/// `openssl s_client` against the edge; its output. With `-sess_out` the
/// client stays connected for a moment: a TLS 1.3 ticket arrives after the
/// handshake, and s_client saves only what it has read before it exits.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(&fixture().pki.ca_cert)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    if args.contains(&"-sess_out") {
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("openssl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count_lines(output: &str, prefix: &str) -> usize {
    output.lines().filter(|l| l.starts_with(prefix)).count()
}

fn shared_key_server() -> &'static keyless_server::RunningServer {
    static S: OnceLock<keyless_server::RunningServer> = OnceLock::new();
    S.get_or_init(|| key_server("127.0.0.1:0".parse().unwrap()))
}

fn shared_edge() -> &'static keyless_edge::RunningEdge {
    static E: OnceLock<keyless_edge::RunningEdge> = OnceLock::new();
    E.get_or_init(|| edge(&[shared_key_server().addr], ""))
}

#[test]
fn tls12_reconnect_is_one_full_handshake_then_five_resumed() {
    let _serial = serial();
    let (server, edge) = (shared_key_server(), shared_edge());
    let before = signatures(server);
    let out = s_client(edge.addr, &["-tls1_2", "-reconnect"]);
    assert_eq!(count_lines(&out, "New, TLSv1.2"), 1, "{out}");
    assert_eq!(count_lines(&out, "Reused, TLSv1.2"), 5, "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert_eq!(signatures(server) - before, 1, "the key server signs once");
}

#[test]
fn separate_connections_without_a_session_each_need_a_signature() {
    let _serial = serial();
    let (server, edge) = (shared_key_server(), shared_edge());
    let before = signatures(server);
    for args in [
        &["-tls1_2"][..],
        &["-tls1_3"],
        &["-tls1_3", "-servername", "rsa.localhost"],
    ] {
        let out = s_client(edge.addr, args);
        assert_eq!(count_lines(&out, "New, TLSv1."), 1, "{out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    }
    assert_eq!(signatures(server) - before, 3);
}

#[test]
fn tls13_session_resumes_without_a_signature() {
    let _serial = serial();
    let (server, edge) = (shared_key_server(), shared_edge());
    let session = fixture().dir.path().join("tls13.session");
    let out = s_client(edge.addr, &["-tls1_3", "-sess_out", session.to_str().unwrap()]);
    assert_eq!(count_lines(&out, "New, TLSv1.3"), 1, "{out}");
    let before = signatures(server);
    let out = s_client(edge.addr, &["-tls1_3", "-sess_in", session.to_str().unwrap()]);
    assert_eq!(count_lines(&out, "Reused, TLSv1.3"), 1, "{out}");
    assert_eq!(
        signatures(server) - before,
        0,
        "a resumed handshake never reaches the key server"
    );
}

/// What `keyless-tool ticket-keys [--rotate]` does.
fn ticket_tool(file: &Path, rotate: bool) {
    keyless_edge::tickets::manage_key_file(
        file,
        rotate,
        keyless_edge::tickets::DEFAULT_ROTATION,
        keyless_edge::tickets::DEFAULT_LIFETIME,
    )
    .unwrap();
}

#[test]
fn edges_sharing_a_ticket_key_file_resume_each_others_sessions() {
    let _serial = serial();
    let server = shared_key_server();
    let file: PathBuf = fixture().dir.path().join("ticket-keys.json");
    ticket_tool(&file, false);
    let extra = format!("tickets:\n  key_file: {}\n", file.display());
    let a = edge(&[server.addr], &extra);
    let b = edge(&[server.addr], &extra);
    let session = fixture().dir.path().join("shared.session");
    let out = s_client(a.addr, &["-tls1_2", "-sess_out", session.to_str().unwrap()]);
    assert_eq!(count_lines(&out, "New, TLSv1.2"), 1, "{out}");
    let before = signatures(server);
    let out = s_client(b.addr, &["-tls1_2", "-sess_in", session.to_str().unwrap()]);
    assert_eq!(
        count_lines(&out, "Reused, TLSv1.2"),
        1,
        "edge B resumes edge A's ticket: {out}"
    );
    assert_eq!(signatures(server) - before, 0);

    // Rotate the file: both edges pick it up, and the old ticket still works.
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime second
    ticket_tool(&file, true);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        keyless_edge::tickets::KeyFile::read(&file).unwrap().keys.len(),
        2,
        "rotation adds a key and keeps the old one"
    );
    let out = s_client(a.addr, &["-tls1_2", "-sess_in", session.to_str().unwrap()]);
    assert_eq!(count_lines(&out, "Reused, TLSv1.2"), 1, "{out}");
}

#[test]
fn a_ticket_past_its_window_gets_a_full_handshake() {
    let _serial = serial();
    let server = shared_key_server();
    let e = edge(&[server.addr], "tickets:\n  rotation_s: 1\n  lifetime_s: 1\n");
    let session = fixture().dir.path().join("short.session");
    let out = s_client(e.addr, &["-tls1_2", "-sess_out", session.to_str().unwrap()]);
    assert_eq!(count_lines(&out, "New, TLSv1.2"), 1, "{out}");
    let out = s_client(e.addr, &["-tls1_2", "-sess_in", session.to_str().unwrap()]);
    assert_eq!(count_lines(&out, "Reused, TLSv1.2"), 1, "within the window: {out}");
    std::thread::sleep(Duration::from_millis(3200));
    let before = signatures(server);
    let out = s_client(e.addr, &["-tls1_2", "-sess_in", session.to_str().unwrap()]);
    assert_eq!(count_lines(&out, "New, TLSv1.2"), 1, "past the window: {out}");
    assert_eq!(signatures(server) - before, 1);
}

/// A TLS client that counts handshakes that fail.
fn handshake_once(addr: SocketAddr) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-tls1_3", "-CAfile"])
        .arg(&fixture().pki.ca_cert)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    // s_client prints "New, TLSv1.3" once the ServerHello came, even if the
    // handshake then failed; a verified CertificateVerify is the proof.
    if text.contains("Peer signature type:") && text.contains("Verify return code: 0 (ok)") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn losing_a_key_server_fails_over_and_losing_all_fails_fast_then_recovers() {
    let _serial = serial();
    let port = |s: &keyless_server::RunningServer| s.addr;
    let first = key_server("127.0.0.1:0".parse().unwrap());
    let second = key_server("127.0.0.1:0".parse().unwrap());
    let (a1, a2) = (port(&first), port(&second));
    let e = edge(&[a1, a2], "");
    // Let both servers' connections come up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.healthy() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(e.healthy(), 2);

    // Handshakes in a loop on two threads while the first server goes away.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, failures, done, addr) = (stop.clone(), failures.clone(), done.clone(), e.addr);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match handshake_once(addr) {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(err) => {
                            failures.lock().unwrap().push(err);
                            0
                        }
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    first.shared.start_drain();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(done.load(Ordering::Relaxed) > 10, "handshakes kept going");
    assert!(
        failures.is_empty(),
        "handshakes failed while a key server remained: {failures:?}"
    );
    assert!(signatures(&second) > 0, "the second key server took over");

    // None left: a handshake fails, quickly, with an alert.
    second.shared.start_drain();
    second.wait().unwrap();
    let started = Instant::now();
    assert!(
        handshake_once(e.addr).is_err(),
        "no key server: the handshake must fail"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "and fail fast: {:?}",
        started.elapsed()
    );

    // One returns (same port): handshakes succeed again, by themselves.
    let back = key_server(a2);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if handshake_once(e.addr).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery after the key server returned");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(signatures(&back) > 0);
    back.shared.start_drain();
    back.wait().unwrap();
}

#[test]
fn upstream_proxying_carries_bytes_both_ways_with_a_proxy_v2_header() {
    let _serial = serial();
    let server = shared_key_server();
    // The upstream: reads the PROXY header, then echoes until the edge closes.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let seen = std::thread::spawn(move || {
        let (mut s, _) = upstream.accept().unwrap();
        let mut header = vec![0u8; 16];
        s.read_exact(&mut header).unwrap();
        let rest = u16::from_be_bytes([header[14], header[15]]) as usize;
        header.resize(16 + rest, 0);
        s.read_exact(&mut header[16..]).unwrap();
        let mut echoed = 0;
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            echoed += n;
            s.write_all(&buf[..n]).unwrap();
        }
        drop(s); // closes: the edge sends close_notify to the client
        (header, echoed)
    });
    let e = edge(
        &[server.addr],
        &format!("upstream: \"{upstream_addr}\"\nproxy_protocol: true\nalpn: [http/1.1]\n"),
    );
    let rt = runtime();
    let (client_port, echoed_back) = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(e.addr).await.unwrap();
        let client_port = tcp.local_addr().unwrap().port();
        let mut tls = tls_client_with_alpn(&[b"http/1.1"])
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        tls.write_all(&message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        tls.read_exact(&mut back).await.unwrap();
        assert_eq!(back, message, "bytes come back unchanged");
        tls.shutdown().await.unwrap(); // close_notify: upstream sees EOF
        let mut rest = Vec::new();
        // A clean end: the edge's close_notify, not a truncation error.
        tls.read_to_end(&mut rest)
            .await
            .expect("closed cleanly with close_notify");
        (client_port, back.len())
    });
    let (header, echoed) = seen.join().unwrap();
    assert_eq!(echoed, echoed_back);
    // PROXY v2: signature, version 2 + PROXY, TCP over IPv4, 12 address bytes.
    assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(header[12], 0x21);
    assert_eq!(header[13], 0x11);
    assert_eq!(&header[16..20], &[127, 0, 0, 1], "source: the client's address");
    assert_eq!(&header[20..24], &[127, 0, 0, 1], "destination: the edge's address");
    assert_eq!(u16::from_be_bytes([header[24], header[25]]), client_port, "source port");
    assert_eq!(
        u16::from_be_bytes([header[26], header[27]]),
        e.addr.port(),
        "destination port"
    );
    // Then the TLVs, as hitch sends them: ALPN, authority (SNI), SSL.
    let tlvs = tlvs(&header[28..]);
    assert_eq!(tlvs[0], (0x01, b"http/1.1".to_vec()), "ALPN");
    assert_eq!(tlvs[1], (0x02, b"localhost".to_vec()), "authority: the SNI");
    let (kind, ssl) = &tlvs[2];
    assert_eq!(
        (*kind, ssl[0], &ssl[1..5]),
        (0x20, 0x01, &[0u8; 4][..]),
        "SSL: client over TLS, verify 0"
    );
    let subs = self::tlvs(&ssl[5..]);
    assert_eq!(subs[0], (0x21, b"TLSv1.3".to_vec()), "SSL version");
    assert_eq!(subs[1].0, 0x23);
    assert!(
        subs[1].1.starts_with(b"TLS13_"),
        "SSL cipher: {:?}",
        String::from_utf8_lossy(&subs[1].1)
    );
}

/// Type-length-value items (PROXY v2), in order.
fn tlvs(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let [kind, hi, lo, rest @ ..] = bytes {
        let len = u16::from_be_bytes([*hi, *lo]) as usize;
        out.push((*kind, rest[..len].to_vec()));
        bytes = &rest[len..];
    }
    out
}

/// ALPN as configured: `curl --http2` gets h2.
#[test]
fn the_threads_handshake_mode_signs_and_resumes_too() {
    let _serial = serial();
    let server = shared_key_server();
    let e = edge(&[server.addr], "handshake_mode: threads\n");
    let before = signatures(server);
    let out = s_client(e.addr, &["-tls1_2", "-reconnect"]);
    assert_eq!(count_lines(&out, "New, TLSv1.2"), 1, "{out}");
    assert_eq!(count_lines(&out, "Reused, TLSv1.2"), 5, "{out}");
    let out = s_client(e.addr, &["-tls1_3", "-servername", "rsa.localhost"]);
    assert!(out.contains("Peer signature type: RSA-PSS"), "{out}");
    assert_eq!(signatures(server) - before, 2);
}

/// A key server that answers pings at once but sits on signature requests
/// for 3 s: handshakes suspended in their coroutine hit the 1 s handshake
/// timeout, their coroutines are unwound, and the edge keeps serving.
#[test]
fn a_handshake_timing_out_while_its_signature_is_pending_is_dropped_cleanly() {
    let _serial = serial();
    let pki = &fixture().pki;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let tls = keyless_server::tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca_cert).unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let slow_addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        use keyless_protocol::{split_frame, Frame, Message, Opcode};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let (mut rd, wr) = tokio::io::split(stream);
                let wr = Arc::new(tokio::sync::Mutex::new(wr));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = rd.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(raw) = split_frame(&buf) {
                        let len = raw.header.frame_len();
                        let frame = raw.decode().unwrap();
                        buf.drain(..len);
                        let wr = wr.clone();
                        tokio::spawn(async move {
                            let answer = if frame.message.opcode == Some(Opcode::PING) {
                                Message {
                                    opcode: Some(Opcode::PONG),
                                    ..Message::default()
                                }
                            } else {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                Message::error(keyless_protocol::ErrorCode::Internal)
                            };
                            let bytes = Frame::new(frame.id, answer).encode().unwrap();
                            let _ = wr.lock().await.write_all(&bytes).await;
                        });
                    }
                }
            });
        }
    });
    let e = edge(&[slow_addr], "handshake_timeout_s: 1\nrequest_timeout_ms: 5000\n");
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || handshake_once(e.addr)))
        .collect();
    for w in workers {
        assert!(
            w.join().unwrap().is_err(),
            "no signature came, so no handshake can finish"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed at the 1 s handshake timeout"
    );
    assert!(e.metrics.failed_handshakes.get() >= 4);
    // Still serving: the edge takes another client and runs its handshake
    // to the same clean failure (counted; a dead edge, or no openssl to
    // connect with, counts nothing).
    let failed_before = e.metrics.failed_handshakes.get();
    assert!(handshake_once(e.addr).is_err());
    let deadline = Instant::now() + Duration::from_secs(3);
    while e.metrics.failed_handshakes.get() == failed_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        e.metrics.failed_handshakes.get(),
        failed_before + 1,
        "the edge ran one more handshake"
    );
    drop(rt);
}
