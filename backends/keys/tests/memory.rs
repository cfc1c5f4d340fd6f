//! The in-memory backend against keys made by the real `openssl` binary, in
//! every file format gokeyless accepts. Every signature is verified.

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_lc_rs::digest;
use keyless_keys::memory::{KeyMaterial, PublicKey};
use keyless_keys::{load_sources, Hash, KeyAlgorithm, KeySource, LoadError, Operation, PrivateKey};

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().expect("openssl binary");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn genkey(dir: &Path, name: &str, algo: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["genpkey", "-out", path.to_str().unwrap()];
    args.extend_from_slice(algo);
    openssl(&args);
    path
}

const RSA2048: &[&str] = &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
const P256: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
const P384: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"];
const P521: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"];
const ED25519: &[&str] = &["-algorithm", "ED25519"];

/// The SKI openssl puts in a self-signed certificate for this key.
fn openssl_ski(key: &Path) -> String {
    let dir = key.parent().unwrap();
    let cert = dir.join("ski-cert.pem");
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/CN=ski",
        "-out",
        cert.to_str().unwrap(),
    ]);
    let text = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectKeyIdentifier",
    ]);
    text.lines().nth(1).unwrap().trim().replace(':', "").to_lowercase()
}

fn digest_of(hash: Hash, msg: &[u8]) -> Vec<u8> {
    let one = |alg| digest::digest(alg, msg).as_ref().to_vec();
    match hash {
        Hash::Md5Sha1 => {
            // MD5 is not in aws-lc-rs; any 36 bytes exercise the raw path.
            let mut v = one(&digest::SHA256);
            v.extend_from_slice(&one(&digest::SHA1_FOR_LEGACY_USE_ONLY)[..4]);
            v
        }
        Hash::Sha1 => one(&digest::SHA1_FOR_LEGACY_USE_ONLY),
        Hash::Sha224 => one(&digest::SHA224),
        Hash::Sha256 => one(&digest::SHA256),
        Hash::Sha384 => one(&digest::SHA384),
        Hash::Sha512 => one(&digest::SHA512),
    }
}

const HASHES: [Hash; 6] = [
    Hash::Md5Sha1,
    Hash::Sha1,
    Hash::Sha224,
    Hash::Sha256,
    Hash::Sha384,
    Hash::Sha512,
];

fn ops_for(alg: KeyAlgorithm) -> Vec<Operation> {
    match alg {
        KeyAlgorithm::Rsa { .. } => HASHES
            .iter()
            .map(|h| Operation::RsaPkcs1(*h))
            .chain([Hash::Sha256, Hash::Sha384, Hash::Sha512].map(Operation::RsaPss))
            .collect(),
        KeyAlgorithm::Ed25519 => vec![Operation::Ed25519],
        _ => HASHES.iter().map(|h| Operation::Ecdsa(*h)).collect(),
    }
}

fn all_ops() -> Vec<Operation> {
    let mut v = ops_for(KeyAlgorithm::Rsa { bits: 2048 });
    v.extend(ops_for(KeyAlgorithm::EcdsaP256));
    v.push(Operation::Ed25519);
    v
}

fn check_key(path: &Path, expected: KeyAlgorithm) {
    let material = KeyMaterial::load(path).unwrap();
    assert_eq!(material.public().algorithm, expected);
    let key = material.instantiate().unwrap();
    let public = PublicKey::from_spki(&material.public().spki_der).unwrap();
    let msg = b"keyless conformance message";
    let supported = ops_for(expected);
    for op in all_ops() {
        let input = match op.digest() {
            Some(h) => digest_of(h, msg),
            None => msg.to_vec(),
        };
        let result = key.perform(op, &input);
        if supported.contains(&op) {
            let sig = result.unwrap_or_else(|e| panic!("{op:?} on {expected}: {e}"));
            public
                .verify(op, &input, &sig)
                .unwrap_or_else(|e| panic!("{op:?} on {expected}: {e}"));
            // A different input must not verify: the check can fail.
            let mut other = input.clone();
            other[0] ^= 1;
            assert!(public.verify(op, &other, &sig).is_err());
        } else {
            assert!(result.is_err(), "{op:?} must fail on {expected}");
        }
        if let Some(h) = op.digest() {
            if supported.contains(&op) {
                let short = &digest_of(h, msg)[1..];
                assert!(key.perform(op, short).is_err(), "short digest for {op:?}");
            }
        }
    }
}

