//! `KEYLESS_*` environment variables sit between flags and the file. In a
//! test binary of its own: it changes the process environment.

use std::path::Path;

use clap::Parser;
use keyless_server::config::{self, Options as Cli};

#[test]
fn environment_overrides_the_file_and_flags_override_the_environment() {
    // SAFETY of the test: this binary has exactly one test, so no other
    // thread reads the environment while it changes.
    std::env::set_var("KEYLESS_PORT", "4000");
    std::env::set_var("KEYLESS_AUTH_KEY", "env-key.pem");
    std::env::set_var("KEYLESS_PRIVATE_KEY_DIRS", "/env/keys");
    let path = Path::new("gokeyless.yaml");
    let file = || config::parse_file(path, "port: 2407\nauth_key: file-key.pem\nauth_cert: file.pem\n").unwrap();

    let s = config::resolve(&Cli::try_parse_from(["keyless-server"]).unwrap(), Some(path), file()).unwrap();
    assert_eq!(s.listen.port(), 4000);
    assert_eq!(s.auth_key, Path::new("env-key.pem"));
    assert_eq!(s.auth_cert, Path::new("file.pem"));
    assert_eq!(s.key_sources, vec![keyless_keys::KeySource::Dir("/env/keys".into())]);

    let c = Cli::try_parse_from(["keyless-server", "--port", "5000"]).unwrap();
    assert_eq!(config::resolve(&c, Some(path), file()).unwrap().listen.port(), 5000);

    // Dialing out: KEYLESS_DIAL over the file's `dial`, the proxy from
    // HTTPS_PROXY minus NO_PROXY unless `dial_proxy` says otherwise.
    std::env::set_var("KEYLESS_DIAL", "edge1.example:2408,edge2.example:2408");
    std::env::set_var("HTTPS_PROXY", "http://proxy.corp:3128");
    std::env::set_var("NO_PROXY", ".internal");
    let dialing = || config::parse_file(path, "port: 0\ndial: [\"file.example:1\"]\n").unwrap();
    let s = config::resolve(&Cli::try_parse_from(["keyless-server"]).unwrap(), Some(path), dialing()).unwrap();
    let dial = s.dial.unwrap();
    assert_eq!(dial.edges, ["edge1.example:2408", "edge2.example:2408"]);
    assert_eq!(dial.proxy.as_deref(), Some("http://proxy.corp:3128"));
    assert_eq!(dial.no_proxy, [".internal"]);
    let c = Cli::try_parse_from(["keyless-server", "--dial", "flag.example:9", "--dial-proxy", "direct"]).unwrap();
    let dial = config::resolve(&c, Some(path), dialing()).unwrap().dial.unwrap();
    assert_eq!((dial.edges, dial.proxy), (vec!["flag.example:9".to_string()], None));

    // A bad value from the environment names the variable, not the flag.
    std::env::set_var("KEYLESS_PORT", "abc");
    let e = config::try_parse_args_from(["keyless-server"])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("KEYLESS_PORT=abc: invalid digit found in string"), "{e}");
    let e = config::try_parse_args_from(["keyless-server", "--port", "xyz"])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("'xyz'") && e.contains("--port"),
        "a typed flag keeps clap's message: {e}"
    );
    assert!(config::try_parse_args_from(["keyless-server", "--port=7"]).is_ok());
    std::env::set_var("KEYLESS_LOGLEVEL", "9");
    std::env::remove_var("KEYLESS_PORT");
    let e = config::try_parse_args_from(["keyless-server"])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("KEYLESS_LOGLEVEL=9"), "{e}");
    std::env::remove_var("KEYLESS_LOGLEVEL");
}
