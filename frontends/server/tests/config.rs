//! gokeyless.yaml compatibility: keys, precedence, search path, and errors
//! that name the file, the line and the field.

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use keyless_keys::KeySource;
use keyless_server::config::{self, ConfigError, Options};

fn cli(args: &[&str]) -> Options {
    let mut argv = vec!["keyless-server"];
    argv.extend_from_slice(args);
    Options::try_parse_from(argv).unwrap()
}

const GOKEYLESS_YAML: &str = r#"
# A gokeyless configuration as the Keyless SSL walkthrough writes it.
hostname: keyserver.example.com
zone_id: ""
origin_ca_api_key: ""
auth_csr: server.csr
auth_cert: /etc/keyless/server.pem
auth_key: /etc/keyless/server-key.pem
cloudflare_ca_cert: /etc/keyless/keyless_cacert.pem
private_key_stores:
  - dir: /etc/keyless/keys
  - file: /etc/keyless/extra/site.key
loglevel: 2
port: 2407
metrics_port: 2406
pid_file: /run/gokeyless.pid
some_future_setting: ignored
"#;

#[test]
fn a_gokeyless_file_is_read_with_its_keys() {
    let path = Path::new("/etc/keyless/gokeyless.yaml");
    let file = config::parse_file(path, GOKEYLESS_YAML).unwrap();
    let s = config::resolve(&cli(&[]), Some(path), file).unwrap();
    assert_eq!(s.loglevel, 2);
    assert_eq!(s.hostname.as_deref(), Some("keyserver.example.com"));
    assert_eq!(s.auth_cert, Path::new("/etc/keyless/server.pem"));
    assert_eq!(s.auth_key, Path::new("/etc/keyless/server-key.pem"));
    assert_eq!(s.cloudflare_ca_cert, Path::new("/etc/keyless/keyless_cacert.pem"));
    assert_eq!(s.listen.port(), 2407);
    assert_eq!(s.metrics.port(), 2406);
    assert_eq!(s.pid_file.as_deref(), Some(Path::new("/run/gokeyless.pid")));
    assert_eq!(
        s.key_sources,
        vec![
            KeySource::Dir("/etc/keyless/keys".into()),
            KeySource::File("/etc/keyless/extra/site.key".into())
        ]
    );
    // Empty zone_id/origin_ca_api_key strings still count as "set" in gokeyless's
    // file, so the server says once that activation is not supported.
    assert!(s.activation_requested);
    // gokeyless ignores keys it does not know; so do we, and say so.
    assert_eq!(s.unknown_keys, ["some_future_setting"]);
}

#[test]
fn defaults_match_gokeyless() {
    let s = config::resolve(&cli(&[]), None, Default::default()).unwrap();
    assert_eq!(s.loglevel, 1);
    assert_eq!(s.listen.port(), 2407);
    assert_eq!(
        s.metrics,
        "127.0.0.1:2406".parse().unwrap(),
        "metrics stay local unless configured"
    );
    assert_eq!(s.listen, "0.0.0.0:2407".parse().unwrap());
    assert_eq!(s.auth_cert, Path::new("server.pem"));
    assert_eq!(s.auth_key, Path::new("server-key.pem"));
    assert_eq!(s.cloudflare_ca_cert, Path::new("keyless_cacert.pem"));
    assert!(s.key_sources.is_empty());
    assert!(!s.activation_requested);
}

#[test]
fn a_reload_says_which_changes_need_a_restart() {
    let path = Path::new("g.yaml");
    let before = config::resolve(&cli(&[]), Some(path), config::parse_file(path, "port: 2407\n").unwrap()).unwrap();
    let keys_only = config::parse_file(path, "port: 2407\nprivate_key_stores:\n  - dir: /k\n").unwrap();
    let after = config::resolve(&cli(&[]), Some(path), keys_only).unwrap();
    // The sandbox (on by default) reads only the key folders it had at start.
    assert_eq!(
        before.restart_needed(&after),
        ["sandbox, or what it allows (a new key folder, module, certificate or endpoint)"],
        "a new key folder"
    );
    let unsandboxed = |yaml: &str| {
        let text = format!("sandbox: off\n{yaml}");
        config::resolve(&cli(&[]), Some(path), config::parse_file(path, &text).unwrap()).unwrap()
    };
    assert!(
        unsandboxed("port: 2407\n")
            .restart_needed(&unsandboxed("port: 2407\nprivate_key_stores:\n  - dir: /k\n"))
            .is_empty(),
        "keys reload"
    );
    let moved = config::parse_file(path, "port: 2408\nidle_timeout: 5\n").unwrap();
    let after = config::resolve(&cli(&[]), Some(path), moved).unwrap();
    assert_eq!(
        before.restart_needed(&after),
        ["listen_host/port", "connection limits and timeouts"]
    );
}

