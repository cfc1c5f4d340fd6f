//! Malformed requests over a raw TLS stream. Each gets the right error code
//! with its own request ID, and the server goes on serving that connection
//! and the others. Where framing is lost, only that connection closes.

mod common;

use std::time::Duration;

use keyless_protocol::{split_frame, ErrorCode, Frame, Message, Opcode};
use keyless_tools::conformance::{load_expected_keys, ExpectedKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw_stream() -> keyless_client::TlsStream {
    let s = common::server();
    keyless_client::connect_stream(s.addr, "localhost", s.client_tls())
        .await
        .unwrap()
}

/// Read one whole frame (with a timeout, so a silent server fails the test).
async fn read_frame(stream: &mut keyless_client::TlsStream, buf: &mut Vec<u8>) -> Frame {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(raw) = split_frame(buf) {
                let len = raw.header.frame_len();
                let frame = raw.decode().unwrap();
                buf.drain(..len);
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("no answer within 10 s")
}

fn frame_bytes(major: u8, id: u32, body: &[u8]) -> Vec<u8> {
    let mut v = vec![major, 0];
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn item(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn keys() -> Vec<ExpectedKey> {
    load_expected_keys(common::server().pubkeys()).unwrap()
}

fn key(keys: &[ExpectedKey], name: &str) -> [u8; 20] {
    keys.iter().find(|k| k.name == name).unwrap().info.ski
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_request_gets_its_error_code_and_the_connection_survives() {
    let keys = keys();
    let ec = key(&keys, "ecdsa-p256");
    let rsa = key(&keys, "rsa-2048");
    let ping = [item(0x11, &[0xF1]), item(0x12, b"still here")].concat();
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "wrong major version",
            frame_bytes(2, 101, &ping),
            ErrorCode::VersionMismatch,
        ),
        (
            "duplicate tag",
            frame_bytes(1, 102, &[item(0x11, &[0xF1]), item(0x11, &[0xF1])].concat()),
            ErrorCode::Format,
        ),
        (
            "truncated item",
            frame_bytes(1, 103, &[item(0x11, &[0xF1]), vec![0x12, 0x00, 0x40, 1, 2]].concat()),
            ErrorCode::Format,
        ),
        (
            "truncated item header",
            frame_bytes(1, 104, &[item(0x11, &[0xF1]), vec![0x12, 0x00]].concat()),
            ErrorCode::Format,
        ),
        (
            "opcode of two bytes",
            frame_bytes(1, 105, &item(0x11, &[0x15, 0x15])),
            ErrorCode::Format,
        ),
        (
            "SKI of 19 bytes",
            frame_bytes(1, 106, &[item(0x11, &[0x15]), item(0x04, &[1; 19])].concat()),
            ErrorCode::Format,
        ),
        (
            "missing opcode",
            frame_bytes(1, 107, &[item(0x04, &ec), item(0x12, &[0; 32])].concat()),
            ErrorCode::BadOpcode,
        ),
        (
            "unknown opcode",
            frame_bytes(1, 108, &[item(0x11, &[0x77]), item(0x04, &ec)].concat()),
            ErrorCode::BadOpcode,
        ),
        (
            "response opcode in a request",
            frame_bytes(1, 109, &item(0x11, &[0xF0])),
            ErrorCode::UnexpectedOpcode,
        ),
        (
            "error opcode in a request",
            frame_bytes(1, 110, &item(0x11, &[0xFF])),
            ErrorCode::UnexpectedOpcode,
        ),
        (
            "31-byte SHA-256 digest",
            frame_bytes(
                1,
                111,
                &[item(0x11, &[0x15]), item(0x04, &ec), item(0x12, &[1; 31])].concat(),
            ),
            ErrorCode::Crypto,
        ),
        (
            "ECDSA opcode on an RSA key",
            frame_bytes(
                1,
                112,
                &[item(0x11, &[0x15]), item(0x04, &rsa), item(0x12, &[1; 32])].concat(),
            ),
            ErrorCode::Crypto,
        ),
        (
            "RSA opcode on an ECDSA key",
            frame_bytes(
                1,
                113,
                &[item(0x11, &[0x05]), item(0x04, &ec), item(0x12, &[1; 32])].concat(),
            ),
            ErrorCode::Crypto,
        ),
        (
            "unknown SKI",
            frame_bytes(
                1,
                114,
                &[item(0x11, &[0x15]), item(0x04, &[9; 20]), item(0x12, &[1; 32])].concat(),
            ),
            ErrorCode::KeyNotFound,
        ),
        (
            "no key named at all",
            frame_bytes(1, 115, &[item(0x11, &[0x15]), item(0x12, &[1; 32])].concat()),
            ErrorCode::KeyNotFound,
        ),
        (
            "seal is not served",
            frame_bytes(1, 116, &[item(0x11, &[0x21]), item(0x12, b"x")].concat()),
            ErrorCode::BadOpcode,
        ),
    ];
    let mut stream = raw_stream().await;
    let mut buf = Vec::new();
    for (name, bytes, want) in &cases {
        let id = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
        stream.write_all(bytes).await.unwrap();
        let answer = read_frame(&mut stream, &mut buf).await;
        assert_eq!(answer.id, id, "{name}: answer carries the request's ID");
        assert_eq!(answer.message.error_code(), Some(Ok(*want)), "{name}");
        // The same connection still answers a good request.
        stream.write_all(&frame_bytes(1, 9000 + id, &ping)).await.unwrap();
        let pong = read_frame(&mut stream, &mut buf).await;
        assert_eq!(
            (pong.id, pong.message.opcode),
            (9000 + id, Some(Opcode::PONG)),
            "after {name}"
        );
        assert_eq!(pong.message.payload.as_deref(), Some(&b"still here"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_bad_requests_pipelined_in_one_write() {
    let mut stream = raw_stream().await;
    let mut batch = Vec::new();
    for id in 0..200u32 {
        let body = if id % 2 == 0 {
            item(0x11, &[0xF1])
        } else {
            [item(0x11, &[0xF1]), item(0x11, &[0xF1])].concat()
        };
        batch.extend(frame_bytes(1, id, &body));
    }
    stream.write_all(&batch).await.unwrap();
    let mut buf = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let f = read_frame(&mut stream, &mut buf).await;
        let want = if f.id % 2 == 0 {
            None
        } else {
            Some(Ok(ErrorCode::Format))
        };
        assert_eq!(f.message.error_code(), want, "id {}", f.id);
        assert!(seen.insert(f.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_framing_closes_only_that_connection() {
    let server = common::server();
    let bystander = server.connect().await;
    assert_eq!(bystander.ping(b"before").await.unwrap(), b"before");

    // A header promising 1000 bytes, then only 10, then the end of the stream.
    let mut stream = raw_stream().await;
    let mut bytes = frame_bytes(1, 1, &[0u8; 10]);
    bytes[2..4].copy_from_slice(&1000u16.to_be_bytes());
    stream.write_all(&bytes).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    let closed = matches!(read, Ok(Ok(_)) | Ok(Err(_)));
    assert!(closed, "the server should close the connection");
    assert!(rest.is_empty(), "no answer for a frame that never completed");

    // Garbage that is not a frame at all, then hang up mid-frame.
    let mut garbage = raw_stream().await;
    garbage.write_all(&[0xFF; 5]).await.unwrap();
    drop(garbage);

    assert_eq!(bystander.ping(b"after").await.unwrap(), b"after");
    let m = bystander
        .call(Message::request(Opcode::PING, None, vec![1; 3000]))
        .await
        .unwrap();
    assert_eq!(m.payload.unwrap().len(), 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_possible_frame_is_answered() {
    let conn = common::server().connect().await;
    let payload = vec![0x42; 65535 - 4 - 3];
    assert_eq!(conn.ping(&payload).await.unwrap(), payload);
}
