//! Signing per algorithm through the in-memory backend, and the whole
//! request path (decode, key lookup, sign, encode) for the same key: the
//! ratio of the two is the server's overhead on top of raw signing.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyless_engine::handler;
use keyless_engine::request::Request;
use keyless_keys::memory::KeyMaterial;
use keyless_keys::{Hash, KeyStore, Operation, PrivateKey};
use keyless_pki::KeyType;
use keyless_protocol::{split_frame, Frame, Message, Opcode};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

fn material(kind: KeyType) -> KeyMaterial {
    let pem = kind.generate().unwrap().serialize_pem();
    KeyMaterial::parse(pem.as_bytes(), Path::new("bench.key")).unwrap()
}

fn signing(c: &mut Criterion) {
    let cases = [
        ("ecdsa-p256/sha256", KeyType::EcdsaP256, Opcode::ECDSA_SIGN_SHA256),
        ("ecdsa-p384/sha384", KeyType::EcdsaP384, Opcode::ECDSA_SIGN_SHA384),
        ("ed25519", KeyType::Ed25519, Opcode::ED25519_SIGN),
        ("rsa-2048/pkcs1-sha256", KeyType::Rsa2048, Opcode::RSA_SIGN_SHA256),
        ("rsa-2048/pss-sha256", KeyType::Rsa2048, Opcode::RSA_PSS_SIGN_SHA256),
    ];
    let mut g = c.benchmark_group("signing");
    g.throughput(Throughput::Elements(1));
    for (name, kind, opcode) in cases {
        let m = material(kind);
        let ski = m.public().ski;
        let op = Operation::from_kind(opcode.kind()).unwrap();
        let input = vec![0x5A; op.digest().map_or(32, Hash::len)];
        let key = m.instantiate().unwrap();
        g.bench_function(format!("{name}/raw"), |b| {
            b.iter(|| key.perform(op, black_box(&input)).unwrap())
        });

        let mut store = KeyStore::new();
        store.insert(Box::new(m.instantiate().unwrap()));
        let request = Frame::new(1, Message::request(opcode, Some(ski), input.clone()))
            .encode()
            .unwrap();
        let mut out = Vec::with_capacity(2048);
        g.bench_function(format!("{name}/request path"), |b| {
            b.iter(|| {
                out.clear();
                let raw = split_frame(black_box(&request)).unwrap();
                let request = Request::decode(raw, Instant::now());
                handler::answer_inline(&store, &request)
                    .unwrap()
                    .encode_into(&mut out)
                    .unwrap();
            })
        });
    }
    g.finish();
}

/// The batch path of a connection: 64 pipelined requests in one buffer,
/// split, answered and encoded into one output buffer (one write), against
/// 64 raw signatures of the same key.
fn batch(c: &mut Criterion) {
    let m = material(KeyType::EcdsaP256);
    let ski = m.public().ski;
    let key = m.instantiate().unwrap();
    let mut store = KeyStore::new();
    store.insert(Box::new(m.instantiate().unwrap()));
    let mut input = Vec::new();
    for id in 0..64 {
        let req = Message::request(Opcode::ECDSA_SIGN_SHA256, Some(ski), vec![id as u8; 32]);
        Frame::new(id, req).encode_into(&mut input).unwrap();
    }
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(64));
    g.bench_function("ecdsa-p256 x64/raw", |b| {
        b.iter(|| {
            for i in 0..64u8 {
                black_box(key.perform(Operation::Ecdsa(Hash::Sha256), &[i; 32]).unwrap());
            }
        })
    });
    let mut out = Vec::with_capacity(64 * 1024);
    g.bench_function("ecdsa-p256 x64/batch path", |b| {
        b.iter(|| {
            out.clear();
            let mut rest = &input[..];
            while let Some(raw) = split_frame(rest) {
                rest = &rest[raw.header.frame_len()..];
                let request = Request::decode(raw, Instant::now());
                handler::answer_inline(&store, &request)
                    .unwrap()
                    .encode_into(&mut out)
                    .unwrap();
            }
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group!(benches, signing, batch);
criterion_main!(benches);
