//! The real `keyless-server` binary: start-up errors are clear and exit
//! non-zero; a good configuration serves.

mod running;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use running::{block_on, client_tls, free_port, http_get, http_get_within, server, take_rsa_answers, Running};

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
    assert!(
        err.contains(&format!("auth_cert {}", pki.server_cert.display())),
        "the setting and the file: {err}"
    );
    // Said once, not once by the log and again on stderr.
    assert_eq!(err.matches(pki.server_cert.to_str().unwrap()).count(), 1, "{err}");
}

#[test]
fn a_server_key_of_another_certificate_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    // The client's key in place of the server's: a real key, the wrong one.
    std::fs::copy(&pki.client_key, &pki.server_key).unwrap();
    let err = fails_with(server().arg("-c").arg(&pki.config));
    assert!(
        err.contains(&format!(
            "auth_key {}: is not the private key of the certificate in auth_cert {}",
            pki.server_key.display(),
            pki.server_cert.display()
        )) && err.contains("give the key that certificate was issued for"),
        "{err}"
    );
    assert!(!err.contains("KeyMismatch"), "rustls's words: {err}");
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
    // The client's close reaches the server's core a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !http_get(metrics_port, "/metrics").contains("\nkeyless_failed_connection 1\n") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
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
    assert!(
        metrics.contains("code=\"key not found due to no matching SKI/SNI/ServerIP\""),
        "{metrics}"
    );
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
        "\nkeyless_key_store_load_duration_seconds_count 1\n",
        "\nkeyless_key_load_duration_bucket{le=\"0.0001\"} ",
        "\nserver_utilization{type=\"cores\"} ",
        "\nkeyless_core_busy_seconds_total{core=\"1\"} ",
        "\nkeyless_failed_connection ",
        "\nkeyless_failed_handshakes_total ", // the readiness probes count: connect, no handshake
        // Ours beside them: per opcode.
        "keyless_request_exec_duration_per_opcode_seconds_count{opcode=\"OpECDSASignSHA256\"}",
        "keyless_request_total_duration_per_opcode_seconds_bucket{le=\"+Inf\",opcode=\"OpRSAPSSSignSHA256\"}",
        "keyless_core_batch_size_count{core=\"0\"}",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    // gokeyless's keyless_failed_connection: the conformance client's
    // connection, closed by the client, counts (gokeyless counts its read
    // of end-of-stream); the readiness probes' connections, which never
    // finished a handshake, count as failed handshakes instead.
    let value = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let count = |name: &str| -> u64 { value(name).map_or(0, |v| v.parse().unwrap()) };
    assert!(count("keyless_failed_handshakes_total ") >= 1, "{metrics}");
    let closed = count("keyless_failed_connection ");
    assert!(closed >= 1, "the client's close is not counted\n{metrics}");
    // gokeyless's meaning: one observation per request that names a key.
    let lookups = count("keyless_key_load_duration_count ");
    let signed: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("keyless_requests{opcode=\"Op") && !l.contains("OpPing"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        lookups > 0 && lookups <= signed,
        "{lookups} lookups, {signed} keyed requests\n{metrics}"
    );
    let utilization: f64 = value("server_utilization{type=\"cores\"} ").unwrap().parse().unwrap();
    assert!((0.0..=1.0).contains(&utilization), "{metrics}");
    // Certificates' expiry, gokeyless's labels: the server's own chain
    // (from its file) and the client certificate the conformance run
    // presented (from the listener), each with its notAfter and serial.
    for (pem, source, usage) in [
        (
            dir.path().join(&pki.server_cert),
            "server.pem\"".to_string(),
            "server=\"1\"",
        ),
        (
            dir.path().join(&pki.client_cert),
            format!("\"listener: {addr}\""),
            "client=\"1\"",
        ),
    ] {
        let der = keyless_service::tls::load_certs(&pem).unwrap().remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let serial = format!(",serial_no=\"{}\",", cert.tbs_certificate.serial);
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("certificate_expiration_timestamp_seconds{source=")
                    && l.contains(&format!("{source}{serial}"))
            })
            .unwrap_or_else(|| panic!("{source}{serial} missing:\n{metrics}"));
        assert!(line.contains(usage), "{line}");
        assert!(
            line.ends_with(&format!("}} {}", cert.validity().not_after.timestamp())),
            "{line}"
        );
    }
    for absent in ["keyless_requests_total", "keyless_failed_connection_total"] {
        assert!(!metrics.contains(absent), "{absent} (not gokeyless's name):\n{metrics}");
    }
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(report.failed().count(), 0, "{:?}", report.failed().collect::<Vec<_>>());
    assert!(
        log.contains("loading ") && log.contains("dev-pki/keys/p256.key..."),
        "{log}"
    );
    assert!(log.contains("fetch key with SKI: "), "{log}");
    assert!(
        log.contains("conformance --server"),
        "prints a ready client command: {log}"
    );
}