#[test]
fn every_key_type_signs_every_supported_operation() {
    let dir = tempfile::tempdir().unwrap();
    check_key(
        &genkey(dir.path(), "rsa.key", RSA2048),
        KeyAlgorithm::Rsa { bits: 2048 },
    );
    check_key(&genkey(dir.path(), "p256.key", P256), KeyAlgorithm::EcdsaP256);
    check_key(&genkey(dir.path(), "p384.key", P384), KeyAlgorithm::EcdsaP384);
    check_key(&genkey(dir.path(), "p521.key", P521), KeyAlgorithm::EcdsaP521);
    check_key(&genkey(dir.path(), "ed.key", ED25519), KeyAlgorithm::Ed25519);
}

#[test]
fn pss_and_pkcs1_verify_with_openssl_too() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = genkey(dir.path(), "rsa.key", RSA2048);
    let pubkey = dir.path().join("rsa.pub");
    openssl(&[
        "pkey",
        "-in",
        key_path.to_str().unwrap(),
        "-pubout",
        "-out",
        pubkey.to_str().unwrap(),
    ]);
    let key = KeyMaterial::load(&key_path).unwrap().instantiate().unwrap();
    let dgst = digest_of(Hash::Sha384, b"interop");
    std::fs::write(dir.path().join("d"), &dgst).unwrap();
    for (op, opts) in [
        (
            Operation::RsaPss(Hash::Sha384),
            vec!["rsa_padding_mode:pss", "rsa_pss_saltlen:digest", "digest:sha384"],
        ),
        (
            Operation::RsaPkcs1(Hash::Sha384),
            vec!["rsa_padding_mode:pkcs1", "digest:sha384"],
        ),
    ] {
        std::fs::write(dir.path().join("sig"), key.perform(op, &dgst).unwrap()).unwrap();
        let mut args = vec!["pkeyutl", "-verify", "-pubin", "-inkey", pubkey.to_str().unwrap()];
        let d = dir.path().join("d");
        let s = dir.path().join("sig");
        args.extend(["-in", d.to_str().unwrap(), "-sigfile", s.to_str().unwrap()]);
        for o in &opts {
            args.extend(["-pkeyopt", o]);
        }
        assert!(openssl(&args).contains("Signature Verified Successfully"), "{op:?}");
    }
}

#[test]
fn ski_and_digest_match_gokeyless_definitions() {
    let dir = tempfile::tempdir().unwrap();
    for (name, algo) in [("rsa.key", RSA2048), ("p256.key", P256), ("ed.key", ED25519)] {
        let path = genkey(dir.path(), name, algo);
        let m = KeyMaterial::load(&path).unwrap();
        assert_eq!(m.public().ski_hex(), openssl_ski(&path), "{name}");
        if name == "rsa.key" {
            let modulus = openssl(&["rsa", "-in", path.to_str().unwrap(), "-noout", "-modulus"]);
            let hex_n = modulus.trim().strip_prefix("Modulus=").unwrap();
            let want = digest::digest(&digest::SHA256, hex_n.as_bytes());
            assert_eq!(m.public().cert_digest.unwrap().as_slice(), want.as_ref());
        } else {
            assert!(m.public().cert_digest.is_none());
        }
    }
}

