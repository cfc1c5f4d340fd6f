//! The PKCS#11 backend against a real SoftHSM2 token: keys found by URI
//! with the same SKI as the same key in a file, every operation verified
//! with the public key, and the faults an HSM has (wrong PIN, no module,
//! logged out, token files gone) answered with clear errors and recovered
//! from without a restart.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, at C_Initialize, and a process
//! initializes a module once: every test here shares one token directory,
//! set up before the first load, with a token per fault test.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::UserType;
use keyless_hsm::{Options, Pkcs11Uri, UriError};
use keyless_keys::memory::PublicKey;
use keyless_keys::{Hash, KeyAlgorithm, LoadError, Operation, Pkcs11Source, PublicKeyInfo, SharedKey};
use keyless_pki::softhsm::{ImportedKey, SoftHsm, SOFTHSM_MODULE};
use keyless_pki::KeyType;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::SubjectPublicKeyInfoDer;

const PIN: &str = "1234";

struct Hsm {
    softhsm: SoftHsm,
    keys: Vec<ImportedKey>,
    /// The P-256 key of each fault token, by token label.
    fault_keys: Vec<(&'static str, ImportedKey)>,
    _dir: tempfile::TempDir,
}

/// Tokens of their own for tests that change login state or delete files
/// (login state is per process and token, and tests run in parallel).
const FAULT_TOKENS: &[&str] = &["logout", "vanishing", "wrong-pin"];

fn hsm() -> &'static Hsm {
    static HSM: OnceLock<Hsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let dir = tempfile::tempdir().unwrap();
        let softhsm = SoftHsm::create(dir.path()).unwrap();
        // SAFETY (of the process, not memory): set before any test loads the
        // module, and every test goes through this fixture first.
        std::env::set_var("SOFTHSM2_CONF", &softhsm.conf);
        softhsm.init_token("keyless", PIN, "5678").unwrap();
        let mut keys = Vec::new();
        for (i, (label, kind)) in [
            ("rsa-2048", KeyType::Rsa2048),
            ("p256", KeyType::EcdsaP256),
            ("p384", KeyType::EcdsaP384),
            ("ed25519", KeyType::Ed25519),
        ]
        .into_iter()
        .enumerate()
        {
            keys.push(
                softhsm
                    .import_new_key("keyless", PIN, label, i as u8 + 1, kind)
                    .unwrap(),
            );
        }
        let mut fault_keys = Vec::new();
        for token in FAULT_TOKENS {
            softhsm.init_token(token, PIN, "5678").unwrap();
            let key = softhsm
                .import_new_key(token, PIN, "p256", 1, KeyType::EcdsaP256)
                .unwrap();
            fault_keys.push((*token, key));
        }
        Hsm {
            softhsm,
            keys,
            fault_keys,
            _dir: dir,
        }
    })
}

fn fault_key<'a>(hsm: &'a Hsm, token: &str) -> &'a ImportedKey {
    &hsm.fault_keys.iter().find(|(t, _)| *t == token).unwrap().1
}

fn uri(token: &str, query_extra: &str, path_extra: &str) -> Pkcs11Source {
    Pkcs11Source::new(format!(
        "pkcs11:token={token}{path_extra}?module-path={SOFTHSM_MODULE}&pin-value={PIN}{query_extra}"
    ))
}

fn load(source: &Pkcs11Source) -> Result<Vec<SharedKey>, LoadError> {
    keyless_hsm::load(source, &Options::default())
}

fn public_info(pem: &str) -> (PublicKeyInfo, PublicKey) {
    let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).unwrap();
    let verifier = PublicKey::from_spki(der.as_ref()).unwrap();
    (
        PublicKeyInfo::from_spki(verifier.algorithm(), der.as_ref().to_vec()).unwrap(),
        verifier,
    )
}

