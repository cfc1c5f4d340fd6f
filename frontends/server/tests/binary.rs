//! The real `keyless-server` binary: start-up errors are clear and exit
//! non-zero; a good configuration serves.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn server() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyless-server"));
    c.env_remove("KEYLESS_PORT").stdin(Stdio::null());
    c
}

/// Run a future on a fresh single-threaded tokio runtime.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fut)
}

/// The development PKI's client identity.
fn client_tls(pki: &keyless_pki::DevPki) -> std::sync::Arc<rustls::ClientConfig> {
    keyless_client::client_config_from_files(&pki.ca_cert, &pki.client_cert, &pki.client_key).unwrap()
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `keyless-server` process on a fresh development PKI, logging to a file.
struct Running {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    pki: keyless_pki::DevPki,
    pid_file: std::path::PathBuf,
    log_file: std::path::PathBuf,
    metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Start with the dev PKI's config plus `extra` flags; wait until it has written its pid file.
    fn start(extra: &[&str]) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
        Running::start_in(dir, pki, extra, &[])
    }

    /// Start on an existing PKI folder with extra flags and environment.
    fn start_in(
        dir: tempfile::TempDir,
        pki: keyless_pki::DevPki,
        extra: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> Running {
        let (port, metrics_port) = (free_port(), free_port());
        let pid_file = dir.path().join("keyless.pid");
        let log_file = dir.path().join("server.log");
        let mut child = server()
            .arg("-c")
            .arg(&pki.config)
            .args(["--listen-host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--metrics-port", &metrics_port.to_string()])
            .arg("--pid-file")
            .arg(&pid_file)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_file).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pid_file.exists() {
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&log_file).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        Running {
            child,
            addr,
            pki,
            pid_file,
            log_file,
            metrics_port,
            _dir: dir,
        }
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap()
    }
}

/// A test that fails (or never stops its server) must not leave the
/// process running after the test binary exits.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fails_with(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_yaml_exits_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gokeyless.yaml");
    std::fs::write(&cfg, "loglevel: 1\nport: seventy\n").unwrap();
    let err = fails_with(server().arg("-c").arg(&cfg));
    assert!(
        err.contains(&format!("{}:2:", cfg.display())) && err.contains("port"),
        "{err}"
    );
}

#[test]
fn a_key_that_does_not_load_stops_start_up_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    let bad = pki.keys_dir.join("broken.key");
    std::fs::write(&bad, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let err = fails_with(server().arg("-c").arg(&pki.config).args(["--listen-host", "127.0.0.1"]));
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
}

#[test]
fn a_missing_server_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    std::fs::remove_file(&pki.server_cert).unwrap();
    let err = fails_with(server().arg("-c").arg(&pki.config));
    assert!(err.contains(pki.server_cert.to_str().unwrap()), "{err}");
}

