//! Multi-buffer calls of 1 to 8 lanes against single AWS-LC signatures of
//! the same key, per lane class: where the lane count that pays for a call
//! (`LaneClass::min_lanes`) comes from. crypto_mb is measured where the CPU
//! has AVX-512 IFMA (library from `KEYLESS_CRYPTO_MB`, else
//! /opt/keyless-crypto-mb/lib, else the loader path); the AWS-LC reference
//! always, which is the lanes path's own cost (padding, nonces, DER, the
//! RSA check) on top of single signatures. Ed25519 lanes are timed through
//! the library's call itself, so a library that failed its self-test at
//! load (and whose lanes the server does not use) is still measured.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyless_keys::memory::{KeyMaterial, PublicKey};
use keyless_keys::multibuffer::{self, CryptoMb, EdLane, Lane, LaneKey, LaneMath, Reference, RsaLane, LANES};
use keyless_keys::{Hash, Operation, PrivateKey};
use keyless_pki::KeyType;
use zeroize::Zeroizing;

fn maths() -> Vec<(&'static str, Box<dyn LaneMath>)> {
    let mut maths: Vec<(&'static str, Box<dyn LaneMath>)> = vec![("reference", Box::new(Reference::new()))];
    let path = std::env::var_os("KEYLESS_CRYPTO_MB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/keyless-crypto-mb/lib/libcrypto_mb.so.11"));
    let loaded = if path.exists() {
        CryptoMb::load(Some(&path))
    } else {
        CryptoMb::load(None)
    };
    match loaded {
        Ok(lib) => maths.push(("crypto_mb", Box::new(lib))),
        Err(why) => eprintln!("crypto_mb not measured: {why}"),
    }
    maths
}

fn lanes(c: &mut Criterion) {
    let cases = [
        ("ecdsa-p256", KeyType::EcdsaP256, Operation::Ecdsa(Hash::Sha256)),
        ("ecdsa-p384", KeyType::EcdsaP384, Operation::Ecdsa(Hash::Sha384)),
        ("ecdsa-p521", KeyType::EcdsaP521, Operation::Ecdsa(Hash::Sha512)),
        ("rsa-2048", KeyType::Rsa2048, Operation::RsaPkcs1(Hash::Sha256)),
        ("ed25519", KeyType::Ed25519, Operation::Ed25519),
    ];
    let maths = maths();
    for (name, kind, op) in cases {
        let pem = kind.generate().unwrap().serialize_pem();
        let material = KeyMaterial::parse(pem.as_bytes(), Path::new("bench.key")).unwrap();
        let key = material.instantiate().unwrap();
        let lane_key = key.lane_key().unwrap();
        // Ed25519 signs the message: a TLS 1.3 CertificateVerify's is 130 bytes.
        let input = vec![0x5A; op.digest().map_or(130, |h| h.len())];
        let mut g = c.benchmark_group(format!("multibuffer/{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("single AWS-LC", |b| {
            b.iter(|| key.perform(op, black_box(&input)).unwrap())
        });
        if let Operation::RsaPkcs1(_) = op {
            // What the check of each RSA lane against the public exponent
            // costs (a verification is that operation and a compare).
            let public = PublicKey::from_spki(&material.public().spki_der).unwrap();
            let sig = key.perform(op, &input).unwrap();
            g.bench_function("verify AWS-LC", |b| {
                b.iter(|| public.verify(op, black_box(&input), black_box(&sig)).unwrap())
            });
        }
        for (math_name, math) in &maths {
            for filled in [1, 2, 3, 4, 6, LANES] {
                let batch: Vec<Lane<'_>> = (0..filled)
                    .map(|_| Lane {
                        key: lane_key,
                        op,
                        input: &input,
                    })
                    .collect();
                g.throughput(Throughput::Elements(filled as u64));
                if let LaneKey::Ed(ed) = lane_key {
                    let lanes: Vec<EdLane<'_>> = (0..filled).map(|_| EdLane { key: ed, msg: &input }).collect();
                    let mut sig = [[0u8; 64]; LANES];
                    g.bench_function(format!("{math_name}/{filled} lanes"), |b| {
                        b.iter(|| math.ed25519(black_box(&lanes), &mut sig))
                    });
                    continue;
                }
                g.bench_function(format!("{math_name}/{filled} lanes"), |b| {
                    b.iter(|| multibuffer::sign(math.as_ref(), black_box(&batch)))
                });
                if let (LaneKey::Rsa(rsa), LANES) = (lane_key, filled) {
                    // The library's own rate: the private operation alone,
                    // without padding or the check of each result.
                    let class = lane_key.class();
                    let em = vec![0x11u8; class.scalar_len()];
                    let raw: Vec<RsaLane<'_>> = (0..LANES).map(|_| RsaLane { key: rsa, input: &em }).collect();
                    let mut out: Vec<Zeroizing<Vec<u8>>> = (0..LANES)
                        .map(|_| Zeroizing::new(vec![0u8; class.scalar_len()]))
                        .collect();
                    g.bench_function(format!("{math_name}/8 lanes, private operation only"), |b| {
                        b.iter(|| math.rsa_private(class, black_box(&raw), &mut out))
                    });
                }
            }
        }
        g.finish();
    }
}

criterion_group!(benches, lanes);
criterion_main!(benches);
