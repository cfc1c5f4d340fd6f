//! Decode and encode of a padded signing request, as it arrives on the wire.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyless_protocol::{split_frame, Frame, Message, Opcode};
use std::hint::black_box;

fn request() -> Frame {
    Frame::new(
        7,
        Message {
            sni: Some(b"www.example.com".to_vec()),
            client_ip: Some("192.0.2.10".parse().unwrap()),
            server_ip: Some("198.51.100.1".parse().unwrap()),
            ..Message::request(Opcode::ECDSA_SIGN_SHA256, Some([3; 20]), vec![0xAB; 32])
        },
    )
}

fn codec(c: &mut Criterion) {
    let frame = request();
    let bytes = frame.encode().unwrap();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode padded request", |b| {
        b.iter(|| split_frame(black_box(&bytes)).unwrap().decode().unwrap())
    });
    let mut out = Vec::with_capacity(2048);
    g.bench_function("encode padded request", |b| {
        b.iter(|| {
            out.clear();
            black_box(&frame).encode_into(&mut out).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
