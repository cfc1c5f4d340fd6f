//! Multi-buffer lanes against keys made by the real `openssl` binary. Every
//! signature is verified with the public key; PKCS#1 signatures and raw
//! decryptions must equal AWS-LC's single operation byte for byte.
//!
//! The lanes run with every [`LaneMath`] this machine has: the AWS-LC
//! reference always, and crypto_mb where the CPU has AVX-512 IFMA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use keyless_keys::memory::{InMemoryKey, KeyMaterial, PublicKey};
use keyless_keys::multibuffer::{self, CryptoMb, Lane, LaneClass, LaneMath, Mode, Reference, LANES};
use keyless_keys::{Hash, Operation, PrivateKey};
use proptest::prelude::*;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl binary");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct TestKey {
    key: InMemoryKey,
    public: PublicKey,
}

fn genkey(dir: &Path, name: &str, algo: &[&str]) -> TestKey {
    let path = dir.join(name);
    let mut args = vec!["genpkey", "-out", path.to_str().unwrap()];
    args.extend_from_slice(algo);
    openssl(&args);
    parse(&std::fs::read(&path).unwrap())
}

fn parse(pem: &[u8]) -> TestKey {
    let material = KeyMaterial::parse(pem, Path::new("test.pem")).unwrap();
    TestKey {
        public: PublicKey::from_spki(&material.public().spki_der).unwrap(),
        key: material.instantiate().unwrap(),
    }
}

/// Keys per class (two or three of the common sizes, so lanes mix keys):
/// made once, parsed by each test thread.
fn keys() -> Vec<(LaneClass, Vec<TestKey>)> {
    static PEMS: OnceLock<Vec<(LaneClass, Vec<Vec<u8>>)>> = OnceLock::new();
    let pems = PEMS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ec = |curve: &str| {
            vec![
                "-algorithm".to_string(),
                "EC".into(),
                "-pkeyopt".into(),
                format!("ec_paramgen_curve:{curve}"),
            ]
        };
        let rsa = |bits: u32| {
            vec![
                "-algorithm".to_string(),
                "RSA".into(),
                "-pkeyopt".into(),
                format!("rsa_keygen_bits:{bits}"),
            ]
        };
        let ed = vec!["-algorithm".to_string(), "ED25519".into()];
        let plan: [(LaneClass, Vec<String>, usize); 7] = [
            (LaneClass::EcdsaP256, ec("P-256"), 3),
            (LaneClass::EcdsaP384, ec("P-384"), 2),
            (LaneClass::EcdsaP521, ec("P-521"), 2),
            (LaneClass::Rsa2048, rsa(2048), 3),
            (LaneClass::Rsa3072, rsa(3072), 1),
            (LaneClass::Rsa4096, rsa(4096), 1),
            (LaneClass::Ed25519, ed, 3),
        ];
        plan.into_iter()
            .map(|(class, algo, count)| {
                let algo: Vec<&str> = algo.iter().map(String::as_str).collect();
                let pems = (0..count)
                    .map(|i| {
                        let path = dir.path().join(format!("{}-{i}.pem", class.name()));
                        let mut args = vec!["genpkey", "-out", path.to_str().unwrap()];
                        args.extend_from_slice(&algo);
                        openssl(&args);
                        std::fs::read(&path).unwrap()
                    })
                    .collect();
                (class, pems)
            })
            .collect()
    });
    pems.iter()
        .map(|(class, pems)| {
            let keys: Vec<TestKey> = pems.iter().map(|p| parse(p)).collect();
            for k in &keys {
                assert_eq!(k.key.lane_key().map(|l| l.class()), Some(*class));
            }
            (*class, keys)
        })
        .collect()
}

/// Where the tests find crypto_mb: `KEYLESS_TEST_CRYPTO_MB`, else where
/// `.ci/run` unpacks Debian 13's package.
fn library_path() -> PathBuf {
    let path = std::env::var_os("KEYLESS_TEST_CRYPTO_MB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/keyless-crypto-mb/lib/libcrypto_mb.so.11"));
    assert!(
        path.exists(),
        "{} is missing: unpack Debian 13's libcrypto-mb11 there as .ci/run does, or set KEYLESS_TEST_CRYPTO_MB",
        path.display()
    );
    path
}

