//! The module through its function list, as a C program calls it, against
//! a real key server on loopback: every mechanism of every key (each
//! signature verified by the `openssl` binary), SoftHSM2 holding the same
//! keys giving the same signatures and codes, objects, decryption, many
//! threads at once, and bad arguments.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;

use aws_lc_rs::digest;
use common::*;
use cryptoki_sys::*;

/// Tests run at once: each opens sessions of its own (an operation is per
/// session).
struct Setup {
    server: keyless_server::RunningServer,
    module: &'static Module,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let server = key_server("127.0.0.1:0".parse::<SocketAddr>().unwrap());
        // One more key whose certificate the module lists but no key server holds.
        let ca = fixture().pki.ca().unwrap();
        let orphan = keyless_pki::KeyType::EcdsaP256.generate().unwrap();
        let orphan_pem = fixture().dir.path().join("orphan.pem");
        std::fs::write(&orphan_pem, ca.issue_site("orphan", &["localhost"], &orphan).unwrap()).unwrap();
        let extra = format!("  - certificate: {}\n    label: orphan\n", orphan_pem.display());
        let config = module_config("module", &[server.addr], &extra);
        let module = ours(&config);
        Setup { server, module }
    })
}

fn hash(name: &str, data: &[u8]) -> Vec<u8> {
    let alg = match name {
        "sha1" => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        "sha224" => &digest::SHA224,
        "sha256" => &digest::SHA256,
        "sha384" => &digest::SHA384,
        "sha512" => &digest::SHA512,
        other => panic!("{other}"),
    };
    digest::digest(alg, data).as_ref().to_vec()
}

const MESSAGE: &[u8] = b"keyless PKCS#11: the key stays on the key server";

const SHA256_INFO: &[u8] = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20";

#[test]
fn every_mechanism_of_every_key_signs_and_openssl_verifies_it() {
    let s = setup();
    let (m, session) = (s.module, s.module.open(s.module.first_slot()));
    let mut signed = 0;
    for (curve, field_len) in [("p256", 32), ("p384", 48), ("p521", 66)] {
        let key = private_key(m, session, curve);
        // CKM_ECDSA: the caller hashes; every hash length is taken.
        for h in ["sha1", "sha224", "sha256", "sha384", "sha512"] {
            let d = hash(h, MESSAGE);
            let sig = m.sign_once(session, CKM_ECDSA, None, key, &d).unwrap();
            assert_eq!(sig.len(), 2 * field_len, "r || s at the field's width");
            openssl_verify(curve, &d, &sig, Some(h), false);
            signed += 1;
        }
        for (mech, h) in [
            (CKM_ECDSA_SHA1, "sha1"),
            (CKM_ECDSA_SHA224, "sha224"),
            (CKM_ECDSA_SHA256, "sha256"),
            (CKM_ECDSA_SHA384, "sha384"),
            (CKM_ECDSA_SHA512, "sha512"),
        ] {
            let sig = m.sign_once(session, mech, None, key, MESSAGE).unwrap();
            openssl_verify(curve, &hash(h, MESSAGE), &sig, Some(h), false);
            signed += 1;
        }
    }

    let rsa = private_key(m, session, "rsa2048");
    // CKM_RSA_PKCS with a DigestInfo: the keyless opcode for its hash.
    let d = hash("sha256", MESSAGE);
    let sig = m
        .sign_once(session, CKM_RSA_PKCS, None, rsa, &[SHA256_INFO, &d].concat())
        .unwrap();
    assert_eq!(sig.len(), 256);
    openssl_verify("rsa2048", &d, &sig, Some("sha256"), false);
    // The TLS 1.0/1.1 MD5+SHA-1 pair, and data that is no DigestInfo:
    // type-1 padding around exactly the data.
    for data in [vec![0x5au8; 36], b"any data at all".to_vec()] {
        let sig = m.sign_once(session, CKM_RSA_PKCS, None, rsa, &data).unwrap();
        let block = openssl_recover("rsa2048", &sig);
        assert_eq!(&block[..2], &[0, 1]);
        assert_eq!(&block[256 - data.len() - 1..], &[&[0u8][..], &data].concat()[..]);
        assert!(block[2..256 - data.len() - 1].iter().all(|b| *b == 0xff));
        signed += 1;
    }
    for (mech, h) in [
        (CKM_SHA1_RSA_PKCS, "sha1"),
        (CKM_SHA224_RSA_PKCS, "sha224"),
        (CKM_SHA256_RSA_PKCS, "sha256"),
        (CKM_SHA384_RSA_PKCS, "sha384"),
        (CKM_SHA512_RSA_PKCS, "sha512"),
    ] {
        let sig = m.sign_once(session, mech, None, rsa, MESSAGE).unwrap();
        openssl_verify("rsa2048", &hash(h, MESSAGE), &sig, Some(h), false);
        signed += 1;
    }
    for (mech, raw, h, mgf, len) in [
        (CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256, "sha256", CKG_MGF1_SHA256, 32),
        (CKM_SHA384_RSA_PKCS_PSS, CKM_SHA384, "sha384", CKG_MGF1_SHA384, 48),
        (CKM_SHA512_RSA_PKCS_PSS, CKM_SHA512, "sha512", CKG_MGF1_SHA512, 64),
    ] {
        let d = hash(h, MESSAGE);
        let sig = m
            .sign_once(session, CKM_RSA_PKCS_PSS, pss(raw, mgf, len), rsa, &d)
            .unwrap();
        openssl_verify("rsa2048", &d, &sig, Some(h), true);
        let sig = m.sign_once(session, mech, pss(raw, mgf, len), rsa, MESSAGE).unwrap();
        openssl_verify("rsa2048", &d, &sig, Some(h), true);
        signed += 2;
    }
    // CKM_RSA_X_509: the raw private operation on the data.
    let sig = m.sign_once(session, CKM_RSA_X_509, None, rsa, b"\x01raw").unwrap();
    let block = openssl_recover("rsa2048", &sig);
    assert_eq!(&block[252..], b"\x01raw");
    assert!(block[..252].iter().all(|b| *b == 0));

    let ed = private_key(m, session, "ed25519");
    let sig = m.sign_once(session, CKM_EDDSA, None, ed, MESSAGE).unwrap();
    assert_eq!(sig.len(), 64);
    openssl_verify("ed25519", MESSAGE, &sig, None, false);
    signed += 1;
    assert!(signed >= 40);
}

