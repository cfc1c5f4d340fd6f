//! The configuration loader on arbitrary text: a configuration or an error
//! naming the file, never a panic; and whatever parses resolves.
#![no_main]

use std::path::Path;

use keyless_server::config::{parse_file, resolve, Options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_file(Path::new("fuzz.yaml"), text) {
        // Every value is checked as it is read: what parses resolves.
        Ok(file) => assert!(resolve(&Options::default(), Some(Path::new("fuzz.yaml")), file).is_ok()),
        Err(e) => assert!(e.to_string().contains("fuzz.yaml")),
    }
});