fn cpu_has_ifma() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| s.split_whitespace().any(|w| w == "avx512ifma"))
}

/// Every lane computer this machine has.
fn maths() -> Vec<Box<dyn LaneMath>> {
    let mut maths: Vec<Box<dyn LaneMath>> = vec![Box::new(Reference::new())];
    if let Ok(lib) = CryptoMb::load(Some(&library_path())) {
        maths.push(Box::new(lib));
    }
    maths
}

#[test]
fn crypto_mb_loads_and_runs_exactly_where_the_cpu_has_ifma() {
    let path = library_path();
    let loaded = CryptoMb::load(Some(&path));
    if cpu_has_ifma() {
        let lib = loaded.expect("crypto_mb runs on a CPU with AVX-512 IFMA");
        assert!(lib.describe().contains("crypto_mb"), "{}", lib.describe());
        // Its ECDSA and RSA have always been right on the CPUs we met; its
        // Ed25519 is wrong on AMD EPYC Zen 4 (1.0.14), and the self-test at
        // load says so.
        for class in LaneClass::ALL {
            assert_eq!(
                lib.runs(class),
                class != LaneClass::Ed25519 || ed25519_right(&lib),
                "{class:?}: {}",
                lib.describe()
            );
        }
        eprintln!("{}", lib.describe());
        assert!(
            !lib.describe().contains("RSA results checked with AWS-LC"),
            "its public operation is right: {}",
            lib.describe()
        );
        let on = multibuffer::select(Mode::On, Some(&path)).unwrap();
        assert!(on.math.is_some());
    } else {
        let why = loaded.err().expect("crypto_mb refuses a CPU without IFMA");
        assert!(why.contains("lacks AVX-512 IFMA"), "{why}");
        eprintln!("this CPU: {why}; the lanes are tested with the AWS-LC reference only");
        let on = multibuffer::select(Mode::On, Some(&path))
            .err()
            .expect("`on` fails here");
        assert!(
            on.starts_with("multibuffer: on, but crypto_mb cannot be used: this CPU lacks AVX-512 IFMA"),
            "{on}"
        );
        let auto = multibuffer::select(Mode::Auto, Some(&path)).unwrap();
        assert!(auto.math.is_none());
        assert!(auto.reason.contains("lacks AVX-512 IFMA"), "{}", auto.reason);
    }
    let off = multibuffer::select(Mode::Off, Some(&path)).unwrap();
    assert!(off.math.is_none());
    let missing = CryptoMb::load(Some(Path::new("/nonexistent/libcrypto_mb.so.11")))
        .err()
        .unwrap();
    assert!(missing.contains("/nonexistent/libcrypto_mb.so.11"), "{missing}");
    assert!(multibuffer::select(Mode::On, Some(Path::new("/nonexistent/x.so"))).is_err());
}

/// Whether `lib` signs RFC 8032's TEST 1 right, asked directly.
fn ed25519_right(lib: &CryptoMb) -> bool {
    let (seed, _, signature) = multibuffer::RFC_8032_VECTORS[0];
    let der = hex::decode(format!("302e020100300506032b657004220420{seed}")).unwrap();
    let key = parse(&der);
    let Some(multibuffer::LaneKey::Ed(ed)) = key.key.lane_key() else {
        panic!("no Ed25519 lane key")
    };
    let lanes: Vec<multibuffer::EdLane<'_>> = (0..LANES).map(|_| multibuffer::EdLane { key: ed, msg: &[] }).collect();
    let mut sig = [[0u8; 64]; LANES];
    let good = lib.ed25519(&lanes, &mut sig);
    good == [true; LANES] && sig.iter().all(|s| hex::encode(s) == signature)
}

