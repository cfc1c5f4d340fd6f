//! The PKCS#11 URI parser on arbitrary text: a URI or a typed error, never
//! a panic, and no PIN in what either prints.
#![no_main]

use keyless_hsm::Pkcs11Uri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The marker must come only from the pin-value added below (the fuzzer
    // once wrote it into a module path by itself).
    if text.contains("FUZZPIN") {
        return;
    }
    let with_pin = format!("{text}&pin-value=FUZZPIN");
    for candidate in [text, with_pin.as_str()] {
        match Pkcs11Uri::parse(candidate) {
            Ok(uri) => assert!(!format!("{uri:?}").contains("FUZZPIN")),
            Err(e) => assert!(!e.to_string().contains("FUZZPIN")),
        }
    }
});
