//! The client-to-edge core ([`keyless_edge::inbound`]) under random
//! schedules: a real rustls client and server in memory, the client's
//! records cut into random chunks, server records and upstream answers
//! interleaved in random order, TLS 1.3 and 1.2, full and resumed
//! handshakes, the client's data written before its handshake ends (so a
//! TLS 1.3 client sends it with its Finished), with and without a
//! close_notify after it. The driver here does what the proxy does: it
//! polls after every handshake step and every read, and waits only when
//! told to. Every byte must arrive once and in order, both ways.

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use keyless_edge::inbound::{Inbound, Next};
use proptest::prelude::*;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

struct Configs {
    server: Arc<ServerConfig>,
    /// TLS 1.3 and TLS 1.2 clients (each keeps its sessions for resumption).
    tls13: Arc<ClientConfig>,
    tls12: Arc<ClientConfig>,
}

fn configs() -> &'static Configs {
    static C: OnceLock<Configs> = OnceLock::new();
    C.get_or_init(|| {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let ca = keyless_pki::Ca::new("inbound test CA").unwrap();
        let site = ca
            .issue("localhost", &["localhost"], keyless_pki::Usage::Server)
            .unwrap();
        let chain = vec![CertificateDer::from_pem_slice(site.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(site.key_pem.as_bytes()).unwrap();
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
            .unwrap();
        let client = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            Arc::new(
                ClientConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(versions)
                    .unwrap()
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth(),
            )
        };
        Configs {
            server: Arc::new(server),
            tls13: client(&[&rustls::version::TLS13]),
            tls12: client(&[&rustls::version::TLS12]),
        }
    })
}

/// One step of a schedule.
#[derive(Debug, Clone)]
enum Event {
    /// Up to this many of the client's TLS bytes reach the edge.
    ToEdge(usize),
    /// Up to this many of the edge's TLS bytes reach the client.
    ToClient(usize),
    /// The upstream answers (the next answer, if the handshake is done).
    Upstream,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (1usize..6000).prop_map(Event::ToEdge),
        3 => (1usize..6000).prop_map(Event::ToClient),
        1 => Just(Event::Upstream),
    ]
}

/// Bytes of message `i`, `len` long: each byte says where it is.
fn message(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| ((i * 131 + j * 7) % 251) as u8).collect()
}

struct Run {
    client: ClientConnection,
    server: ServerConnection,
    inbound: Inbound,
    to_edge: Vec<u8>,
    to_client: Vec<u8>,
    upstream_got: Vec<u8>,
    client_got: Vec<u8>,
    finished: bool,
    answers_sent: usize,
    /// The client sends close_notify once its handshake is done and all
    /// its requests are written.
    half_close: bool,
    /// Request bytes rustls has not taken yet (it buffers 64 KiB before
    /// the handshake ends).
    unsent: Vec<u8>,
}

impl Run {
    /// What the proxy does after bytes from the client: during the
    /// handshake, give them to rustls; after it (right after it, too), poll
    /// until told to wait.
    fn edge_step(&mut self) -> Result<(), TestCaseError> {
        if self.server.is_handshaking() {
            self.inbound.handshake(&mut self.server).map_err(fail)?;
        }
        if !self.server.is_handshaking() && !self.finished {
            let mut plain = vec![0u8; 16 * 1024];
            loop {
                match self.inbound.poll(&mut self.server, &mut plain).map_err(fail)? {
                    Next::Plaintext(n) => self.upstream_got.extend_from_slice(&plain[..n]),
                    Next::Finished => {
                        self.finished = true;
                        break;
                    }
                    Next::NeedInput => {
                        prop_assert!(!self.inbound.has_pending(), "waits with bytes buffered");
                        break;
                    }
                }
            }
        }
        self.server_output();
        Ok(())
    }

    fn server_output(&mut self) {
        while self.server.wants_write() {
            self.server.write_tls(&mut self.to_client).unwrap();
        }
    }

    fn client_output(&mut self) {
        if !self.unsent.is_empty() {
            let n = self.client.writer().write(&self.unsent).unwrap();
            self.unsent.drain(..n);
        }
        if self.half_close && !self.client.is_handshaking() && self.unsent.is_empty() {
            // After its requests, as a client that is done sending does.
            self.client.send_close_notify();
            self.half_close = false;
        }
        while self.client.wants_write() {
            self.client.write_tls(&mut self.to_edge).unwrap();
        }
    }

