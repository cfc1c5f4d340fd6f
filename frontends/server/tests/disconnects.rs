//! A client that disconnects with requests in flight: the server signs or
//! drops what it already read, frees the connection (no leak: the core's
//! connection count and queue depth return to zero), and serves the next
//! client. (Its own test binary: it counts the shared server's connections.)

mod common;

use std::time::{Duration, Instant};

use keyless_protocol::{Frame, Message, Opcode};
use keyless_tools::conformance::load_expected_keys;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_with_requests_in_flight_leaks_nothing() {
    let server = common::server();
    let keys = load_expected_keys(server.pubkeys()).unwrap();
    let rsa = keys.iter().find(|k| k.name == "rsa-4096").unwrap();
    let open = || server.shared.open_connections();
    for round in 0..3 {
        let mut stream = keyless_client::connect_stream(server.addr, "localhost", server.client_tls())
            .await
            .unwrap();
        let mut bytes = Vec::new();
        for id in 0..300u32 {
            Frame::new(
                id,
                Message::request(Opcode::RSA_SIGN_SHA256, Some(rsa.info.ski), vec![id as u8; 32]),
            )
            .encode_into(&mut bytes)
            .unwrap();
        }
        stream.write_all(&bytes).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20 * round)).await;
        drop(stream); // gone, answers unread
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while open() > 0 || server.shared.load_per_core().iter().any(|l| *l > 0) {
        assert!(
            Instant::now() < deadline,
            "connections {} / queue {:?} never went back to zero",
            open(),
            server.shared.load_per_core()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The cores moved on: a new client is served.
    let conn = server.connect().await;
    assert_eq!(conn.ping(b"next").await.unwrap(), b"next");
}