fn ops_for(algorithm: KeyAlgorithm) -> Vec<Operation> {
    use Hash::*;
    match algorithm {
        KeyAlgorithm::Rsa { .. } => {
            let mut ops: Vec<_> = [Md5Sha1, Sha1, Sha224, Sha256, Sha384, Sha512]
                .into_iter()
                .map(Operation::RsaPkcs1)
                .collect();
            ops.extend([Sha256, Sha384, Sha512].into_iter().map(Operation::RsaPss));
            ops
        }
        KeyAlgorithm::Ed25519 => vec![Operation::Ed25519],
        _ => [Sha1, Sha224, Sha256, Sha384, Sha512]
            .into_iter()
            .map(Operation::Ecdsa)
            .collect(),
    }
}

fn input_for(op: Operation) -> Vec<u8> {
    match op.digest() {
        Some(h) => (0..h.len() as u8).map(|b| b.wrapping_mul(7)).collect(),
        None => b"a TLS 1.3 CertificateVerify message".to_vec(),
    }
}

#[test]
fn every_key_is_found_with_the_ski_of_its_public_key() {
    let hsm = hsm();
    let loaded = load(&uri("keyless", "", "")).unwrap();
    assert_eq!(loaded.len(), hsm.keys.len());
    for imported in &hsm.keys {
        let (expected, _) = public_info(&imported.public_pem);
        let key = loaded
            .iter()
            .find(|k| k.public().ski == expected.ski)
            .unwrap_or_else(|| panic!("{}: no loaded key has its SKI", imported.label));
        assert_eq!(key.public(), &expected, "{}", imported.label);
        assert!(key.origin().contains(&imported.label), "{}", key.origin());
        assert!(!key.origin().contains(PIN), "the PIN leaked into {}", key.origin());
    }
}

#[test]
fn keys_are_chosen_by_object_label_and_by_id() {
    hsm();
    let by_label = load(&uri("keyless", "", ";object=p384")).unwrap();
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].public().algorithm, KeyAlgorithm::EcdsaP384);
    let by_id = load(&uri("keyless", "", ";id=%01")).unwrap();
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].public().algorithm, KeyAlgorithm::Rsa { bits: 2048 });
    let err = load(&uri("keyless", "", ";object=nope")).unwrap_err().to_string();
    assert!(err.contains("no private key") && err.contains("object=nope"), "{err}");
}

#[test]
fn every_operation_on_every_key_verifies() {
    let hsm = hsm();
    let loaded = load(&uri("keyless", "&max-sessions=2", "")).unwrap();
    for imported in &hsm.keys {
        let (expected, verifier) = public_info(&imported.public_pem);
        let shared = loaded.iter().find(|k| k.public().ski == expected.ski).unwrap();
        let key = shared.instantiate().unwrap();
        assert!(key.offload().is_some(), "HSM keys are performed off the cores");
        for op in ops_for(expected.algorithm) {
            let input = input_for(op);
            let signature = key
                .perform(op, &input)
                .unwrap_or_else(|e| panic!("{} {op:?}: {e}", imported.label));
            verifier
                .verify(op, &input, &signature)
                .unwrap_or_else(|e| panic!("{} {op:?}: signature does not verify: {e}", imported.label));
        }
        // A mismatched operation or digest length is refused before the HSM.
        let wrong = match expected.algorithm {
            KeyAlgorithm::Rsa { .. } => Operation::Ecdsa(Hash::Sha256),
            _ => Operation::RsaPkcs1(Hash::Sha256),
        };
        assert!(key.perform(wrong, &[0; 32]).is_err());
    }
}

#[test]
fn rsa_raw_decryption_inverts_the_public_operation() {
    let hsm = hsm();
    let imported = hsm.keys.iter().find(|k| k.label == "rsa-2048").unwrap();
    let (_, verifier) = public_info(&imported.public_pem);
    let key = load(&uri("keyless", "", ";object=rsa-2048")).unwrap()[0]
        .instantiate()
        .unwrap();
    // A message with leading zero bytes: the answer keeps the full modulus length.
    let mut message = vec![0u8; 256];
    message[3..].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8 | 1);
    let ciphertext = verifier.rsa_raw_encrypt(&message).unwrap();
    let plain = key.perform(Operation::RsaRawDecrypt, &ciphertext).unwrap();
    assert_eq!(plain, message);
}

