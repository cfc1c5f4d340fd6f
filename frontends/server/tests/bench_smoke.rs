//! A short run of the load generator against a live server: both loop
//! modes work, answers are verified, and nothing is lost at the end.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keyless_tools::bench::load::{self, LoadSpec, Mode};
use keyless_tools::bench::op::BenchOp;
use keyless_tools::conformance::{load_expected_key, ExpectedKey};

fn spec(name: &str, mode: Mode, verify_every: u64) -> LoadSpec {
    let server = common::server();
    let key = load_expected_key(&server.pubkeys().join(format!("{name}.pem"))).unwrap();
    let alg = key.info.algorithm;
    let op = BenchOp::default_for(alg);
    LoadSpec {
        addr: server.addr,
        server_name: "localhost".into(),
        tls: server.client_tls(),
        op,
        ski: key.info.ski,
        payload_len: op.payload_len(alg),
        connections: 2,
        in_flight: 16,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(800),
        mode,
        verify_every,
        verifier: Some(Arc::new(key.verifier)),
        spin: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_every_answer_verified() {
    let r = load::run(
        spec("ecdsa-p256", Mode::Closed { pause: Duration::ZERO }, 1),
        Arc::default(),
    )
    .await
    .unwrap();
    assert!(r.ok > 0, "{r:?}");
    assert_eq!(r.verified, r.ok, "every answer verified");
    assert_eq!(r.verify_failures, 0);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.latency.p50_us > 0.0 && r.latency.p99_us >= r.latency.p50_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_at_a_fixed_rate() {
    let r = load::run(spec("ed25519", Mode::Open { rate: 500.0 }, 1), Arc::default())
        .await
        .unwrap();
    // 500/s for 0.8 s: about 400 answers.
    assert!((300..=500).contains(&r.ok), "{r:?}");
    assert_eq!(r.verify_failures, 0);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_generator_paces_and_answers() {
    let mut open = spec("ed25519", Mode::Open { rate: 500.0 }, 1);
    open.spin = true;
    let r = load::run(open, Arc::default()).await.unwrap();
    assert!((300..=500).contains(&r.ok), "{r:?}");
    assert_eq!(r.verified, r.ok, "every answer verified");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let mut closed = spec("ecdsa-p256", Mode::Closed { pause: Duration::ZERO }, 1);
    closed.spin = true;
    let r = load::run(closed, Arc::default()).await.unwrap();
    assert!(r.ok > 0 && r.verified == r.ok && r.verify_failures == 0, "{r:?}");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn ceiling_signs_in_process() {
    let server = common::server();
    let library = std::env::var_os("KEYLESS_TEST_CRYPTO_MB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/opt/keyless-crypto-mb/lib/libcrypto_mb.so.11".into());
    let r = keyless_tools::bench::ceiling::measure(
        &server.pki.keys_dir.join("ecdsa-p256.key"),
        None,
        Duration::from_millis(200),
        Some(&library),
    )
    .unwrap();
    assert!(r.ops > 0 && r.ops_per_sec > 0.0);
    // Beside it, the multi-buffer ceiling, where crypto_mb can run.
    let ifma = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| s.split_whitespace().any(|w| w == "avx512ifma"));
    if ifma {
        assert!(
            r.multibuffer_ops_per_sec.is_some_and(|mb| mb > 0.0),
            "{}",
            r.multibuffer
        );
    } else {
        assert_eq!(r.multibuffer_ops_per_sec, None);
        assert!(r.multibuffer.contains("lacks AVX-512 IFMA"), "{}", r.multibuffer);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_keeps_both_cores_signing() {
    let shared = &common::server().shared;
    assert_eq!(shared.cores(), 2);
    let before = shared.handled_per_core();
    let mut s = spec("ecdsa-p384", Mode::Closed { pause: Duration::ZERO }, 10);
    s.connections = 1;
    s.in_flight = 64;
    let r = load::run(s, Arc::default()).await.unwrap();
    assert!(r.errors.is_empty() && r.verify_failures == 0, "{r:?}");
    let after = shared.handled_per_core();
    let done: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: u64 = done.iter().sum();
    assert!(total >= r.ok, "{done:?} {r:?}");
    for (core, n) in done.iter().enumerate() {
        // Other tests share this server, so only a loose bound: both cores work.
        assert!(*n * 5 >= total, "core {core} handled {n} of {total}: {done:?}");
    }
}

/// A raw stream that has been sent `n` RSA-4096 sign requests (IDs 0..n),
/// optionally followed by a ping (ID 9999) in the same write.
async fn rsa_batch(n: u32, then_ping: bool) -> (keyless_client::TlsStream, ExpectedKey) {
    use keyless_protocol::{Frame, Message, Opcode};
    use tokio::io::AsyncWriteExt;
    let server = common::server();
    let key = load_expected_key(&server.pubkeys().join("rsa-4096.pem")).unwrap();
    let mut stream = keyless_client::connect_stream(server.addr, "localhost", server.client_tls())
        .await
        .unwrap();
    let mut batch = Vec::new();
    for id in 0..n {
        let m = Message::request(Opcode::RSA_SIGN_SHA256, Some(key.info.ski), vec![id as u8; 32]);
        Frame::new(id, m).encode_into(&mut batch).unwrap();
    }
    if then_ping {
        let ping = Message::request(Opcode::PING, None, b"p".to_vec());
        Frame::new(9999, ping).encode_into(&mut batch).unwrap();
    }
    stream.write_all(&batch).await.unwrap();
    (stream, key)
}

/// Read answers until `n` signatures (each verified) have arrived; returns
/// how many had arrived when the pong (ID 9999) did, if one came.
async fn read_batch(
    stream: &mut keyless_client::TlsStream,
    key: &ExpectedKey,
    n: usize,
    answered: &AtomicUsize,
) -> Option<usize> {
    use keyless_protocol::split_frame;
    use tokio::io::AsyncReadExt;
    let (mut buf, mut rsa, mut at_pong) = (Vec::new(), 0, None);
    while rsa < n {
        let mut chunk = [0u8; 8192];
        let got = stream.read(&mut chunk).await.unwrap();
        assert!(got > 0, "connection closed");
        buf.extend_from_slice(&chunk[..got]);
        while let Some(raw) = split_frame(&buf) {
            let len = raw.header.frame_len();
            let f = raw.decode().unwrap();
            if f.id == 9999 {
                at_pong = Some(rsa);
            } else {
                let sig = f.message.payload.unwrap();
                let op = keyless_keys::Operation::RsaPkcs1(keyless_protocol::Hash::Sha256);
                key.verifier.verify(op, &[f.id as u8; 32], &sig).unwrap();
                rsa += 1;
                answered.store(rsa, Ordering::SeqCst);
            }
            buf.drain(..len);
        }
    }
    at_pong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_is_not_queued_behind_a_batch_of_rsa_4096() {
    // 32 RSA-4096 signatures take tens of milliseconds even on two cores;
    // a ping sent after them in the same write comes back first.
    let (mut stream, key) = rsa_batch(32, true).await;
    let at_pong = tokio::time::timeout(
        Duration::from_secs(60),
        read_batch(&mut stream, &key, 32, &AtomicUsize::new(0)),
    )
    .await
    .unwrap();
    // Normally 0: all input is read before signing and pings skip the queue.
    // If the first read raced the client's write, at most this core's share
    // of that first read (about 8) precedes it; queued, it would be ~16+.
    let at_pong = at_pong.expect("a pong");
    assert!(at_pong < 16, "the pong waited behind {at_pong} signatures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_on_another_connection_is_answered_during_a_batch() {
    let (mut stream, key) = rsa_batch(64, false).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let reader = {
        let answered = answered.clone();
        tokio::spawn(async move { read_batch(&mut stream, &key, 64, &answered).await })
    };
    while answered.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let other = common::server().connect().await;
    other.ping(b"still responsive").await.unwrap();
    let done_at_pong = answered.load(Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        done_at_pong < 64,
        "the ping waited for the whole batch ({done_at_pong} of 64 done)"
    );
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("headers") + 4;
    (
        String::from_utf8_lossy(&out[..split]).into_owned(),
        out[split..].to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flame_graph_of_the_live_server_names_the_signing_functions() {
    let server = common::server();
    let metrics =
        keyless_server::metrics::start("127.0.0.1:0".parse().unwrap(), server.shared.clone(), Vec::new()).unwrap();
    let mut s = spec("ecdsa-p256", Mode::Closed { pause: Duration::ZERO }, 100);
    s.warmup = Duration::ZERO;
    // Load for longer than both profiles take, so each samples a busy server.
    s.duration = Duration::from_secs(7);
    let load = tokio::spawn(load::run(s, Arc::default()));
    let addr = metrics.addr;
    let (head, svg) = tokio::task::spawn_blocking(move || http_get(addr, "/debug/pprof/flamegraph?seconds=2"))
        .await
        .unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") && head.contains("image/svg+xml"),
        "{head}"
    );
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "not an SVG");
    assert!(
        svg.contains("sign_digest") || svg.contains("ECDSA_sign"),
        "no signing frames in the flame graph"
    );
    let (head, pb) = tokio::task::spawn_blocking(move || http_get(addr, "/debug/pprof/profile?seconds=2"))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(pb.len() > 100, "profile of {} bytes", pb.len());
    let r = load.await.unwrap().unwrap();
    assert!(r.ok > 0 && r.verify_failures == 0 && r.errors.is_empty(), "{r:?}");
}