#[test]
fn pss_parameters_other_than_tls_uses_are_refused() {
    let s = setup();
    let (m, session) = (s.module, s.module.open(s.module.first_slot()));
    let rsa = private_key(m, session, "rsa2048");
    for params in [
        None,
        pss(CKM_SHA256, CKG_MGF1_SHA256, 20),
        pss(CKM_SHA256, CKG_MGF1_SHA384, 32),
        pss(CKM_SHA_1, CKG_MGF1_SHA1, 20),
    ] {
        assert_eq!(
            m.sign_init(session, CKM_RSA_PKCS_PSS, params, rsa),
            CKR_MECHANISM_PARAM_INVALID,
            "{params:?}"
        );
    }
    assert_eq!(
        m.sign_init(
            session,
            CKM_SHA384_RSA_PKCS_PSS,
            pss(CKM_SHA256, CKG_MGF1_SHA256, 32),
            rsa
        ),
        CKR_MECHANISM_PARAM_INVALID
    );
}

#[test]
fn length_queries_and_short_buffers_keep_the_operation() {
    let s = setup();
    let (m, session) = (s.module, s.module.open(s.module.first_slot()));
    for (label, mech, len, h) in [
        ("p384", CKM_ECDSA_SHA384, 96, "sha384"),
        ("rsa2048", CKM_SHA256_RSA_PKCS, 256, "sha256"),
    ] {
        let key = private_key(m, session, label);
        assert_eq!(m.sign_init(session, mech, None, key), CKR_OK);
        let query = m.sign(session, MESSAGE, None);
        assert_eq!((query.rv, query.len), (CKR_OK, len));
        let short = m.sign(session, MESSAGE, Some(len as usize - 1));
        assert_eq!((short.rv, short.len), (CKR_BUFFER_TOO_SMALL, len));
        let done = m.sign(session, MESSAGE, Some(len as usize + 10));
        assert_eq!((done.rv, done.len, done.bytes.len()), (CKR_OK, len, len as usize));
        openssl_verify(label, &hash(h, MESSAGE), &done.bytes, Some(h), false);
        // The signature ended the operation.
        assert_eq!(m.sign(session, MESSAGE, Some(512)).rv, CKR_OPERATION_NOT_INITIALIZED);
    }
}

