//! `keyless-tool keystore-debug -c gokeyless.yaml` against real stores: a
//! key folder and a SoftHSM2 token list their keys with the right SKIs; a
//! store with a wrong PIN is named with the reason, and the exit code says
//! something failed.

use std::process::Command;

use keyless_pki::softhsm::{SoftHsm, SOFTHSM_MODULE};
use keyless_pki::{DevPki, KeyType};
use keyless_tools::conformance::load_expected_key;

#[test]
fn lists_every_store_and_names_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::generate(&dir.path().join("pki"), &[("p256", KeyType::EcdsaP256)], 0).unwrap();
    let hsm = SoftHsm::create(&dir.path().join("hsm")).unwrap();
    hsm.init_token("debug", "1234", "5678").unwrap();
    let imported = hsm
        .import_new_key("debug", "1234", "site", 7, KeyType::Rsa2048)
        .unwrap();
    let pem = dir.path().join("site.pub.pem");
    std::fs::write(&pem, &imported.public_pem).unwrap();
    let hsm_ski = load_expected_key(&pem).unwrap().info.ski;
    let file_ski = load_expected_key(&pki.pubkeys_dir.join("p256.pem")).unwrap().info.ski;

    let config = dir.path().join("gokeyless.yaml");
    let uri = |pin: &str| format!("pkcs11:token=debug;object=site?module-path={SOFTHSM_MODULE}&pin-value={pin}");
    let tls = format!(
        "auth_cert: {}\nauth_key: {}\ncloudflare_ca_cert: {}\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca_cert.display()
    );
    std::fs::write(
        &config,
        format!(
            "{tls}private_key_stores:\n  - dir: {}\n  - uri: \"{}\"\n",
            pki.keys_dir.display(),
            uri("1234")
        ),
    )
    .unwrap();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_keyless-tool"))
            .args(["keystore-debug", "-c"])
            .arg(&config)
            .env("SOFTHSM2_CONF", &hsm.conf)
            .output()
            .unwrap();
        let text = format!(
            "{}{}\nstatus: {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status
        );
        (out.status.success(), text)
    };
    let (ok, text) = run();
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("ECDSA P-256  SKI {}", hex::encode(file_ski))),
        "{text}"
    );
    assert!(
        text.contains(&format!("RSA-2048     SKI {}", hex::encode(hsm_ski))),
        "{text}"
    );
    assert!(text.contains("token=debug") && text.contains("\"site\""), "{text}");
    assert!(!text.contains("1234"), "the PIN leaked: {text}");

    std::fs::write(
        &config,
        format!(
            "{tls}private_key_stores:\n  - dir: {}\n  - uri: \"{}\"\n",
            pki.keys_dir.display(),
            uri("0000")
        ),
    )
    .unwrap();
    let (ok, text) = run();
    assert!(!ok, "a failed store must fail the command:\n{text}");
    assert!(text.contains("FAILED") && text.contains("wrong PIN"), "{text}");
    assert!(
        text.contains(&hex::encode(file_ski)),
        "the good store is still listed:\n{text}"
    );
    assert!(!text.contains("0000"), "the PIN leaked: {text}");

    // Stores that load are not enough: the key server's TLS files must too.
    std::fs::write(
        &config,
        format!(
            "auth_cert: /nonexistent/server.pem\nauth_key: {}\ncloudflare_ca_cert: {}\nprivate_key_stores:\n  - dir: {}\n",
            pki.server_key.display(),
            pki.ca_cert.display(),
            pki.keys_dir.display()
        ),
    )
    .unwrap();
    let (ok, text) = run();
    assert!(!ok, "a missing auth_cert must fail the command:\n{text}");
    assert!(text.contains("TLS: auth_cert /nonexistent/server.pem"), "{text}");
}

#[test]
fn without_c_it_finds_gokeyless_yaml_as_the_server_does() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::generate(&dir.path().join("pki"), &[("p256", KeyType::EcdsaP256)], 0).unwrap();
    let file_ski = load_expected_key(&pki.pubkeys_dir.join("p256.pem")).unwrap().info.ski;
    // DevPki writes a gokeyless.yaml; from its folder, no -c is needed.
    let out = Command::new(env!("CARGO_BIN_EXE_keyless-tool"))
        .arg("keystore-debug")
        .current_dir(&pki.dir)
        .env_remove("KEYLESS_CONFIG_FILE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&hex::encode(file_ski)), "{text}");
}

/// `keyless-tool ticket-keys` takes its durations as edge.yaml does
/// (`--rotation 1h --lifetime 18h`), and the older seconds flags still.
#[test]
fn ticket_keys_takes_durations_as_edge_yaml_does() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tickets.json");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_keyless-tool"))
            .args(["ticket-keys", "--file"])
            .arg(&file)
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["--rotation", "30m", "--lifetime", "18h"][..],
        &["--rotate", "--rotation-s", "60", "--lifetime-s", "600"],
    ] {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(String::from_utf8_lossy(&run(&[]).stdout).contains("2 ticket key(s)"));
    let bad = run(&["--rotation", "soon"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"soon\" is not a duration"));
    let both = run(&["--rotation", "1h", "--rotation-s", "60"]);
    assert!(!both.status.success(), "one spelling at a time");
}
