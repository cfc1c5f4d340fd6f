//! The conformance suite against a live server over mutual TLS: every
//! opcode on every key type and hash, every signature verified.

mod common;

use std::sync::Arc;

use keyless_tools::conformance;

fn assert_all_passed(report: &conformance::Report) {
    let failures: Vec<String> = report.failed().map(|o| format!("{}: {:?}", o.name, o.result)).collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Six keys, each with 16 signing opcodes and more: the suite really ran.
    assert!(report.passed() > 6 * 16, "only {} checks ran", report.passed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_opcode_every_key_over_tls13() {
    let server = common::server();
    let keys = conformance::load_expected_keys(server.pubkeys()).unwrap();
    assert_eq!(keys.len(), common::TEST_KEYS.len());
    let conn = server.connect().await;
    assert_all_passed(&conformance::run(&conn, &keys).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gokeyless_cipher_suite_over_tls12() {
    let server = common::server();
    let keys = conformance::load_expected_keys(server.pubkeys()).unwrap();
    // What gokeyless and Cloudflare's edge negotiate: TLS 1.2,
    // ECDHE-ECDSA-AES256-GCM-SHA384 with P-384 certificates.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.suite() == rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
    let base = server.client_tls();
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in keyless_server::tls::load_certs(&server.pki.ca_cert).unwrap() {
            r.add(c).unwrap();
        }
        r
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            keyless_server::tls::load_certs(&server.pki.client_cert).unwrap(),
            rustls_pki_types::pem::PemObject::from_pem_file(&server.pki.client_key).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = base.alpn_protocols.clone();
    let stream = keyless_client::connect_stream(server.addr, "localhost", Arc::new(config.clone()))
        .await
        .unwrap();
    let (_, session) = stream.get_ref();
    assert_eq!(session.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(
        session.negotiated_cipher_suite().unwrap().suite(),
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    );
    drop(stream);
    let conn = keyless_client::connect(server.addr, "localhost", Arc::new(config))
        .await
        .unwrap();
    assert_all_passed(&conformance::run(&conn, &keys).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_at_once_all_verified() {
    let server = common::server();
    let keys = Arc::new(conformance::load_expected_keys(server.pubkeys()).unwrap());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            let conn = common::server().connect().await;
            let ecdsa: Vec<_> = keys.iter().filter(|k| k.name.starts_with("ecdsa-p256")).collect();
            for k in ecdsa {
                let input = [7u8; 32];
                let sig = conn
                    .perform(keyless_protocol::Opcode::ECDSA_SIGN_SHA256, k.info.ski, &input)
                    .await
                    .unwrap();
                k.verifier
                    .verify(
                        keyless_keys::Operation::Ecdsa(keyless_protocol::Hash::Sha256),
                        &input,
                        &sig,
                    )
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_speaks_mutual_tls_too() {
    let server = common::server();
    let keys = conformance::load_expected_keys(server.pubkeys()).unwrap();
    let socket = server.pki.dir.join("keyless.sock");
    let conn = keyless_client::connect_unix(&socket, "localhost", server.client_tls())
        .await
        .unwrap();
    assert_all_passed(&conformance::run(&conn, &keys).await);
    // And without a client certificate it is refused.
    let anonymous =
        keyless_client::client_config(keyless_server::tls::load_certs(&server.pki.ca_cert).unwrap(), None).unwrap();
    match keyless_client::connect_unix(&socket, "localhost", anonymous).await {
        Err(_) => {}
        Ok(c) => assert!(c.ping(b"x").await.is_err(), "served without a client certificate"),
    }
    // The refusal is the certificate's doing: the socket still serves.
    assert_eq!(conn.ping(b"still").await.unwrap(), b"still");
}
