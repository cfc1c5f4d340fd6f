//! The configuration loader on arbitrary text: a configuration or an error
//! naming the file, never a panic.
#![no_main]

use std::path::Path;

use keyless_server::config::{parse_file, resolve, Cli};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_file(Path::new("fuzz.yaml"), text) {
        Ok(file) => {
            let _ = resolve(&Cli::default(), Some(Path::new("fuzz.yaml")), file);
        }
        Err(e) => assert!(e.to_string().contains("fuzz.yaml")),
    }
});
