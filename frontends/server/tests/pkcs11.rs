//! The key server with its keys in a real SoftHSM2 token: the same
//! conformance suite the in-memory keys pass, pipelined load through a
//! small queue, and requests that outlive their timeout answered with an
//! error while the server keeps serving.

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::future::join_all;
use keyless_engine::runtime::RuntimeConfig;
use keyless_keys::memory::PublicKey;
use keyless_keys::{Hash, Operation, Pkcs11Source, SharedKey};
use keyless_pki::softhsm::{ImportedKey, SoftHsm, SOFTHSM_MODULE};
use keyless_pki::{DevPki, KeyType};
use keyless_protocol::{ErrorCode, Opcode};
use keyless_tools::conformance::{self, ExpectedKey};

const PIN: &str = "1234";

struct Fixture {
    addr: std::net::SocketAddr,
    pki: DevPki,
    /// Keys of the token served with default settings.
    conformance: Vec<ImportedKey>,
    /// One P-256 key behind one session and a queue of 4.
    narrow: ImportedKey,
    /// One RSA-2048 key whose requests time out after 1 ms.
    hurried: ImportedKey,
    _dir: tempfile::TempDir,
}

fn load(token: &str, options: keyless_hsm::Options) -> Vec<SharedKey> {
    let source = Pkcs11Source::new(format!(
        "pkcs11:token={token}?module-path={SOFTHSM_MODULE}&pin-value={PIN}"
    ));
    keyless_hsm::load(&source, &options).unwrap()
}

fn server() -> &'static Fixture {
    static SERVER: OnceLock<Fixture> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(&dir.path().join("pki"), &[], 0).unwrap();
        let hsm = SoftHsm::create(&dir.path().join("hsm")).unwrap();
        std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
        hsm.init_token("keyless", PIN, "5678").unwrap();
        let conformance: Vec<ImportedKey> = [
            ("rsa-2048", KeyType::Rsa2048),
            ("p256", KeyType::EcdsaP256),
            ("p384", KeyType::EcdsaP384),
            ("ed25519", KeyType::Ed25519),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (label, kind))| hsm.import_new_key("keyless", PIN, label, i as u8 + 1, kind).unwrap())
        .collect();
        hsm.init_token("narrow", PIN, "5678").unwrap();
        let narrow = hsm
            .import_new_key("narrow", PIN, "p256", 1, KeyType::EcdsaP256)
            .unwrap();
        hsm.init_token("hurried", PIN, "5678").unwrap();
        let hurried = hsm.import_new_key("hurried", PIN, "rsa", 1, KeyType::Rsa2048).unwrap();

        let mut keys = load("keyless", keyless_hsm::Options::default());
        keys.extend(load(
            "narrow",
            keyless_hsm::Options {
                sessions: 1,
                queue: 4,
                timeout: Duration::from_secs(30),
            },
        ));
        keys.extend(load(
            "hurried",
            keyless_hsm::Options {
                sessions: 1,
                queue: 1024,
                timeout: Duration::from_millis(1),
            },
        ));
        let tls = keyless_server::tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca_cert).unwrap();
        let running = keyless_server::start_with(
            &"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into(),
            tls,
            keys,
            RuntimeConfig {
                cores: 2,
                ..RuntimeConfig::default()
            },
            keyless_server::connection::Limits::default(),
        )
        .unwrap();
        let addr = running.addr;
        std::mem::forget(running);
        Fixture {
            addr,
            pki,
            conformance,
            narrow,
            hurried,
            _dir: dir,
        }
    })
}

async fn connect(f: &Fixture) -> keyless_client::Connection {
    let tls = keyless_client::client_config_from_files(&f.pki.ca_cert, &f.pki.client_cert, &f.pki.client_key).unwrap();
    keyless_client::connect(f.addr, "localhost", tls).await.unwrap()
}

fn expected(key: &ImportedKey) -> ExpectedKey {
    let der = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(key.public_pem.as_bytes()).unwrap();
    ExpectedKey::from_spki(&key.label, der.as_ref()).unwrap()
}

use rustls_pki_types::pem::PemObject;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_keys_pass_the_conformance_suite() {
    let f = server();
    let keys: Vec<ExpectedKey> = f.conformance.iter().map(expected).collect();
    let conn = connect(f).await;
    let report = conformance::run(&conn, &keys).await;
    let failures: Vec<String> = report.failed().map(|o| format!("{}: {:?}", o.name, o.result)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(report.passed() > 4 * 5, "only {} checks ran", report.passed());
}

/// 600 requests pipelined on two connections through one session and a
/// queue of 4: the cores wait for room (backpressure), nothing fails, and
/// every signature verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_through_a_small_queue_all_verify() {
    let f = server();
    let key = expected(&f.narrow);
    let verifier = PublicKey::from_spki(&key.info.spki_der).unwrap();
    let conns = [connect(f).await, connect(f).await];
    let calls = (0..600u32).map(|i| {
        let conn = &conns[i as usize % 2];
        let digest = [(i % 251) as u8; 32];
        let ski = key.info.ski;
        async move { (digest, conn.perform(Opcode::ECDSA_SIGN_SHA256, ski, &digest).await) }
    });
    for (digest, result) in join_all(calls).await {
        let signature = result.expect("every request is answered with a signature");
        verifier
            .verify(Operation::Ecdsa(Hash::Sha256), &digest, &signature)
            .expect("signature verifies");
    }
}

/// Requests for a key whose HSM cannot keep up with the configured 1 ms
/// timeout get the internal-error code (never a hang); whatever is answered
/// verifies; the connection and the server stay healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_their_timeout_fail_cleanly() {
    let f = server();
    let key = expected(&f.hurried);
    let verifier = PublicKey::from_spki(&key.info.spki_der).unwrap();
    let conn = connect(f).await;
    let calls = (0..200u8).map(|i| {
        let conn = &conn;
        let digest = [i; 32];
        async move {
            (
                digest,
                conn.perform(Opcode::RSA_SIGN_SHA256, key.info.ski, &digest).await,
            )
        }
    });
    let results = tokio::time::timeout(Duration::from_secs(30), join_all(calls))
        .await
        .expect("every request is answered well within the test's bound");
    let mut timed_out = 0;
    for (digest, result) in results {
        match result {
            Ok(signature) => verifier
                .verify(Operation::RsaPkcs1(Hash::Sha256), &digest, &signature)
                .expect("signature verifies"),
            Err(keyless_client::ClientError::Remote(ErrorCode::Internal)) => timed_out += 1,
            Err(e) => panic!("unexpected answer: {e}"),
        }
    }
    assert!(
        timed_out > 0,
        "200 RSA signatures on one SoftHSM session cannot all finish within 1 ms"
    );
    assert_eq!(conn.ping(b"still there").await.unwrap(), b"still there");
    // The other tokens are unaffected.
    let p256 = expected(&f.conformance[1]);
    let signature = conn
        .perform(Opcode::ECDSA_SIGN_SHA256, p256.info.ski, &[9; 32])
        .await
        .unwrap();
    PublicKey::from_spki(&p256.info.spki_der)
        .unwrap()
        .verify(Operation::Ecdsa(Hash::Sha256), &[9; 32], &signature)
        .unwrap();
    // Jobs whose request already failed are skipped, not signed for
    // nobody (the worker gets to them after the answers went out).
    let abandoned = || -> u64 {
        keyless_hsm::snapshots()
            .iter()
            .filter(|s| s.token.contains("hurried"))
            .map(|s| s.abandoned)
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while abandoned() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(abandoned() > 0, "timed-out jobs should be dropped unperformed");
}
