//! The edge binary at its limits: its connection cap, its idle keep-alive
//! timeout, and running out of file descriptors (`prlimit`), each with
//! real TLS clients (`openssl s_client`) and the log read back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyless_engine::accept::Admission;
use keyless_tools::process::{free_port, KillOnDrop};

/// A running `keyless-edge` (signing in-process: these tests are about
/// connections, not keys), logging to a file.
struct Edge {
    _child: KillOnDrop,
    addr: SocketAddr,
    log: std::path::PathBuf,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Edge {
    /// With `extra` YAML; `nofile`: the descriptor limit it runs under.
    fn start(extra: &str, nofile: Option<u32>) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let pki = keyless_pki::DevPki::generate(&dir.path().join("pki"), keyless_pki::DEFAULT_KEYS, 0).unwrap();
        let port = free_port();
        let config = dir.path().join("edge.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nworkers: 1\ncertificates:\n  - cert: {}\n    local_key: {}\n\
                 key_servers: [\"127.0.0.1:1\"]\nkey_server_ca: {}\nclient_cert: {}\nclient_key: {}\n{extra}",
                pki.sites_dir.join("p256.pem").display(),
                pki.keys_dir.join("p256.key").display(),
                pki.ca_cert.display(),
                pki.client_cert.display(),
                pki.client_key.display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("edge.log");
        let mut command = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_keyless-edge"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_keyless-edge")),
        };
        let child = command
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("keyless-edge (prlimit is util-linux's)");
        let edge = Edge {
            _child: KillOnDrop(child),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            log,
            ca: pki.ca_cert.clone(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !edge.log().contains("edge serving TLS") {
            assert!(Instant::now() < deadline, "the edge did not start:\n{}", edge.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        edge
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `openssl s_client` asking for the page over keep-alive (`close`:
    /// asking the edge to close after the answer). `-quiet` keeps it
    /// running until the edge closes.
    fn client_asking(&self, close: bool) -> KillOnDrop {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &self.addr.to_string(), "-CAfile"])
            .arg(&self.ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl");
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(if close {
                b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
            } else {
                b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n"
            })
            .unwrap();
        KillOnDrop(child)
    }

    fn client(&self) -> KillOnDrop {
        self.client_asking(false)
    }

    /// A fresh client gets the page.
    fn serves(&self) -> bool {
        let mut child = self.client_asking(true);
        drop(child.0.stdin.take());
        let mut out = String::new();
        let _ = child.0.stdout.take().unwrap().read_to_string(&mut out);
        out.contains("hello from keyless-edge")
    }
}

/// Read `client`'s stdout until it has the page (or the edge closed).
fn got_page(client: &mut KillOnDrop, within: Duration) -> bool {
    got_pages(client, 1, within)
}

/// Read `client`'s stdout until it has `pages` answers.
fn got_pages(client: &mut KillOnDrop, pages: usize, within: Duration) -> bool {
    let mut stdout = client.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&got).matches("hello from keyless-edge").count() >= pages {
                let _ = tx.send(true);
                return;
            }
        }
        let _ = tx.send(false);
    });
    rx.recv_timeout(within).unwrap_or(false)
}

#[test]
fn at_its_cap_the_edge_closes_new_connections_says_so_once_and_takes_them_again_later() {
    let edge = Edge::start("max_connections_per_core: 3\n", None);
    let mut held: Vec<KillOnDrop> = (0..3).map(|_| edge.client()).collect();
    // (The episode ends with a connection taken a calm second after the
    // last refusal.)
    for c in &mut held {
        assert!(
            got_page(c, Duration::from_secs(5)),
            "a connection under the cap is served"
        );
    }
    for _ in 0..3 {
        assert!(!edge.serves(), "over the cap: closed at once");
    }
    assert_eq!(
        edge.log().matches("closing new ones").count(),
        1,
        "said once:\n{}",
        edge.log()
    );
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !edge.serves() {
        assert!(
            Instant::now() < deadline,
            "no room after a connection left:\n{}",
            edge.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Admission::CALM);
    assert!(edge.serves());
    assert!(edge.log().contains("accepting again"), "{}", edge.log());
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let edge = Edge::start("idle_timeout: 1s\n", None);
    let mut client = edge.client();
    assert!(got_page(&mut client, Duration::from_secs(5)));
    closed_after_about_a_second(&mut client, Instant::now());
}

#[test]
fn an_idle_proxied_connection_is_closed_after_the_idle_timeout() {
    // An upstream that takes the request and never answers.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in upstream.incoming().flatten() {
            held.push(s);
        }
    });
    let edge = Edge::start(&format!("idle_timeout: 1s\nupstream: {upstream_addr}\n"), None);
    let mut client = edge.client();
    closed_after_about_a_second(&mut client, Instant::now());
}

/// `client` (s_client, which exits when the edge closes the connection)
/// is closed between 0.7 and 3 s after `since`: a 1 s idle timeout.
fn closed_after_about_a_second(client: &mut KillOnDrop, since: Instant) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "still open after 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = since.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[test]
fn out_of_descriptors_the_edge_pauses_accepting_says_so_briefly_and_recovers() {
    let edge = Edge::start("handshake_timeout: 2s\n", Some(64));
    // A keep-alive client from before the flood asks again in the middle
    // of it: the edge keeps serving the connections it has.
    let mut kept = edge.client();
    std::thread::sleep(Duration::from_millis(500));
    // A flood of connections that never send a ClientHello, well past the
    // descriptor limit, for three seconds.
    let mut flood = Vec::new();
    let started = Instant::now();
    let mut asked_again = false;
    while started.elapsed() < Duration::from_secs(3) {
        if flood.len() < 300 {
            if let Ok(s) = TcpStream::connect(edge.addr) {
                flood.push(s);
            }
        }
        if !asked_again && started.elapsed() > Duration::from_millis(1500) {
            let again = b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n";
            kept.0.stdin.as_mut().unwrap().write_all(again).unwrap();
            asked_again = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        got_pages(&mut kept, 2, Duration::from_secs(3)),
        "a connection held from before the flood is answered during it"
    );
    let log = edge.log();
    let lines = log.matches("accept failed").count();
    assert!(lines >= 1, "the condition is said:\n{log}");
    assert!(lines <= 3, "{lines} lines in 3 s, not one per failure:\n{log}");
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !edge.serves() {
        assert!(
            Instant::now() < deadline,
            "not serving after the flood:\n{}",
            edge.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Admission::CALM);
    assert!(edge.serves());
    let log = edge.log();
    assert!(log.contains("accepting again"), "{log}");
    // Start, the episode, its end (and the signal line): a few lines, not
    // one per connection.
    assert!(log.lines().count() <= 8, "{} lines:\n{log}", log.lines().count());
}