#[test]
fn multi_part_signing_signs_the_whole_message() {
    let s = setup();
    let (m, session) = (s.module, s.module.open(s.module.first_slot()));
    let rsa = private_key(m, session, "rsa2048");
    assert_eq!(m.sign_init(session, CKM_SHA256_RSA_PKCS, None, rsa), CKR_OK);
    for part in MESSAGE.chunks(7) {
        assert_eq!(m.sign_update(session, part), CKR_OK);
    }
    let out = m.sign_final(session, 256);
    assert_eq!(out.rv, CKR_OK);
    // PKCS#1 v1.5 is deterministic: the same as one call over the whole.
    let whole = m.sign_once(session, CKM_SHA256_RSA_PKCS, None, rsa, MESSAGE).unwrap();
    assert_eq!(out.bytes, whole);
    openssl_verify("rsa2048", &hash("sha256", MESSAGE), &out.bytes, Some("sha256"), false);
}

#[test]
fn decryption_removes_pkcs1_padding_or_returns_the_raw_block() {
    let s = setup();
    let (m, session) = (s.module, s.module.open(s.module.first_slot()));
    let rsa = private_key(m, session, "rsa2048");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"a TLS 1.2 premaster secret, 48 bytes long.......").unwrap();
    let public = fixture().pki.pubkeys_dir.join("rsa2048.pem");
    let ciphertext = run(
        "openssl",
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            public.to_str().unwrap(),
            "-in",
            secret.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(ciphertext.len(), 256);

    assert_eq!(m.decrypt_init(session, CKM_RSA_PKCS, rsa), CKR_OK);
    let query = m.decrypt(session, &ciphertext, None);
    assert_eq!((query.rv, query.len), (CKR_OK, 245));
    let short = m.decrypt(session, &ciphertext, Some(10));
    assert_eq!((short.rv, short.len), (CKR_BUFFER_TOO_SMALL, 48));
    let plain = m.decrypt(session, &ciphertext, Some(48));
    assert_eq!(plain.rv, CKR_OK);
    assert_eq!(plain.bytes, std::fs::read(&secret).unwrap());

    assert_eq!(m.decrypt_init(session, CKM_RSA_X_509, rsa), CKR_OK);
    let raw = m.decrypt(session, &ciphertext, Some(256));
    assert_eq!(raw.rv, CKR_OK);
    assert_eq!(&raw.bytes[..2], &[0, 2]);
    assert!(raw.bytes.ends_with(&std::fs::read(&secret).unwrap()));

    // A ciphertext of the wrong length, and an EC key, are refused.
    assert_eq!(m.decrypt_init(session, CKM_RSA_PKCS, rsa), CKR_OK);
    assert_eq!(
        m.decrypt(session, &ciphertext[1..], Some(256)).rv,
        CKR_ENCRYPTED_DATA_LEN_RANGE
    );
    let p256 = private_key(m, session, "p256");
    assert_eq!(m.decrypt_init(session, CKM_RSA_PKCS, p256), CKR_KEY_TYPE_INCONSISTENT);
}

#[test]
fn objects_carry_the_key_identity_and_never_the_private_key() {
    let s = setup();
    let (m, session) = (s.module, s.module.open(s.module.first_slot()));
    for (label, _) in KEYS {
        let cert = m.find(session, CKO_CERTIFICATE, label);
        let public = m.find(session, CKO_PUBLIC_KEY, label);
        let private = m.find(session, CKO_PRIVATE_KEY, label);
        assert_eq!((cert.len(), public.len(), private.len()), (1, 1, 1), "{label}");
        // One CKA_ID (the SKI, 20 bytes) on all three.
        let id = m.attribute(session, cert[0], CKA_ID).unwrap();
        assert_eq!(id.len(), 20);
        for h in [public[0], private[0]] {
            assert_eq!(m.attribute(session, h, CKA_ID).unwrap(), id);
        }
        // The certificate is the configured leaf.
        let der = m.attribute(session, cert[0], CKA_VALUE).unwrap();
        let pem = std::fs::read(fixture().pki.sites_dir.join(format!("{label}.pem"))).unwrap();
        let first = rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
            .next()
            .map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| c.unwrap())
            .unwrap();
        assert_eq!(der, first.as_ref());
        // The private key's secrets are sensitive, its flags say so.
        assert_eq!(
            m.attribute(session, private[0], CKA_VALUE),
            Err(CKR_ATTRIBUTE_SENSITIVE)
        );
        assert_eq!(m.attribute(session, private[0], CKA_SENSITIVE).unwrap(), [CK_TRUE]);
        assert_eq!(m.attribute(session, private[0], CKA_EXTRACTABLE).unwrap(), [CK_FALSE]);
        assert_eq!(m.attribute(session, private[0], CKA_SIGN).unwrap(), [CK_TRUE]);
        assert_eq!(
            m.attribute(session, private[0], 0x7fff_0000),
            Err(CKR_ATTRIBUTE_TYPE_INVALID)
        );
        if label.starts_with('p') || *label == "ed25519" {
            // libp11 reads CKA_EC_POINT from the private key too.
            let point = m.attribute(session, private[0], CKA_EC_POINT).unwrap();
            assert_eq!(point, m.attribute(session, public[0], CKA_EC_POINT).unwrap());
            assert_eq!(point[0], 0x04, "a DER OCTET STRING");
        } else {
            assert_eq!(
                m.attribute(session, private[0], CKA_PRIVATE_EXPONENT),
                Err(CKR_ATTRIBUTE_SENSITIVE)
            );
            assert_eq!(m.attribute(session, public[0], CKA_MODULUS).unwrap().len(), 256);
            assert_eq!(m.attribute(session, public[0], CKA_PUBLIC_EXPONENT).unwrap(), [1, 0, 1]);
        }
    }
}