#[test]
fn metrics_go_where_they_are_told() {
    let file = config::parse_file(Path::new("g.yaml"), "listen_host: 10.0.0.1\nmetrics_host: 0.0.0.0\n").unwrap();
    let s = config::resolve(&cli(&[]), None, file).unwrap();
    assert_eq!(s.metrics, "0.0.0.0:2406".parse().unwrap());
    let s = config::resolve(&cli(&["--metrics-host", "::1"]), None, Default::default()).unwrap();
    assert_eq!(s.metrics, "[::1]:2406".parse().unwrap());
}

#[test]
fn flags_override_the_file_and_key_flags_add_stores() {
    let path = Path::new("gokeyless.yaml");
    let file = config::parse_file(path, GOKEYLESS_YAML).unwrap();
    let c = cli(&[
        "--port",
        "3000",
        "-l",
        "0",
        "--auth-cert",
        "flag.pem",
        "--private-key-dirs",
        "/a,/b",
        "--private-key-files",
        "/c.key",
    ]);
    let s = config::resolve(&c, Some(path), file).unwrap();
    assert_eq!(s.listen.port(), 3000);
    assert_eq!(s.loglevel, 0);
    assert_eq!(s.auth_cert, Path::new("flag.pem"));
    assert_eq!(
        s.auth_key,
        Path::new("/etc/keyless/server-key.pem"),
        "unset flags leave the file's value"
    );
    assert_eq!(s.key_sources.len(), 5);
    assert_eq!(s.key_sources[2], KeySource::Dir("/a".into()));
    assert_eq!(s.key_sources[4], KeySource::File("/c.key".into()));
}

