//! Key servers that dial out (`dial`, `port: 0`) to an edge that listens
//! for them (`key_server_listen`): real `keyless-server` processes, a real
//! edge, the real `openssl` binary and a real proxy (tinyproxy).
//!
//! - The walkthrough's check over a key server with no listening socket
//!   (checked with `ss`): 1 New and 5 Reused, one `fetch key with SKI`.
//! - The same through an HTTP CONNECT proxy, whose log shows the CONNECT.
//! - Key servers holding different keys each get the requests for theirs; a
//!   redundant pair loses one under load with at most 1% failed handshakes;
//!   an edge restarted under load is back within 5 s; a key server that
//!   reloads its keys is asked for its new ones.
//! - A peer from a foreign CA is refused on both sides; one that sends
//!   nothing or garbage is dropped within the handshake timeout, and the
//!   other links go on.
//!
//! Every handshake's signature is checked by its client (openssl verifies
//! the chain and the handshake signature; rustls the same).

mod running;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keyless_pki::DevPki;
use running::{free_port, KillOnDrop};

/// One test at a time: they measure handshake failures and restart times
/// on a 2-CPU machine.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn pki(dir: &Path) -> DevPki {
    DevPki::generate(&dir.join("pki"), keyless_pki::DEFAULT_KEYS, 0).unwrap()
}

/// An edge with no key server of its own: key servers dial in on
/// `key_server_listen` (port 0: any). TLS on `listen`.
fn edge_config(
    pki: &DevPki,
    listen: SocketAddr,
    key_server_listen: SocketAddr,
    extra: &str,
) -> keyless_edge::config::EdgeConfig {
    let yaml = format!(
        "listen: {listen}\nworkers: 2\nrequest_timeout: 1s\nhealth_interval: 100ms\nhandshake_timeout: 1s\n\
         certificates:\n  - cert: {}\n    default: true\n  - cert: {}\n    names: [rsa.localhost]\n\
         key_server_listen: {key_server_listen}\nkey_server_ca: {}\nclient_cert: {}\nclient_key: {}\n{extra}",
        pki.sites_dir.join("p256.pem").display(),
        pki.sites_dir.join("rsa2048.pem").display(),
        pki.ca_cert.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
    );
    keyless_edge::config::parse(Path::new("edge.yaml"), &yaml).unwrap()
}

fn edge(pki: &DevPki, extra: &str) -> keyless_edge::RunningEdge {
    let any = "127.0.0.1:0".parse().unwrap();
    keyless_edge::start(&edge_config(pki, any, any, extra)).unwrap()
}

/// What most tests start from: the test's turn, a fresh PKI and an edge
/// waiting for key servers to dial in.
struct Setup {
    _serial: MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    pki: DevPki,
    edge: keyless_edge::RunningEdge,
    /// Where key servers dial.
    dial: SocketAddr,
}

fn setup() -> Setup {
    let serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let edge = edge(&pki, "");
    let dial = edge.key_server_listen.unwrap();
    Setup {
        _serial: serial,
        dir,
        pki,
        edge,
        dial,
    }
}

fn stop(edge: keyless_edge::RunningEdge) {
    edge.start_drain();
    edge.wait().unwrap();
}

/// A `keyless-server` process that listens nowhere and dials `edge`.
struct KeyServer {
    child: KillOnDrop,
    config: PathBuf,
    log: PathBuf,
}