#[test]
fn many_threads_sign_at_once_and_every_signature_verifies() {
    let s = setup();
    let m = s.module;
    let slot = m.first_slot();
    let before = s.server.signatures();
    std::thread::scope(|scope| {
        for t in 0..16 {
            scope.spawn(move || {
                let session = m.open(slot);
                let key = private_key(m, session, "p256");
                let pem = std::fs::read(fixture().pki.pubkeys_dir.join("p256.pem")).unwrap();
                let spki: rustls_pki_types::SubjectPublicKeyInfoDer<'static> =
                    rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
                let (_, point) = spki_point(spki.as_ref());
                let verifier =
                    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED, point);
                for i in 0..40 {
                    let message = format!("thread {t} message {i}");
                    let sig = m
                        .sign_once(session, CKM_ECDSA_SHA256, None, key, message.as_bytes())
                        .unwrap();
                    verifier.verify(message.as_bytes(), &sig).unwrap();
                }
            });
        }
    });
    assert!(s.server.signatures() - before >= 640);
}

/// The subjectPublicKey bits of a DER SubjectPublicKeyInfo (the EC point).
fn spki_point(spki: &[u8]) -> (usize, Vec<u8>) {
    // For P-256 the point is the last 65 bytes.
    (spki.len(), spki[spki.len() - 65..].to_vec())
}

