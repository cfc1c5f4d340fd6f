//! The edge in a fleet, over real sockets with real key servers: a few
//! connections per key server for the whole edge process serve every core
//! (the cores without one hand their requests over, failover included),
//! and the key servers behind a DNS name follow its answer while
//! handshakes run (both handshake modes; a DNS server of the test's own on
//! loopback that can also fail), with the system's configuration by
//! default, and a name that does not resolve yet at start.
//!
//! Every handshake is a full TLS 1.3 handshake by rustls, which verifies
//! the key server's signature in it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata, RData, Record, RecordType};

mod support;

use support::*;

/// One full TLS 1.3 handshake (no session to resume), then a request and
/// its answer: the handshake's signature was verified by rustls.
fn full_handshake(addr: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = tls_client_with_alpn(&[])
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        if answer.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("answer: {answer:?}"))
        }
    })
}

/// Handshakes in a loop on `threads` threads until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match full_handshake(addr) {
                            Ok(()) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            done,
            failures,
            threads,
        }
    }

    /// Stop; how many handshakes succeeded, and the failures.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.done.load(Ordering::Relaxed), failures)
    }
}

/// Drain and stop edges, then key servers.
fn stop(
    edges: impl IntoIterator<Item = keyless_edge::RunningEdge>,
    servers: impl IntoIterator<Item = keyless_server::RunningServer>,
) {
    for e in edges {
        e.start_drain();
        e.wait().unwrap();
    }
    for s in servers {
        s.shared.start_drain();
        s.wait().unwrap();
    }
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// An edge on 2 cores in front of `key_servers`, `extra` YAML appended.
fn two_core_edge(key_servers: &[SocketAddr], extra: &str) -> keyless_edge::RunningEdge {
    let yaml = edge_yaml(key_servers, extra).replace("workers: 1\n", "workers: 2\n");
    let config = keyless_edge::config::parse(Path::new("edge.yaml"), &yaml).unwrap();
    let edge = keyless_edge::start(&config).unwrap();
    assert!(edge.wait_healthy(Duration::from_secs(10)));
    edge
}

#[test]
fn one_connection_per_key_server_serves_every_core_of_the_edge() {
    let _serial = serial();
    let server = key_server("127.0.0.1:0".parse().unwrap());
    let e = two_core_edge(&[server.addr], "key_server_connections: 1\n");
    let links = |e: &keyless_edge::RunningEdge| e.key_servers.states()[0].links_up();
    wait_for("the edge's connection", Duration::from_secs(5), || {
        links(&e) == 1 && server.shared.open_connections() == 1
    });
    // Connections land on both cores (SO_REUSEPORT): the one without a
    // connection to the key server hands its signatures to the other.
    let before = signatures(&server);
    let load = Load::start(e.addr, 4);
    wait_for("200 handshakes", Duration::from_secs(60), || {
        load.done.load(Ordering::Relaxed) >= 200
    });
    let (done, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(signatures(&server) - before, done as u64, "one signature per handshake");
    assert_eq!(
        (links(&e), server.shared.open_connections()),
        (1, 1),
        "still one connection"
    );
    stop([e], []);
    // (A stopped edge's connections close with its process; this one's
    // process goes on, so they are counted from here.)
    let earlier = server.shared.open_connections();

    // The default: 2 for the process; connections_per_server: 2 on every core.
    let by_default = two_core_edge(&[server.addr], "");
    wait_for("2 connections", Duration::from_secs(5), || links(&by_default) == 2);
    let per_core = two_core_edge(&[server.addr], "connections_per_server: 2\n");
    wait_for("4 connections", Duration::from_secs(5), || links(&per_core) == 4);
    wait_for("6 more connections at the key server", Duration::from_secs(5), || {
        server.shared.open_connections() == earlier + 6
    });
    full_handshake(by_default.addr).unwrap();
    full_handshake(per_core.addr).unwrap();
    stop([by_default, per_core], [server]);
}

/// Two key servers, one connection to each for the whole 2-core edge (on
/// different cores, so each core hands half of its requests over): one
/// key server goes away under load and no handshake fails.
#[test]
fn losing_a_key_server_fails_over_through_the_other_cores_connection() {
    let _serial = serial();
    let first = key_server("127.0.0.1:0".parse().unwrap());
    let second = key_server("127.0.0.1:0".parse().unwrap());
    let e = two_core_edge(&[first.addr, second.addr], "key_server_connections: 1\n");
    wait_for("both key servers", Duration::from_secs(5), || e.healthy() == 2);
    let load = Load::start(e.addr, 3);
    wait_for("handshakes on both", Duration::from_secs(10), || {
        signatures(&first) > 20 && signatures(&second) > 20
    });
    first.shared.start_drain();
    first.wait().unwrap();
    let after = signatures(&second);
    wait_for("the second taking everything", Duration::from_secs(10), || {
        signatures(&second) > after + 50
    });
    let (done, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {done} handshakes failed: {failures:?}",
        failures.len()
    );
    assert_eq!(e.healthy(), 1);
    stop([e], [second]);
}

/// A DNS server on loopback that answers every A question with `answer`
/// (TTL 1 s), or SERVFAIL while `failing`; AAAA questions get no record.
struct Dns {
    addr: SocketAddr,
    answer: Arc<Mutex<Vec<Ipv4Addr>>>,
    failing: Arc<AtomicBool>,
    questions: Arc<AtomicUsize>,
}

impl Dns {
    fn start(answer: &[Ipv4Addr]) -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dns = Dns {
            addr: socket.local_addr().unwrap(),
            answer: Arc::new(Mutex::new(answer.to_vec())),
            failing: Arc::new(AtomicBool::new(false)),
            questions: Arc::new(AtomicUsize::new(0)),
        };
        let (answer, failing, questions) = (dns.answer.clone(), dns.failing.clone(), dns.questions.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                questions.fetch_add(1, Ordering::Relaxed);
                let mut reply = Message::new();
                reply
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_recursion_desired(query.recursion_desired())
                    .set_recursion_available(true)
                    .add_queries(query.queries().to_vec());
                if failing.load(Ordering::Relaxed) {
                    reply.set_response_code(ResponseCode::ServFail);
                } else {
                    for q in query.queries() {
                        if q.query_type() == RecordType::A {
                            for ip in answer.lock().unwrap().iter() {
                                reply.add_answer(Record::from_rdata(q.name().clone(), 1, RData::A(rdata::A(*ip))));
                            }
                        }
                    }
                }
                let _ = socket.send_to(&reply.to_vec().unwrap(), from);
            }
        });
        dns
    }

    fn answer(&self, ips: &[Ipv4Addr]) {
        *self.answer.lock().unwrap() = ips.to_vec();
    }
}

