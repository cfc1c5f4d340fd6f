//! Codec tests: round trips, gokeyless's padding, and every malformed input
//! we know of. The property tests run the same checks over arbitrary input.

use std::net::IpAddr;

use keyless_protocol::*;
use proptest::prelude::*;

fn sample() -> Message {
    Message {
        opcode: Some(Opcode::ECDSA_SIGN_SHA256),
        payload: Some(vec![0xAB; 32]),
        ski: Some([7; SKI_LEN]),
        cert_digest: Some([9; CERT_DIGEST_LEN]),
        client_ip: Some("192.0.2.1".parse().unwrap()),
        server_ip: Some("2001:db8::1".parse().unwrap()),
        sni: Some(b"example.com".to_vec()),
        ..Message::default()
    }
}

#[test]
fn round_trip_is_padded_to_1024() {
    let frame = Frame::new(42, sample());
    let bytes = frame.encode().unwrap();
    assert_eq!(bytes.len(), PADDED_LEN);
    assert_eq!(&bytes[..2], &[1, 0]);
    assert_eq!(
        u16::from_be_bytes([bytes[2], bytes[3]]) as usize,
        PADDED_LEN - HEADER_LEN
    );
    let raw = split_frame(&bytes).unwrap();
    assert_eq!(raw.header.id, 42);
    assert_eq!(raw.decode().unwrap(), frame);
}

#[test]
fn layout_matches_gokeyless_byte_for_byte() {
    // A ping with payload "hi", ID 7: opcode item, payload item, then padding.
    let frame = Frame::new(
        7,
        Message {
            opcode: Some(Opcode::PING),
            payload: Some(b"hi".to_vec()),
            ..Default::default()
        },
    );
    let b = frame.encode().unwrap();
    assert_eq!(&b[..8], &[1, 0, 0x03, 0xF8, 0, 0, 0, 7]);
    assert_eq!(&b[8..12], &[0x11, 0, 1, 0xF1]);
    assert_eq!(&b[12..17], &[0x12, 0, 2, b'h', b'i']);
    let pad = 1024 - (8 + 4 + 5 + 3);
    assert_eq!(&b[17..20], &[0x20, (pad >> 8) as u8, pad as u8]);
    assert!(b[20..].iter().all(|&x| x == 0));
}

#[test]
fn near_the_padding_boundary_gokeyless_overshoots_by_up_to_two() {
    for items in 1008..=1020 {
        // opcode item (4 bytes) + payload item (3 + n)
        let n = items - 4 - 3;
        let f = Frame::new(1, Message::request(Opcode::PING, None, vec![1; n]));
        let b = f.encode().unwrap();
        let expect = if 8 + items >= 1024 {
            8 + items
        } else {
            (8 + items + 3).max(1024)
        };
        assert_eq!(b.len(), expect, "items={items}");
        assert_eq!(split_frame(&b).unwrap().decode().unwrap(), f);
    }
}

#[test]
fn unpadded_input_is_accepted() {
    let mut body = vec![0x11, 0, 1, 0xF1, 0x12, 0, 1, 5];
    let mut bytes = vec![1, 0, 0, body.len() as u8, 0, 0, 0, 9];
    bytes.append(&mut body);
    let f = split_frame(&bytes).unwrap().decode().unwrap();
    assert_eq!(f.id, 9);
    assert_eq!(f.message.opcode, Some(Opcode::PING));
    assert_eq!(f.message.payload.as_deref(), Some(&[5u8][..]));
}

#[test]
fn unknown_tags_are_ignored() {
    let body = [0x11, 0, 1, 0xF1, 0x7E, 0, 2, 1, 2, 0x7E, 0, 0];
    let m = Message::decode(&body).unwrap();
    assert_eq!(m.opcode, Some(Opcode::PING));
}

#[test]
fn duplicate_known_tag_is_a_format_error() {
    let body = [0x11, 0, 1, 0xF1, 0x11, 0, 1, 0xF1];
    let e = Message::decode(&body).unwrap_err();
    assert_eq!(e, DecodeError::DuplicateTag(0x11));
    assert_eq!(e.code(), ErrorCode::Format);
    let body = [0x20, 0, 0, 0x20, 0, 0];
    assert_eq!(Message::decode(&body).unwrap_err(), DecodeError::DuplicateTag(0x20));
}

#[test]
fn truncated_items_are_format_errors() {
    assert!(matches!(
        Message::decode(&[0x11, 0]),
        Err(DecodeError::TruncatedItemHeader { offset: 0 })
    ));
    assert!(matches!(
        Message::decode(&[0x12, 0, 9, 1, 2]),
        Err(DecodeError::TruncatedItem {
            tag: 0x12,
            len: 9,
            available: 2,
            ..
        })
    ));
    assert!(matches!(
        Message::decode(&[0x12, 0xFF, 0xFF]),
        Err(DecodeError::TruncatedItem {
            len: 65535,
            available: 0,
            ..
        })
    ));
}

