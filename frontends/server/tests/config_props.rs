//! The configuration loader on arbitrary text: a configuration or an error
//! naming the file, never a panic.

use std::path::Path;

use keyless_server::config::{parse_file, resolve, ConfigError, Options};
use proptest::prelude::*;

fn yaml_line() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "port",
        "metrics_port",
        "loglevel",
        "private_key_stores",
        "auth_cert",
        "workers",
        "idle_timeout",
        "pkcs11_queue",
        "max_connections_per_core",
        "  - dir",
        "  - uri",
        "  - file",
        "zone_id",
    ]);
    (keys, "[ -~]{0,16}").prop_map(|(k, v)| format!("{k}: {v}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn any_text_loads_or_names_the_file(text in "\\PC{0,200}") {
        if let Err(e) = parse_file(Path::new("fuzz.yaml"), &text) {
            prop_assert!(e.to_string().contains("fuzz.yaml"), "{}", e);
        }
    }

    #[test]
    fn near_valid_files_resolve_or_say_where_and_why(lines in prop::collection::vec(yaml_line(), 0..8)) {
        let text = lines.join("\n");
        match parse_file(Path::new("fuzz.yaml"), &text) {
            // Every value was checked as it was read: what parses resolves.
            Ok(file) => prop_assert!(resolve(&Options::default(), Some(Path::new("fuzz.yaml")), file).is_ok()),
            Err(ConfigError::Syntax(e)) => {
                // path:line:column: reason, the line one of the file's.
                prop_assert!(e.to_string().starts_with(&format!("fuzz.yaml:{}:{}: ", e.line, e.column)), "{}", e);
                prop_assert!((1..=lines.len().max(1)).contains(&e.line), "line {} of {}: {}", e.line, lines.len(), e);
                prop_assert!(!e.message.is_empty());
            }
            Err(other) => prop_assert!(false, "not a file error: {}", other),
        }
    }
}
