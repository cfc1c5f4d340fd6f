//! A short run of the load generator against a live server: both loop
//! modes work, answers are verified, and nothing is lost at the end.

mod common;

use std::sync::Arc;
use std::time::Duration;

use keyless_tools::bench::load::{self, LoadSpec, Mode};
use keyless_tools::bench::op::BenchOp;
use keyless_tools::conformance::load_expected_key;

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

#[test]
fn ceiling_signs_in_process() {
    let server = common::server();
    let r = keyless_tools::bench::ceiling::measure(
        &server.pki.keys_dir.join("ecdsa-p256.key"),
        None,
        Duration::from_millis(200),
    )
    .unwrap();
    assert!(r.ops > 0 && r.ops_per_sec > 0.0);
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
