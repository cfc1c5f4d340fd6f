//! The README's main command, `keyless-edge --dev`, and the Keyless SSL
//! walkthrough's check against it: `openssl s_client -tls1_2 -reconnect`
//! prints `New` once and `Reused` five times, and the key server logs
//! `fetch key with SKI` exactly once.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn dev_mode_runs_the_keyless_ssl_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let (edge_port, ks_port, metrics_port) = (free_port(), free_port(), free_port());
    let log = dir.path().join("edge.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyless-edge"))
        .current_dir(dir.path())
        .arg("--dev")
        .args(["--dev-port", &edge_port.to_string()])
        .args(["--dev-key-server-port", &ks_port.to_string()])
        .args(["--dev-metrics-port", &metrics_port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
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
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let log_text = read_log();
    assert_eq!(count("New, TLSv1.2"), 1, "{text}");
    assert_eq!(count("Reused, TLSv1.2"), 5, "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert_eq!(
        log_text.matches("fetch key with SKI").count(),
        1,
        "the key server signs once:\n{log_text}"
    );
}