#[test]
fn keys_without_a_lane_class_sign_alone() {
    let dir = tempfile::tempdir().unwrap();
    let rsa2560 = genkey(
        dir.path(),
        "2560.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2560"],
    );
    assert!(rsa2560.key.lane_key().is_none());
    let keys = keys();
    let rsa = &keys.iter().find(|(c, _)| *c == LaneClass::Rsa2048).unwrap().1[0].key;
    let lane = rsa.lane_key().unwrap();
    assert!(lane.serves(Operation::RsaPkcs1(Hash::Md5Sha1)));
    assert!(!lane.serves(Operation::RsaPss(Hash::Md5Sha1)));
    assert!(!lane.serves(Operation::Ecdsa(Hash::Sha256)));
    assert!(!lane.serves(Operation::Ed25519));
    let ed = &keys.iter().find(|(c, _)| *c == LaneClass::Ed25519).unwrap().1[0].key;
    let lane = ed.lane_key().unwrap();
    assert!(lane.serves(Operation::Ed25519));
    assert!(!lane.serves(Operation::Ecdsa(Hash::Sha256)));
    assert!(!lane.serves(Operation::RsaPkcs1(Hash::Sha256)));
}

/// The operations a request for a key of `class` may ask, with inputs.
fn op_for(class: LaneClass, pick: usize) -> Operation {
    match class {
        LaneClass::EcdsaP256 | LaneClass::EcdsaP384 | LaneClass::EcdsaP521 => {
            { [Hash::Sha256, Hash::Sha384, Hash::Sha1, Hash::Sha512, Hash::Sha224][pick % 5] }.into_ecdsa()
        }
        LaneClass::Ed25519 => Operation::Ed25519,
        _ => [
            Operation::RsaPkcs1(Hash::Sha256),
            Operation::RsaPss(Hash::Sha256),
            Operation::RsaPkcs1(Hash::Md5Sha1),
            Operation::RsaRawDecrypt,
            Operation::RsaPss(Hash::Sha384),
            Operation::RsaPkcs1(Hash::Sha512),
            Operation::RsaPkcs1(Hash::Sha1),
        ][pick % 7],
    }
}

trait IntoEcdsa {
    fn into_ecdsa(self) -> Operation;
}

impl IntoEcdsa for Hash {
    fn into_ecdsa(self) -> Operation {
        Operation::Ecdsa(self)
    }
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut v).unwrap();
    v
}

/// A valid input for `op` on `key`.
fn input_for(key: &TestKey, op: Operation) -> Vec<u8> {
    match op {
        Operation::RsaRawDecrypt => {
            let k = key.key.lane_key().unwrap().class().scalar_len();
            let mut m = random(k);
            m[0] = 0; // below n
            key.public.rsa_raw_encrypt(&m).unwrap()
        }
        // The message itself (a TLS 1.3 CertificateVerify's is 98 to 130
        // bytes): any length from 0 to 300.
        Operation::Ed25519 => {
            let len = u16::from_le_bytes(random(2).try_into().unwrap()) % 301;
            random(len.into())
        }
        op => random(op.digest().unwrap().len()),
    }
}

/// Check one lane's answer as a client would, and against AWS-LC alone.
fn check(key: &TestKey, op: Operation, input: &[u8], result: &[u8]) {
    match op {
        Operation::RsaRawDecrypt => assert_eq!(result, key.key.perform(op, input).unwrap().as_slice()),
        Operation::RsaPkcs1(_) => {
            key.public.verify(op, input, result).unwrap();
            assert_eq!(
                result,
                key.key.perform(op, input).unwrap().as_slice(),
                "PKCS#1 differs from AWS-LC's"
            );
        }
        Operation::Ed25519 => {
            key.public.verify(op, input, result).unwrap();
            assert_eq!(
                result,
                key.key.perform(op, input).unwrap().as_slice(),
                "Ed25519 (deterministic) differs from AWS-LC's"
            );
        }
        _ => key.public.verify(op, input, result).unwrap(),
    }
}

