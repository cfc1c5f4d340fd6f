//! What the edge's end-to-end tests share: one development PKI, the access
//! log as logged, a lock (tests count signatures on shared key servers and
//! each glommio core locks memory), key servers and edges, TLS clients.

#![allow(dead_code)] // each test binary uses some of these

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use keyless_engine::runtime::RuntimeConfig;
use keyless_pki::DevPki;

pub struct Fixture {
    pub pki: DevPki,
    pub dir: tempfile::TempDir,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .with(AccessLines);
        let _ = tracing::subscriber::set_global_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(&dir.path().join("pki"), keyless_pki::DEFAULT_KEYS, 0).unwrap();
        Fixture { pki, dir }
    })
}

/// The edge's access log lines (target `access`), as logged.
pub static ACCESS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct AccessLines;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AccessLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        if event.metadata().target() == "access" {
            let mut message = Message(String::new());
            event.record(&mut message);
            ACCESS.lock().unwrap_or_else(|e| e.into_inner()).push(message.0);
        }
    }
}

pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A key server with the development keys on `addr` (port 0: any).
pub fn key_server(addr: SocketAddr) -> keyless_server::RunningServer {
    let pki = &fixture().pki;
    let tls = keyless_server::tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca_cert).unwrap();
    let keys = keyless_keys::load_sources(&[keyless_keys::KeySource::Dir(pki.keys_dir.clone())]).unwrap();
    keyless_server::start_with(
        &addr.into(),
        tls,
        keys,
        RuntimeConfig {
            cores: 1,
            ..RuntimeConfig::default()
        },
        keyless_server::connection::Limits {
            drain_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .unwrap()
}

pub fn signatures(server: &keyless_server::RunningServer) -> u64 {
    server.signatures()
}

/// The YAML of an edge in front of `key_servers`, with `extra` appended.
pub fn edge_yaml(key_servers: &[SocketAddr], extra: &str) -> String {
    let pki = &fixture().pki;
    let timeout = if extra.contains("request_timeout_ms") {
        ""
    } else {
        "request_timeout_ms: 1000\n"
    };
    let servers: Vec<String> = key_servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "listen: 127.0.0.1:0\nworkers: 1\nhandshake_threads: 16\n{timeout}health_interval_ms: 100\n\
         certificates:\n  - cert: {}\n    default: true\n  - cert: {}\n    names: [rsa.localhost]\n\
         key_servers: [{}]\nkey_server_name: localhost\nkey_server_ca: {}\nclient_cert: {}\nclient_key: {}\n{extra}",
        pki.sites_dir.join("p256.pem").display(),
        pki.sites_dir.join("rsa2048.pem").display(),
        servers.join(", "),
        pki.ca_cert.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
    )
}

/// The configuration of an edge in front of `key_servers`, with `extra`
/// YAML appended.
pub fn edge_config(key_servers: &[SocketAddr], extra: &str) -> keyless_edge::config::EdgeConfig {
    keyless_edge::config::parse(Path::new("edge.yaml"), &edge_yaml(key_servers, extra)).unwrap()
}

/// An edge in front of `key_servers`, with `extra` YAML appended.
pub fn edge(key_servers: &[SocketAddr], extra: &str) -> keyless_edge::RunningEdge {
    let config = edge_config(key_servers, extra);
    let edge = keyless_edge::start(&config).unwrap();
    assert!(edge.wait_healthy(Duration::from_secs(10)) || key_servers.is_empty());
    edge
}

/// A runtime for a test's TLS client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A TLS connection to `addr` as `localhost`, offering `alpn`.
pub async fn connect(addr: SocketAddr, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tls_client_with_alpn(alpn)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// A TLS client that trusts the development CA, offering `alpn`.
pub fn tls_client_with_alpn(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in keyless_server::tls::load_certs(&fixture().pki.ca_cert).unwrap() {
        roots.add(c).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
