//! C_Initialize and C_Finalize as applications call them: before it,
//! nothing works; a configuration that cannot be used is refused with
//! CKR_GENERAL_ERROR (and a line naming the file); a good one works; after
//! C_Finalize the module may be initialized again. No thread of the
//! module's exists before the first signature (a server forks its workers
//! after loading the module).

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use cryptoki_sys::*;

#[test]
fn initialize_refuses_bad_configurations_and_finalize_lets_go() {
    let server = key_server("127.0.0.1:0".parse().unwrap());
    let m = Module::load(&module_path());
    let mut info = std::mem::MaybeUninit::<CK_INFO>::uninit();
    // SAFETY: `info` is writable; the module must refuse before C_Initialize.
    assert_eq!(
        unsafe { m.functions().C_GetInfo.unwrap()(info.as_mut_ptr()) },
        CKR_CRYPTOKI_NOT_INITIALIZED
    );

    let dir = tempfile::tempdir().unwrap();
    assert_eq!(m.initialize(Some(&dir.path().join("missing.yaml"))), CKR_GENERAL_ERROR);
    let writable = module_config("writable", &[server.addr], "");
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o664)).unwrap();
    assert_eq!(m.initialize(Some(&writable)), CKR_GENERAL_ERROR);
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "key_servers: [\"127.0.0.1:1\"]\nkeys: [\n").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(m.initialize(Some(&broken)), CKR_GENERAL_ERROR);

    let good = module_config("good", &[server.addr], "");
    for round in 0..2 {
        assert_eq!(m.initialize(Some(&good)), CKR_OK, "round {round}");
        let session = m.open(m.first_slot());
        let key = m.find(session, CKO_PRIVATE_KEY, "p256")[0];
        m.attribute(session, key, CKA_EC_POINT).unwrap();
        if round == 0 {
            assert_eq!(link_threads(), 0, "no thread before the first signature");
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"initialized");
        // The process's first signatures, from eight threads at once: each
        // waits for the first link, none fails for want of one.
        let slot = m.first_slot();
        let sigs: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        let session = m.open(slot);
                        let key = m.find(session, CKO_PRIVATE_KEY, "p256")[0];
                        m.sign_once(session, CKM_ECDSA, None, key, digest.as_ref())
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect()
        });
        for sig in &sigs {
            openssl_verify("p256", digest.as_ref(), sig, Some("sha256"), false);
        }
        let sig = m.sign_once(session, CKM_ECDSA, None, key, digest.as_ref()).unwrap();
        openssl_verify("p256", digest.as_ref(), &sig, Some("sha256"), false);
        assert!(
            link_threads() >= 1,
            "the links' thread runs once a signature was asked for"
        );
        assert_eq!(m.finalize(), CKR_OK);
        assert_eq!(m.finalize(), CKR_CRYPTOKI_NOT_INITIALIZED);
    }
}

/// Threads of this process named as the client core's pool names them.
fn link_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "keyless-remote")
        .count()
}
