//! A key server for tests: a fresh PKI and keys in a temporary folder, served
//! by the real listener over real TLS on 127.0.0.1.
//!
//! One server per test binary: every glommio core locks 1 MiB of io_uring
//! memory and `ulimit -l` is 8 MiB, so tests share it instead of each
//! starting their own.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use keyless_engine::runtime::RuntimeConfig;
use keyless_pki::{DevPki, KeyType};
use rustls::ClientConfig;

pub struct Fixture {
    pub addr: SocketAddr,
    pub shared: Arc<keyless_engine::shared::Shared>,
    pub pki: DevPki,
    _dir: tempfile::TempDir,
}

pub const TEST_KEYS: &[(&str, KeyType)] = &[
    ("ecdsa-p256", KeyType::EcdsaP256),
    ("ecdsa-p384", KeyType::EcdsaP384),
    ("ecdsa-p521", KeyType::EcdsaP521),
    ("ed25519", KeyType::Ed25519),
    ("rsa-2048", KeyType::Rsa2048),
    ("rsa-4096", KeyType::Rsa4096),
];

/// The shared server (started on first use).
pub fn server() -> &'static Fixture {
    static SERVER: OnceLock<Fixture> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(dir.path(), TEST_KEYS, 0).unwrap();
        let tls = keyless_server::tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca_cert).unwrap();
        let keys = keyless_keys::load_sources(&[keyless_keys::KeySource::Dir(pki.keys_dir.clone())]).unwrap();
        let runtime = RuntimeConfig {
            cores: 2,
            ..RuntimeConfig::default()
        };
        let running = keyless_server::start_with(
            &keyless_server::Listen {
                tcp: Some("127.0.0.1:0".parse().unwrap()),
                unix: Some(dir.path().join("keyless.sock")),
                dial: None,
            },
            tls,
            keys,
            runtime,
            keyless_server::connection::Limits::default(),
        )
        .unwrap();
        let addr = running.addr;
        let shared = running.shared.clone();
        std::mem::forget(running); // serves until the test process exits
        Fixture {
            addr,
            shared,
            pki,
            _dir: dir,
        }
    })
}

impl Fixture {
    /// The client's TLS configuration with the test client certificate.
    pub fn client_tls(&self) -> Arc<ClientConfig> {
        keyless_client::client_config_from_files(&self.pki.ca_cert, &self.pki.client_cert, &self.pki.client_key)
            .unwrap()
    }

    pub async fn connect(&self) -> keyless_client::Connection {
        keyless_client::connect(self.addr, "localhost", self.client_tls())
            .await
            .unwrap()
    }

    pub fn pubkeys(&self) -> &Path {
        &self.pki.pubkeys_dir
    }
}
