//! The sandbox the key server puts itself in (on by default): what it
//! refuses, tried from inside the running server through the probe hook
//! (`KEYLESS_SANDBOX_PROBE`), the same probes allowed with `sandbox: off`
//! (so the refusals are the sandbox's), and an HSM whose files lie outside
//! the server's folders, served once the operator lists them.

mod running;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use running::*;

/// Wait until the log holds `line` (or the process has exited).
fn wait_for(server: &mut Running, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = server.log();
        if log.contains(line) || server.child.try_wait().unwrap().is_some() {
            return server.log();
        }
        assert!(Instant::now() < deadline, "no `{line}` in:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One ECDSA signature from the server, verified.
fn signs(server: &Running) {
    let keys = keyless_tools::conformance::load_expected_keys(&server.pki.pubkeys_dir).unwrap();
    let p256 = keys.into_iter().find(|k| k.name == "p256").unwrap();
    block_on(async {
        let conn = keyless_client::connect(server.addr, "localhost", client_tls(&server.pki))
            .await
            .unwrap();
        let digest = [9u8; 32];
        let sig = conn
            .perform(keyless_protocol::Opcode::ECDSA_SIGN_SHA256, p256.info.ski, &digest)
            .await
            .unwrap();
        p256.verifier
            .verify(
                keyless_keys::Operation::Ecdsa(keyless_keys::Hash::Sha256),
                &digest,
                &sig,
            )
            .unwrap();
    });
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// Probes from inside the server, with the sandbox as `extra` sets it.
fn probe(extra: &[&str]) -> (String, Running) {
    // A port something listens on: only the sandbox can refuse it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    let key = pki.keys_dir.join("p256.key");
    let probes = format!(
        "open:/etc/shadow;open:{};connect:127.0.0.1:{port};spawn:/bin/true",
        key.display()
    );
    let mut server = Running::start_in(dir, pki, extra, &[("KEYLESS_SANDBOX_PROBE", Path::new(&probes))]);
    let log = wait_for(&mut server, "sandbox probe: spawn");
    signs(&server);
    drop(listener);
    (log, server)
}

#[test]
fn the_sandbox_refuses_files_ports_and_programs_the_server_has_no_business_with() {
    let (log, server) = probe(&[]);
    assert!(log.contains("sandbox: landlock enforced"), "{log}");
    assert!(log.contains("seccomp on every thread"), "{log}");
    // Even to root: Landlock holds whatever the file modes say.
    assert!(
        log.contains("sandbox probe: open /etc/shadow: refused (Permission denied"),
        "{log}"
    );
    assert!(log.contains("p256.key: ALLOWED"), "its own keys stay readable: {log}");
    assert!(
        log.contains(": refused (Permission denied") && log.contains("sandbox probe: connect 127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains("sandbox probe: spawn /bin/true: refused (Operation not permitted"),
        "{log}"
    );
    drop(server);

    // The same probes without the sandbox: allowed, so the refusals above
    // were the sandbox's.
    let (log, _server) = probe(&["--sandbox", "off"]);
    assert!(
        log.contains("sandbox: off: a bug that runs code in this process"),
        "{log}"
    );
    if is_root() {
        assert!(log.contains("sandbox probe: open /etc/shadow: ALLOWED"), "{log}");
    }
    assert!(log.contains("sandbox probe: spawn /bin/true: ALLOWED"), "{log}");
    let connect = log.lines().find(|l| l.contains("sandbox probe: connect")).unwrap();
    assert!(connect.ends_with("ALLOWED"), "{log}");
}

#[test]
fn execve_stops_the_process_with_a_line_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = keyless_pki::DevPki::generate(dir.path(), keyless_pki::DEFAULT_KEYS, 0).unwrap();
    // It stops before it writes a pid file: run it to its end.
    let out = server()
        .arg("-c")
        .arg(&pki.config)
        .args(["--listen-host", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["--metrics-port", &free_port().to_string()])
        .env("KEYLESS_SANDBOX_PROBE", "exec:/bin/true")
        .output()
        .unwrap();
    let (status, log) = (out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{log}");
    assert!(
        log.contains(&format!("sandbox: system call execve ({}", libc::SYS_execve)),
        "{log}"
    );
    assert!(!log.contains("sandbox probe: exec"), "execve returned: {log}");
}

#[test]
fn a_new_key_folder_outside_the_sandbox_says_a_restart_applies_it() {
    let mut server = Running::start(&[]);
    let elsewhere = tempfile::tempdir().unwrap();
    let ed = keyless_pki::KeyType::Ed25519.generate().unwrap();
    std::fs::write(elsewhere.path().join("ed.key"), ed.serialize_pem()).unwrap();
    let config = std::fs::read_to_string(&server.pki.config).unwrap();
    let config = config.replacen(
        "private_key_stores:\n",
        &format!("private_key_stores:\n  - dir: {}\n", elsewhere.path().display()),
        1,
    );
    std::fs::write(&server.pki.config, config).unwrap();
    server.signal("-HUP");
    let log = wait_for(&mut server, "SIGHUP: reload failed");
    assert!(
        log.contains("the sandbox set at start does not cover: a restart applies it"),
        "{log}"
    );
    // Still serving what it served.
    signs(&server);
}

/// SoftHSM with its configuration and tokens in a folder of their own, as
/// on a host (/etc/softhsm, /var/lib/softhsm): refused until the operator
/// lists them, then every signature verified.
#[test]
fn an_hsm_whose_files_lie_elsewhere_is_served_once_they_are_listed() {
    use keyless_pki::softhsm::{SoftHsm, SOFTHSM_MODULE};
    let hsm_dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::create(hsm_dir.path()).unwrap();
    hsm.init_token("sandboxed", "s3cret-Pin", "5678").unwrap();
    let key = hsm
        .import_new_key("sandboxed", "s3cret-Pin", "site", 1, keyless_pki::KeyType::EcdsaP256)
        .unwrap();
    let start = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let pki = keyless_pki::DevPki::generate(dir.path(), &[], 0).unwrap();
        let config = std::fs::read_to_string(&pki.config).unwrap().replace(
            &format!("  - dir: {}\n", pki.keys_dir.display()),
            &format!(
                "  - uri: \"pkcs11:token=sandboxed;object=site?module-path={SOFTHSM_MODULE}&pin-value=s3cret-Pin\"\n"
            ),
        );
        std::fs::write(&pki.config, config).unwrap();
        let mut command = server();
        command
            .arg("-c")
            .arg(&pki.config)
            .args(["--listen-host", "127.0.0.1", "--port", &free_port().to_string()])
            .args(["--metrics-port", "0"])
            .args(extra)
            .env("SOFTHSM2_CONF", &hsm.conf);
        (dir, pki, command)
    };
    // Not listed: start-up fails, and says what to list.
    let (_dir, _pki, mut command) = start(&[]);
    let out = command.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("sandbox_read_paths, sandbox_write_paths or sandbox_connect_ports"),
        "{log}"
    );

    // Listed: served.
    let read = format!("{}", hsm.conf.display());
    let write = format!("{}", hsm.tokens.display());
    let (dir, pki, _) = start(&[]);
    let mut server = Running::start_in(
        dir,
        pki,
        &["--sandbox-read-paths", &read, "--sandbox-write-paths", &write],
        &[("SOFTHSM2_CONF", &hsm.conf)],
    );
    let log = wait_for(&mut server, "sandbox: landlock");
    assert!(
        log.contains("TCP connect: any port (a PKCS#11 module is loaded"),
        "{log}"
    );
    server.signs_ecdsa_p256(&key.public_pem, 20);
    server.signal("-TERM");
    assert_eq!(server.child.wait().unwrap().code(), Some(0), "{}", server.log());
}