#[test]
fn many_requests_in_flight_across_sessions_all_verify() {
    let hsm = hsm();
    let imported = hsm.keys.iter().find(|k| k.label == "p256").unwrap();
    let (_, verifier) = public_info(&imported.public_pem);
    let key = load(&uri("keyless", "&max-sessions=2", ";object=p256")).unwrap()[0]
        .instantiate()
        .unwrap();
    let offload = key.offload().unwrap();
    let op = Operation::Ecdsa(Hash::Sha256);
    let inputs: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; 32]).collect();
    let pending: Vec<_> = inputs.iter().map(|i| offload.submit(op, i.clone())).collect();
    futures_lite::future::block_on(async {
        for (input, p) in inputs.iter().zip(pending) {
            let signature = p.await.unwrap();
            verifier.verify(op, input, &signature).unwrap();
        }
    });
}

#[test]
fn a_wrong_pin_is_a_clear_error() {
    hsm();
    let source = Pkcs11Source::new(format!(
        "pkcs11:token=wrong-pin?module-path={SOFTHSM_MODULE}&pin-value=9999"
    ));
    let err = load(&source).unwrap_err().to_string();
    assert!(err.contains("wrong PIN"), "{err}");
    assert!(!err.contains("9999"), "the PIN leaked into: {err}");
}

#[test]
fn a_pin_source_file_works() {
    let hsm = hsm();
    let pin_file = hsm.softhsm.tokens.parent().unwrap().join("pin.txt");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let source = Pkcs11Source::new(format!(
        "pkcs11:token=keyless;object=p256?module-path={SOFTHSM_MODULE}&pin-source=file:{}",
        pin_file.display()
    ));
    assert_eq!(load(&source).unwrap().len(), 1);
}

#[test]
fn a_missing_module_or_token_is_a_clear_error() {
    hsm();
    let err = load(&Pkcs11Source::new(
        "pkcs11:token=keyless?module-path=/nonexistent/libpkcs11.so&pin-value=1".into(),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/nonexistent/libpkcs11.so") && err.contains("no such file"),
        "{err}"
    );
    let err = load(&uri("no-such-token", "", "")).unwrap_err().to_string();
    assert!(
        err.contains("no token matches token=no-such-token") && err.contains("\"keyless\""),
        "{err}"
    );
}

/// Another session of this process logs out: every session of the process
/// on that token loses its login. The pool logs in again by itself.
#[test]
fn a_logged_out_token_is_logged_in_again() {
    let hsm = hsm();
    let (_, verifier) = public_info(&fault_key(hsm, "logout").public_pem);
    let key = load(&uri("logout", "&max-sessions=1", "")).unwrap()[0]
        .instantiate()
        .unwrap();
    let op = Operation::Ecdsa(Hash::Sha256);
    verifier
        .verify(op, &[1; 32], &key.perform(op, &[1; 32]).unwrap())
        .unwrap();

    let ctx = Pkcs11::new(SOFTHSM_MODULE).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).is_ok_and(|t| t.label() == "logout"))
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    session.logout().unwrap();
    assert!(
        session.login(UserType::User, Some(&"1234".to_string().into())).is_ok(),
        "precondition: the token really was logged out"
    );
    session.logout().unwrap();

    let signature = key.perform(op, &[2; 32]).expect("the pool logs in again");
    verifier.verify(op, &[2; 32], &signature).expect("signature verifies");
    let stats = keyless_hsm::snapshots()
        .into_iter()
        .find(|s| s.token.contains("logout"))
        .unwrap();
    assert!(stats.reopened >= 1, "{stats:?}");
}

