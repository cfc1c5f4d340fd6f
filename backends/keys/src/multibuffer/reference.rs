//! The lanes computed one at a time by AWS-LC: what tests use where the
//! CPU has no AVX-512 IFMA, so everything around the library call (lane
//! forming, padding, nonces, DER, the RSA check, the engine's batching) runs
//! on any machine. It refuses the lanes crypto_mb refuses, and it can
//! corrupt results on purpose, to show that a wrong RSA result is never sent.

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_sys as ffi;
use zeroize::Zeroizing;

use super::{EcLane, EdLane, LaneClass, LaneMath, RsaLane, LANES};

/// AWS-LC as a [`LaneMath`].
#[derive(Debug, Default)]
pub struct Reference {
    /// Corrupt every n-th RSA result (0: never).
    fault_every: usize,
    rsa_results: AtomicUsize,
}

impl Reference {
    pub fn new() -> Reference {
        Reference::default()
    }

    /// A reference that flips one bit of every `n`-th RSA result, as a
    /// faulty CRT half would.
    pub fn with_faults(n: usize) -> Reference {
        Reference {
            fault_every: n,
            rsa_results: AtomicUsize::new(0),
        }
    }
}

impl LaneMath for Reference {
    fn describe(&self) -> String {
        match self.fault_every {
            0 => "AWS-LC one lane at a time (test reference)".into(),
            n => format!("AWS-LC one lane at a time (test reference, every {n}th RSA result corrupted)"),
        }
    }

    fn runs(&self, _class: LaneClass) -> bool {
        true
    }

