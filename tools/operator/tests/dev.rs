//! The README's main command, `keyless-tool dev`, and the Keyless SSL
//! walkthrough's check against it: `openssl s_client -tls1_2 -reconnect`
//! prints `New` once and `Reused` five times, and the key server logs
//! `fetch key with SKI` exactly once.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;

use keyless_tools::process::free_port;

#[test]
fn dev_mode_runs_the_keyless_ssl_walkthrough() {
    walkthrough(&[]);
}

/// The same run with debug logging: no byte of any private key (the
/// signing keys, the TLS keys) appears in the log of a full run.
#[test]
fn no_private_key_material_in_debug_logs() {
    let (dir, log) = walkthrough(&["-l", "0"]);
    assert!(log.contains("DEBUG"), "debug logging was on");
    let pki = dir.path().join("dev-pki");
    let mut secrets = Vec::new();
    for file in [
        "keys/p256.key",
        "keys/rsa2048.key",
        "server-key.pem",
        "client-key.pem",
        "ca-key.pem",
    ] {
        let pem = std::fs::read_to_string(pki.join(file)).unwrap();
        // Every base64 line of the PEM body, and the DER bytes in hex.
        for line in pem.lines().filter(|l| !l.starts_with("-----") && l.len() >= 16) {
            secrets.push(line.to_string());
        }
        let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        let der = der.secret_der();
        for chunk in der.chunks_exact(16).skip(1) {
            secrets.push(hex::encode(chunk));
            secrets.push(hex::encode_upper(chunk));
        }
    }
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "key material in the log: {secret}");
    }
}

use keyless_tools::process::KillOnDrop;

/// `keyless-tool dev` in a fresh folder on free ports, logging to a file.
struct Dev {
    dir: tempfile::TempDir,
    child: KillOnDrop,
    edge_port: u16,
    metrics_port: u16,
    log: std::path::PathBuf,
}

impl Dev {
    fn start(extra: &[&str]) -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let (edge_port, ks_port, metrics_port) = (free_port(), free_port(), free_port());
        let log = dir.path().join("edge.log");
        let child = Command::new(env!("CARGO_BIN_EXE_keyless-tool"))
            .current_dir(dir.path())
            .arg("dev")
            .args(["--port", &edge_port.to_string()])
            .args(["--key-server-port", &ks_port.to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let child = KillOnDrop(child);
        Dev {
            dir,
            child,
            edge_port,
            metrics_port,
            log,
        }
    }
}

fn walkthrough(extra: &[&str]) -> (tempfile::TempDir, String) {
    let Dev {
        dir,
        mut child,
        edge_port,
        metrics_port,
        log,
    } = Dev::start(extra);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read_log().contains("Development edge on") {
        assert!(Instant::now() < deadline, "dev edge did not start:\n{}", read_log());
        assert!(child.try_wait().unwrap().is_none(), "dev edge exited:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Wait for the edge's connection to the key server (its /readyz).
    let ready = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).ok()?;
        std::io::Write::write_all(&mut s, b"GET /readyz HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.starts_with("HTTP/1.0 200").then_some(())
    };
    while ready().is_none() {
        assert!(Instant::now() < deadline, "edge never became ready:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The key server's metrics: on the free port start-up printed.
    let printed = read_log();
    let url = printed
        .split("its metrics: http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no key server metrics address:\n{printed}"))
        .to_string();
    let mut s = std::net::TcpStream::connect(url.as_str()).unwrap();
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).unwrap();
    assert!(metrics.contains("keyless_keys_loaded"), "{metrics}");
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{edge_port}"),
            "-tls1_2",
            "-reconnect",
        ])
        .arg("-CAfile")
        .arg(dir.path().join("dev-pki/ca.pem"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |p: &str| text.lines().filter(|l| l.starts_with(p)).count();
    // The RSA site, by the name the dev edge serves it under, verifies.
    let rsa = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{edge_port}"), "-tls1_3"])
        .args(["-servername", "rsa.localhost", "-verify_hostname", "rsa.localhost"])
        .arg("-CAfile")
        .arg(dir.path().join("dev-pki/ca.pem"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let rsa = String::from_utf8_lossy(&rsa.stdout);
    assert!(
        rsa.contains("Peer signature type: RSA-PSS") && rsa.contains("Verify return code: 0 (ok)"),
        "{rsa}"
    );
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let log_text = read_log();
    assert_eq!(count("New, TLSv1.2"), 1, "{text}");
    assert_eq!(count("Reused, TLSv1.2"), 5, "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert_eq!(
        log_text.matches("fetch key with SKI").count(),
        2,
        "the key server signs once for the walkthrough, once for the RSA site:\n{log_text}"
    );
    (dir, log_text)
}

/// SIGHUP reloads the certificates (new connections get the new default),
/// and SIGTERM stops the edge with exit code 0.
#[test]
fn sighup_reloads_certificates_and_sigterm_exits_zero() {
    let mut dev = Dev::start(&[]);
    let (edge_port, dir, log) = (dev.edge_port, dev.dir.path().to_owned(), dev.log.clone());
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read_log().contains("Development edge on") || !read_log().contains("connected") {
        assert!(Instant::now() < deadline, "dev edge did not start:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let handshake = || {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{edge_port}"), "-tls1_3"])
            .arg("-CAfile")
            .arg(dir.join("dev-pki/ca.pem"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = handshake();
    assert!(before.contains("Peer signature type: ECDSA"), "{before}");
    // Make the RSA certificate the default, then SIGHUP.
    let config = dir.join("dev-pki/edge.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let swapped = text
        .replace("    default: true\n", "    names: [p256.localhost]\n")
        .replace("    names: [rsa.localhost]\n", "    default: true\n");
    assert_ne!(text, swapped);
    std::fs::write(&config, swapped).unwrap();
    let signal = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &dev.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read_log().contains("SIGHUP: reloaded") {
        assert!(Instant::now() < deadline, "no reload:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = handshake();
    assert!(after.contains("Peer signature type: RSA-PSS"), "{after}");
    signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the edge did not stop:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", read_log());
}