#[test]
fn bad_arguments_get_codes_and_never_crash() {
    let s = setup();
    let (m, session) = (s.module, s.module.open(s.module.first_slot()));
    let rsa = private_key(m, session, "rsa2048");
    let public = m.find(session, CKO_PUBLIC_KEY, "rsa2048")[0];
    assert_eq!(m.initialize(None), CKR_CRYPTOKI_ALREADY_INITIALIZED);
    assert_eq!(
        m.sign_init(session, CKM_SHA256_RSA_PKCS, None, 9999),
        CKR_KEY_HANDLE_INVALID
    );
    assert_eq!(
        m.sign_init(session, CKM_SHA256_RSA_PKCS, None, public),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(m.sign_init(session, CKM_ECDSA, None, rsa), CKR_KEY_TYPE_INCONSISTENT);
    assert_eq!(m.sign_init(session, CKM_AES_CBC, None, rsa), CKR_MECHANISM_INVALID);
    assert_eq!(
        m.sign_init(9999, CKM_SHA256_RSA_PKCS, None, rsa),
        CKR_SESSION_HANDLE_INVALID
    );
    let own = m.open(m.first_slot());
    assert_eq!(m.sign(own, MESSAGE, Some(256)).rv, CKR_OPERATION_NOT_INITIALIZED);
    assert_eq!(m.sign_init(own, CKM_SHA256_RSA_PKCS, None, rsa), CKR_OK);
    assert_eq!(m.sign_init(own, CKM_SHA256_RSA_PKCS, None, rsa), CKR_OPERATION_ACTIVE);
    let ecdsa = private_key(m, own, "p256");
    // A digest no hash makes is refused, and ends the operation.
    let signed = m.sign(own, MESSAGE, Some(256));
    assert_eq!(signed.rv, CKR_OK);
    openssl_verify(
        "rsa2048",
        &hash("sha256", MESSAGE),
        &signed.bytes,
        Some("sha256"),
        false,
    );
    assert_eq!(m.sign_init(own, CKM_ECDSA, None, ecdsa), CKR_OK);
    assert_eq!(m.sign(own, &[1; 33], Some(64)).rv, CKR_DATA_LEN_RANGE);
    assert_eq!(m.sign(own, &[1; 32], Some(64)).rv, CKR_OPERATION_NOT_INITIALIZED);
    // Null pointers where the standard requires a buffer.
    // SAFETY: the module must refuse these without reading them.
    unsafe {
        let f = raw(m);
        assert_eq!(
            f.C_SignInit.unwrap()(own, std::ptr::null_mut(), rsa),
            CKR_OK,
            "a null mechanism cancels"
        );
        assert_eq!(m.sign_init(own, CKM_SHA256_RSA_PKCS, None, rsa), CKR_OK);
        assert_eq!(
            f.C_Sign.unwrap()(own, std::ptr::null_mut(), 5, std::ptr::null_mut(), std::ptr::null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(own, rsa, std::ptr::null_mut(), 3),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_TRUE, std::ptr::null_mut(), std::ptr::null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_GenerateRandom.unwrap()(own, std::ptr::null_mut(), 16),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_EncryptInit.unwrap()(own, std::ptr::null_mut(), rsa),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(
            f.C_OpenSession.unwrap()(0, 0, std::ptr::null_mut(), None, &mut 0),
            CKR_SESSION_PARALLEL_NOT_SUPPORTED
        );
    }
}

fn raw(m: &Module) -> &'static CK_FUNCTION_LIST {
    m.functions()
}

#[test]
fn digests_are_computed_here_with_the_length_rules_of_signing() {
    let s = setup();
    let (m, session) = (s.module, s.module.open(s.module.first_slot()));
    let f = m.functions();
    for (mech, name, len) in [
        (CKM_SHA_1, "sha1", 20),
        (CKM_SHA256, "sha256", 32),
        (CKM_SHA512, "sha512", 64),
    ] {
        let mut mechanism = CK_MECHANISM {
            mechanism: mech,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        let mut data = MESSAGE.to_vec();
        let mut out = vec![0u8; 64];
        let mut out_len: CK_ULONG = 0;
        // SAFETY: every buffer holds the length given with it.
        unsafe {
            assert_eq!(f.C_DigestInit.unwrap()(session, &mut mechanism), CKR_OK);
            let rv = f.C_Digest.unwrap()(
                session,
                data.as_mut_ptr(),
                data.len() as CK_ULONG,
                std::ptr::null_mut(),
                &mut out_len,
            );
            assert_eq!((rv, out_len), (CKR_OK, len));
            out_len = 1;
            let rv = f.C_Digest.unwrap()(
                session,
                data.as_mut_ptr(),
                data.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut out_len,
            );
            assert_eq!((rv, out_len), (CKR_BUFFER_TOO_SMALL, len));
            assert_eq!(f.C_DigestUpdate.unwrap()(session, data.as_mut_ptr(), 10), CKR_OK);
            assert_eq!(
                f.C_DigestUpdate.unwrap()(session, data[10..].as_mut_ptr(), data.len() as CK_ULONG - 10),
                CKR_OK
            );
            out_len = 64;
            assert_eq!(
                f.C_DigestFinal.unwrap()(session, out.as_mut_ptr(), &mut out_len),
                CKR_OK
            );
        }
        assert_eq!(&out[..out_len as usize], &hash(name, MESSAGE)[..]);
    }
}

#[test]
fn a_key_no_key_server_holds_is_an_invalid_key_handle() {
    let s = setup();
    let (m, session) = (s.module, s.module.open(s.module.first_slot()));
    let orphan = private_key(m, session, "orphan");
    let digest = hash("sha256", MESSAGE);
    for _ in 0..3 {
        assert_eq!(
            m.sign_once(session, CKM_ECDSA, None, orphan, &digest),
            Err(CKR_KEY_HANDLE_INVALID)
        );
    }
    // The other keys are unaffected.
    let p256 = private_key(m, session, "p256");
    let sig = m.sign_once(session, CKM_ECDSA, None, p256, &digest).unwrap();
    openssl_verify("p256", &digest, &sig, Some("sha256"), false);
}