#[test]
fn every_class_signs_in_batches_of_one_to_eight_with_mixed_keys() {
    for math in maths() {
        for (class, class_keys) in &keys() {
            for filled in 1..=LANES {
                let picks: Vec<(usize, Operation)> = (0..filled)
                    .map(|i| (i % class_keys.len(), op_for(*class, i + filled)))
                    .collect();
                let inputs: Vec<Vec<u8>> = picks.iter().map(|(k, op)| input_for(&class_keys[*k], *op)).collect();
                let lanes: Vec<Lane<'_>> = picks
                    .iter()
                    .zip(&inputs)
                    .map(|((k, op), input)| Lane {
                        key: class_keys[*k].key.lane_key().unwrap(),
                        op: *op,
                        input,
                    })
                    .collect();
                let results = multibuffer::sign(math.as_ref(), &lanes).results;
                assert_eq!(results.len(), filled);
                for (((k, op), input), result) in picks.iter().zip(&inputs).zip(results) {
                    let result = result.unwrap_or_else(|e| panic!("{} {class:?} {op:?}: {e}", math.describe()));
                    check(&class_keys[*k], *op, input, &result);
                }
            }
        }
    }
}

/// The group orders, big-endian (SEC 2).
const P256_N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
const P384_N: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";

/// Digests at the edges of the order for a curve whose order is `n`: zero,
/// n, n + 1, all ones, one; each with whether crypto_mb refuses it (the
/// message it gets is zero: `ifma_check_range_n256` fails).
fn edge_digests(n: &str) -> Vec<(&'static str, Vec<u8>, bool)> {
    let n = hex::decode(n).unwrap();
    let mut n_plus_1 = n.clone();
    *n_plus_1.last_mut().unwrap() += 1; // n ends in 0x51 / 0x73: no carry
    let mut one = vec![0u8; n.len()];
    *one.last_mut().unwrap() = 1;
    vec![
        ("zero", vec![0u8; n.len()], true),
        ("n", n.clone(), true),
        ("n + 1", n_plus_1, false),
        ("all 0xff", vec![0xff; n.len()], false),
        ("one", one, false),
    ]
}

/// Eight requests of one digest, spread over `keys`, in one call (as eight
/// pipelined requests of a client fill one): every answer a signature that
/// verifies, and all eight signed alone after a refusal if `refused`.
fn eight_of(math: &dyn LaneMath, keys: &[TestKey], op: Operation, digest: &[u8], refused: bool, what: &str) {
    let lanes: Vec<Lane<'_>> = (0..LANES)
        .map(|i| Lane {
            key: keys[i % keys.len()].key.lane_key().unwrap(),
            op,
            input: digest,
        })
        .collect();
    let signed = multibuffer::sign(math, &lanes);
    let what = format!("{} {what}", math.describe());
    assert_eq!(signed.fallbacks, if refused { LANES } else { 0 }, "{what}");
    for (i, result) in signed.results.iter().enumerate() {
        let sig = result.as_ref().unwrap_or_else(|e| panic!("{what}: {e}"));
        check(&keys[i % keys.len()], op, digest, sig);
    }
}

#[test]
fn digests_the_library_refuses_are_signed_alone_with_the_single_paths_answer() {
    let keys = keys();
    let of = |class: LaneClass| &keys.iter().find(|(c, _)| *c == class).unwrap().1;
    for (class, hash, n) in [
        (LaneClass::EcdsaP256, Hash::Sha256, P256_N),
        (LaneClass::EcdsaP384, Hash::Sha384, P384_N),
    ] {
        let class_keys = of(class);
        let op = Operation::Ecdsa(hash);
        for math in maths() {
            for (name, digest, refused) in edge_digests(n) {
                eight_of(
                    math.as_ref(),
                    class_keys,
                    op,
                    &digest,
                    refused,
                    &format!("{class:?} digest {name}"),
                );
            }
            // Refused and good lanes in one call: each gets a signature.
            let edges = edge_digests(n);
            let lanes: Vec<Lane<'_>> = (0..LANES)
                .map(|i| Lane {
                    key: class_keys[0].key.lane_key().unwrap(),
                    op,
                    input: &edges[i % edges.len()].1,
                })
                .collect();
            let signed = multibuffer::sign(math.as_ref(), &lanes);
            let expected = (0..LANES).filter(|i| edges[i % edges.len()].2).count();
            assert_eq!(signed.fallbacks, expected, "{} {class:?} mixed", math.describe());
            for (i, result) in signed.results.iter().enumerate() {
                check(&class_keys[0], op, &edges[i % edges.len()].1, result.as_ref().unwrap());
            }
        }
    }
    let sha512 = Operation::Ecdsa(Hash::Sha512);
    // P-521: its order is wider than SHA-512, so only a zero digest is
    // zero for the library.
    for math in maths() {
        for (digest, refused) in [
            (vec![0u8; 64], true),
            (vec![0xff; 64], false),
            ([vec![0u8; 63], vec![1]].concat(), false),
        ] {
            eight_of(
                math.as_ref(),
                of(LaneClass::EcdsaP521),
                sha512,
                &digest,
                refused,
                "P-521",
            );
        }
    }
    // A longer digest whose leftmost bits are n is zero once reduced too.
    let mut digest = hex::decode(P256_N).unwrap();
    digest.extend_from_slice(&[0xab; 32]);
    for math in maths() {
        eight_of(
            math.as_ref(),
            of(LaneClass::EcdsaP256),
            sha512,
            &digest,
            true,
            "P-256 SHA-512 = n || ...",
        );
    }
}

