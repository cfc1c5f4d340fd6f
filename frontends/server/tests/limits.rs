//! The real `keyless-server` binary at its limits: timeouts, the
//! connection cap, the body and queue bounds, slow and unread clients, and
//! answers that leave while a long batch is still being signed.

mod running;

use std::time::{Duration, Instant};

use running::{block_on, client_tls, take_rsa_answers, Running};

#[test]
fn unfinished_handshakes_and_idle_connections_are_closed() {
    use std::io::Read;
    let mut server = Running::start(&["--workers", "1", "--handshake-timeout", "1", "--idle-timeout", "1"]);
    let (addr, pki) = (server.addr, server.pki.clone());

    // A TCP connection that never starts TLS is closed after ~1 s.
    let started = Instant::now();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let n = tcp.read(&mut [0u8; 16]).unwrap_or(0);
    assert_eq!(n, 0, "expected the server to close the connection");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed only after {:?}",
        started.elapsed()
    );

    block_on(async {
        let tls = client_tls(&pki);
        // A busy connection stays open past the idle timeout...
        let busy = keyless_client::connect(addr, "localhost", tls.clone()).await.unwrap();
        for _ in 0..8 {
            busy.ping(b"alive").await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // ...and one that goes quiet is closed.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(busy.ping(b"late").await.is_err(), "an idle connection was kept open");
    });
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
}

/// `max_connections_per_core` at its limit: with room for 3, a 4th
/// connection is closed at once (and counted as failed) while the 3 keep
/// working; when one leaves, a new one is served.
#[test]
fn the_connection_cap_closes_new_connections_at_its_limit() {
    let running = Running::start(&["--workers", "1", "--max-connections-per-core", "3"]);
    block_on(async {
        let tls = client_tls(&running.pki);
        let mut held = Vec::new();
        for _ in 0..3 {
            let conn = keyless_client::connect(running.addr, "localhost", tls.clone())
                .await
                .unwrap();
            conn.ping(b"in").await.unwrap();
            held.push(conn);
        }
        let fourth = async {
            let conn = keyless_client::connect(running.addr, "localhost", tls.clone()).await?;
            conn.ping(b"over").await
        };
        let refused = tokio::time::timeout(Duration::from_secs(5), fourth)
            .await
            .expect("no hang");
        assert!(refused.is_err(), "a 4th connection must be refused");
        for conn in &held {
            assert_eq!(conn.ping(b"still").await.unwrap(), b"still");
        }
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let again = async {
                let conn = keyless_client::connect(running.addr, "localhost", tls.clone()).await?;
                conn.ping(b"room").await
            };
            if again.await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "no room after a connection left");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let log = running.log();
    assert!(log.contains("max_connections_per_core"), "{log}");
}

/// A slow-loris client (one byte every 20 ms, never a whole frame) and a
/// client that never reads its answers do not slow a well-behaved client.
#[test]
fn slow_and_unread_clients_do_not_hold_up_others() {
    let running = Running::start(&["--workers", "1"]);
    let key = keyless_tools::conformance::load_expected_key(&running.pki.pubkeys_dir.join("p256.pem")).unwrap();
    let ski = key.info.ski;
    block_on(async {
        use tokio::io::AsyncWriteExt;
        let tls = client_tls(&running.pki);
        // Slow loris: a frame header, then a byte at a time.
        let mut slow = keyless_client::connect_stream(running.addr, "localhost", tls.clone())
            .await
            .unwrap();
        let trickle = tokio::spawn(async move {
            let frame = keyless_protocol::Frame::new(
                1,
                keyless_protocol::Message::request(keyless_protocol::Opcode::ECDSA_SIGN_SHA256, Some(ski), vec![0; 32]),
            )
            .encode()
            .unwrap();
            for b in frame.iter().take(200) {
                if slow.write_all(&[*b]).await.is_err() || slow.flush().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            slow
        });
        // Never reads: thousands of requests written, no answer read.
        let mut deaf = keyless_client::connect_stream(running.addr, "localhost", tls.clone())
            .await
            .unwrap();
        let flood = tokio::spawn(async move {
            let mut bytes = Vec::new();
            for id in 0..4000u32 {
                keyless_protocol::Frame::new(
                    id,
                    keyless_protocol::Message::request(
                        keyless_protocol::Opcode::ECDSA_SIGN_SHA256,
                        Some(ski),
                        vec![7; 32],
                    ),
                )
                .encode_into(&mut bytes)
                .unwrap();
            }
            // The server stops reading at the in-flight cap, so this write
            // may never finish; it must not matter to anyone else.
            let _ = tokio::time::timeout(Duration::from_secs(6), deaf.write_all(&bytes)).await;
            deaf
        });
        let good = keyless_client::connect(running.addr, "localhost", tls).await.unwrap();
        let started = Instant::now();
        let calls = (0..500u32).map(|i| {
            let good = &good;
            let digest = [(i % 256) as u8; 32];
            async move {
                (
                    digest,
                    good.perform(keyless_protocol::Opcode::ECDSA_SIGN_SHA256, ski, &digest)
                        .await,
                )
            }
        });
        for (digest, r) in futures_util::future::join_all(calls).await {
            let signature = r.expect("the well-behaved client is served");
            key.verifier
                .verify(
                    keyless_keys::Operation::Ecdsa(keyless_keys::Hash::Sha256),
                    &digest,
                    &signature,
                )
                .expect("signature verifies");
        }
        assert!(
            started.elapsed() < Duration::from_secs(15), // a stall bound, not a speed claim
            "500 signatures took {:?} beside slow and deaf clients",
            started.elapsed()
        );
        drop(trickle.await.unwrap());
        drop(flood.await.unwrap());
    });
}

/// `max_request_body` and `core_queue` at their limits: a body one byte
/// over is answered with a format error and skipped, the request after it
/// on the same connection is answered; with a cross-core queue of one,
/// 500 pipelined requests on one connection over two cores all verify.
#[test]
fn body_and_queue_limits_hold_at_their_bounds() {
    let running = Running::start(&["--workers", "2", "--max-request-body", "1100", "--core-queue", "1"]);
    let key = keyless_tools::conformance::load_expected_key(&running.pki.pubkeys_dir.join("p256.pem")).unwrap();
    block_on(async {
        use keyless_protocol::{split_frame, ErrorCode, Frame, Message, Opcode};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = client_tls(&running.pki);
        let mut raw = keyless_client::connect_stream(running.addr, "localhost", tls.clone())
            .await
            .unwrap();
        let mut bytes = Vec::new();
        for (id, len) in [(1u32, 1100u16), (2, 1101)] {
            // A header announcing `len` body bytes: a ping TLV padded out.
            // opcode TLV (tag 0x11, length 1, ping), then a padding TLV
            // (tag 0x20) filling the body to exactly `len` bytes.
            let mut body = vec![0x11, 0x00, 0x01, 0xF1, 0x20];
            body.extend_from_slice(&(len - 7).to_be_bytes());
            body.resize(len as usize, 0);
            bytes.extend_from_slice(&[1, 0]);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&id.to_be_bytes());
            bytes.extend_from_slice(&body);
        }
        Frame::new(3, Message::request(Opcode::PING, None, b"after".to_vec()))
            .encode_into(&mut bytes)
            .unwrap();
        raw.write_all(&bytes).await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut answers = Vec::new();
        while answers.len() < 3 {
            let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf))
                .await
                .expect("answers come")
                .unwrap();
            assert!(n > 0, "connection closed after {} answers", answers.len());
            got.extend_from_slice(&buf[..n]);
            while let Some(frame) = split_frame(&got) {
                let len = frame.header.frame_len();
                answers.push((frame.header.id, frame.decode().unwrap().message));
                got.drain(..len);
            }
        }
        answers.sort_by_key(|(id, _)| *id);
        assert_eq!(answers[0].1.opcode, Some(Opcode::PONG), "at the limit: accepted");
        assert_eq!(
            answers[1].1.error_code(),
            Some(Ok(ErrorCode::Format)),
            "one byte over: format error"
        );
        assert_eq!(
            answers[2].1.payload.as_deref(),
            Some(&b"after"[..]),
            "the connection goes on"
        );

        let conn = keyless_client::connect(running.addr, "localhost", tls).await.unwrap();
        let calls = (0..500u32).map(|i| {
            let conn = &conn;
            let digest = [(i % 256) as u8; 32];
            async move {
                (
                    digest,
                    conn.perform(Opcode::ECDSA_SIGN_SHA256, key.info.ski, &digest).await,
                )
            }
        });
        for (digest, r) in futures_util::future::join_all(calls).await {
            let sig = r.expect("answered at the queue bound");
            key.verifier
                .verify(
                    keyless_keys::Operation::Ecdsa(keyless_keys::Hash::Sha256),
                    &digest,
                    &sig,
                )
                .unwrap();
        }
    });
}

