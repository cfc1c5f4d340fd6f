//! Multi-buffer signing in a real `keyless-server` process over mutual TLS.
//!
//! Where the CPU has no AVX-512 IFMA, crypto_mb cannot run, so the lanes are
//! computed by the AWS-LC reference (the test builds' `KEYLESS_TEST_LANE_MATH`
//! hook): everything else — grouping a read's requests by lane class, the
//! padding, nonces, DER, the RSA check, answers and metrics — is the same
//! code crypto_mb's lanes go through. Every answer is verified.

mod running;

use std::path::{Path, PathBuf};
use std::process::Output;

use futures_util::future::join_all;
use keyless_pki::{DevPki, KeyType};
use keyless_protocol::{ErrorCode, Opcode};
use keyless_tools::conformance::{self, ExpectedKey};
use running::*;

const HOOK: &str = "KEYLESS_TEST_LANE_MATH";

fn library() -> PathBuf {
    std::env::var_os("KEYLESS_TEST_CRYPTO_MB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/keyless-crypto-mb/lib/libcrypto_mb.so.11"))
}

fn cpu_has_ifma() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| s.split_whitespace().any(|w| w == "avx512ifma"))
}

const KEYS: &[(&str, KeyType)] = &[
    ("p256a", KeyType::EcdsaP256),
    ("p256b", KeyType::EcdsaP256),
    ("p384", KeyType::EcdsaP384),
    ("rsa2048a", KeyType::Rsa2048),
    ("rsa2048b", KeyType::Rsa2048),
    ("rsa3072", KeyType::Rsa3072),
    ("p521", KeyType::EcdsaP521),
    ("ed25519", KeyType::Ed25519),
];

fn start(keys: &[(&str, KeyType)], flags: &[&str], hook: Option<&str>) -> (Running, Vec<ExpectedKey>) {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::generate(dir.path(), keys, 0).unwrap();
    let expected = conformance::load_expected_keys(&pki.pubkeys_dir).unwrap();
    let mut args = vec!["--workers", "1"];
    args.extend_from_slice(flags);
    let env: Vec<(&str, &Path)> = hook.map(|h| (HOOK, Path::new(h))).into_iter().collect();
    (Running::start_in(dir, pki, &args, &env), expected)
}

/// One request for `key` (chosen by `i`) and how to check its answer.
fn request(key: &ExpectedKey, i: usize) -> (Opcode, Vec<u8>, Option<Vec<u8>>) {
    use keyless_keys::KeyAlgorithm::*;
    let digest = |n: usize| vec![(i % 251) as u8; n];
    match key.info.algorithm {
        Rsa { bits } => match i % 4 {
            0 => (Opcode::RSA_SIGN_SHA256, digest(32), None),
            1 => (Opcode::RSA_PSS_SIGN_SHA256, digest(32), None),
            2 => (Opcode::RSA_SIGN_MD5SHA1, digest(36), None),
            _ => {
                let mut plain = vec![(i % 251) as u8; bits as usize / 8];
                (plain[0], plain[1]) = (0, 1); // below n, above 1
                let cipher = key.verifier.rsa_raw_encrypt(&plain).unwrap();
                (Opcode::RSA_DECRYPT, cipher, Some(plain))
            }
        },
        Ed25519 => (Opcode::ED25519_SIGN, digest(100), None),
        _ => match i % 2 {
            0 => (Opcode::ECDSA_SIGN_SHA256, digest(32), None),
            _ => (Opcode::ECDSA_SIGN_SHA384, digest(48), None),
        },
    }
}

fn check(key: &ExpectedKey, opcode: Opcode, input: &[u8], plain: &Option<Vec<u8>>, answer: &[u8]) {
    match plain {
        Some(plain) => assert_eq!(answer, plain.as_slice(), "{}: decryption", key.name),
        None => {
            let op = keyless_keys::Operation::from_kind(opcode.kind()).unwrap();
            key.verifier
                .verify(op, input, answer)
                .unwrap_or_else(|e| panic!("{} {op:?}: {e}", key.name));
        }
    }
}