#[test]
fn a_faulty_rsa_result_is_never_sent() {
    // Every third RSA result comes back with one bit flipped.
    let math = Reference::with_faults(3);
    let keys = keys();
    let (_, rsa) = keys.iter().find(|(c, _)| *c == LaneClass::Rsa2048).unwrap();
    let mut refused = 0;
    for round in 0..6 {
        let ops: Vec<Operation> = (0..LANES).map(|i| op_for(LaneClass::Rsa2048, i + round)).collect();
        let inputs: Vec<Vec<u8>> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| input_for(&rsa[i % rsa.len()], *op))
            .collect();
        let lanes: Vec<Lane<'_>> = ops
            .iter()
            .zip(&inputs)
            .enumerate()
            .map(|(i, (op, input))| Lane {
                key: rsa[i % rsa.len()].key.lane_key().unwrap(),
                op: *op,
                input,
            })
            .collect();
        for (i, result) in multibuffer::sign(&math, &lanes).results.into_iter().enumerate() {
            match result {
                Ok(out) => check(&rsa[i % rsa.len()], ops[i], &inputs[i], &out),
                Err(e) => {
                    assert_eq!(e.0, "the RSA result failed its check; not sent");
                    refused += 1;
                }
            }
        }
    }
    assert_eq!(
        refused,
        6 * LANES / 3,
        "each corrupted result is refused, and only those"
    );
}

