//! A real `keyless-server` process for the binary's tests, and what they
//! share: a fresh development PKI, free ports, its log, HTTP to its metrics.
// Each test binary uses its own part of these.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn server() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyless-server"));
    c.env_remove("KEYLESS_PORT").stdin(Stdio::null());
    c
}

/// Run a future on a fresh single-threaded tokio runtime.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fut)
}

/// The development PKI's client identity.
pub fn client_tls(pki: &keyless_pki::DevPki) -> std::sync::Arc<rustls::ClientConfig> {
    keyless_client::client_config_from_files(&pki.ca_cert, &pki.client_cert, &pki.client_key).unwrap()
}

pub use keyless_tools::process::free_port;

/// A `keyless-server` process on a fresh development PKI, logging to a file.
pub struct Running {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub pki: keyless_pki::DevPki,
    pub pid_file: std::path::PathBuf,
    pub log_file: std::path::PathBuf,
    pub metrics_port: u16,
    pub _dir: tempfile::TempDir,
}

impl Running {
    /// Start with the dev PKI's config plus `extra` flags; wait until it has written its pid file.
    pub fn start(extra: &[&str]) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
        Running::start_in(dir, pki, extra, &[])
    }

    /// Start on an existing PKI folder with extra flags and environment.
    pub fn start_in(
        dir: tempfile::TempDir,
        pki: keyless_pki::DevPki,
        extra: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> Running {
        Running::launch(dir, pki, extra, env, &[])
    }

    /// Start through `wrapper` (a program that sets something up and execs
    /// the rest of its arguments, as `prlimit` or `setpriv`), in the PKI's
    /// folder (where a core file would be written).
    pub fn start_wrapped(wrapper: &[&str], extra: &[&str]) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
        Running::launch(dir, pki, extra, &[], wrapper)
    }

    fn launch(
        dir: tempfile::TempDir,
        pki: keyless_pki::DevPki,
        extra: &[&str],
        env: &[(&str, &std::path::Path)],
        wrapper: &[&str],
    ) -> Running {
        let (port, metrics_port) = (free_port(), free_port());
        let pid_file = dir.path().join("keyless.pid");
        let log_file = dir.path().join("server.log");
        let mut command = match wrapper.split_first() {
            None => server(),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args)
                    .arg(env!("CARGO_BIN_EXE_keyless-server"))
                    .env_remove("KEYLESS_PORT")
                    .stdin(Stdio::null())
                    .current_dir(dir.path());
                c
            }
        };
        let mut child = command
            .arg("-c")
            .arg(&pki.config)
            .args(["--listen-host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--metrics-port", &metrics_port.to_string()])
            .arg("--pid-file")
            .arg(&pid_file)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_file).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pid_file.exists() {
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&log_file).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        Running {
            child,
            addr,
            pki,
            pid_file,
            log_file,
            metrics_port,
            _dir: dir,
        }
    }

    pub fn signal(&self, sig: &str) {
        assert!(Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap()
    }

    /// `n` ECDSA P-256 SHA-256 signatures by the key whose public key is
    /// `public_pem`, each verified.
    pub fn signs_ecdsa_p256(&self, public_pem: &str, n: u8) {
        let expected = {
            let der = rustls_pki_types::pem::PemObject::from_pem_slice(public_pem.as_bytes()).unwrap();
            let der: rustls_pki_types::SubjectPublicKeyInfoDer = der;
            keyless_tools::conformance::ExpectedKey::from_spki("site", der.as_ref()).unwrap()
        };
        block_on(async {
            let conn = keyless_client::connect(self.addr, "localhost", client_tls(&self.pki))
                .await
                .unwrap();
            for i in 0..n {
                let digest = [i; 32];
                let sig = conn
                    .perform(keyless_protocol::Opcode::ECDSA_SIGN_SHA256, expected.info.ski, &digest)
                    .await
                    .unwrap();
                let op = keyless_keys::Operation::Ecdsa(keyless_keys::Hash::Sha256);
                expected.verifier.verify(op, &digest, &sig).unwrap();
            }
        });
    }
}

/// A test that fails (or never stops its server) must not leave the
/// process running after the test binary exits.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(port: u16, path: &str) -> String {
    http_get_within(port, path, Duration::from_secs(10))
}

/// [`http_get`] with its own bound (a profile symbolizes a debug build's
/// frames, which takes seconds on a busy machine).
pub fn http_get_within(port: u16, path: &str, within: Duration) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Take every complete answer off the front of `buf`, each an RSA PKCS#1
/// SHA-256 signature of `[id; 32]` verified against `rsa`; how many.
pub fn take_rsa_answers(buf: &mut Vec<u8>, rsa: &keyless_tools::conformance::ExpectedKey) -> u32 {
    let mut n = 0;
    while let Some(raw) = keyless_protocol::split_frame(buf) {
        let len = raw.header.frame_len();
        let f = raw.decode().unwrap();
        let op = keyless_keys::Operation::RsaPkcs1(keyless_protocol::Hash::Sha256);
        rsa.verifier
            .verify(op, &[f.id as u8; 32], &f.message.payload.unwrap())
            .unwrap();
        n += 1;
        buf.drain(..len);
    }
    n
}

#[allow(unused_imports)]
pub use keyless_tools::process::KillOnDrop;

/// Wait until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