    fn apply(&mut self, event: &Event, answers: &[Vec<u8>]) -> Result<(), TestCaseError> {
        match *event {
            Event::ToEdge(n) => {
                self.client_output();
                let n = n.min(self.to_edge.len());
                if n > 0 {
                    let chunk: Vec<u8> = self.to_edge.drain(..n).collect();
                    self.inbound.received(&chunk);
                    self.edge_step()?;
                }
            }
            Event::ToClient(n) => {
                let n = n.min(self.to_client.len());
                let mut chunk = &self.to_client[..n];
                while !chunk.is_empty() {
                    self.client.read_tls(&mut chunk).unwrap();
                    self.client.process_new_packets().map_err(fail)?;
                    read_all(&mut self.client, &mut self.client_got);
                }
                self.to_client.drain(..n);
            }
            Event::Upstream => {
                if !self.server.is_handshaking() && self.answers_sent < answers.len() {
                    self.server.writer().write_all(&answers[self.answers_sent]).unwrap();
                    self.answers_sent += 1;
                    self.server_output();
                }
            }
        }
        Ok(())
    }
}

fn read_all(client: &mut ClientConnection, into: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        match client.reader().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// One connection: `requests` written by the client before its handshake
/// ends, `answers` from the upstream, events in the given order, then
/// everything delivered.
fn connection(
    config: Arc<ClientConfig>,
    requests: &[Vec<u8>],
    answers: &[Vec<u8>],
    half_close: bool,
    events: &[Event],
) -> Result<bool, TestCaseError> {
    let client = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut run = Run {
        client,
        server: ServerConnection::new(configs().server.clone()).unwrap(),
        inbound: Inbound::default(),
        to_edge: Vec::new(),
        to_client: Vec::new(),
        upstream_got: Vec::new(),
        client_got: Vec::new(),
        finished: false,
        answers_sent: 0,
        half_close,
        unsent: requests.concat(),
    };
    // Written before the handshake starts: a TLS 1.3 client's first bytes
    // then leave with its Finished.
    run.client_output();
    for e in events {
        run.apply(e, answers)?;
    }
    // Then everything in flight arrives, as a patient client would see it.
    for _ in 0..answers.len() + 8 {
        run.apply(&Event::ToEdge(usize::MAX), answers)?;
        run.apply(&Event::Upstream, answers)?;
        run.apply(&Event::ToClient(usize::MAX), answers)?;
    }
    prop_assert!(!run.server.is_handshaking(), "the handshake ended");
    let sent: Vec<u8> = requests.concat();
    prop_assert_eq!(
        run.upstream_got.len(),
        sent.len(),
        "every request byte reached the upstream"
    );
    prop_assert!(run.upstream_got == sent, "request bytes in order, once each");
    prop_assert_eq!(run.finished, half_close, "Finished exactly when the client closed");
    let answered: Vec<u8> = answers.concat();
    prop_assert!(run.client_got == answered, "answer bytes in order, once each");
    Ok(run.server.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_byte_arrives_once_in_order_under_any_chunking(
        tls13 in any::<bool>(),
        sizes in prop::collection::vec(0usize..3000, 1..5),
        big in prop::option::of(20_000usize..70_000),
        answer_sizes in prop::collection::vec(1usize..3000, 0..4),
        half_close in any::<bool>(),
        events in prop::collection::vec(event(), 0..40),
        events2 in prop::collection::vec(event(), 0..40),
    ) {
        let mut requests: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| message(i, n)).collect();
        if let Some(n) = big {
            requests.push(message(99, n));
        }
        let answers: Vec<Vec<u8>> = answer_sizes.iter().enumerate().map(|(i, &n)| message(i + 50, n)).collect();
        let config = if tls13 { configs().tls13.clone() } else { configs().tls12.clone() };
        // Twice with one client configuration: the second resumes.
        connection(config.clone(), &requests, &answers, half_close, &events)?;
        let resumed = connection(config, &requests, &answers, half_close, &events2)?;
        prop_assert!(resumed, "the second connection resumed with the first one's ticket");
    }
}

#[test]
fn a_tls13_request_sent_with_the_finished_is_handed_out_at_once() {
    // The case the proxy once left inside rustls: the whole client flight
    // (Finished and the request) arrives in one read.
    let request = b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n".to_vec();
    let mut client = ClientConnection::new(configs().tls13.clone(), "localhost".try_into().unwrap()).unwrap();
    client.writer().write_all(&request).unwrap();
    let mut server = ServerConnection::new(configs().server.clone()).unwrap();
    let mut inbound = Inbound::default();
    let mut wire = Vec::new();
    for _ in 0..4 {
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        inbound.received(&wire);
        wire.clear();
        inbound.handshake(&mut server).unwrap();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
        wire.clear();
        if !server.is_handshaking() {
            break;
        }
    }
    assert!(!server.is_handshaking());
    assert!(
        !inbound.has_pending(),
        "the request was taken with the Finished: it is inside rustls now"
    );
    let mut plain = [0u8; 1024];
    assert_eq!(
        inbound.poll(&mut server, &mut plain).unwrap(),
        Next::Plaintext(request.len()),
        "poll hands it out without waiting for the socket"
    );
    assert_eq!(&plain[..request.len()], &request[..]);
    assert_eq!(inbound.poll(&mut server, &mut plain).unwrap(), Next::NeedInput);
    inbound.received_eof();
    assert_eq!(inbound.poll(&mut server, &mut plain).unwrap(), Next::Finished);
}