#[test]
fn a_bad_lane_fails_alone() {
    let keys = keys();
    for math in maths() {
        for (class, class_keys) in &keys {
            let op = op_for(*class, 0);
            let good = input_for(&class_keys[0], op);
            let short = vec![1u8; 5];
            // Any message is an Ed25519 message: its bad lane asks for
            // ECDSA instead.
            let (bad_op, bad_error) = match class {
                LaneClass::Ed25519 => (Operation::Ecdsa(Hash::Sha256), "operation does not match the key type"),
                _ => (op, "payload length does not match the digest algorithm"),
            };
            let too_big = vec![0xffu8; class.scalar_len()];
            let mut lanes = vec![
                Lane {
                    key: class_keys[0].key.lane_key().unwrap(),
                    op,
                    input: &good,
                },
                Lane {
                    key: class_keys[0].key.lane_key().unwrap(),
                    op: bad_op,
                    input: &short,
                },
            ];
            if matches!(class, LaneClass::Rsa2048 | LaneClass::Rsa3072 | LaneClass::Rsa4096) {
                lanes.push(Lane {
                    key: class_keys[0].key.lane_key().unwrap(),
                    op: Operation::RsaRawDecrypt,
                    input: &too_big,
                });
            }
            let results = multibuffer::sign(math.as_ref(), &lanes).results;
            check(&class_keys[0], op, &good, results[0].as_ref().unwrap());
            assert_eq!(results[1].as_ref().unwrap_err().0, bad_error, "{class:?}");
            assert_eq!(
                class_keys[0].key.perform(bad_op, &short).unwrap_err().0,
                bad_error,
                "the single path's error"
            );
            if results.len() == 3 {
                assert_eq!(
                    results[2].as_ref().unwrap_err().0,
                    "decryption failed",
                    "a ciphertext >= n"
                );
            }
        }
    }
    // Lanes of two classes in one call are refused, not mixed up.
    let of = |class: LaneClass| &keys.iter().find(|(c, _)| *c == class).unwrap().1[0];
    let (p256, rsa) = (of(LaneClass::EcdsaP256), of(LaneClass::Rsa2048));
    let d = random(32);
    let mixed = [
        Lane {
            key: p256.key.lane_key().unwrap(),
            op: Operation::Ecdsa(Hash::Sha256),
            input: &d,
        },
        Lane {
            key: rsa.key.lane_key().unwrap(),
            op: Operation::RsaPkcs1(Hash::Sha256),
            input: &d,
        },
    ];
    assert!(multibuffer::sign(&Reference::new(), &mixed)
        .results
        .iter()
        .all(Result::is_err));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random batches: any class, 1 to 8 lanes, any of its keys and
    /// operations, some lanes with a digest of the wrong length.
    #[test]
    fn random_batches_verify(class in prop::sample::select(vec![0usize, 1, 2, 3, 4, 6]), lanes in proptest::collection::vec((0usize..3, 0usize..7, 0u8..10), 1..=LANES)) {
        let keys = keys();
        let (class, class_keys) = &keys[class];
        let plan: Vec<(usize, Operation, bool)> = lanes
            .iter()
            .map(|&(k, op, bad)| (k % class_keys.len(), op_for(*class, op), bad == 0))
            .collect();
        let inputs: Vec<Vec<u8>> = plan
            .iter()
            .map(|(k, op, bad)| if *bad && op.digest().is_some() { vec![3u8; 7] } else { input_for(&class_keys[*k], *op) })
            .collect();
        let batch: Vec<Lane<'_>> = plan
            .iter()
            .zip(&inputs)
            .map(|((k, op, _), input)| Lane { key: class_keys[*k].key.lane_key().unwrap(), op: *op, input })
            .collect();
        for math in maths() {
            for (((k, op, _), input), result) in plan.iter().zip(&inputs).zip(multibuffer::sign(math.as_ref(), &batch).results) {
                let single = class_keys[*k].key.perform(*op, input);
                match (result, single) {
                    (Ok(out), Ok(_)) => check(&class_keys[*k], *op, input, &out),
                    (Err(e), Err(s)) => prop_assert_eq!(e.0, s.0),
                    (r, s) => prop_assert!(false, "lanes {:?} but alone {:?}", r.map(|_| ()), s.map(|_| ())),
                }
            }
        }
    }
}

#[test]
fn zero_and_one_are_refused_as_aws_lc_refuses_them() {
    let keys = keys();
    let rsa = &keys.iter().find(|(c, _)| *c == LaneClass::Rsa2048).unwrap().1[0];
    for v in [0u8, 1] {
        let mut c = vec![0u8; 256];
        c[255] = v;
        let single = rsa.key.perform(Operation::RsaRawDecrypt, &c).unwrap_err();
        let lanes = [Lane {
            key: rsa.key.lane_key().unwrap(),
            op: Operation::RsaRawDecrypt,
            input: &c,
        }];
        for math in maths() {
            let lane = multibuffer::sign(math.as_ref(), &lanes).results.remove(0).unwrap_err();
            assert_eq!(lane.0, single.0, "ciphertext {v}");
        }
    }
}

