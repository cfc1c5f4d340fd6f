//! Real programs load the module as they would an HSM's, against a real
//! key server on loopback: OpenSC's pkcs11-tool, OpenSSL through libp11's
//! engine (s_server answering s_client), and GnuTLS (p11tool, and
//! gnutls-serv answering gnutls-cli). Every signature is checked: by
//! `openssl` for pkcs11-tool's, by the TLS client's handshake otherwise.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use common::*;

struct Setup {
    server: keyless_server::RunningServer,
    /// Every fixture key.
    config: PathBuf,
    /// Every key but Ed25519: libp11 0.4.12 (Debian 12) stops listing a
    /// token's keys at a key type it does not know (CKK_EC_EDWARDS), so
    /// programs that load keys through it get a configuration without one.
    libp11_config: PathBuf,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let server = key_server("127.0.0.1:0".parse::<SocketAddr>().unwrap());
        let config = module_config("consumers", &[server.addr], "");
        let no_ed25519: Vec<&str> = KEYS.iter().map(|(k, _)| *k).filter(|k| *k != "ed25519").collect();
        let libp11_config = module_config_with("consumers-libp11", &[server.addr], &no_ed25519, "");
        Setup {
            server,
            config,
            libp11_config,
        }
    })
}

/// Tests here count the key server's signatures: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn pkcs11_tool(args: &[&str]) -> String {
    let module = module_path();
    let mut all = vec!["--module", module.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run("pkcs11-tool", &all, &[("KEYLESS_PKCS11_CONFIG", &setup().config)]);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn pkcs11_tool_lists_the_token_and_signs_with_every_mechanism() {
    let _serial = serial();
    let s = setup();
    let slots = pkcs11_tool(&["-L"]);
    assert!(slots.contains("token label        : keyless"), "{slots}");
    let objects = pkcs11_tool(&["-O"]);
    for (label, _) in KEYS {
        assert!(
            objects.contains(&format!("label:      {label}")),
            "{label} in:\n{objects}"
        );
    }
    assert!(objects.contains("Certificate Object; type = X.509 cert"), "{objects}");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let message = b"signed through pkcs11-tool".to_vec();
    let before = s.server.signatures();
    let mut signed = 0;
    for (label, mechanism, input, digest_name, pss) in [
        (
            "p256",
            "ECDSA",
            digest::digest(&digest::SHA256, &message).as_ref().to_vec(),
            Some("sha256"),
            false,
        ),
        ("p256", "ECDSA-SHA256", message.clone(), Some("sha256"), false),
        ("p384", "ECDSA-SHA384", message.clone(), Some("sha384"), false),
        ("p521", "ECDSA-SHA512", message.clone(), Some("sha512"), false),
        ("rsa2048", "SHA256-RSA-PKCS", message.clone(), Some("sha256"), false),
        ("rsa2048", "SHA384-RSA-PKCS", message.clone(), Some("sha384"), false),
        ("rsa2048", "SHA512-RSA-PKCS", message.clone(), Some("sha512"), false),
        ("rsa2048", "SHA256-RSA-PKCS-PSS", message.clone(), Some("sha256"), true),
        ("rsa2048", "SHA384-RSA-PKCS-PSS", message.clone(), Some("sha384"), true),
        ("ed25519", "EDDSA", message.clone(), None, false),
    ] {
        std::fs::write(&data, &input).unwrap();
        let sig = dir.path().join(format!("{label}-{mechanism}.sig"));
        // pkcs11-tool --sign picks its key by CKA_ID (the SKI), not by label.
        let id = ski_hex(label);
        pkcs11_tool(&[
            "--sign",
            "--id",
            &id,
            "-m",
            mechanism,
            "-i",
            data.to_str().unwrap(),
            "-o",
            sig.to_str().unwrap(),
        ]);
        let signature = std::fs::read(&sig).unwrap();
        // Verify over the digest (pkcs11-tool hashed the message itself
        // for the hash-and-sign mechanisms).
        let verified_input = match (mechanism, digest_name) {
            ("ECDSA" | "EDDSA", _) => input.clone(),
            (_, Some("sha256")) => digest::digest(&digest::SHA256, &message).as_ref().to_vec(),
            (_, Some("sha384")) => digest::digest(&digest::SHA384, &message).as_ref().to_vec(),
            (_, Some("sha512")) => digest::digest(&digest::SHA512, &message).as_ref().to_vec(),
            _ => unreachable!(),
        };
        openssl_verify(label, &verified_input, &signature, digest_name, pss);
        signed += 1;
    }
    assert_eq!(
        s.server.signatures() - before,
        signed,
        "one key-server signature per pkcs11-tool signature"
    );
}

#[test]
fn pkcs11_tool_test_passes() {
    let _serial = serial();
    let out = pkcs11_tool(&["--test"]);
    assert!(out.contains("No errors"), "{out}");
}

/// The SKI of a fixture key, in hex: its objects' CKA_ID.
fn ski_hex(label: &str) -> String {
    let pem = std::fs::read(fixture().pki.pubkeys_dir.join(format!("{label}.pem"))).unwrap();
    let spki: rustls_pki_types::SubjectPublicKeyInfoDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let (ski, _) = keyless_keys::identifiers(spki.as_ref()).unwrap();
    hex::encode(ski)
}

fn wait_for_port(port: u16, child: &mut Spawned) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the server exited before listening: {status}\n{err}");
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn openssl_s_server_through_libp11_answers_s_client() {
    let _serial = serial();
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let conf = engine_conf(dir.path());
    for (label, version) in [("p256", "-tls1_2"), ("rsa2048", "-tls1_3")] {
        let port = free_port();
        let cert = fixture().pki.sites_dir.join(format!("{label}.pem"));
        let key = format!("pkcs11:object={label};type=private");
        let mut server = Spawned(
            Command::new("openssl")
                .args([
                    "s_server", "-engine", "pkcs11", "-keyform", "engine", "-key", &key, "-cert",
                ])
                .arg(&cert)
                .args(["-accept", &port.to_string(), "-www"])
                .env("OPENSSL_CONF", &conf)
                .env("KEYLESS_PKCS11_CONFIG", &s.libp11_config)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        wait_for_port(port, &mut server);
        let before = s.server.signatures();
        let out = s_client(port, &[version]);
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        assert!(
            out.contains(if version == "-tls1_3" { "TLSv1.3" } else { "TLSv1.2" }),
            "{out}"
        );
        assert_eq!(
            s.server.signatures() - before,
            1,
            "{label}: one signature for the handshake"
        );
    }
}

#[test]
fn gnutls_lists_the_objects_and_gnutls_serv_answers_gnutls_cli() {
    let _serial = serial();
    let s = setup();
    let module = module_path();
    let listed = run(
        "p11tool",
        &[
            "--provider",
            module.to_str().unwrap(),
            "--list-all",
            "pkcs11:token=keyless",
        ],
        &[("KEYLESS_PKCS11_CONFIG", &s.config)],
    );
    let listed = String::from_utf8_lossy(&listed);
    for (label, _) in KEYS {
        assert!(
            listed.contains(&format!("object={label};type=private")),
            "{label}:\n{listed}"
        );
        assert!(
            listed.contains(&format!("object={label};type=cert")),
            "{label}:\n{listed}"
        );
    }

    for label in ["p256", "rsa2048"] {
        let port = free_port();
        let mut server = Spawned(
            Command::new("gnutls-serv")
                .arg("--provider")
                .arg(&module)
                .args(["-p", &port.to_string(), "--x509certfile"])
                .arg(fixture().pki.sites_dir.join(format!("{label}.pem")))
                .args([
                    "--x509keyfile",
                    &format!("pkcs11:token=keyless;object={label};type=private"),
                ])
                .env("KEYLESS_PKCS11_CONFIG", &s.config)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        wait_for_port(port, &mut server);
        let before = s.server.signatures();
        let mut client = Command::new("gnutls-cli")
            .args(["-p", &port.to_string(), "--x509cafile"])
            .arg(&fixture().pki.ca_cert)
            .arg("localhost")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(client.stdout.take().unwrap());
        let mut transcript = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !transcript.contains("Handshake was completed") {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
                let mut err = String::new();
                let _ = client.stderr.take().unwrap().read_to_string(&mut err);
                panic!("{label}: no handshake:\n{transcript}\n{err}");
            }
            transcript.push_str(&line);
        }
        let _ = client.stdin.take().unwrap().write_all(b"");
        let _ = client.kill();
        let _ = client.wait();
        assert!(
            transcript.contains("Status: The certificate is trusted"),
            "{transcript}"
        );
        assert!(
            s.server.signatures() - before >= 1,
            "{label}: the handshake signed at the key server"
        );
    }
}
