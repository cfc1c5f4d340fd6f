//! The same calls against SoftHSM2 holding the same keys: PKCS#1 v1.5
//! signatures byte for byte, the same codes for length queries, short
//! buffers and refused mechanisms, and randomized signatures (ECDSA, PSS)
//! that verify from both. One test: SoftHSM2 reads its configuration from
//! the environment, set here before any other thread runs.

mod common;

use aws_lc_rs::digest;
use common::*;
use cryptoki_sys::*;

const PIN: &str = "1234";

#[test]
fn the_module_answers_as_softhsm_does_with_the_same_keys() {
    let f = fixture();
    let hsm_dir = f.dir.path().join("softhsm");
    let hsm = keyless_pki::softhsm::SoftHsm::create(&hsm_dir).unwrap();
    hsm.init_token("same-keys", PIN, "5678").unwrap();
    for (i, (label, kind)) in KEYS.iter().enumerate().filter(|(_, (l, _))| *l != "ed25519") {
        let path = f.pki.keys_dir.join(format!("{label}.key"));
        hsm.import_key_file("same-keys", PIN, label, i as u8, *kind, &path)
            .unwrap();
    }
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);

    let server = key_server("127.0.0.1:0".parse().unwrap());
    let ours = common::ours(&module_config("softhsm-compare", &[server.addr], ""));
    let softhsm = Module::load(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"));
    assert_eq!(softhsm.initialize(None), CKR_OK);
    let theirs_slot = {
        // The initialized token's slot (SoftHSM also lists an empty one).
        let mut slots = [0 as CK_SLOT_ID; 8];
        let mut n = 8;
        // SAFETY: `slots` holds `n` entries.
        assert_eq!(
            unsafe { softhsm.functions().C_GetSlotList.unwrap()(CK_TRUE, slots.as_mut_ptr(), &mut n) },
            CKR_OK
        );
        slots[0]
    };
    let modules = [
        (ours, ours.open(ours.first_slot())),
        (&softhsm, softhsm.open(theirs_slot)),
    ];
    assert_eq!(softhsm.login(modules[1].1, PIN), CKR_OK);
    // Our token needs no PIN, and accepts one.
    assert_eq!(ours.login(modules[0].1, PIN), CKR_OK);

    let message = b"the same request gets the same answer".to_vec();
    let sha256 = digest::digest(&digest::SHA256, &message).as_ref().to_vec();
    let info: Vec<u8> = [
        &b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"[..],
        &sha256,
    ]
    .concat();

    // Deterministic signatures: byte for byte.
    let deterministic: Vec<(CK_MECHANISM_TYPE, Vec<u8>)> = vec![
        (CKM_RSA_PKCS, info.clone()),
        (CKM_RSA_PKCS, vec![0x11; 36]),
        (CKM_RSA_PKCS, b"not a DigestInfo".to_vec()),
        (CKM_RSA_X_509, b"\x01raw block".to_vec()),
        (CKM_SHA1_RSA_PKCS, message.clone()),
        (CKM_SHA224_RSA_PKCS, message.clone()),
        (CKM_SHA256_RSA_PKCS, message.clone()),
        (CKM_SHA384_RSA_PKCS, message.clone()),
        (CKM_SHA512_RSA_PKCS, message.clone()),
    ];
    for (mech, data) in &deterministic {
        let [a, b] = modules.map(|(m, s)| m.sign_once(s, *mech, None, private_key(m, s, "rsa2048"), data));
        assert!(a.is_ok(), "mechanism {mech:#x}: {a:?}");
        assert_eq!(a, b, "mechanism {mech:#x}: our signature differs from SoftHSM's");
    }

    // Randomized signatures: both verify.
    for (label, mech, params, data, digest_name, is_pss) in [
        ("p256", CKM_ECDSA, None, sha256.clone(), "sha256", false),
        ("p384", CKM_ECDSA, None, sha256.clone(), "sha256", false),
        ("p521", CKM_ECDSA, None, sha256.clone(), "sha256", false),
        (
            "rsa2048",
            CKM_RSA_PKCS_PSS,
            pss(CKM_SHA256, CKG_MGF1_SHA256, 32),
            sha256.clone(),
            "sha256",
            true,
        ),
    ] {
        for (m, s) in modules {
            let sig = m.sign_once(s, mech, params, private_key(m, s, label), &data).unwrap();
            openssl_verify(label, &data, &sig, Some(digest_name), is_pss);
        }
    }

    // The same codes and lengths for the same calls.
    let calls = |m: &Module, s: CK_SESSION_HANDLE| -> Vec<(CK_RV, CK_ULONG)> {
        let rsa = private_key(m, s, "rsa2048");
        let ec = private_key(m, s, "p256");
        let mut codes = Vec::new();
        // Signing with no operation begun.
        codes.push((m.sign(s, &message, Some(512)).rv, 0));
        // A length query, a short buffer, then the signature.
        codes.push((m.sign_init(s, CKM_SHA256_RSA_PKCS, None, rsa), 0));
        let q = m.sign(s, &message, None);
        codes.push((q.rv, q.len));
        let short = m.sign(s, &message, Some(100));
        codes.push((short.rv, short.len));
        let done = m.sign(s, &message, Some(512));
        codes.push((done.rv, done.len));
        openssl_verify("rsa2048", &sha256, &done.bytes, Some("sha256"), false);
        codes.push((m.sign_init(s, CKM_ECDSA, None, ec), 0));
        let q = m.sign(s, &sha256, None);
        codes.push((q.rv, q.len));
        let done = m.sign(s, &sha256, Some(64));
        codes.push((done.rv, done.len));
        openssl_verify("p256", &sha256, &done.bytes, Some("sha256"), false);
        // Multi-part.
        codes.push((m.sign_init(s, CKM_SHA384_RSA_PKCS, None, rsa), 0));
        codes.push((m.sign_update(s, &message[..5]), 0));
        codes.push((m.sign_update(s, &message[5..]), 0));
        let fin = m.sign_final(s, 512);
        codes.push((fin.rv, fin.len));
        let sha384 = digest::digest(&digest::SHA384, &message);
        openssl_verify("rsa2048", sha384.as_ref(), &fin.bytes, Some("sha384"), false);
        // An operation already active.
        codes.push((m.sign_init(s, CKM_SHA256_RSA_PKCS, None, rsa), 0));
        codes.push((m.sign_init(s, CKM_SHA256_RSA_PKCS, None, rsa), 0));
        codes.push((m.sign(s, &message, Some(512)).rv, 0));
        codes
    };
    let [ours_codes, theirs_codes] = modules.map(|(m, s)| calls(m, s));
    assert_eq!(ours_codes, theirs_codes, "ours (left) and SoftHSM's (right)");
    // Two differences, on purpose, where SoftHSM 2.6 gives a vaguer code
    // than the standard's: a mechanism for another key type (SoftHSM
    // accepts CKM_ECDSA with an RSA key at C_SignInit and fails at C_Sign),
    // and data too long for the modulus (SoftHSM: CKR_GENERAL_ERROR).
    let (m, s) = modules[0];
    let rsa = private_key(m, s, "rsa2048");
    assert_eq!(m.sign_init(s, CKM_ECDSA, None, rsa), CKR_KEY_TYPE_INCONSISTENT);
    assert_eq!(m.sign_init(s, CKM_RSA_PKCS, None, rsa), CKR_OK);
    assert_eq!(m.sign(s, &[7u8; 250], Some(512)).rv, CKR_DATA_LEN_RANGE);
    assert!(server.signatures() >= deterministic.len() as u64 + 4);
}
