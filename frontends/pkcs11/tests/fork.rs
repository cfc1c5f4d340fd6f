//! A process that signed (so its links and their threads exist) forks, as
//! a server that loads the module before forking workers does: each child
//! signs through links of its own, with or without calling C_Initialize
//! again (libp11 and OpenSSL's pkcs11-provider do; others do not), and the
//! parent keeps signing through its own.

mod common;

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use common::*;
use cryptoki_sys::*;

fn p256_verifier() -> UnparsedPublicKey<Vec<u8>> {
    let pem = std::fs::read(fixture().pki.pubkeys_dir.join("p256.pem")).unwrap();
    let spki: rustls_pki_types::SubjectPublicKeyInfoDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    // The P-256 point is the SubjectPublicKeyInfo's last 65 bytes.
    let der = spki.as_ref();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, der[der.len() - 65..].to_vec())
}

/// Sign `message` with the P-256 key on a new session and verify it.
fn sign_and_verify(m: &Module, message: &[u8]) -> bool {
    let session = m.open(m.first_slot());
    let key = m.find(session, CKO_PRIVATE_KEY, "p256")[0];
    match m.sign_once(session, CKM_ECDSA_SHA256, None, key, message) {
        Ok(sig) => p256_verifier().verify(message, &sig).is_ok(),
        Err(_) => false,
    }
}

#[test]
fn children_of_a_signing_process_sign_through_links_of_their_own() {
    let server = key_server("127.0.0.1:0".parse().unwrap());
    let m = ours(&module_config("fork", &[server.addr], ""));
    assert!(sign_and_verify(m, b"the parent, before forking"));
    let before = server.signatures();

    let mut children = Vec::new();
    for reinitialize in [true, false] {
        // SAFETY: the child calls only the module (which makes its own
        // threads and connections) and verification, then _exit()s
        // without running the parent's destructors or test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = (!reinitialize || m.initialize(None) == CKR_OK)
                && (0..5).all(|i| sign_and_verify(m, format!("child {reinitialize} {i}").as_bytes()));
            // SAFETY: ends the child at once, as after any fork.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        children.push((pid, reinitialize));
    }
    for (pid, reinitialize) in children {
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child (C_Initialize again: {reinitialize}) could not sign: status {status:#x}"
        );
    }
    assert_eq!(
        server.signatures() - before,
        10,
        "each child's five signatures reached the key server"
    );
    // The parent's links are untouched by its children.
    assert!(sign_and_verify(m, b"the parent, after its children"));
    // A second C_Initialize in the same process is refused, as the standard says.
    assert_eq!(m.initialize(None), CKR_CRYPTOKI_ALREADY_INITIALIZED);
}
