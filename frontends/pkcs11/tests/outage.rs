//! A key server that goes away mid-run: signatures fail with
//! CKR_DEVICE_ERROR within the configured timeout (at once once no link is
//! left), and signing resumes by itself when the key server returns.

mod common;

use std::time::{Duration, Instant};

use common::*;
use cryptoki_sys::*;

#[test]
fn a_key_server_that_goes_away_is_a_device_error_until_it_returns() {
    let server = key_server("127.0.0.1:0".parse().unwrap());
    let addr = server.addr;
    let m = ours(&module_config("outage", &[addr], ""));
    let session = m.open(m.first_slot());
    let key = m.find(session, CKO_PRIVATE_KEY, "rsa2048")[0];
    let message = b"signed before, during and after an outage";
    let sign = || m.sign_once(session, CKM_SHA256_RSA_PKCS, None, key, message);
    let good = sign().unwrap();
    openssl_verify(
        "rsa2048",
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message).as_ref(),
        &good,
        Some("sha256"),
        false,
    );

    stop(server);
    // The configured request_timeout is 2 s: no wait may last longer (plus
    // scheduling slack on a loaded machine).
    let mut waits = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(sign(), Err(CKR_DEVICE_ERROR));
        waits.push(start.elapsed());
    }
    assert!(waits.iter().all(|w| *w < Duration::from_secs(4)), "waits {waits:?}");
    // Once the module knows no link is up, it does not wait at all.
    assert!(waits[4] < Duration::from_millis(500), "waits {waits:?}");

    let server = key_server(addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let resumed = loop {
        match sign() {
            Ok(sig) => break sig,
            Err(rv) => assert_eq!(rv, CKR_DEVICE_ERROR),
        }
        assert!(Instant::now() < deadline, "signing did not resume");
        std::thread::sleep(Duration::from_millis(100));
    };
    // PKCS#1 v1.5: the same signature as before the outage.
    assert_eq!(resumed, good);
    assert!(server.signatures() >= 1);
}
