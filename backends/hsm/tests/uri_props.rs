//! The PKCS#11 URI parser on untrusted text: any string gives a URI or a
//! typed error, never a panic, and no error message repeats a PIN.

use keyless_hsm::Pkcs11Uri;
use proptest::prelude::*;

fn attribute() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "token",
        "object",
        "id",
        "serial",
        "slot-id",
        "module-path",
        "pin-value",
        "pin-source",
        "max-sessions",
        "type",
        "x-vendor",
        "bogus",
        "",
    ]);
    (names, "[ -~]{0,12}").prop_map(|(n, v)| format!("{n}={v}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_fails_cleanly(text in "\\PC{0,80}") {
        let _ = Pkcs11Uri::parse(&text);
        let _ = Pkcs11Uri::parse(&format!("pkcs11:{text}"));
    }

    #[test]
    fn near_valid_uris_never_leak_the_pin(
        path in prop::collection::vec(attribute(), 0..5),
        query in prop::collection::vec(attribute(), 0..5),
    ) {
        let text = format!("pkcs11:{};token=t?{}&pin-value=SECRETPIN", path.join(";"), query.join("&"));
        match Pkcs11Uri::parse(&text) {
            Ok(uri) => {
                let printed = format!("{:?}", uri);
                prop_assert!(!printed.contains("SECRETPIN"), "{}", printed);
            }
            Err(e) => prop_assert!(!e.to_string().contains("SECRETPIN"), "{}", e),
        }
    }
}