#[test]
fn dev_mode_creates_a_pki_and_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let mut child = server()
        .current_dir(dir.path())
        .args(["--dev", "--workers", "2", "--port", &port.to_string()])
        .args(["--metrics-port", &metrics_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pki = keyless_pki::DevPki::at(&dir.path().join("dev-pki"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "dev server did not start");
        assert!(child.try_wait().unwrap().is_none(), "dev server exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pki.is_complete());
    let report = block_on(async {
        let tls = keyless_client::client_config_from_files(
            &dir.path().join(&pki.ca_cert),
            &dir.path().join(&pki.client_cert),
            &dir.path().join(&pki.client_key),
        )
        .unwrap();
        let conn = keyless_client::connect(addr, "localhost", tls).await.unwrap();
        let keys = keyless_tools::conformance::load_expected_keys(&pki.pubkeys_dir).unwrap();
        keyless_tools::conformance::run(&conn, &keys).await
    });
    let metrics = http_get(metrics_port, "/metrics");
    let health = http_get(metrics_port, "/healthz");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(health.starts_with("HTTP/1.0 200"), "{health}");
    assert!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
    let handled: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("keyless_core_handled_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(handled >= report.passed() as u64, "{metrics}");
    assert!(metrics.contains("code=\"KeyNotFound\""), "{metrics}");
    assert!(metrics.contains("keyless_keys_loaded 2"), "{metrics}");
    // gokeyless's five families under its names, label names and label
    // values (a dashboard built for gokeyless finds them), filled by the
    // conformance run: signatures, and requests for a key nobody has.
    for family in [
        "# TYPE keyless_requests unknown",
        "\nkeyless_requests{opcode=\"OpECDSASignSHA256\"} ",
        "\nkeyless_requests{opcode=\"OpPing\"} ",
        "keyless_request_exec_duration_per_opcode_count{type=\"ecdsa\",error=\"no error\"} ",
        "keyless_request_exec_duration_per_opcode_bucket{le=\"0.0001\",type=\"rsa\",error=\"no error\"} ",
        "keyless_request_total_duration_per_opcode_count{type=\"ecdsa\",error=\"key not found due to no matching SKI/SNI/ServerIP\"} ",
        "keyless_request_total_duration_per_opcode_bucket{le=\"1.6384\",type=\"rsa\",error=\"no error\"} ",
        "\nkeyless_key_load_duration_count 1\n",
        "\nkeyless_failed_connection ", // the readiness probes count: connect, no handshake
        // Ours beside them: per opcode.
        "keyless_request_exec_duration_per_opcode_seconds_count{opcode=\"OpECDSASignSHA256\"}",
        "keyless_request_total_duration_per_opcode_seconds_bucket{le=\"+Inf\",opcode=\"OpRSAPSSSignSHA256\"}",
        "keyless_core_batch_size_count{core=\"0\"}",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    for absent in ["keyless_requests_total", "keyless_failed_connection_total"] {
        assert!(!metrics.contains(absent), "{absent} (not gokeyless's name):\n{metrics}");
    }
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(report.failed().count(), 0, "{:?}", report.failed().collect::<Vec<_>>());
    assert!(log.contains("loading dev-pki/keys/p256.key..."), "{log}");
    assert!(log.contains("fetch key with SKI: "), "{log}");
    assert!(
        log.contains("conformance --server"),
        "prints a ready client command: {log}"
    );
}

/// Profiles: an out-of-range or unreadable `seconds` is refused with the
/// reason; a flame graph of an idle server is a valid SVG that says why it
/// is empty, never an empty body.
#[test]
fn profiles_say_what_is_wrong_and_an_idle_flame_graph_says_why() {
    let mut server = Running::start(&["--workers", "1"]);
    for bad in ["abc", "0", "99999"] {
        let answer = http_get(server.metrics_port, &format!("/debug/pprof/flamegraph?seconds={bad}"));
        assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
        assert!(answer.contains("from 1 to 300 (default 10)"), "{answer}");
    }
    let answer = http_get(server.metrics_port, "/debug/pprof/flamegraph?seconds=1");
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.contains("image/svg+xml"),
        "{answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.contains("<svg"), "not an SVG: {answer}");
    // Idle, the process may still take a sample or two (timers): either a
    // real flame graph or the reason there is none.
    assert!(body.contains("no CPU samples in 1 s") || body.contains("<g"), "{body}");
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn sigterm_answers_every_request_already_received_then_exits_zero() {
    use keyless_protocol::{Frame, Message, Opcode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut server = Running::start(&["--workers", "2", "--drain-timeout", "20"]);
    let (addr, pki, pid_file) = (server.addr, server.pki.clone(), server.pid_file.clone());
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(pid.trim(), server.child.id().to_string());

    let keys = keyless_tools::conformance::load_expected_keys(&pki.pubkeys_dir).unwrap();
    let rsa = keys.iter().find(|k| k.name == "rsa2048").unwrap();
    const N: u32 = 200;
    let answered = block_on(async {
        let tls = client_tls(&pki);
        let mut stream = keyless_client::connect_stream(addr, "localhost", tls).await.unwrap();
        let mut batch = Vec::new();
        for id in 0..N {
            let m = Message::request(Opcode::RSA_SIGN_SHA256, Some(rsa.info.ski), vec![id as u8; 32]);
            Frame::new(id, m).encode_into(&mut batch).unwrap();
        }
        stream.write_all(&batch).await.unwrap();
        let (mut buf, mut answered, mut signalled) = (Vec::new(), 0u32, false);
        loop {
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap_or(0);
            if n == 0 {
                break; // the server closed the connection after draining
            }
            buf.extend_from_slice(&chunk[..n]);
            answered += take_rsa_answers(&mut buf, rsa);
            if !signalled {
                // The server has read the batch and is signing: stop it now.
                server.signal("-TERM");
                signalled = true;
            }
        }
        answered
    });
    let status = server.child.wait().unwrap();
    let log = server.log();
    assert!(status.success(), "exit {status:?}: {log}");
    assert_eq!(answered, N, "requests lost in the drain: {log}");
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(log.contains("draining"), "{log}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after exit"
    );
}

#[test]
fn sighup_reloads_keys_without_dropping_connections() {
    use keyless_client::ClientError;
    use keyless_protocol::{ErrorCode, Hash, Opcode};

    let mut server = Running::start(&["--workers", "2"]);
    let (addr, pki, metrics_port) = (server.addr, server.pki.clone(), server.metrics_port);
    let signal = |sig: &str| server.signal(sig);
    block_on(async {
        let tls = client_tls(&pki);
        let conn = keyless_client::connect(addr, "localhost", tls).await.unwrap();
        let keys = || keyless_tools::conformance::load_expected_keys(&pki.pubkeys_dir).unwrap();
        let sign = |key: &keyless_tools::conformance::ExpectedKey, opcode: Opcode| {
            let ski = key.info.ski;
            let conn = &conn;
            async move { conn.perform(opcode, ski, &[7u8; 32]).await }
        };
        let p256 = keys().into_iter().find(|k| k.name == "p256").unwrap();
        let sig = sign(&p256, Opcode::ECDSA_SIGN_SHA256).await.unwrap();
        p256.verifier
            .verify(keyless_keys::Operation::Ecdsa(Hash::Sha256), &[7u8; 32], &sig)
            .unwrap();

        // A new key, then SIGHUP: served on the same connection.
        let ed = keyless_pki::KeyType::Ed25519.generate().unwrap();
        std::fs::write(pki.keys_dir.join("ed25519.key"), ed.serialize_pem()).unwrap();
        std::fs::write(pki.pubkeys_dir.join("ed25519.pem"), ed.public_key_pem()).unwrap();
        let ed = keys().into_iter().find(|k| k.name == "ed25519").unwrap();
        assert!(matches!(
            sign(&ed, Opcode::ED25519_SIGN).await,
            Err(ClientError::Remote(ErrorCode::KeyNotFound))
        ));
        signal("-HUP");
        let until = Instant::now() + Duration::from_secs(10);
        let sig = loop {
            match sign(&ed, Opcode::ED25519_SIGN).await {
                Ok(sig) => break sig,
                Err(ClientError::Remote(ErrorCode::KeyNotFound)) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("new key not served after SIGHUP: {e}"),
            }
        };
        ed.verifier
            .verify(keyless_keys::Operation::Ed25519, &[7u8; 32], &sig)
            .unwrap();
        let metrics = http_get(metrics_port, "/metrics");
        assert!(
            metrics.contains("keyless_keys_loaded 3"),
            "the gauge follows the reload: {metrics}"
        );

        // A removed key answers key-not-found after the next SIGHUP.
        std::fs::remove_file(pki.keys_dir.join("p256.key")).unwrap();
        signal("-HUP");
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match sign(&p256, Opcode::ECDSA_SIGN_SHA256).await {
                Err(ClientError::Remote(ErrorCode::KeyNotFound)) => break,
                Ok(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("removed key still answered: {other:?}"),
            }
        }

        // A reload that fails keeps what is being served.
        std::fs::write(pki.keys_dir.join("broken.key"), "not a key").unwrap();
        signal("-HUP");
        tokio::time::sleep(Duration::from_millis(500)).await;
        sign(&ed, Opcode::ED25519_SIGN)
            .await
            .expect("old keys kept after a failed reload");
        assert!(conn.closed().is_none(), "the connection was dropped");
    });
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
    let log = server.log();
    assert!(log.contains("SIGHUP: reloaded; serving 3 keys"), "{log}");
    assert!(
        log.contains("SIGHUP: reload failed") && log.contains("broken.key"),
        "{log}"
    );
}

#[test]
fn unfinished_handshakes_and_idle_connections_are_closed() {
    use std::io::Read;
    let mut server = Running::start(&["--workers", "1", "--handshake-timeout", "1", "--idle-timeout", "1"]);
    let (addr, pki) = (server.addr, server.pki.clone());

    // A TCP connection that never starts TLS is closed after ~1 s.
    let started = Instant::now();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let n = tcp.read(&mut [0u8; 16]).unwrap_or(0);
    assert_eq!(n, 0, "expected the server to close the connection");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed only after {:?}",
        started.elapsed()
    );

    block_on(async {
        let tls = client_tls(&pki);
        // A busy connection stays open past the idle timeout...
        let busy = keyless_client::connect(addr, "localhost", tls.clone()).await.unwrap();
        for _ in 0..8 {
            busy.ping(b"alive").await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // ...and one that goes quiet is closed.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(busy.ping(b"late").await.is_err(), "an idle connection was kept open");
    });
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
}

/// The binary with an HSM key store from its configuration file: it signs
/// with the SoftHSM2 key (verified), reports the pool on /metrics, and
/// exits 0 on SIGTERM with its HSM sessions closed (no crash in the
/// module's teardown).
#[test]
fn serves_a_pkcs11_store_and_reports_its_pool() {
    use keyless_pki::softhsm::{SoftHsm, SOFTHSM_MODULE};
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), &[], 0).unwrap();
    let hsm = SoftHsm::create(&dir.path().join("hsm")).unwrap();
    hsm.init_token("binary", "s3cret-Pin", "5678").unwrap();
    let key = hsm
        .import_new_key("binary", "s3cret-Pin", "site", 1, keyless_pki::KeyType::EcdsaP256)
        .unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, "s3cret-Pin\n").unwrap();
    let mut config = std::fs::read_to_string(&pki.config).unwrap();
    config = config.replace(
        &format!("  - dir: {}\n", pki.keys_dir.display()),
        &format!(
            "  - uri: \"pkcs11:token=binary;object=site?module-path={SOFTHSM_MODULE}&pin-source={}&max-sessions=2\"\n",
            pin_file.display()
        ),
    );
    assert!(config.contains("pkcs11:"), "{config}");
    std::fs::write(&pki.config, config).unwrap();
    let conf = hsm.conf.clone();
    let mut running = Running::start_in(dir, pki, &[], &[("SOFTHSM2_CONF", &conf)]);

    let expected = {
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(key.public_pem.as_bytes()).unwrap();
        let der: rustls_pki_types::SubjectPublicKeyInfoDer = der;
        keyless_tools::conformance::ExpectedKey::from_spki("site", der.as_ref()).unwrap()
    };
    block_on(async {
        let conn = keyless_client::connect(running.addr, "localhost", client_tls(&running.pki))
            .await
            .unwrap();
        for i in 0..20u8 {
            let digest = [i; 32];
            let sig = conn
                .perform(keyless_protocol::Opcode::ECDSA_SIGN_SHA256, expected.info.ski, &digest)
                .await
                .unwrap();
            expected
                .verifier
                .verify(
                    keyless_keys::Operation::Ecdsa(keyless_keys::Hash::Sha256),
                    &digest,
                    &sig,
                )
                .unwrap();
        }
    });
    let metrics = http_get(running.metrics_port, "/metrics");
    assert!(
        metrics.contains("keyless_hsm_operations_total{token=\"token=binary\",result=\"ok\"} 20"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyless_hsm_sessions{token=\"token=binary\"} 2"),
        "{metrics}"
    );
    running.signal("-TERM");
    let status = running.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", running.log());
    assert!(!running.log().contains("s3cret-Pin"), "the PIN leaked into the log");
}

/// `max_connections_per_core` at its limit: with room for 3, a 4th
/// connection is closed at once (and counted as failed) while the 3 keep
/// working; when one leaves, a new one is served.
#[test]
fn the_connection_cap_closes_new_connections_at_its_limit() {
    let running = Running::start(&["--workers", "1", "--max-connections-per-core", "3"]);
    block_on(async {
        let tls = client_tls(&running.pki);
        let mut held = Vec::new();
        for _ in 0..3 {
            let conn = keyless_client::connect(running.addr, "localhost", tls.clone())
                .await
                .unwrap();
            conn.ping(b"in").await.unwrap();
            held.push(conn);
        }
        let fourth = async {
            let conn = keyless_client::connect(running.addr, "localhost", tls.clone()).await?;
            conn.ping(b"over").await
        };
        let refused = tokio::time::timeout(Duration::from_secs(5), fourth)
            .await
            .expect("no hang");
        assert!(refused.is_err(), "a 4th connection must be refused");
        for conn in &held {
            assert_eq!(conn.ping(b"still").await.unwrap(), b"still");
        }
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let again = async {
                let conn = keyless_client::connect(running.addr, "localhost", tls.clone()).await?;
                conn.ping(b"room").await
            };
            if again.await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "no room after a connection left");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let log = running.log();
    assert!(log.contains("max_connections_per_core"), "{log}");
}

/// A slow-loris client (one byte every 20 ms, never a whole frame) and a
/// client that never reads its answers do not slow a well-behaved client.
#[test]
fn slow_and_unread_clients_do_not_hold_up_others() {
    let running = Running::start(&["--workers", "1"]);
    let key = keyless_tools::conformance::load_expected_key(&running.pki.pubkeys_dir.join("p256.pem")).unwrap();
    let ski = key.info.ski;
    block_on(async {
        use tokio::io::AsyncWriteExt;
        let tls = client_tls(&running.pki);
        // Slow loris: a frame header, then a byte at a time.
        let mut slow = keyless_client::connect_stream(running.addr, "localhost", tls.clone())
            .await
            .unwrap();
        let trickle = tokio::spawn(async move {
            let frame = keyless_protocol::Frame::new(
                1,
                keyless_protocol::Message::request(keyless_protocol::Opcode::ECDSA_SIGN_SHA256, Some(ski), vec![0; 32]),
            )
            .encode()
            .unwrap();
            for b in frame.iter().take(200) {
                if slow.write_all(&[*b]).await.is_err() || slow.flush().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            slow
        });
        // Never reads: thousands of requests written, no answer read.
        let mut deaf = keyless_client::connect_stream(running.addr, "localhost", tls.clone())
            .await
            .unwrap();
        let flood = tokio::spawn(async move {
            let mut bytes = Vec::new();
            for id in 0..4000u32 {
                keyless_protocol::Frame::new(
                    id,
                    keyless_protocol::Message::request(
                        keyless_protocol::Opcode::ECDSA_SIGN_SHA256,
                        Some(ski),
                        vec![7; 32],
                    ),
                )
                .encode_into(&mut bytes)
                .unwrap();
            }
            // The server stops reading at the in-flight cap, so this write
            // may never finish; it must not matter to anyone else.
            let _ = tokio::time::timeout(Duration::from_secs(6), deaf.write_all(&bytes)).await;
            deaf
        });
        let good = keyless_client::connect(running.addr, "localhost", tls).await.unwrap();
        let started = Instant::now();
        let calls = (0..500u32).map(|i| {
            let good = &good;
            let digest = [(i % 256) as u8; 32];
            async move {
                (
                    digest,
                    good.perform(keyless_protocol::Opcode::ECDSA_SIGN_SHA256, ski, &digest)
                        .await,
                )
            }
        });
        for (digest, r) in futures_util::future::join_all(calls).await {
            let signature = r.expect("the well-behaved client is served");
            key.verifier
                .verify(
                    keyless_keys::Operation::Ecdsa(keyless_keys::Hash::Sha256),
                    &digest,
                    &signature,
                )
                .expect("signature verifies");
        }
        assert!(
            started.elapsed() < Duration::from_secs(15), // a stall bound, not a speed claim
            "500 signatures took {:?} beside slow and deaf clients",
            started.elapsed()
        );
        drop(trickle.await.unwrap());
        drop(flood.await.unwrap());
    });
}

/// `kill -9` leaves a pid file and a Unix socket file behind; the server
/// restarts from the same configuration with nothing to repair.
#[test]
fn restarts_after_kill_9_with_nothing_to_repair() {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    let port = free_port();
    let socket = dir.path().join("keyless.sock");
    let pid_file = dir.path().join("keyless.pid");
    let start = || {
        let _ = std::fs::remove_file(dir.path().join("started"));
        let child = server()
            .arg("-c")
            .arg(&pki.config)
            .args(["--listen-host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--metrics-port", &free_port().to_string(), "--workers", "1"])
            .arg("--unix-socket")
            .arg(&socket)
            .arg("--pid-file")
            .arg(&pid_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&pid_file).ok().as_deref() != Some(&child.id().to_string()) {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    };
    let ping_both = || {
        block_on(async {
            let tls = client_tls(&pki);
            let addr = format!("127.0.0.1:{port}").parse().unwrap();
            let tcp = keyless_client::connect(addr, "localhost", tls.clone()).await.unwrap();
            assert_eq!(tcp.ping(b"tcp").await.unwrap(), b"tcp");
            let unix = keyless_client::connect_unix(&socket, "localhost", tls).await.unwrap();
            assert_eq!(unix.ping(b"unix").await.unwrap(), b"unix");
        })
    };
    let mut first = start();
    ping_both();
    first.kill().unwrap(); // SIGKILL: no cleanup at all
    first.wait().unwrap();
    assert!(pid_file.exists() && socket.exists(), "kill -9 leaves both behind");
    let mut second = start();
    ping_both();
    second.kill().unwrap();
    second.wait().unwrap();
}

/// `max_request_body` and `core_queue` at their limits: a body one byte
/// over is answered with a format error and skipped, the request after it
/// on the same connection is answered; with a cross-core queue of one,
/// 500 pipelined requests on one connection over two cores all verify.
#[test]
fn body_and_queue_limits_hold_at_their_bounds() {
    let running = Running::start(&["--workers", "2", "--max-request-body", "1100", "--core-queue", "1"]);
    let key = keyless_tools::conformance::load_expected_key(&running.pki.pubkeys_dir.join("p256.pem")).unwrap();
    block_on(async {
        use keyless_protocol::{split_frame, ErrorCode, Frame, Message, Opcode};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = client_tls(&running.pki);
        let mut raw = keyless_client::connect_stream(running.addr, "localhost", tls.clone())
            .await
            .unwrap();
        let mut bytes = Vec::new();
        for (id, len) in [(1u32, 1100u16), (2, 1101)] {
            // A header announcing `len` body bytes: a ping TLV padded out.
            // opcode TLV (tag 0x11, length 1, ping), then a padding TLV
            // (tag 0x20) filling the body to exactly `len` bytes.
            let mut body = vec![0x11, 0x00, 0x01, 0xF1, 0x20];
            body.extend_from_slice(&(len - 7).to_be_bytes());
            body.resize(len as usize, 0);
            bytes.extend_from_slice(&[1, 0]);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&id.to_be_bytes());
            bytes.extend_from_slice(&body);
        }
        Frame::new(3, Message::request(Opcode::PING, None, b"after".to_vec()))
            .encode_into(&mut bytes)
            .unwrap();
        raw.write_all(&bytes).await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut answers = Vec::new();
        while answers.len() < 3 {
            let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf))
                .await
                .expect("answers come")
                .unwrap();
            assert!(n > 0, "connection closed after {} answers", answers.len());
            got.extend_from_slice(&buf[..n]);
            while let Some(frame) = split_frame(&got) {
                let len = frame.header.frame_len();
                answers.push((frame.header.id, frame.decode().unwrap().message));
                got.drain(..len);
            }
        }
        answers.sort_by_key(|(id, _)| *id);
        assert_eq!(answers[0].1.opcode, Some(Opcode::PONG), "at the limit: accepted");
        assert_eq!(
            answers[1].1.error_code(),
            Some(Ok(ErrorCode::Format)),
            "one byte over: format error"
        );
        assert_eq!(
            answers[2].1.payload.as_deref(),
            Some(&b"after"[..]),
            "the connection goes on"
        );

        let conn = keyless_client::connect(running.addr, "localhost", tls).await.unwrap();
        let calls = (0..500u32).map(|i| {
            let conn = &conn;
            let digest = [(i % 256) as u8; 32];
            async move {
                (
                    digest,
                    conn.perform(Opcode::ECDSA_SIGN_SHA256, key.info.ski, &digest).await,
                )
            }
        });
        for (digest, r) in futures_util::future::join_all(calls).await {
            let sig = r.expect("answered at the queue bound");
            key.verifier
                .verify(
                    keyless_keys::Operation::Ecdsa(keyless_keys::Hash::Sha256),
                    &digest,
                    &sig,
                )
                .unwrap();
        }
    });
}

/// Take every complete answer off the front of `buf`, each an RSA PKCS#1
/// SHA-256 signature of `[id; 32]` verified against `rsa`; how many.
fn take_rsa_answers(buf: &mut Vec<u8>, rsa: &keyless_tools::conformance::ExpectedKey) -> u32 {
    let mut n = 0;
    while let Some(raw) = keyless_protocol::split_frame(buf) {
        let len = raw.header.frame_len();
        let f = raw.decode().unwrap();
        let op = keyless_keys::Operation::RsaPkcs1(keyless_protocol::Hash::Sha256);
        rsa.verifier
            .verify(op, &[f.id as u8; 32], &f.message.payload.unwrap())
            .unwrap();
        n += 1;
        buf.drain(..len);
    }
    n
}

/// Send 128 RSA-2048 requests in one write to a one-core server with
/// `batch_flush_us` at 1 ms and return, relative to the write, when the
/// first and the last answer arrived.
fn first_and_last_answer() -> (Duration, Duration) {
    use keyless_protocol::{Frame, Message, Opcode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Running::start(&["--workers", "1", "--batch-flush-us", "1000"]);
    let keys = keyless_tools::conformance::load_expected_keys(&server.pki.pubkeys_dir).unwrap();
    let rsa = keys.iter().find(|k| k.name == "rsa2048").unwrap();
    const N: u32 = 128;
    block_on(async {
        let mut stream = keyless_client::connect_stream(server.addr, "localhost", client_tls(&server.pki))
            .await
            .unwrap();
        let mut batch = Vec::new();
        for id in 0..N {
            let m = Message::request(Opcode::RSA_SIGN_SHA256, Some(rsa.info.ski), vec![id as u8; 32]);
            Frame::new(id, m).encode_into(&mut batch).unwrap();
        }
        let sent = Instant::now();
        stream.write_all(&batch).await.unwrap();
        let (mut buf, mut answered, mut first) = (Vec::new(), 0u32, None);
        while answered < N {
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed after {answered} answers");
            buf.extend_from_slice(&chunk[..n]);
            let got = take_rsa_answers(&mut buf, rsa);
            if got > 0 {
                first.get_or_insert_with(|| sent.elapsed());
            }
            answered += got;
        }
        (first.unwrap(), sent.elapsed())
    })
}

#[test]
fn answers_leave_while_a_long_batch_is_still_being_signed() {
    // One core reads all 128 requests at once and signs them back to back.
    // With batch_flush at 1 ms the first answers are written after about
    // a millisecond, not once all 128 are signed: the client can refill its
    // pipeline meanwhile. (Without the time bound the first answers would
    // wait for half the batch; held to the end, first and last arrived
    // within a millisecond of each other.)
    let (first, last) = first_and_last_answer();
    assert!(
        first * 4 < last,
        "first answer after {first:?}, the last after {last:?}: answers were held back"
    );
}