#[test]
fn fixed_size_tags_reject_other_sizes() {
    for (tag, bad) in [
        (0x11u8, 2usize),
        (0x04, 19),
        (0x04, 21),
        (0x01, 31),
        (0x03, 5),
        (0x05, 0),
    ] {
        let mut body = vec![tag, 0, bad as u8];
        body.resize(3 + bad, 1);
        assert_eq!(
            Message::decode(&body),
            Err(DecodeError::InvalidLength { tag, len: bad }),
            "tag {tag:#x}"
        );
    }
}

#[test]
fn wrong_major_version_keeps_framing() {
    let mut bytes = Frame::new(5, Message::request(Opcode::PING, None, vec![]))
        .encode()
        .unwrap();
    bytes[0] = 2;
    let raw = split_frame(&bytes).unwrap();
    assert_eq!(raw.header.frame_len(), bytes.len());
    let e = raw.decode().unwrap_err();
    assert_eq!(e.code(), ErrorCode::VersionMismatch);
}

#[test]
fn split_frame_waits_for_complete_frames() {
    let bytes = Frame::new(1, sample()).encode().unwrap();
    for cut in [0, 1, 7, 8, 100, bytes.len() - 1] {
        assert!(split_frame(&bytes[..cut]).is_none(), "cut={cut}");
    }
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    let first = split_frame(&two).unwrap();
    assert_eq!(first.header.frame_len(), bytes.len());
}

#[test]
fn oversized_message_is_refused_by_encoder() {
    let f = Frame::new(1, Message::request(Opcode::PING, None, vec![0; 65535]));
    assert!(matches!(f.encode(), Err(EncodeError::TooLong(_))));
    let f = Frame::new(1, Message::request(Opcode::PING, None, vec![0; 65535 - 4 - 3]));
    assert_eq!(f.encode().unwrap().len(), 8 + 65535);
}

#[test]
fn error_codes_round_trip() {
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_byte(code as u8), Some(code));
        let m = Message::error(code);
        assert_eq!(m.error_code(), Some(Ok(code)));
    }
    assert_eq!(ErrorCode::from_byte(0), None);
    assert_eq!(ErrorCode::from_byte(0x0C), None);
}

#[test]
fn opcode_classification() {
    assert_eq!(Opcode(0x02).kind(), OpKind::RsaPkcs1Sign(Hash::Md5Sha1));
    assert_eq!(Opcode(0x36).kind(), OpKind::RsaPssSign(Hash::Sha384));
    assert_eq!(Opcode(0x14).kind(), OpKind::EcdsaSign(Hash::Sha224));
    assert_eq!(Opcode(0x18).kind(), OpKind::Ed25519Sign);
    for op in [0x21, 0x22, 0x23, 0x24] {
        assert_eq!(Opcode(op).kind(), OpKind::Unsupported);
    }
    for op in [0xF0, 0xF2, 0xFF] {
        assert_eq!(Opcode(op).kind(), OpKind::Response);
    }
    assert_eq!(Opcode(0x99).kind(), OpKind::Unknown);
}

fn arb_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300))
}

fn arb_ip() -> impl Strategy<Value = Option<IpAddr>> {
    proptest::option::of(prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ])
}

prop_compose! {
    fn arb_message()(
        opcode in proptest::option::of(any::<u8>().prop_map(Opcode)),
        payload in arb_bytes(),
        ski in proptest::option::of(any::<[u8; 20]>()),
        cert_digest in proptest::option::of(any::<[u8; 32]>()),
        client_ip in arb_ip(),
        server_ip in arb_ip(),
        sni in arb_bytes(),
        cert_id in arb_bytes(),
        extra in arb_bytes(),
        req_context in arb_bytes(),
    ) -> Message {
        Message { opcode, payload, ski, cert_digest, client_ip, server_ip, sni, cert_id, extra, req_context, ..Message::default() }
    }
}

proptest! {
    #[test]
    fn decode_inverts_encode(id in any::<u32>(), message in arb_message()) {
        let frame = Frame::new(id, message);
        let bytes = frame.encode().unwrap();
        prop_assert!(bytes.len() >= PADDED_LEN);
        let raw = split_frame(&bytes).unwrap();
        prop_assert_eq!(raw.header.frame_len(), bytes.len());
        prop_assert_eq!(raw.decode().unwrap(), frame);
    }

    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Message::decode(&bytes);
        if let Some(raw) = split_frame(&bytes) {
            prop_assert!(raw.header.frame_len() <= bytes.len());
            let _ = raw.decode();
        }
    }

    #[test]
    fn payload_sizes_near_the_limits(n in prop_oneof![0usize..8, 1000usize..1030, 65500usize..65529]) {
        let frame = Frame::new(3, Message::request(Opcode::PING, None, vec![0x5A; n]));
        let bytes = frame.encode().unwrap();
        prop_assert_eq!(split_frame(&bytes).unwrap().decode().unwrap(), frame);
    }
}