/// RFC 8032, 7.1, TEST 1 to 3: the same signatures from every lane computer,
/// eight lanes of one message per call (and all three mixed in one call).
#[test]
fn ed25519_lanes_give_rfc_8032s_signatures() {
    let vectors = multibuffer::RFC_8032_VECTORS;
    // PKCS#8 around a seed (RFC 8410).
    let keys: Vec<TestKey> = vectors
        .iter()
        .map(|(seed, ..)| {
            let der = [
                hex::decode("302e020100300506032b657004220420").unwrap(),
                hex::decode(seed).unwrap(),
            ]
            .concat();
            parse(&der)
        })
        .collect();
    for k in &keys {
        assert_eq!(k.key.lane_key().map(|l| l.class()), Some(LaneClass::Ed25519));
    }
    let messages: Vec<Vec<u8>> = vectors.iter().map(|(_, m, _)| hex::decode(m).unwrap()).collect();
    for math in maths() {
        for (v, (key, msg)) in keys.iter().zip(&messages).enumerate() {
            let lanes: Vec<Lane<'_>> = (0..LANES)
                .map(|_| Lane {
                    key: key.key.lane_key().unwrap(),
                    op: Operation::Ed25519,
                    input: msg,
                })
                .collect();
            let signed = multibuffer::sign(math.as_ref(), &lanes);
            // A library that failed its self-test at load signs alone.
            let alone = if math.runs(LaneClass::Ed25519) { 0 } else { LANES };
            assert_eq!(signed.fallbacks, alone, "{}", math.describe());
            for result in signed.results {
                assert_eq!(
                    hex::encode(result.unwrap()),
                    vectors[v].2,
                    "{} TEST {}",
                    math.describe(),
                    v + 1
                );
            }
        }
        let lanes: Vec<Lane<'_>> = (0..LANES)
            .map(|i| Lane {
                key: keys[i % 3].key.lane_key().unwrap(),
                op: Operation::Ed25519,
                input: &messages[i % 3],
            })
            .collect();
        for (i, result) in multibuffer::sign(math.as_ref(), &lanes).results.into_iter().enumerate() {
            assert_eq!(
                hex::encode(result.unwrap()),
                vectors[i % 3].2,
                "{} mixed",
                math.describe()
            );
        }
    }
}

/// Long and empty messages: the library hashes each lane's whole message.
#[test]
fn ed25519_lanes_sign_messages_of_any_length_as_aws_lc_does() {
    let keys = keys();
    let ed = &keys.iter().find(|(c, _)| *c == LaneClass::Ed25519).unwrap().1;
    let messages: Vec<Vec<u8>> = [0usize, 1, 63, 64, 65, 111, 128, 1000, 16384, 65535]
        .iter()
        .map(|&len| random(len))
        .collect();
    for math in maths() {
        for chunk in messages.chunks(LANES) {
            let lanes: Vec<Lane<'_>> = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| Lane {
                    key: ed[i % ed.len()].key.lane_key().unwrap(),
                    op: Operation::Ed25519,
                    input: m,
                })
                .collect();
            for (i, result) in multibuffer::sign(math.as_ref(), &lanes).results.into_iter().enumerate() {
                let sig = result.unwrap_or_else(|e| panic!("{}: {e}", math.describe()));
                check(&ed[i % ed.len()], Operation::Ed25519, &chunk[i], &sig);
            }
        }
    }
}

/// The library's public operation (the batched check of RSA results)
/// knows e = 65537 only: a key with another exponent is checked with AWS-LC,
/// and its signatures are the same.
#[test]
fn rsa_keys_with_another_public_exponent_sign_in_lanes_too() {
    let dir = tempfile::tempdir().unwrap();
    let e3 = genkey(
        dir.path(),
        "e3.pem",
        &[
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-pkeyopt",
            "rsa_keygen_pubexp:3",
        ],
    );
    let keys = keys();
    let e65537 = &keys.iter().find(|(c, _)| *c == LaneClass::Rsa2048).unwrap().1[0];
    for math in maths() {
        let ops: Vec<Operation> = (0..LANES).map(|i| op_for(LaneClass::Rsa2048, i)).collect();
        let owners: Vec<&TestKey> = (0..LANES).map(|i| if i % 2 == 0 { &e3 } else { e65537 }).collect();
        let inputs: Vec<Vec<u8>> = ops.iter().zip(&owners).map(|(op, k)| input_for(k, *op)).collect();
        let lanes: Vec<Lane<'_>> = (0..LANES)
            .map(|i| Lane {
                key: owners[i].key.lane_key().unwrap(),
                op: ops[i],
                input: &inputs[i],
            })
            .collect();
        let signed = multibuffer::sign(math.as_ref(), &lanes);
        assert_eq!(signed.fallbacks, 0);
        for (i, result) in signed.results.into_iter().enumerate() {
            let out = result.unwrap_or_else(|e| panic!("{} lane {i}: {e}", math.describe()));
            check(owners[i], ops[i], &inputs[i], &out);
        }
    }
}