impl KeyServer {
    /// Serving the keys `keys` (file stems in the PKI's keys folder), with
    /// `extra` YAML and environment.
    fn start(
        pki: &DevPki,
        name: &str,
        keys: &[&str],
        dial: SocketAddr,
        extra: &str,
        env: &[(&str, &str)],
    ) -> KeyServer {
        let config = pki.dir.join(format!("{name}.yaml"));
        let log = pki.dir.join(format!("{name}.log"));
        write_config(pki, &config, keys, dial, extra);
        let mut command = running::server();
        command
            .arg("-c")
            .arg(&config)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        KeyServer {
            child: KillOnDrop(command.spawn().unwrap()),
            config,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signatures(&self) -> usize {
        self.log().matches("fetch key with SKI").count()
    }
}

fn write_config(pki: &DevPki, path: &Path, keys: &[&str], dial: SocketAddr, extra: &str) {
    let stores: String = keys
        .iter()
        .map(|k| format!("  - file: {}\n", pki.keys_dir.join(format!("{k}.key")).display()))
        .collect();
    let yaml = format!(
        "loglevel: 1\nport: 0\nmetrics_port: 0\nworkers: 1\ndial: [\"{dial}\"]\nauth_cert: {}\nauth_key: {}\n\
         cloudflare_ca_cert: {}\nprivate_key_stores:\n{stores}{extra}",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca_cert.display(),
    );
    std::fs::write(path, yaml).unwrap();
}

/// Wait until the edge has `n` key servers with connections up.
fn wait_for_key_servers(edge: &keyless_edge::RunningEdge, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while edge.healthy() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} key servers dialed in within {within:?}",
            edge.healthy()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `openssl s_client` against the edge; its output.
fn s_client(addr: SocketAddr, ca: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count_lines(output: &str, prefix: &str) -> usize {
    output.lines().filter(|l| l.starts_with(prefix)).count()
}

/// A full handshake (TLS 1.3, no session) for `name` that the client
/// verified: chain, name and handshake signature.
fn full_handshake_ok(edge: SocketAddr, ca: &Path, name: &str) -> bool {
    let out = s_client(edge, ca, &["-tls1_3", "-servername", name]);
    count_lines(&out, "New, TLSv1.3") == 1 && out.contains("Verify return code: 0 (ok)")
}

/// The walkthrough's check: 1 New and 5 Reused over TLS 1.2, verified.
fn walkthrough(edge: SocketAddr, ca: &Path) {
    let out = s_client(edge, ca, &["-tls1_2", "-reconnect"]);
    assert_eq!(count_lines(&out, "New, TLSv1.2"), 1, "{out}");
    assert_eq!(count_lines(&out, "Reused, TLSv1.2"), 5, "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
}

/// Sockets the process `pid` listens on, as `ss` lists them.
fn listening_sockets(pid: u32) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-H", "-l", "-n", "-p", "-t", "-u", "-x"])
        .output()
        .expect("ss (iproute2)");
    assert!(out.status.success(), "ss failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_walkthrough_works_through_a_key_server_with_no_listening_socket() {
    let Setup {
        pki,
        edge,
        dial,
        dir: _dir,
        _serial,
    } = setup();
    let ks = KeyServer::start(&pki, "ks", &["p256", "rsa2048"], dial, "", &[]);
    wait_for_key_servers(&edge, 1, Duration::from_secs(10));
    assert_eq!(
        listening_sockets(ks.child.id()),
        Vec::<String>::new(),
        "the key server listens nowhere"
    );
    walkthrough(edge.addr, &pki.ca_cert);
    assert_eq!(ks.signatures(), 1, "one signature for 1 New + 5 Reused:\n{}", ks.log());
    assert!(full_handshake_ok(edge.addr, &pki.ca_cert, "rsa.localhost"));
    assert_eq!(ks.signatures(), 2);
    stop(edge);
}

#[test]
fn the_walkthrough_works_through_an_http_connect_proxy() {
    let Setup {
        pki,
        edge,
        dial,
        dir,
        _serial,
    } = setup();
    let proxy_port = free_port();
    let proxy_log = dir.path().join("tinyproxy.log");
    let proxy_conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &proxy_conf,
        format!(
            "Port {proxy_port}\nListen 127.0.0.1\nTimeout 600\nAllow 127.0.0.1\nConnectPort {}\n\
             BasicAuth keyless s3cret\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 64\n",
            dial.port(),
            proxy_log.display()
        ),
    )
    .unwrap();
    let _proxy = KillOnDrop(
        Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&proxy_conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy (.ci/run installs it: apt-get install tinyproxy)"),
    );
    running::wait_for_port(proxy_port, Duration::from_secs(5));
    // Credentials in the URL, as HTTPS_PROXY carries them.
    let proxy = format!("http://keyless:s3cret@127.0.0.1:{proxy_port}");
    let ks = KeyServer::start(&pki, "ks", &["p256", "rsa2048"], dial, "", &[("HTTPS_PROXY", &proxy)]);
    wait_for_key_servers(&edge, 1, Duration::from_secs(10));
    walkthrough(edge.addr, &pki.ca_cert);
    assert_eq!(ks.signatures(), 1, "{}", ks.log());
    let log = std::fs::read_to_string(&proxy_log).unwrap();
    assert!(log.contains(&format!("CONNECT 127.0.0.1:{}", dial.port())), "{log}");
    assert!(
        ks.log().contains(&format!("through proxy 127.0.0.1:{proxy_port}")),
        "{}",
        ks.log()
    );
    assert!(!ks.log().contains("s3cret"), "proxy credentials stay out of the log");
    // The wrong password: the proxy refuses, the key server says so and
    // keeps trying; the edge still has just the one key server.
    let wrong = format!("http://keyless:wrong@127.0.0.1:{proxy_port}");
    let refused = KeyServer::start(&pki, "refused", &["p256"], dial, "", &[("HTTPS_PROXY", &wrong)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refused.log().contains("retrying") {
        assert!(Instant::now() < deadline, "{}", refused.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // tinyproxy answers 401 where RFC 9110 says 407.
    let said = refused.log();
    assert!(
        said.contains(&format!("the proxy 127.0.0.1:{proxy_port} answered"))
            && (said.contains("answered 407") || said.contains("answered 401"))
            && said.contains("check dial_proxy's user and password"),
        "what the proxy answered and what to check: {said}"
    );
    assert_eq!(edge.healthy(), 1);
    stop(edge);
}

/// Full TLS 1.3 handshakes for `name` against `edge`, `concurrency` at a
/// time, for `duration`, on a thread of its own.
fn load(
    edge: SocketAddr,
    ca: &Path,
    name: &str,
    concurrency: usize,
    duration: Duration,
) -> std::thread::JoinHandle<keyless_tools::bench::handshake::HandshakeReport> {
    let mut roots = rustls::RootCertStore::empty();
    for c in keyless_service::tls::load_certs(ca).unwrap() {
        roots.add(c).unwrap();
    }
    let tls = keyless_tools::bench::handshake::client_config(roots, &rustls::version::TLS13, false, None).unwrap();
    let spec = keyless_tools::bench::handshake::HandshakeSpec {
        server: edge,
        server_name: name.to_string(),
        tls,
        concurrency,
        duration,
        warmup: Duration::ZERO,
        fetch_after: false,
    };
    std::thread::spawn(move || running::block_on(keyless_tools::bench::handshake::run(spec)).unwrap())
}

#[test]
fn keys_are_served_by_the_key_servers_holding_them_through_failover_and_an_edge_restart() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (listen, ks_listen): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    let config = edge_config(&pki, listen, ks_listen, "");
    let edge = keyless_edge::start(&config).unwrap();
    // A and C hold the P-256 key (a redundant pair), B the RSA key only.
    let a = KeyServer::start(&pki, "a", &["p256"], ks_listen, "", &[]);
    let b = KeyServer::start(&pki, "b", &["rsa2048"], ks_listen, "", &[]);
    let c = KeyServer::start(&pki, "c", &["p256"], ks_listen, "", &[]);
    wait_for_key_servers(&edge, 3, Duration::from_secs(10));
    for _ in 0..16 {
        assert!(full_handshake_ok(listen, &pki.ca_cert, "localhost"));
        assert!(full_handshake_ok(listen, &pki.ca_cert, "rsa.localhost"));
    }
    assert_eq!(b.signatures(), 16, "B signs every RSA handshake and nothing else");
    assert_eq!(a.signatures() + c.signatures(), 16, "A and C share the P-256 ones");
    // Each takes about half (turns among those that hold the key): both
    // get some, but for a chance of 2 in 65536.
    assert!(a.signatures() > 0 && c.signatures() > 0, "both of the pair are used");

    // Kill A under load: at most 1% of handshakes fail.
    let running = load(listen, &pki.ca_cert, "localhost", 16, Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(1500));
    drop(a);
    let report = running.join().unwrap();
    eprintln!(
        "losing one of a redundant pair: {} handshakes, {} failed ({:.1}/s)",
        report.handshakes, report.failures, report.handshakes_per_sec
    );
    assert!(report.handshakes > 100, "{report:?}");
    assert!(
        report.failures * 100 <= report.handshakes,
        "more than 1% failed: {report:?}"
    );
    assert!(full_handshake_ok(listen, &pki.ca_cert, "localhost"), "C serves alone");

    // Restart the edge under load: full service (both sites) within 5 s.
    let running = load(listen, &pki.ca_cert, "localhost", 8, Duration::from_secs(6));
    std::thread::sleep(Duration::from_millis(1000));
    stop(edge);
    let restarted = Instant::now();
    let edge = keyless_edge::start(&config).unwrap();
    while !(full_handshake_ok(listen, &pki.ca_cert, "localhost")
        && full_handshake_ok(listen, &pki.ca_cert, "rsa.localhost"))
    {
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "not back within 5 s:\nB:\n{}\nC:\n{}",
            b.log(),
            c.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "edge restarted: both sites served again after {:?}",
        restarted.elapsed()
    );
    let report = running.join().unwrap();
    assert!(report.handshakes > 0, "{report:?}");
    stop(edge);
}

#[test]
fn a_key_server_that_reloads_its_keys_is_asked_for_the_new_ones() {
    let Setup {
        pki,
        edge,
        dial,
        dir: _dir,
        _serial,
    } = setup();
    let a = KeyServer::start(&pki, "a", &["p256"], dial, "", &[]);
    let b = KeyServer::start(&pki, "b", &["rsa2048"], dial, "", &[]);
    wait_for_key_servers(&edge, 2, Duration::from_secs(10));
    for _ in 0..6 {
        assert!(full_handshake_ok(edge.addr, &pki.ca_cert, "localhost"));
    }
    assert_eq!((a.signatures(), b.signatures()), (6, 0), "B lacks the P-256 key");
    // B gets the P-256 key too, and reloads.
    write_config(&pki, &b.config, &["p256", "rsa2048"], dial, "");
    let status = Command::new("kill")
        .args(["-HUP", &b.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log().contains("SIGHUP: reloaded") {
        assert!(Instant::now() < deadline, "{}", b.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its next ping says so; the edge forgets that B lacked the key.
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..10 {
        assert!(full_handshake_ok(edge.addr, &pki.ca_cert, "localhost"));
    }
    assert!(b.signatures() >= 3, "B signs its share now: {} of 10", b.signatures());
    assert_eq!(a.signatures() + b.signatures(), 16);
    stop(edge);
}

/// Read until the peer closes; how long that took.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("still open after {limit:?}")
            }
            Err(_) => return started.elapsed(),
        }
    }
}

#[test]
fn foreign_peers_are_refused_both_ways_and_silent_or_garbage_peers_are_dropped() {
    let Setup {
        pki,
        edge,
        dial,
        dir,
        _serial,
    } = setup();
    let foreign = DevPki::generate(&dir.path().join("foreign"), keyless_pki::DEFAULT_KEYS, 0).unwrap();

    // The edge refuses a key server whose certificate is from another CA.
    let stranger = KeyServer::start(&foreign, "stranger", &["p256"], dial, "", &[]);
    // A key server of ours keeps its link through all of this.
    let ours = KeyServer::start(&pki, "ours", &["p256", "rsa2048"], dial, "", &[]);
    wait_for_key_servers(&edge, 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(edge.healthy(), 1, "only our key server is in");
    let refused = stranger.log();
    assert!(
        refused.contains("dial 127.0.0.1") && refused.contains("retrying"),
        "{refused}"
    );

    // A peer that connects and says nothing, or garbage, is dropped within
    // the handshake timeout (1 s), as is one that finishes TLS with a good
    // certificate and never says hello.
    let mut silent = std::net::TcpStream::connect(dial).unwrap();
    let mut garbage = std::net::TcpStream::connect(dial).unwrap();
    garbage.write_all(&[0x5a; 2048]).unwrap();
    let took = closed_within(&mut garbage, Duration::from_secs(3));
    assert!(took < Duration::from_millis(1500), "garbage dropped after {took:?}");
    let took = closed_within(&mut silent, Duration::from_secs(3));
    assert!(took < Duration::from_millis(2500), "silence dropped after {took:?}");
    let tls = running::client_tls(&pki);
    let no_hello = running::block_on(async {
        let tcp = tokio::net::TcpStream::connect(dial).await.unwrap();
        let mut stream = tokio_rustls::TlsConnector::from(tls)
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        use tokio::io::AsyncReadExt;
        // The edge's health pings may come first; then the close.
        while tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
            .await
            .expect("still open after 3 s")
            .is_ok_and(|n| n > 0)
        {}
        started.elapsed()
    });
    assert!(
        no_hello < Duration::from_millis(2500),
        "no hello: dropped after {no_hello:?}"
    );
    assert_eq!(edge.healthy(), 1);
    assert!(
        full_handshake_ok(edge.addr, &pki.ca_cert, "localhost"),
        "our link still serves"
    );
    assert!(ours.signatures() >= 1);
    stop(edge);

    // The key server refuses an edge whose certificate is from another CA.
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = edge_config(&pki, any, any, "");
    config.client_cert = foreign.client_cert.clone();
    config.client_key = foreign.client_key.clone();
    let impostor = keyless_edge::start(&config).unwrap();
    let ks = KeyServer::start(&pki, "careful", &["p256"], impostor.key_server_listen.unwrap(), "", &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(impostor.healthy(), 0, "no key server serves an edge it cannot trust");
    let log = ks.log();
    assert!(
        log.contains("retrying") && log.to_lowercase().contains("certificate"),
        "{log}"
    );
    stop(impostor);
}

/// SIGTERM on a key server that dialed out ends each dialed link with a
/// TLS close_notify: the edge can tell a key server that stopped from a
/// link that broke. Here the edge is a bare TLS listener with the edge's
/// identity, so the test sees exactly how the link ends.
#[test]
fn sigterm_closes_dialed_links_with_close_notify() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dial = listener.local_addr().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let tls = keyless_edge::key_server_listener::tls_config(&edge_config(&pki, any, dial, "")).unwrap();
    let mut server = KeyServer::start(&pki, "a", &["p256"], dial, "", &[]);
    let (tcp, _) = listener.accept().unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut link = rustls::StreamOwned::new(rustls::ServerConnection::new(tls).unwrap(), tcp);
    // Its first ping (the hello) arrives: the link is up.
    let mut buf = [0u8; 4096];
    let n = link.read(&mut buf).unwrap();
    assert!(n >= 8, "no ping from the key server");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let end = loop {
        match link.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(_) => continue, // more pings
            Err(e) => break Err(e),
        }
    };
    assert!(
        end.is_ok(),
        "the link ended without close_notify: {end:?}\n{}",
        server.log()
    );
    assert!(server.child.wait().unwrap().success(), "{}", server.log());
}
