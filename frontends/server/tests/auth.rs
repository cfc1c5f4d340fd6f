//! Mutual TLS: only clients with a valid certificate from the configured CA
//! get in. Real certificates, the real listener, and the real `openssl`
//! binary for interop.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use keyless_pki::{Ca, Usage};
use keyless_protocol::{split_frame, Frame, Message, Opcode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ca_roots() -> Vec<CertificateDer<'static>> {
    keyless_server::tls::load_certs(&common::server().pki.ca_cert).unwrap()
}

fn identity(issued: &keyless_pki::Issued) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
    )
}

/// Whether the server answers a ping from a client with this configuration.
async fn served(config: Arc<rustls::ClientConfig>) -> bool {
    let server = common::server();
    let Ok(mut stream) = keyless_client::connect_stream(server.addr, "localhost", config).await else {
        return false; // TLS 1.2: refused during the handshake
    };
    let ping = Frame::new(1, Message::request(Opcode::PING, None, b"hi".to_vec()))
        .encode()
        .unwrap();
    if stream.write_all(&ping).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 2048];
    let mut got = 0;
    // TLS 1.3: the server checks our certificate after our side is done and
    // answers a bad one with an alert, which surfaces here.
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got += n,
            }
            if let Some(raw) = split_frame(&buf[..got]) {
                return raw.decode().unwrap().message.opcode == Some(Opcode::PONG);
            }
        }
    })
    .await;
    read.expect("server neither answered nor closed within 10 s")
}

fn with_identity(id: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>) -> Arc<rustls::ClientConfig> {
    keyless_client::client_config(ca_roots(), id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_client_certificate_is_served() {
    assert!(served(common::server().client_tls()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    assert!(!served(with_identity(None)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let other = Ca::new("some other CA").unwrap();
    let issued = other.issue("intruder", &[], Usage::Client).unwrap();
    assert!(!served(with_identity(Some(identity(&issued)))).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let ca = common::server().pki.ca().unwrap();
    let now = OffsetDateTime::now_utc();
    let issued = ca
        .issue_with(
            "expired",
            &[],
            &[Usage::Client],
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .unwrap();
    assert!(!served(with_identity(Some(identity(&issued)))).await);
    // Control: the same CA's valid client certificate is served.
    let good = ca.issue("fresh", &[], Usage::Client).unwrap();
    assert!(served(with_identity(Some(identity(&good)))).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_only_certificate_is_refused_as_a_client() {
    let ca = common::server().pki.ca().unwrap();
    let issued = ca.issue("not a client", &["localhost"], Usage::Server).unwrap();
    assert!(!served(with_identity(Some(identity(&issued)))).await);
}

/// Run `openssl s_client` with a keyless ping on stdin; return what came back.
fn openssl_ping(extra: &[&str]) -> Option<Frame> {
    let server = common::server();
    let ping = Frame::new(77, Message::request(Opcode::PING, None, b"openssl".to_vec()))
        .encode()
        .unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-quiet",
        "-connect",
        &server.addr.to_string(),
        "-servername",
        "localhost",
    ])
    .args(["-CAfile", server.pki.ca_cert.to_str().unwrap(), "-verify_return_error"])
    .args(extra)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("openssl binary");
    child.stdin.as_mut().unwrap().write_all(&ping).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1024];
        let ok = stdout.read_exact(&mut buf).is_ok();
        let _ = tx.send(ok.then_some(buf));
    });
    let answer = rx.recv_timeout(Duration::from_secs(10)).ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    answer.map(|b| split_frame(&b).expect("one whole frame").decode().unwrap())
}

#[test]
fn openssl_s_client_with_the_client_certificate_gets_a_pong() {
    let pki = &common::server().pki;
    let cert = [
        "-cert",
        pki.client_cert.to_str().unwrap(),
        "-key",
        pki.client_key.to_str().unwrap(),
    ];
    for version in ["-tls1_2", "-tls1_3"] {
        let mut args = cert.to_vec();
        args.push(version);
        let pong = openssl_ping(&args).unwrap_or_else(|| panic!("no answer over {version}"));
        assert_eq!(pong.id, 77);
        assert_eq!(pong.message.opcode, Some(Opcode::PONG));
        assert_eq!(pong.message.payload.as_deref(), Some(&b"openssl"[..]));
    }
}

#[test]
fn openssl_s_client_without_a_certificate_is_refused() {
    for version in ["-tls1_2", "-tls1_3"] {
        assert!(
            openssl_ping(&[version]).is_none(),
            "served without a certificate over {version}"
        );
    }
}