fn syntax_error(text: &str) -> (usize, String) {
    match config::parse_file(Path::new("/etc/keyless/gokeyless.yaml"), text) {
        Err(ConfigError::Syntax(e)) => (e.line, e.to_string()),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn a_bad_value_names_file_line_and_field() {
    let (line, msg) = syntax_error("loglevel: 1\nport: not-a-port\n");
    assert_eq!(line, 2);
    assert!(msg.starts_with("/etc/keyless/gokeyless.yaml:2:"), "{msg}");
    assert!(msg.contains("port"), "{msg}");

    let (line, msg) = syntax_error("port: 2407\nprivate_key_stores:\n  - dir: /keys\n  - path: /other\n");
    assert_eq!(line, 4);
    assert!(msg.contains("private_key_stores[1]") && msg.contains("path"), "{msg}");

    let (line, msg) = syntax_error("port: 1\nprivate_key_stores:\n  - dir: /keys\n    file: /k.key\n");
    assert_eq!(line, 3, "{msg}");
    assert!(
        msg.contains("private_key_stores") && msg.contains("exactly one"),
        "{msg}"
    );

    let (line, msg) = syntax_error("private_key_stores:\n  - uri: pkcs11:token=SoftHSM;object=k?pin-value=s3cret\n");
    assert_eq!(line, 2, "{msg}");
    assert!(
        msg.contains("private_key_stores") && msg.contains("PKCS#11") && msg.contains("module-path"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "the PIN leaked into: {msg}");

    let (line, msg) = syntax_error("port: 2407\nauth_cert: [unclosed\n");
    assert!(line >= 2, "{msg}");

    let (_, msg) = syntax_error("port: 2407\nport: 2408\n");
    assert!(msg.contains("duplicate field `port`"), "{msg}");
}

#[test]
fn out_of_range_values_name_file_line_field_and_reason() {
    for (text, line, field, reason) in [
        ("loglevel: 9\n", 1, "loglevel", "not a log level"),
        (
            "port: 2407\nworkers: 0\n",
            2,
            "workers",
            "expected a whole number of at least 1",
        ),
        ("port: eighty\n", 1, "port", "a port number"),
        (
            "port: 2407\n\nmax_request_body: 70000\n",
            3,
            "max_request_body",
            "70000",
        ),
        ("core_queue: 0\n", 1, "core_queue", "at least 1"),
        ("pkcs11_timeout_ms: 0\n", 1, "pkcs11_timeout_ms", "at least 1"),
        ("handshake_timeout: -1\n", 1, "handshake_timeout", "-1"),
    ] {
        let (at, msg) = syntax_error(text);
        assert_eq!(at, line, "{msg}");
        assert!(
            msg.starts_with(&format!("/etc/keyless/gokeyless.yaml:{line}:")),
            "{msg}"
        );
        assert!(msg.contains(field) && msg.contains(reason), "{msg}");
    }
}

#[test]
fn out_of_range_flags_name_the_flag() {
    for args in [&["--workers", "0"][..], &["-l", "9"], &["--max-request-body", "70000"]] {
        let mut argv = vec!["keyless-server"];
        argv.extend_from_slice(args);
        let e = Options::try_parse_from(argv).unwrap_err().to_string();
        assert!(e.contains(args[0]), "{e}");
    }
}

#[test]
fn every_setting_lands_where_the_engine_reads_it() {
    let path = Path::new("g.yaml");
    let file = config::parse_file(
        path,
        "workers: 3\ndrain_timeout: 7\nhandshake_timeout: 4\nidle_timeout: 0\nmax_connections_per_core: 9\n\
         max_request_body: 1000\ncore_queue: 5\nbatch_flush_us: 250\nspin_before_park_us: 20\n\
         pkcs11_sessions: 4\npkcs11_queue: 6\npkcs11_timeout_ms: 1500\n\
         multibuffer: off\nmultibuffer_library: /opt/mb/libcrypto_mb.so.11\nbatch_delay_us: 50\n",
    )
    .unwrap();
    let s = config::resolve(&cli(&[]), Some(path), file).unwrap();
    assert_eq!(s.multibuffer, keyless_keys::multibuffer::Mode::Off);
    assert_eq!(
        s.multibuffer_library.as_deref(),
        Some(Path::new("/opt/mb/libcrypto_mb.so.11"))
    );
    assert_eq!(s.runtime.batch_delay, Duration::from_micros(50));
    assert_eq!((s.runtime.cores, s.runtime.core_queue), (3, 5));
    assert_eq!(s.runtime.spin_before_park, Duration::from_micros(20));
    assert_eq!(s.limits.drain_timeout, Duration::from_secs(7));
    assert_eq!(s.limits.handshake_timeout, Duration::from_secs(4));
    assert_eq!(s.limits.idle_timeout, Duration::ZERO);
    assert_eq!((s.limits.max_connections, s.limits.max_body), (9, 1000));
    assert_eq!(s.limits.batch_flush, Duration::from_micros(250));
    assert_eq!((s.pkcs11.sessions, s.pkcs11.queue), (4, 6));
    assert_eq!(s.pkcs11.timeout, Duration::from_millis(1500));
    // Unset, each is the default of the type it lands in: one place.
    let d = config::resolve(&cli(&[]), None, Default::default()).unwrap();
    assert_eq!(d.limits, keyless_server::connection::Limits::default());
    assert_eq!(d.runtime, keyless_engine::runtime::RuntimeConfig::default());
    assert_eq!(d.pkcs11, keyless_hsm::Options::default());
    assert_eq!(d.multibuffer, keyless_keys::multibuffer::Mode::Auto);
}

#[test]
fn an_explicit_config_file_must_exist() {
    let e = config::load(&cli(&["-c", "/nonexistent/gokeyless.yaml"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/gokeyless.yaml"), "{e}");
}

#[test]
fn a_pkcs11_uri_store_is_kept_and_its_pin_never_printed() {
    let uri = "pkcs11:token=SoftHSM;object=mykey?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=s3cret";
    let file = config::parse_file(
        Path::new("gokeyless.yaml"),
        &format!("private_key_stores:\n  - uri: {uri}\n"),
    )
    .unwrap();
    let s = config::resolve(&Options::default(), Some(Path::new("gokeyless.yaml")), file).unwrap();
    match &s.key_sources[..] {
        [KeySource::Pkcs11(source)] => assert_eq!(source.expose(), uri),
        other => panic!("expected one PKCS#11 store, got {other:?}"),
    }
    let printed = format!("{s:?}");
    assert!(printed.contains("pin-value=***"), "{printed}");
    assert!(!printed.contains("s3cret"), "the PIN leaked into: {printed}");
}

#[test]
fn a_key_server_that_only_dials_out() {
    let path = Path::new("gokeyless.yaml");
    let yaml = "port: 0\ndial: [\"edge.example:2408\"]\ndial_connections: 4\n\
                dial_proxy: \"http://user:secret@proxy.corp:3128\"\ndial_server_name: edge.example\n";
    let s = config::resolve(&cli(&[]), Some(path), config::parse_file(path, yaml).unwrap()).unwrap();
    assert_eq!(s.listen.port(), 0, "no inbound listener");
    let dial = s.dial.clone().unwrap();
    assert_eq!(dial.edges, ["edge.example:2408"]);
    assert_eq!(dial.connections, Some(4));
    assert_eq!(dial.server_name.as_deref(), Some("edge.example"));
    let printed = s.to_yaml();
    assert!(printed.contains("dial: [edge.example:2408]"), "{printed}");
    assert!(
        printed.contains("dial_proxy: http://***@proxy.corp:3128"),
        "shown as set: {printed}"
    );
    assert!(
        !printed.contains("secret") && !printed.contains("user"),
        "proxy credentials are not printed: {printed}"
    );
    let plain = config::resolve(&cli(&[]), Some(path), config::parse_file(path, "port: 2407\n").unwrap()).unwrap();
    assert!(plain.dial.is_none());
    assert_eq!(plain.restart_needed(&s), ["listen_host/port", "dial settings"]);
    let e = config::parse_file(path, "dial_connections: 0\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("gokeyless.yaml:1:") && e.contains("dial_connections"),
        "{e}"
    );
}

/// gokeyless's cloud `uri:` forms (Google, Azure) and ours (AWS) parse into
/// cloud stores beside file and PKCS#11 stores; a malformed one names its
/// line and what is wrong.
#[test]
fn cloud_key_uris_of_all_three_kinds_parse() {
    let text = "private_key_stores:\n\
        \x20 - dir: /keys\n\
        \x20 - uri: projects/site/locations/global/keyRings/tls/cryptoKeys/ecdsa/cryptoKeyVersions/1\n\
        \x20 - uri: https://site.vault.azure.net/keys/tls/0123456789abcdef\n\
        \x20 - uri: https://site-hsm.managedhsm.azure.net/keys/tls/fedcba\n\
        \x20 - uri: arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab\n\
        \x20 - uri: arn:aws:kms:eu-west-1:123456789012:alias/site\n\
        cloud_timeout_ms: 1500\ncloud_concurrency: 16\n";
    let path = Path::new("/etc/keyless/gokeyless.yaml");
    let file = config::parse_file(path, text).unwrap();
    let s = config::resolve(&Options::default(), Some(path), file).unwrap();
    let clouds: Vec<&str> = s
        .key_sources
        .iter()
        .filter_map(|k| match k {
            KeySource::Cloud(uri) => Some(uri.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(clouds.len(), 5, "{:?}", s.key_sources);
    assert!(clouds[0].starts_with("projects/site/") && clouds[4].ends_with("alias/site"));
    assert_eq!(s.cloud.timeout, Duration::from_millis(1500));
    assert_eq!(s.cloud.concurrency, 16);

    for (entry, says) in [
        ("projects/p/locations/l/keyRings/r/cryptoKeys/k", "cryptoKeyVersions/N"),
        ("https://site.vault.azure.net/keys/tls", "no key version"),
        ("https://example.com/keys/tls/1", "not a Key Vault"),
        ("arn:aws:kms:eu-west-1:123:key/x", "12 digits"),
    ] {
        let (line, msg) = syntax_error(&format!("port: 2407\nprivate_key_stores:\n  - uri: {entry}\n"));
        assert_eq!(line, 3, "{msg}");
        assert!(
            msg.contains("private_key_stores") && msg.contains(says),
            "{entry}: {msg}"
        );
    }
}

/// `-o` prints every key the file set: the gokeyless settings this server
/// does not use too (secrets as `***`), and the keys it ignores by name.
#[test]
fn output_config_includes_what_the_file_set_and_is_not_used() {
    let path = Path::new("gokeyless.yaml");
    let text = "port: 2407\nzone_id: z123\norigin_ca_api_key: v1.0-secret\nauth_csr: /etc/keyless/server.csr\n\
                tracing_enabled: true\n";
    let s = config::resolve(&cli(&[]), Some(path), config::parse_file(path, text).unwrap()).unwrap();
    let printed = s.to_yaml();
    for line in [
        "\nzone_id: z123\n",
        "\norigin_ca_api_key: ***\n",
        "\nauth_csr: /etc/keyless/server.csr\n",
        "\n# tracing_enabled: (ignored)\n",
    ] {
        assert!(printed.contains(line), "{line:?} in:\n{printed}");
    }
    assert!(!printed.contains("v1.0-secret"), "{printed}");
}