/// gokeyless's flags where they mean something here (`-v`, `-d`,
/// `-o`), and a clear refusal where they do not.
#[test]
fn gokeyless_flags_work_or_say_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    let run = |args: &[&str]| {
        let out = server().arg("-c").arg(&pki.config).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for flag in ["-v", "-V", "--version"] {
        let (ok, text) = run(&[flag]);
        assert!(
            ok && text.starts_with("keyless-server 0.1.0 (commit "),
            "{flag}: {text}"
        );
    }
    let (ok, text) = run(&["-o", "--port", "3000"]);
    assert!(ok, "{text}");
    for line in [
        "\nport: 3000\n",
        "\nmetrics_host: 127.0.0.1\n",
        "\nworkers: ",
        "\n  - dir: ",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    // JSON lines for log shippers.
    let out = server()
        .arg("-c")
        .arg(&pki.config)
        .args(["--port", "0", "--metrics-port", "0", "-t"])
        .env("KEYLESS_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log.lines().find(|l| l.contains("loading")).unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {log}"));
    assert_eq!(parsed["level"], "INFO", "{line}");
    assert!(
        parsed["fields"]["message"].as_str().unwrap().starts_with("loading "),
        "{line}"
    );
    let (ok, text) = run(&["-d"]);
    assert!(
        ok && text.contains("ECDSA P-256") && text.contains("RSA-2048"),
        "{text}"
    );
    for flag in [&["--current-time", "2020-01-01T00:00:00Z"][..], &["--tracing-enabled"]] {
        let (ok, text) = run(flag);
        assert!(
            !ok && text.contains(&format!("{} is not supported by keyless-server", flag[0])),
            "{text}"
        );
    }
}

/// Every flag gokeyless's `cmd/gokeyless/gokeyless.go` defines, in both
/// spellings its pflag accepts (`-` and `_`), with a value where it takes
/// one: each works here (`-o` then prints the configuration it set) or
/// stops with the reason, never "unexpected argument".
#[test]
fn every_gokeyless_flag_spelling_works_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    let cert = pki.ca_cert.to_str().unwrap().to_string();
    let keys = pki.keys_dir.to_str().unwrap().to_string();
    // (flag, value or "", what -o prints for it, or None: refused)
    let table: Vec<(&str, &str, Option<String>)> = vec![
        ("loglevel", "2", Some("loglevel: 2".into())),
        ("hostname", "ks.example", Some("hostname: ks.example".into())),
        ("zone-id", "z", None),
        ("origin_ca_api_key", "k", None),
        ("init-endpoint", "https://x", None),
        ("auth-cert", &cert, Some(format!("auth_cert: {cert}"))),
        ("auth-key", &cert, Some(format!("auth_key: {cert}"))),
        ("auth-csr", "/tmp/x.csr", Some(String::new())),
        ("cloudflare-ca-cert", &cert, Some(format!("cloudflare_ca_cert: {cert}"))),
        ("port", "3001", Some("port: 3001".into())),
        ("metrics-port", "3002", Some("metrics_port: 3002".into())),
        ("pid-file", "/run/k.pid", Some("pid_file: /run/k.pid".into())),
        ("current-time", "2020-01-01T00:00:00Z", None),
        ("tracing-enabled", "", None),
        ("tracing-address", "localhost:6831", None),
        ("tracing-sample-rate", "0.5", None),
        ("private-key-dirs", &keys, Some(format!("- dir: {keys}"))),
        ("private-key-files", &cert, Some(format!("- file: {cert}"))),
        ("manual-activation", "", None),
        ("config-only", "", None),
        ("keystore-debug", "", Some("ECDSA P-256".into())),
        ("version", "", Some("keyless-server 0.1.0".into())),
        ("help", "", Some("Usage".into())),
        ("output-config", "", Some("port: ".into())),
    ];
    for (name, value, expect) in &table {
        for spelling in [name.to_string(), name.replace('-', "_"), name.replace('_', "-")] {
            let mut args = vec!["-c".to_string(), pki.config.to_str().unwrap().to_string()];
            args.push(format!("--{spelling}"));
            if !value.is_empty() {
                args.push(value.to_string());
            }
            if !matches!(*name, "keystore-debug" | "version" | "help" | "output-config") {
                args.push("-o".into());
            }
            let out = server().args(&args).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(!text.contains("unexpected argument"), "{args:?}: {text}");
            match expect {
                Some(line) => {
                    // zone_id and origin_ca_api_key are accepted and said to
                    // be unsupported at start-up; the rest print what they set.
                    assert!(out.status.success(), "{args:?}: {text}");
                    assert!(text.contains(line.as_str()), "{args:?}: {line:?} missing: {text}");
                }
                None if matches!(*name, "zone-id" | "origin_ca_api_key") => {
                    assert!(out.status.success(), "{args:?}: {text}")
                }
                None => assert!(
                    !out.status.success()
                        && text.contains(&format!(
                            "--{} is not supported by keyless-server",
                            name.replace('_', "-")
                        )),
                    "{args:?}: {text}"
                ),
            }
        }
    }
}