/// Key servers A and B on two loopback addresses, the same port (one
/// name's two addresses), and a DNS server answering with A.
fn behind_one_name(
    ip_a: Ipv4Addr,
    ip_b: Ipv4Addr,
) -> (keyless_server::RunningServer, keyless_server::RunningServer, Dns) {
    let a = key_server(SocketAddr::new(ip_a.into(), 0));
    let b = key_server(SocketAddr::new(ip_b.into(), a.addr.port()));
    (a, b, Dns::start(&[ip_a]))
}

fn dialed(e: &keyless_edge::RunningEdge) -> Vec<IpAddr> {
    e.key_servers.states().iter().map(|s| s.addr.ip()).collect()
}

#[test]
fn key_servers_follow_their_name_in_dns_with_no_handshake_lost() {
    let _serial = serial();
    let (ip_a, ip_b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let (a, b, dns) = behind_one_name(ip_a, ip_b);
    let port = a.addr.port();
    let named = |interval: &str| {
        let yaml = two_core_yaml(&format!(
            "nameservers: [\"{}\"]\nresolve_interval: {interval}\n",
            dns.addr
        ))
        .replace("key_servers: []", &format!("key_servers: [\"keyservers.test:{port}\"]"));
        keyless_edge::config::parse(Path::new("edge.yaml"), &yaml).unwrap()
    };
    let config = named("1s");
    let e = keyless_edge::start(&config).unwrap();
    assert!(e.wait_healthy(Duration::from_secs(10)));
    assert_eq!(dialed(&e), [IpAddr::from(ip_a)]);

    let load = Load::start(e.addr, 3);
    std::thread::sleep(Duration::from_millis(500));
    // {A} -> {A, B}: B has connections and signs within one period.
    dns.answer(&[ip_a, ip_b]);
    let took = wait_for("B's first signature", Duration::from_secs(3), || signatures(&b) > 0);
    eprintln!("B signed {took:?} after it joined the answer");
    assert_eq!(dialed(&e).len(), 2);
    // Its share: requests take turns over both.
    let (a0, b0) = (signatures(&a), signatures(&b));
    std::thread::sleep(Duration::from_millis(1000));
    let (da, db) = (signatures(&a) - a0, signatures(&b) - b0);
    assert!(db * 3 >= da && da * 3 >= db, "A signed {da}, B {db}: not shared");

    // DNS fails for two periods: the last good answer stands.
    dns.failing.store(true, Ordering::Relaxed);
    let asked = dns.questions.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(dns.questions.load(Ordering::Relaxed) > asked, "the edge kept asking");
    assert_eq!(dialed(&e).len(), 2, "kept through the failure");
    dns.failing.store(false, Ordering::Relaxed);

    // {A, B} -> {B}: A's connections finish and close; nothing is lost.
    dns.answer(&[ip_b]);
    let changed = Instant::now();
    wait_for("A leaving the edge's key servers", Duration::from_secs(3), || {
        dialed(&e) == [IpAddr::from(ip_b)]
    });
    wait_for("A's connections closing", Duration::from_secs(5), || {
        a.shared.open_connections() == 0
    });
    eprintln!(
        "A's connections closed {:?} after it left the answer",
        changed.elapsed()
    );
    let a_after = signatures(&a);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(signatures(&a), a_after, "A gets nothing once gone");

    // {B} -> {A} at once (pods replaced): B serves until A is up, then its
    // connections close; nothing is lost.
    dns.answer(&[ip_a]);
    wait_for("A signing again", Duration::from_secs(3), || signatures(&a) > a_after);
    wait_for("B's connections closing", Duration::from_secs(5), || {
        b.shared.open_connections() == 0
    });
    let (done, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {done} handshakes failed: {failures:?}",
        failures.len()
    );
    assert!(done > 50, "only {done} handshakes");
    stop([e], []);

    // A long period: a SIGHUP (reload) looks the name up at once.
    let slow = named("1h");
    let e = keyless_edge::start(&slow).unwrap();
    assert!(e.wait_healthy(Duration::from_secs(10)));
    assert_eq!(dialed(&e), [IpAddr::from(ip_a)]);
    dns.answer(&[ip_b]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(dialed(&e), [IpAddr::from(ip_a)], "no lookup before the period");
    e.reload(&slow).unwrap();
    wait_for("B after the reload", Duration::from_secs(3), || {
        dialed(&e) == [IpAddr::from(ip_b)] && e.healthy() == 1
    });
    full_handshake(e.addr).unwrap();
    stop([e], [a, b]);
}

/// The YAML of a 2-core edge with no key server address yet.
fn two_core_yaml(extra: &str) -> String {
    edge_yaml(&[], extra).replace("workers: 1\n", "workers: 2\n")
}

/// By default names go through the system's configuration (/etc/hosts
/// here); a name that does not resolve yet is an error for
/// `--test-config` but not for starting: the edge starts, is not ready,
/// and becomes ready once the name resolves.
#[test]
fn names_resolve_through_the_system_and_an_unresolved_one_does_not_stop_the_start() {
    let _serial = serial();
    let server = key_server("127.0.0.1:0".parse().unwrap());
    let port = server.addr.port();
    let yaml = two_core_yaml("").replace("key_servers: []", &format!("key_servers: [\"localhost:{port}\"]"));
    let config = keyless_edge::config::parse(Path::new("edge.yaml"), &yaml).unwrap();
    let e = keyless_edge::start(&config).unwrap();
    assert!(e.wait_healthy(Duration::from_secs(10)), "localhost, from /etc/hosts");
    assert!(dialed(&e).contains(&IpAddr::from(Ipv4Addr::LOCALHOST)));
    full_handshake(e.addr).unwrap();
    stop([e], []);

    let dns = Dns::start(&[Ipv4Addr::LOCALHOST]);
    dns.failing.store(true, Ordering::Relaxed);
    let yaml = two_core_yaml(&format!("nameservers: [\"{}\"]\nresolve_interval: 1s\n", dns.addr))
        .replace("key_servers: []", &format!("key_servers: [\"later.test:{port}\"]"));
    let config = keyless_edge::config::parse(Path::new("edge.yaml"), &yaml).unwrap();
    let e = keyless_edge::check(&config).unwrap_err();
    assert!(e.contains("later.test") && e.contains("no address"), "{e}");
    let e = keyless_edge::start(&config).unwrap();
    assert_eq!(e.healthy(), 0);
    assert!(dialed(&e).is_empty());
    dns.failing.store(false, Ordering::Relaxed);
    assert!(e.wait_healthy(Duration::from_secs(5)), "ready once the name resolves");
    full_handshake(e.addr).unwrap();
    stop([e], [server]);
}

/// The threads handshake mode's pool follows the name too.
#[test]
fn the_threads_mode_follows_the_name_too() {
    let _serial = serial();
    let (ip_a, ip_b) = (Ipv4Addr::new(127, 0, 0, 4), Ipv4Addr::new(127, 0, 0, 5));
    let (a, b, dns) = behind_one_name(ip_a, ip_b);
    let port = a.addr.port();
    let yaml = edge_yaml(
        &[],
        &format!(
            "handshake_mode: threads\nnameservers: [\"{}\"]\nresolve_interval: 1s\n",
            dns.addr
        ),
    )
    .replace("key_servers: []", &format!("key_servers: [\"keyservers.test:{port}\"]"));
    let config = keyless_edge::config::parse(Path::new("edge.yaml"), &yaml).unwrap();
    let e = keyless_edge::start(&config).unwrap();
    assert!(e.wait_healthy(Duration::from_secs(10)));
    let load = Load::start(e.addr, 2);
    wait_for("A signing", Duration::from_secs(5), || signatures(&a) > 10);
    dns.answer(&[ip_b]);
    wait_for("B signing", Duration::from_secs(3), || signatures(&b) > 10);
    wait_for("A's connections closing", Duration::from_secs(5), || {
        a.shared.open_connections() == 0
    });
    assert!(e.healthy() == 1, "the edge's readiness sees B's connections");
    let (done, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {done} handshakes failed: {failures:?}",
        failures.len()
    );
    stop([e], [a, b]);
}