/// The token's files are deleted under the running pool: its requests
/// fail quickly with an error (no hang, no crash) while the other token
/// keeps serving. (SoftHSM does not rescan a token that comes back while the
/// process runs, so there is nothing to recover to.)
#[test]
fn a_deleted_token_fails_fast_and_others_keep_serving() {
    let hsm = hsm();
    let (_, verifier) = public_info(&fault_key(hsm, "vanishing").public_pem);
    let (_, other_verifier) = public_info(&hsm.keys.iter().find(|k| k.label == "p256").unwrap().public_pem);
    let key = load(&uri("vanishing", "&max-sessions=1", "")).unwrap()[0]
        .instantiate()
        .unwrap();
    let other = load(&uri("keyless", "", ";object=p256")).unwrap()[0]
        .instantiate()
        .unwrap();
    let op = Operation::Ecdsa(Hash::Sha256);
    verifier
        .verify(op, &[1; 32], &key.perform(op, &[1; 32]).unwrap())
        .unwrap();

    let dir = hsm.softhsm.token_dir("vanishing").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let started = Instant::now();
    for i in 0..20 {
        let err = key.perform(op, &[i; 32]).expect_err("the token's files are gone");
        assert_eq!(err.0, "the HSM is unavailable");
        let signature = other.perform(op, &[i; 32]).expect("another token is unaffected");
        other_verifier
            .verify(op, &[i; 32], &signature)
            .expect("signature verifies");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "failures must be quick");
    let stats = keyless_hsm::snapshots()
        .into_iter()
        .find(|s| s.token.contains("vanishing"))
        .unwrap();
    assert!(stats.failed >= 20, "{stats:?}");
}

#[test]
fn uris_parse_as_rfc_7512_says() {
    let u = Pkcs11Uri::parse(
        "pkcs11:token=Soft%20HSM;object=my%20key;id=%01%a0;slot-id=7?module-path=/usr/lib/m.so&pin-value=12%2634&max-sessions=4",
    )
    .unwrap();
    assert_eq!(u.token.as_deref(), Some("Soft HSM"));
    assert_eq!(u.object.as_deref(), Some("my key"));
    assert_eq!(u.id.as_deref(), Some(&[0x01, 0xa0][..]));
    assert_eq!(u.slot_id, Some(7));
    assert_eq!(u.module_path.as_deref(), Some(std::path::Path::new("/usr/lib/m.so")));
    assert_eq!(u.pin().unwrap().as_str(), "12&34");
    assert_eq!(u.max_sessions, Some(4));
    assert!(!format!("{u:?}").contains("12&34"));

    let base = "?module-path=/m.so&pin-value=1";
    let bad = |text: &str| Pkcs11Uri::parse(text).unwrap_err();
    assert_eq!(bad("pkcs12:token=a"), UriError::Scheme);
    assert_eq!(
        bad(&format!("pkcs11:token=a;token=b{base}")),
        UriError::Duplicate("token".into())
    );
    assert!(matches!(
        bad(&format!("pkcs11:token=a;colour=red{base}")),
        UriError::Unknown(_)
    ));
    assert!(matches!(
        bad(&format!("pkcs11:token=a;pin-value=1{base}")),
        UriError::WrongPart { .. }
    ));
    assert_eq!(
        bad(&format!("pkcs11:token=a;slot-id=x{base}")),
        UriError::Number("slot-id".into())
    );
    assert!(matches!(bad(&format!("pkcs11:token=%ff{base}")), UriError::Encoding(_)));
    assert_eq!(bad(&format!("pkcs11:token=a;object{base}")), UriError::MissingEquals);
    assert!(matches!(bad("pkcs11:token=a?pin-value=1"), UriError::Missing(m) if m.contains("module-path")));
    assert!(matches!(bad("pkcs11:token=a?module-path=/m.so"), UriError::Missing(m) if m.contains("pin")));
    assert!(
        matches!(bad("pkcs11:object=k?module-path=/m.so&pin-value=1"), UriError::Missing(m) if m.contains("token"))
    );
    assert!(matches!(
        bad(&format!("pkcs11:token=a{base}&max-sessions=0")),
        UriError::Number(_)
    ));
    // Vendor attributes are accepted and ignored.
    assert!(Pkcs11Uri::parse(&format!("pkcs11:token=a;x-colour=red{base}&x-speed=fast")).is_ok());
}