/// `--test-config` loads the TLS files and every key, binds nothing (the
/// port may be taken) and exits 0; a missing file is named, exit 1.
#[test]
fn test_config_checks_everything_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut text = std::fs::read_to_string(&pki.config).unwrap();
    text.push_str("colour: blue\ntracing_enabled: true\ncurrent_time: 2020-01-01T00:00:00Z\nzone_id: abc\n");
    std::fs::write(&pki.config, text).unwrap();
    let out = server()
        .arg("-c")
        .arg(&pki.config)
        .args([
            "--listen-host",
            "127.0.0.1",
            "--port",
            &port,
            "--metrics-port",
            &port,
            "--test-config",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}{log}");
    assert_eq!(log.matches("unknown key `colour` ignored").count(), 1, "{log}");
    // gokeyless's own keys are not "unknown": said as the flags are.
    for (key, why) in [
        ("tracing_enabled", "gokeyless's Jaeger tracing"),
        ("current_time", "gokeyless's clock override for tests"),
    ] {
        let line = format!("`{key}` is a gokeyless setting keyless-server does not support ({why}); ignored");
        assert_eq!(log.matches(line.as_str()).count(), 1, "{line}: {log}");
    }
    // -t says what start-up would say.
    assert!(
        log.contains("zone_id/origin_ca_api_key are set: activation through Cloudflare's API is not supported"),
        "{log}"
    );
    assert!(said.contains("configuration ok (2 keys, server certificate"), "{said}");
    std::fs::remove_file(&pki.server_cert).unwrap();
    let err = fails_with(server().arg("-c").arg(&pki.config).arg("-t"));
    assert!(err.contains(&pki.server_cert.display().to_string()), "{err}");
    drop(taken);
}

/// More workers than CPUs is refused at once with the reason, not started
/// slowly; a `KEYLESS_LOG` that is not a filter is said, not ignored.
#[test]
fn more_workers_than_cpus_and_a_bad_log_filter_are_said() {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    let started = Instant::now();
    let out = server()
        .arg("-c")
        .arg(&pki.config)
        .args([
            "--listen-host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--workers",
            "4096",
        ])
        .env("KEYLESS_LOG", "keyless=loud")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("workers 4096: this machine has") && err.contains("usable CPUs"),
        "{err}"
    );
    assert!(
        err.contains("KEYLESS_LOG=\"keyless=loud\" is not a log filter"),
        "{err}"
    );
}