#[test]
fn answers_leave_while_a_long_batch_is_still_being_signed() {
    // One core reads a write of 512 RSA-2048 requests (a TLS record's worth,
    // some 237, per read) and signs them back to back. With batch_flush at
    // 1 ms it hands answers to the writer at least every millisecond, so
    // the client can refill its pipeline meanwhile: a batch of 256 signed
    // over tens of ms leaves in dozens of hand-offs. Without the time bound
    // a read's answers leave in two (half of the batch, then the rest), so
    // the whole write in about five. Counted by the server, not timed by
    // the client, so a loaded machine changes the count only upwards.
    use keyless_protocol::{Frame, Message, Opcode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const N: u32 = 512;
    let server = Running::start(&["--workers", "1", "--batch-flush-us", "1000"]);
    let keys = keyless_tools::conformance::load_expected_keys(&server.pki.pubkeys_dir).unwrap();
    let rsa = keys.iter().find(|k| k.name == "rsa2048").unwrap();
    block_on(async {
        let mut stream = keyless_client::connect_stream(server.addr, "localhost", client_tls(&server.pki))
            .await
            .unwrap();
        let mut batch = Vec::new();
        for id in 0..N {
            let m = Message::request(Opcode::RSA_SIGN_SHA256, Some(rsa.info.ski), vec![id as u8; 32]);
            Frame::new(id, m).encode_into(&mut batch).unwrap();
        }
        stream.write_all(&batch).await.unwrap();
        let (mut buf, mut answered) = (Vec::new(), 0u32);
        while answered < N {
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed after {answered} answers");
            buf.extend_from_slice(&chunk[..n]);
            answered += take_rsa_answers(&mut buf, rsa);
        }
    });
    let metrics = running::http_get(server.metrics_port, "/metrics");
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}")) as u64
    };
    let handoffs = value("keyless_core_handoff_size_count{core=\"0\"}");
    assert_eq!(
        value("keyless_core_handoff_size_sum{core=\"0\"}"),
        u64::from(N),
        "{metrics}"
    );
    assert!(
        handoffs >= 16,
        "{N} answers left in {handoffs} hand-offs: answers were held back"
    );
}
