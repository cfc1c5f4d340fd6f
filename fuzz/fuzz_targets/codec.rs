//! The keyless codec on arbitrary bytes (requests and responses share it):
//! any input splits into frames that decode to a message or a typed error,
//! and a decoded message encodes and decodes back to itself.
#![no_main]

use keyless_protocol::{split_frame, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Some(raw) = split_frame(rest) {
        let len = raw.header.frame_len();
        if let Ok(frame) = raw.decode() {
            let bytes = frame.encode().expect("a decoded frame encodes");
            let again = split_frame(&bytes).expect("an encoded frame splits").decode().expect("and decodes");
            assert_eq!(again, Frame::new(frame.id, frame.message.clone()));
        }
        rest = &rest[len..];
    }
});