/// `count` pipelined requests spread over `keys`, every answer checked;
/// how many were refused with a crypto error.
async fn pipelined(conn: &keyless_client::Connection, keys: &[ExpectedKey], count: usize, offset: usize) -> usize {
    let answers = join_all((0..count).map(|i| {
        let key = &keys[(i * 7 + offset) % keys.len()];
        let (opcode, input, plain) = request(key, i + offset);
        async move {
            let got = conn.perform(opcode, key.info.ski, &input).await;
            (key, opcode, input, plain, got)
        }
    }))
    .await;
    let mut refused = 0;
    for (key, opcode, input, plain, got) in answers {
        match got {
            Ok(answer) => check(key, opcode, &input, &plain, &answer),
            Err(keyless_client::ClientError::Remote(ErrorCode::Crypto)) => refused += 1,
            Err(e) => panic!("{} {opcode:?}: {e}", key.name),
        }
    }
    refused
}

async fn connect(server: &Running) -> keyless_client::Connection {
    keyless_client::connect(server.addr, "localhost", client_tls(&server.pki))
        .await
        .unwrap()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn lanes_sign_pipelined_mixed_requests_through_a_reload() {
    let (server, keys) = start(KEYS, &["--multibuffer", "on"], Some("reference"));
    assert!(
        server
            .log()
            .contains("signing: multi-buffer on every core, AWS-LC one lane at a time"),
        "{}",
        server.log()
    );
    block_on(async {
        let conn = connect(&server).await;
        let report = conformance::run(&conn, &keys).await;
        let failed: Vec<_> = report.failed().map(|o| format!("{o:?}")).collect();
        assert!(failed.is_empty(), "conformance through lanes: {failed:#?}");
        for wave in 0..6 {
            if wave == 3 {
                server.signal("-HUP"); // reload while requests are in flight
            }
            assert_eq!(pipelined(&conn, &keys, 200, wave * 200).await, 0);
        }
    });
    assert!(
        server.log().contains("now serving 8 keys"),
        "the reload happened: {}",
        server.log()
    );
    let metrics = http_get(server.metrics_port, "/metrics");
    assert_eq!(metric(&metrics, "keyless_multibuffer_active "), 1);
    for class in ["ecdsa-p256", "ecdsa-p521", "rsa-2048", "ed25519"] {
        let calls = metric(
            &metrics,
            &format!("keyless_multibuffer_calls_total{{core=\"0\",class=\"{class}\"}}"),
        );
        let lanes = metric(
            &metrics,
            &format!("keyless_multibuffer_lanes_total{{core=\"0\",class=\"{class}\"}}"),
        );
        assert!(
            calls > 0 && lanes >= 3 * calls,
            "{class}: {lanes} lanes in {calls} calls\n{metrics}"
        );
        eprintln!(
            "{class}: {calls} calls, {:.1} lanes per call",
            lanes as f64 / calls as f64
        );
    }
}

#[test]
fn a_faulty_rsa_result_is_answered_with_a_crypto_error_never_sent() {
    let rsa = &[("rsa2048a", KeyType::Rsa2048), ("rsa2048b", KeyType::Rsa2048)];
    let (server, keys) = start(rsa, &[], Some("reference:faults=5"));
    let refused = block_on(async {
        let conn = connect(&server).await;
        let mut refused = 0;
        for wave in 0..4 {
            refused += pipelined(&conn, &keys, 100, wave * 100).await;
        }
        refused
    });
    assert!(refused > 0, "every fifth lane result was corrupted; none was refused");
    assert!(server
        .log()
        .contains("failed its check against the public key and was not sent"));
}

fn test_config(flags: &[&str], config: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    if let Some(extra) = config {
        let mut yaml = std::fs::read_to_string(&pki.config).unwrap();
        yaml.push_str(extra);
        std::fs::write(&pki.config, yaml).unwrap();
    }
    server()
        .env_remove(HOOK)
        .arg("-c")
        .arg(&pki.config)
        .arg("--test-config")
        .args(flags)
        .output()
        .unwrap()
}

#[test]
fn multibuffer_on_starts_only_where_crypto_mb_can_run() {
    let lib = library();
    assert!(
        lib.exists(),
        "{} is missing: unpack libcrypto-mb11 as .ci/run does",
        lib.display()
    );
    let lib = lib.to_str().unwrap();
    let out = test_config(&["--multibuffer", "on", "--multibuffer-library", lib], None);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if cpu_has_ifma() {
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.contains("multi-buffer signing"), "{stdout}");
    } else {
        assert!(!out.status.success(), "`on` must refuse a CPU without IFMA: {stdout}");
        assert!(
            stderr.contains("multibuffer: on, but crypto_mb cannot be used: this CPU lacks AVX-512 IFMA"),
            "{stderr}"
        );
    }
    // `auto` with a library the operator named that cannot load: a
    // warning (their setting did not take), and single signatures.
    let out = test_config(&["--multibuffer-library", "/nonexistent/libcrypto_mb.so.11"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("cannot load /nonexistent/libcrypto_mb.so.11"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(" WARN "), "{line}");
    let out = test_config(&[], Some("multibuffer: maybe\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("multibuffer") && stderr.contains("maybe"), "{stderr}");
    assert!(
        stderr.contains("gokeyless.yaml:9:"),
        "the error names file and line: {stderr}"
    );
}

#[test]
fn auto_and_off_sign_alone_where_lanes_cannot_run() {
    // `auto` with the real library: lanes where the CPU has IFMA, else alone.
    let lib = library();
    let lib = lib.to_str().unwrap();
    let (server, keys) = start(keyless_pki::DEFAULT_KEYS, &["--multibuffer-library", lib], None);
    let active = metric(
        &http_get(server.metrics_port, "/metrics"),
        "keyless_multibuffer_active ",
    );
    if cpu_has_ifma() {
        assert_eq!(active, 1);
    } else {
        assert_eq!(active, 0);
        assert!(
            server.log().contains(
                "signing: AWS-LC single signatures on every core (crypto_mb not used: this CPU lacks AVX-512 IFMA"
            ),
            "{}",
            server.log()
        );
    }
    block_on(async {
        let conn = connect(&server).await;
        assert_eq!(pipelined(&conn, &keys, 64, 0).await, 0);
    });
    drop(server);
    // `off` wins over everything, the test hook included.
    let (server, keys) = start(keyless_pki::DEFAULT_KEYS, &["--multibuffer", "off"], Some("reference"));
    assert_eq!(
        metric(
            &http_get(server.metrics_port, "/metrics"),
            "keyless_multibuffer_active "
        ),
        0
    );
    assert!(server.log().contains("(multibuffer: off)"), "{}", server.log());
    block_on(async {
        let conn = connect(&server).await;
        assert_eq!(pipelined(&conn, &keys, 64, 0).await, 0);
    });
}

#[test]
fn many_connections_with_one_request_each_share_calls() {
    // 24 connections, each with one request in flight at a time: no read
    // holds two requests, so every call spans connections. RSA keeps the
    // core busy long enough for other connections' requests to arrive.
    let rsa = &[("rsa2048a", KeyType::Rsa2048), ("rsa2048b", KeyType::Rsa2048)];
    let (server, keys) = start(rsa, &[], Some("reference"));
    block_on(async {
        let conns = join_all((0..24).map(|_| connect(&server))).await;
        join_all(conns.into_iter().enumerate().map(|(c, conn)| {
            let keys = &keys;
            async move {
                for i in 0..20 {
                    assert_eq!(pipelined(&conn, keys, 1, c * 1000 + i).await, 0);
                }
            }
        }))
        .await;
    });
    let metrics = http_get(server.metrics_port, "/metrics");
    let calls = metric(
        &metrics,
        "keyless_multibuffer_calls_total{core=\"0\",class=\"rsa-2048\"}",
    );
    let lanes = metric(
        &metrics,
        "keyless_multibuffer_lanes_total{core=\"0\",class=\"rsa-2048\"}",
    );
    let alone = metric(
        &metrics,
        "keyless_multibuffer_alone_total{core=\"0\",class=\"rsa-2048\"}",
    );
    eprintln!("480 requests on 24 connections: {calls} calls of {lanes} lanes, {alone} alone");
    assert_eq!(lanes + alone, 480, "every request signed once: {metrics}");
    assert!(calls > 0, "requests of different connections never shared a call");
}

#[test]
fn requests_handed_to_another_core_share_its_calls() {
    // Two cores, one connection: the reading core keeps part of each read
    // and hands the rest to the other core one by one; those park there and
    // fill that core's calls. Every answer is verified.
    let p256 = &[("p256a", KeyType::EcdsaP256), ("p256b", KeyType::EcdsaP256)];
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::generate(dir.path(), p256, 0).unwrap();
    let keys = conformance::load_expected_keys(&pki.pubkeys_dir).unwrap();
    let server = Running::start_in(dir, pki, &["--workers", "2"], &[(HOOK, Path::new("reference"))]);
    block_on(async {
        let conn = connect(&server).await;
        for wave in 0..8 {
            assert_eq!(pipelined(&conn, &keys, 256, wave * 256).await, 0);
        }
    });
    let metrics = http_get(server.metrics_port, "/metrics");
    let handed = metric(&metrics, "keyless_core_handled_for_others_total");
    let mut lanes_total = 0;
    for core in 0..2 {
        let series = |name: &str| format!("{name}{{core=\"{core}\",class=\"ecdsa-p256\"}}");
        let calls = metric(&metrics, &series("keyless_multibuffer_calls_total"));
        let lanes = metric(&metrics, &series("keyless_multibuffer_lanes_total"));
        let alone = metric(&metrics, &series("keyless_multibuffer_alone_total"));
        eprintln!("core {core}: {calls} calls of {lanes} lanes, {alone} alone");
        lanes_total += lanes + alone;
    }
    assert_eq!(lanes_total, 2048, "every request signed once: {metrics}");
    assert!(handed > 0, "the reading core handed nothing over: {metrics}");
    let series = "keyless_multibuffer_calls_total{core=\"1\",class=\"ecdsa-p256\"}";
    assert!(
        metric(&metrics, series) > 0,
        "{handed} handed over, none in a call on core 1: {metrics}"
    );
}

/// Digests at the edges of a curve's order `n` (hex): zero, n, n + 1, all
/// ones, one. crypto_mb refuses the first two (zero once reduced); AWS-LC
/// signs all five, so every path must.
fn edge_digests(n: &str) -> Vec<Vec<u8>> {
    let n = hex::decode(n).unwrap();
    let mut n_plus_1 = n.clone();
    *n_plus_1.last_mut().unwrap() += 1; // n ends in 0x51 / 0x73: no carry
    let mut one = vec![0u8; n.len()];
    *one.last_mut().unwrap() = 1;
    vec![vec![0u8; n.len()], n.clone(), n_plus_1, vec![0xff; n.len()], one]
}

#[test]
fn digests_crypto_mb_refuses_get_the_single_paths_signature_on_every_path() {
    const P256_N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
    const P384_N: &str =
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";
    let lib = library();
    let lib = lib.to_str().unwrap();
    let ec = &[("p256", KeyType::EcdsaP256), ("p384", KeyType::EcdsaP384)];
    // (flags, test hook, whether lanes run): the reference everywhere, the
    // library where the CPU has IFMA, and AWS-LC alone.
    let paths: [(&[&str], Option<&str>, bool); 3] = [
        (&["--multibuffer", "on"], Some("reference"), true),
        (&["--multibuffer-library", lib], None, cpu_has_ifma()),
        (&["--multibuffer", "off"], None, false),
    ];
    for (flags, hook, lanes) in paths {
        let (server, keys) = start(ec, flags, hook);
        block_on(async {
            let conn = connect(&server).await;
            for key in &keys {
                let (opcode, n) = match key.info.algorithm {
                    keyless_keys::KeyAlgorithm::EcdsaP256 => (Opcode::ECDSA_SIGN_SHA256, P256_N),
                    _ => (Opcode::ECDSA_SIGN_SHA384, P384_N),
                };
                for digest in edge_digests(n) {
                    // Eight pipelined requests of one digest fill a call.
                    let answers = join_all((0..8).map(|_| conn.perform(opcode, key.info.ski, &digest))).await;
                    for answer in answers {
                        let sig = answer
                            .unwrap_or_else(|e| panic!("{flags:?} {}: digest {}: {e}", key.name, hex::encode(&digest)));
                        check(key, opcode, &digest, &None, &sig);
                    }
                }
            }
        });
        let metrics = http_get(server.metrics_port, "/metrics");
        let fallbacks = metric(&metrics, "keyless_multibuffer_fallbacks_total");
        let calls = metric(&metrics, "keyless_multibuffer_calls_total");
        eprintln!("{flags:?}: {calls} calls, {fallbacks} lanes signed alone after a refusal");
        if lanes {
            // Zero and n, eight each, for two curves: those that went into
            // a call were refused there and signed alone.
            assert!(calls > 0, "{flags:?}: no call was made\n{metrics}");
            assert!(
                fallbacks > 0 && fallbacks <= 32,
                "{flags:?}: {fallbacks} fallbacks\n{metrics}"
            );
        } else {
            assert_eq!(fallbacks, 0, "{flags:?}\n{metrics}");
        }
        assert!(!server.log().contains("crypto error"), "{}", server.log());
        // crypto_mb, loaded and called under the sandbox (on by default).
        assert!(server.log().contains("seccomp on every thread"), "{}", server.log());
    }
}