    fn rsa_private(&self, _class: LaneClass, lanes: &[RsaLane<'_>], out: &mut [Zeroizing<Vec<u8>>]) -> [bool; LANES] {
        let mut good = [false; LANES];
        for (i, lane) in lanes.iter().enumerate().take(LANES) {
            good[i] = rsa_raw(ffi::RSA_sign_raw, lane, &mut out[i]);
            let n = self.rsa_results.fetch_add(1, Ordering::Relaxed) + 1;
            if self.fault_every > 0 && n.is_multiple_of(self.fault_every) {
                let mid = out[i].len() / 2;
                out[i][mid] ^= 0x10;
            }
        }
        good
    }

    fn rsa_public(&self, _class: LaneClass, lanes: &[RsaLane<'_>], out: &mut [Vec<u8>]) -> [bool; LANES] {
        let mut good = [false; LANES];
        for (i, lane) in lanes.iter().enumerate().take(LANES) {
            good[i] = rsa_raw(ffi::RSA_verify_raw, lane, &mut out[i]);
        }
        good
    }

    fn ecdsa(&self, class: LaneClass, lanes: &[EcLane<'_>], r: &mut [Vec<u8>], s: &mut [Vec<u8>]) -> [bool; LANES] {
        let mut good = [false; LANES];
        let len = class.scalar_len();
        for (i, lane) in lanes.iter().enumerate().take(LANES) {
            if library_refuses(lane) {
                continue;
            }
            // The message as a digest AWS-LC takes as it is: without its
            // leading zero bytes (66 bytes would be cut to P-521's 521 bits).
            let digest = &lane.msg[lane.msg.iter().take_while(|&&b| b == 0).count().min(lane.msg.len() - 1)..];
            // Big-endian, the order's length (P-521's 9 limbs hold 66 bytes).
            let mut nonce: Zeroizing<Vec<u8>> =
                Zeroizing::new(lane.nonce.iter().rev().flat_map(|l| l.to_be_bytes()).collect());
            let pad = nonce.len() - len;
            nonce.drain(..pad);
            // SAFETY: the key's EVP_PKEY is live and holds an EC key; `msg`
            // and `nonce` are readable; the returned ECDSA_SIG is ours to free
            // and its r and s are borrowed only until then.
            good[i] = unsafe {
                let ec = ffi::EVP_PKEY_get0_EC_KEY(lane.key.key.as_ptr());
                let sig = ffi::ECDSA_sign_with_nonce_and_leak_private_key_for_testing(
                    digest.as_ptr(),
                    digest.len(),
                    ec,
                    nonce.as_ptr(),
                    nonce.len(),
                );
                match NonNull::new(sig) {
                    None => false,
                    Some(sig) => {
                        let (mut br, mut bs) = (ptr::null(), ptr::null());
                        ffi::ECDSA_SIG_get0(sig.as_ptr(), &mut br, &mut bs);
                        // crypto_mb flags a zero r or s as a signature error.
                        let ok = ffi::BN_bn2bin_padded(r[i].as_mut_ptr(), len, br) == 1
                            && ffi::BN_bn2bin_padded(s[i].as_mut_ptr(), len, bs) == 1
                            && ffi::BN_is_zero(br) == 0
                            && ffi::BN_is_zero(bs) == 0;
                        ffi::ECDSA_SIG_free(sig.as_ptr());
                        ok
                    }
                }
            };
        }
        good
    }

    fn ed25519(&self, lanes: &[EdLane<'_>], sig: &mut [[u8; 64]]) -> [bool; LANES] {
        // crypto_mb's Ed25519 signing refuses null pointers only
        // (ifma_ed25519.c), and no lane passes one: nothing to refuse here.
        let mut good = [false; LANES];
        for (i, lane) in lanes.iter().enumerate().take(LANES) {
            // AWS-LC's private key form: seed || public key.
            let mut private = Zeroizing::new([0u8; 64]);
            private[..32].copy_from_slice(&lane.key.seed[..]);
            private[32..].copy_from_slice(&lane.key.public);
            // SAFETY: `sig[i]` has 64 writable bytes, `private` 64 readable,
            // `msg` its length.
            good[i] =
                unsafe { ffi::ED25519_sign(sig[i].as_mut_ptr(), lane.msg.as_ptr(), lane.msg.len(), private.as_ptr()) }
                    == 1;
        }
        good
    }
}

/// AWS-LC's raw RSA signature or verification (`RSA_sign_raw`,
/// `RSA_verify_raw`, no padding) of one lane, into `out` of the modulus'
/// length; `false` (the error queue cleared) where AWS-LC refuses.
fn rsa_raw(
    op: unsafe extern "C" fn(
        *mut ffi::RSA,
        *mut usize,
        *mut u8,
        usize,
        *const u8,
        usize,
        std::os::raw::c_int,
    ) -> std::os::raw::c_int,
    lane: &RsaLane<'_>,
    out: &mut [u8],
) -> bool {
    let mut len = 0usize;
    // SAFETY: the key's EVP_PKEY is live and holds RSA; `out` is writable
    // for its length, `input` readable for its own; `op` is one of the two
    // AWS-LC functions of this signature.
    let rc = unsafe {
        let rsa = ffi::EVP_PKEY_get0_RSA(lane.key.key.as_ptr());
        op(
            rsa,
            &mut len,
            out.as_mut_ptr(),
            out.len(),
            lane.input.as_ptr(),
            lane.input.len(),
            ffi::RSA_NO_PADDING,
        )
    };
    let good = rc == 1 && len == out.len();
    if !good {
        // SAFETY: clears this thread's AWS-LC error queue; no pointers.
        unsafe { ffi::ERR_clear_error() };
    }
    good
}

/// The lanes crypto_mb's ECDSA signing refuses with a lane status
/// (`ifma_ecdsa_p256.c`, `_p384.c`: `MBX_STATUS_MISMATCH_PARAM_ERR`), which
/// AWS-LC would sign: a message that is zero or not below the order
/// (`ifma_check_range_n256`), a zero nonce, a zero private scalar. The
/// reference refuses them too, so machines without IFMA test the fallback.
fn library_refuses(lane: &EcLane<'_>) -> bool {
    let zero = |limbs: &[u64]| limbs.iter().all(|&l| l == 0);
    lane.msg.iter().all(|&b| b == 0)
        || lane.msg >= lane.key.order.as_slice()
        || zero(lane.nonce)
        || zero(&lane.key.scalar)
}