/// A second server on a port the first serves stops at start-up with
/// "address in use", as nginx and gokeyless do, instead of sharing the port
/// through SO_REUSEPORT and taking half of the first one's clients.
#[test]
fn a_port_another_server_serves_stops_start_up() {
    let first = Running::start(&["--workers", "1"]);
    let out = server()
        .arg("-c")
        .arg(&first.pki.config)
        .args(["--listen-host", "127.0.0.1", "--workers", "1"])
        .args(["--port", &first.addr.port().to_string()])
        .args(["--metrics-port", &free_port().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second server started: {err}");
    assert!(
        err.contains(&format!("cannot listen on {}", first.addr)) && err.contains("address in use"),
        "{err}"
    );
    // Its metrics port taken: start-up fails naming it, and never said it
    // was serving.
    let out = server()
        .arg("-c")
        .arg(&first.pki.config)
        .args(["--listen-host", "127.0.0.1", "--workers", "1"])
        .args(["--port", &free_port().to_string()])
        .args(["--metrics-port", &first.metrics_port.to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{} for metrics",
            first.metrics_port
        )),
        "{err}"
    );
    assert!(!err.contains("serving "), "said it was serving before failing: {err}");
    // The first one still has every client.
    block_on(async {
        let conn = keyless_client::connect(first.addr, "localhost", client_tls(&first.pki))
            .await
            .unwrap();
        assert_eq!(conn.ping(b"mine").await.unwrap(), b"mine");
    });
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
    let answer = http_get_within(
        server.metrics_port,
        "/debug/pprof/flamegraph?seconds=1",
        Duration::from_secs(90),
    );
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

    running.signs_ecdsa_p256(&key.public_pem, 20);
    let metrics = http_get(running.metrics_port, "/metrics");
    assert!(
        metrics.contains("keyless_hsm_operations_total{token=\"token=binary\",result=\"ok\"} 20"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyless_hsm_sessions{token=\"token=binary\"} 2"),
        "{metrics}"
    );
    // gokeyless's families count HSM requests as any other.
    assert!(
        metrics.contains("\nkeyless_requests{opcode=\"OpECDSASignSHA256\"} 20\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nkeyless_key_load_duration_count 20\n"), "{metrics}");
    running.signal("-TERM");
    let status = running.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", running.log());
    assert!(!running.log().contains("s3cret-Pin"), "the PIN leaked into the log");
}

/// `kill -9` leaves a pid file and a Unix socket file behind; the server
/// restarts from the same configuration with nothing to repair.
#[test]
fn restarts_after_kill_9_with_nothing_to_repair() {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    let port = free_port();
    let socket = dir.path().join("keyless.sock");
    let log = dir.path().join("server.log");
    let pid_file = dir.path().join("keyless.pid");
    let start = || {
        let _ = std::fs::remove_file(dir.path().join("started"));
        let mut child = server()
            .arg("-c")
            .arg(&pki.config)
            .args(["--listen-host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--metrics-port", &free_port().to_string(), "--workers", "1"])
            .arg("--unix-socket")
            .arg(&socket)
            .arg("--pid-file")
            .arg(&pid_file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&pid_file).ok().as_deref() != Some(&child.id().to_string()) {
            let exited = child.try_wait().unwrap();
            assert!(
                Instant::now() < deadline && exited.is_none(),
                "server did not start ({exited:?}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
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
    // A clean stop leaves neither behind.
    assert!(Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(second.wait().unwrap().success());
    assert!(
        !pid_file.exists() && !socket.exists(),
        "SIGTERM removes the pid file and the socket"
    );
}

/// `-t` and `-d` say what start-up would about the key folder: a file that
/// is not a `.key` (skipped), a key group or others may read, a key twice.
#[test]
fn check_and_debug_name_skipped_files_open_keys_and_duplicates() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    let p256 = pki.keys_dir.join("p256.key");
    std::fs::set_permissions(&p256, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::copy(&p256, pki.keys_dir.join("again.key")).unwrap();
    std::fs::write(pki.keys_dir.join("site.pem"), "not a key").unwrap();
    for flag in ["-t", "-d"] {
        let out = server()
            .arg("-c")
            .arg(&pki.config)
            .args(["--port", "0", "--metrics-port", "0", flag])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{flag}: {text}");
        assert!(text.contains("site.pem: skipped, not a .key file"), "{flag}: {text}");
        assert!(
            text.contains("p256.key: group or others may read this private key (mode 644); chmod 600 it"),
            "{flag}: {text}"
        );
        assert!(text.contains("p256.key: same key (SKI"), "{flag}: {text}");
    }
}

/// A gokeyless operator's setup, unchanged but for the binary's name: the
/// packaged configuration's keys (empty `hostname`, `zone_id`,
/// `origin_ca_api_key` and `pid_file` included, `auth_csr` set) in
/// `gokeyless.yaml` in the working directory, and the unit's command line,
/// which is the binary and no argument. It serves, and stops on SIGTERM.
#[test]
fn a_gokeyless_setup_runs_unchanged_with_the_binary_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(&dir.path().join("keyless"), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let yaml = format!(
        "loglevel: 1\nhostname:\nzone_id:\norigin_ca_api_key:\nprivate_key_stores:\n- dir: {}\nauth_cert: {}\n\
         auth_key: {}\nauth_csr: {}\ncloudflare_ca_cert: {}\nport: {port}\nmetrics_port: {metrics_port}\npid_file:\n",
        pki.keys_dir.display(),
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.dir.join("server.csr").display(),
        pki.ca_cert.display(),
    );
    std::fs::write(pki.dir.join("gokeyless.yaml"), yaml).unwrap();
    let renamed = dir.path().join("gokeyless");
    std::fs::copy(env!("CARGO_BIN_EXE_keyless-server"), &renamed).unwrap();
    let mut child = Command::new(&renamed)
        .current_dir(&pki.dir)
        .env_remove("KEYLESS_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the renamed binary exited");
        assert!(Instant::now() < deadline, "no metrics listener");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(http_get(metrics_port, "/readyz").starts_with("HTTP/1.0 200"));
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the keyless port listens");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        !log.contains("Cloudflare's API"),
        "empty activation settings are unset, not a request for activation: {log}"
    );
}
