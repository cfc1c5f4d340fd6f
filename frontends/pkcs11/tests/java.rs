//! OpenJDK 17's SunPKCS11 provider loads the module: a KeyStore lists each
//! key with its certificate, and a JSSE server completes TLS 1.2 (ECDSA)
//! and TLS 1.3 (RSA-PSS) handshakes with `openssl s_client`, each signed
//! at the key server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_jsse_server_with_keys_in_the_module_answers_s_client() {
    let server = key_server("127.0.0.1:0".parse().unwrap());
    // One key per type: JSSE's key manager takes the first EC key for
    // every ECDSA suite, whatever the client's curves (and, as for libp11,
    // Java 17's SunPKCS11 predates PKCS#11 3.0's Ed25519 keys).
    let keys = ["p256", "rsa2048"];
    let config = module_config_with("java", &[server.addr], &keys, "");
    let dir = tempfile::tempdir().unwrap();
    let sunpkcs11 = dir.path().join("sunpkcs11.cfg");
    std::fs::write(
        &sunpkcs11,
        format!("name = keyless\nlibrary = {}\nslot = 0\n", module_path().display()),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/Server.java");
    let mut java = Spawned(
        Command::new("java")
            .arg(&source)
            .arg(&sunpkcs11)
            .arg(port.to_string())
            .arg("2")
            .env("KEYLESS_PKCS11_CONFIG", &config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(java.stdout.take().unwrap());
    let mut listed = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !listed.contains("listening") {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
            let _ = java.kill();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut java.stderr.take().unwrap(), &mut err);
            panic!("java:\n{listed}\n{err}");
        }
        listed.push_str(&line);
    }
    for label in &keys {
        assert!(
            listed.contains(&format!("alias {label} key=true cert=true")),
            "{label}:\n{listed}"
        );
    }

    let ca = fixture().pki.ca_cert.clone();
    // The client offers one key's signature scheme for the handshake,
    // and ECDSA with SHA-384 for the chain (the development CA's).
    for (version, choice, sigalgs, expect) in [
        (
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "Peer signature type: ECDSA",
        ),
        (
            "-tls1_3",
            "-sigalgs",
            "rsa_pss_rsae_sha256:ecdsa_secp384r1_sha384",
            "Peer signature type: RSA-PSS",
        ),
    ] {
        let before = server.signatures();
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-CAfile"])
            .arg(&ca)
            .args(["-verify_return_error", version, choice, sigalgs])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("Verify return code: 0 (ok)"),
            "{text}"
        );
        assert!(text.contains(expect), "{text}");
        assert_eq!(
            server.signatures() - before,
            1,
            "{version}: one signature at the key server"
        );
    }
    let status = java.wait().unwrap();
    assert!(status.success(), "java: {status}");
}