#[test]
fn all_file_formats_load_to_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let rsa = genkey(dir.path(), "rsa.key", RSA2048);
    let ec = genkey(dir.path(), "ec.key", P256);
    openssl(&[
        "rsa",
        "-in",
        rsa.to_str().unwrap(),
        "-traditional",
        "-out",
        &d("rsa-pkcs1.pem"),
    ]);
    openssl(&[
        "pkey",
        "-in",
        rsa.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        &d("rsa.der"),
    ]);
    openssl(&[
        "rsa",
        "-in",
        rsa.to_str().unwrap(),
        "-traditional",
        "-outform",
        "DER",
        "-out",
        &d("rsa-pkcs1.der"),
    ]);
    openssl(&["ec", "-in", ec.to_str().unwrap(), "-out", &d("ec-sec1.pem")]);
    openssl(&[
        "ec",
        "-in",
        ec.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        &d("ec-sec1.der"),
    ]);
    let ski = |p: &str| KeyMaterial::load(Path::new(p)).unwrap().public().ski;
    let rsa_ski = ski(rsa.to_str().unwrap());
    assert!(std::fs::read_to_string(d("rsa-pkcs1.pem"))
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    assert!(std::fs::read_to_string(d("ec-sec1.pem"))
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    for p in ["rsa-pkcs1.pem", "rsa.der", "rsa-pkcs1.der"] {
        assert_eq!(ski(&d(p)), rsa_ski, "{p}");
    }
    let ec_ski = ski(ec.to_str().unwrap());
    for p in ["ec-sec1.pem", "ec-sec1.der"] {
        assert_eq!(ski(&d(p)), ec_ski, "{p}");
    }
}

#[test]
fn raw_decrypt_inverts_the_public_operation() {
    let dir = tempfile::tempdir().unwrap();
    let m = KeyMaterial::load(&genkey(dir.path(), "rsa.key", RSA2048)).unwrap();
    let public = PublicKey::from_spki(&m.public().spki_der).unwrap();
    let mut plain = vec![0u8; 256];
    plain[1..].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let cipher = public.rsa_raw_encrypt(&plain).unwrap();
    assert_ne!(cipher, plain);
    let key = m.instantiate().unwrap();
    assert_eq!(key.perform(Operation::RsaRawDecrypt, &cipher).unwrap(), plain);
    assert!(key.perform(Operation::RsaRawDecrypt, &cipher[1..]).is_err());
}

#[test]
fn dir_source_loads_key_files_recursively_and_sorted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    genkey(dir.path(), "b.key", P256);
    genkey(&dir.path().join("sub"), "a.key", P384);
    genkey(dir.path(), "ignored.pem", P256);
    let keys = load_sources(&[KeySource::Dir(dir.path().to_owned())]).unwrap();
    let names: Vec<_> = keys
        .iter()
        .map(|k| {
            let origin = std::path::PathBuf::from(k.origin());
            origin.file_name().unwrap().to_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(names, ["b.key", "a.key"]);
}

#[test]
fn load_errors_name_the_file_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.key");
    let err = load_sources(&[KeySource::File(missing.clone())]).unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }));
    assert!(err.to_string().contains("missing.key"), "{err}");

    let garbage = dir.path().join("garbage.key");
    std::fs::write(
        &garbage,
        b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = KeyMaterial::load(&garbage).unwrap_err().to_string();
    assert!(err.contains("garbage.key"), "{err}");

    let small = genkey(
        dir.path(),
        "small.key",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let err = KeyMaterial::load(&small).unwrap_err().to_string();
    assert!(err.contains("small.key") && err.contains("1024 bits"), "{err}");

    let secret = std::fs::read_to_string(genkey(dir.path(), "secret.key", P256)).unwrap();
    let body: String = secret.lines().nth(1).unwrap().chars().take(20).collect();
    std::fs::write(&garbage, &secret[..secret.len() / 2]).unwrap();
    let err = KeyMaterial::load(&garbage).unwrap_err().to_string();
    assert!(!err.contains(&body), "error leaks key material: {err}");
    let debug = format!("{:?}", KeyMaterial::load(&dir.path().join("secret.key")).unwrap());
    assert!(!debug.contains(&body) && debug.contains("ski"), "{debug}");
}

/// Files that are not what they should be say what they are instead
/// (gokeyless#387: an operator stuck on `no private key`).
#[test]
fn a_wrong_key_file_says_what_it_holds_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let key = genkey(dir.path(), "site.key", P256);
    let load = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        KeyMaterial::load(&path).unwrap_err().to_string()
    };
    let cert = Command::new("openssl")
        .args(["req", "-new", "-x509", "-subj", "/CN=site", "-days", "1", "-key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(cert.status.success(), "{}", String::from_utf8_lossy(&cert.stderr));
    let err = load("cert-as-key.key", &cert.stdout);
    assert!(
        err.contains("cert-as-key.key") && err.contains("found a CERTIFICATE where a private key was expected"),
        "{err}"
    );

    let encrypted = Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:secret",
            "-in",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        encrypted.status.success(),
        "{}",
        String::from_utf8_lossy(&encrypted.stderr)
    );
    let err = load("encrypted.key", &encrypted.stdout);
    assert!(
        err.contains("the key is encrypted") && err.contains("openssl pkey"),
        "{err}"
    );

    let err = load("empty.key", b"\n");
    assert!(err.contains("empty.key") && err.contains("the file is empty"), "{err}");
}
