//! A process that exits while HSM workers are inside the module must exit
//! cleanly. SoftHSM2 tears itself down in a static destructor at exit; a
//! worker still signing at that moment, or a module never finalized while
//! its crypto library is cleaned up first, ends the process with
//! `free(): invalid pointer` or SIGSEGV after every test passed.
//!
//! The test runs itself as a child process (its own token directory, as
//! SoftHSM reads `SOFTHSM2_CONF` once per process) that queues signatures
//! and returns without waiting for them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keyless_keys::{Hash, Operation, Pkcs11Source};
use keyless_pki::softhsm::{SoftHsm, SOFTHSM_MODULE};
use keyless_pki::KeyType;

const PIN: &str = "1234";
const CHILD: &str = "KEYLESS_PKCS11_EXIT_CHILD";
const CHILD_DIR: &str = "KEYLESS_PKCS11_EXIT_DIR";

#[test]
fn exiting_with_signatures_in_flight_is_clean() {
    const TEST: &str = "exiting_with_signatures_in_flight_is_clean";
    if let Ok(wait_ms) = std::env::var(CHILD) {
        let dir = std::env::var_os(CHILD_DIR).unwrap();
        return leave_signatures_in_flight(dir.as_ref(), wait_ms.parse().unwrap());
    }
    for wait_ms in [0u64, 1, 3, 10, 30, 0, 2, 5] {
        run_child(TEST, wait_ms);
    }
}

/// `shutdown` stops the workers and answers everything still queued with
/// an error at once: no requester is left waiting for its timeout.
#[test]
fn shutdown_answers_every_queued_request() {
    const TEST: &str = "shutdown_answers_every_queued_request";
    if std::env::var(CHILD).is_ok() {
        let dir = std::env::var_os(CHILD_DIR).unwrap();
        let (key, mut pending) = queue_signatures(dir.as_ref());
        assert!(keyless_hsm::shutdown(Duration::from_secs(5)), "a worker did not stop");
        let mut dropped = 0;
        for p in pending.iter_mut().flatten() {
            // The workers are gone: every answer (a signature or an
            // error) must be there already.
            match futures_lite::future::block_on(futures_lite::future::poll_once(p)) {
                Some(Ok(_)) => {}
                Some(Err(_)) => dropped += 1,
                None => panic!("a request queued before shutdown is still waiting"),
            }
        }
        assert!(dropped > 0, "shutdown came after every signature; queue more");
        drop(key);
        return;
    }
    run_child(TEST, 0);
}

/// Run `test` in a child process with its own token directory.
fn run_child(test: &str, wait_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, wait_ms.to_string())
        .env(CHILD_DIR, dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{test}: a child exiting {wait_ms} ms after queueing signatures ended with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Queue RSA-2048 signatures on two sessions, wait `wait_ms`, and return:
/// the test harness then exits with the workers still signing.
fn leave_signatures_in_flight(dir: &Path, wait_ms: u64) {
    let (key, pending) = queue_signatures(dir);
    std::thread::sleep(Duration::from_millis(wait_ms));
    let pool = &keyless_hsm::snapshots()[0];
    assert!(pool.busy + pool.queued > 0, "nothing in flight: {pool:?}");
    // Kept unanswered, so the workers go on signing through the exit.
    std::mem::forget(pending);
    std::mem::forget(key);
}

/// A token in `dir` with one RSA-2048 key behind two sessions, and 256
/// signatures queued on it, answers not awaited (`None`: answered while
/// it was being queued).
fn queue_signatures(
    dir: &Path,
) -> (
    Box<dyn keyless_keys::PrivateKey>,
    Vec<Option<keyless_keys::PendingOperation>>,
) {
    let softhsm = SoftHsm::create(dir).unwrap();
    std::env::set_var("SOFTHSM2_CONF", &softhsm.conf);
    softhsm.init_token("exit", PIN, "5678").unwrap();
    softhsm.import_new_key("exit", PIN, "rsa", 1, KeyType::Rsa2048).unwrap();
    let source = Pkcs11Source::new(format!(
        "pkcs11:token=exit?module-path={SOFTHSM_MODULE}&pin-value={PIN}&max-sessions=2"
    ));
    let key = keyless_hsm::load(&source, &keyless_hsm::Options::default()).unwrap()[0]
        .instantiate()
        .unwrap();
    let offload = key.offload().unwrap();
    let op = Operation::RsaPkcs1(Hash::Sha256);
    let first = offload.submit(op, vec![7; 32]);
    futures_lite::future::block_on(first).unwrap();
    let pending = (0..=255u8)
        .map(|i| {
            let mut p = offload.submit(op, vec![i; 32]);
            // One poll queues the job (the queue has room); the answer, if
            // it is not already there, is left for the workers to give.
            futures_lite::future::block_on(futures_lite::future::poll_once(&mut p))
                .is_none()
                .then_some(p)
        })
        .collect();
    (key, pending)
}
