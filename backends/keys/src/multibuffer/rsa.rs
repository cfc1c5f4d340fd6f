//! RSA lanes: pad with AWS-LC, run the raw private operation in one call,
//! check every result with the public exponent before it leaves (in a
//! second call where the exponent is 65537: one AWS-LC check costs a sixth
//! of a lane's time; else, or for a lane that call refuses, with AWS-LC).

use std::os::raw::c_int;
use std::ptr;

use aws_lc_sys as ffi;
use zeroize::Zeroizing;

use super::{Lane, LaneClass, LaneKey, LaneMath, Outcome, RsaLane, RsaLaneKey, LANES};
use crate::memory::evp::{check as lc_check, md};
use crate::{CryptoError, Operation};

pub(super) fn sign(math: &dyn LaneMath, class: LaneClass, lanes: &[Lane<'_>]) -> Vec<Outcome> {
    let mut results: Vec<Outcome> = Vec::with_capacity(lanes.len());
    // (lane index, key, encoded message) of the lanes that go into the call.
    let mut ready: Vec<(usize, &RsaLaneKey, Zeroizing<Vec<u8>>)> = Vec::with_capacity(LANES);
    for (i, lane) in lanes.iter().enumerate() {
        let LaneKey::Rsa(key) = lane.key else {
            results.push(Outcome::Done(Err(CryptoError("operation does not match the key type"))));
            continue;
        };
        match encode(key, lane.op, lane.input) {
            Ok(em) => {
                ready.push((i, key, em));
                results.push(Outcome::Refused); // until computed
            }
            Err(e) => results.push(Outcome::Done(Err(e))),
        }
    }
    if ready.is_empty() {
        return results;
    }
    let call: Vec<RsaLane<'_>> = ready.iter().map(|(_, key, em)| RsaLane { key, input: em }).collect();
    let mut out: Vec<Zeroizing<Vec<u8>>> = (0..call.len())
        .map(|_| Zeroizing::new(vec![0u8; class.scalar_len()]))
        .collect();
    let good = math.rsa_private(class, &call, &mut out);
    // The results to check in one public call: of keys with e = 65537.
    let batched: Vec<usize> = (0..call.len()).filter(|&j| good[j] && ready[j].1.e65537).collect();
    let mut back = vec![vec![0u8; class.scalar_len()]; batched.len()];
    let checked = if batched.is_empty() {
        [false; LANES]
    } else {
        let lanes: Vec<RsaLane<'_>> = batched
            .iter()
            .map(|&j| RsaLane {
                key: ready[j].1,
                input: &out[j],
            })
            .collect();
        math.rsa_public(class, &lanes, &mut back)
    };
    for (j, (i, key, em)) in ready.iter().enumerate() {
        // A refused lane is signed alone; a computed one that fails its
        // check is a fault, answered with an error and never retried.
        results[*i] = if good[j] {
            let verdict = match batched.iter().position(|&b| b == j) {
                Some(t) if checked[t] => verdict(back[t] == **em),
                _ => check(key, &out[j], em),
            };
            Outcome::Done(verdict.map(|()| out[j].to_vec()))
        } else {
            Outcome::Refused
        };
    }
    results
}

/// The message the raw private operation is applied to: padded digest, or
/// the ciphertext itself for raw decryption.
pub(super) fn encode(key: &RsaLaneKey, op: Operation, input: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    op.check(crate::KeyAlgorithm::Rsa { bits: key.bits }, input)?;
    let k = key.n.len();
    let mut em = Zeroizing::new(vec![0u8; k]);
    match op {
        Operation::RsaPkcs1(hash) => {
            let t = digest_info(hash, input)?;
            // EMSA-PKCS1-v1_5 (RFC 8017 9.2): 00 01 FF..FF 00 T, at least 8 FF.
            if t.len() + 11 > k {
                return Err(CryptoError("digest too big for the RSA key"));
            }
            em[1] = 1;
            let pad_end = k - t.len() - 1;
            em[2..pad_end].fill(0xff);
            em[pad_end + 1..].copy_from_slice(&t);
        }
        Operation::RsaPss(hash) => {
            // SAFETY: `em` has RSA_size(rsa) = k writable bytes, `input` is
            // the digest of `hash` (checked above); the RSA key is live.
            let rc = unsafe {
                ffi::RSA_padding_add_PKCS1_PSS_mgf1(
                    rsa_ptr(key),
                    em.as_mut_ptr(),
                    input.as_ptr(),
                    md(hash),
                    ptr::null(),
                    ffi::RSA_PSS_SALTLEN_DIGEST,
                )
            };
            lc_check(rc, "signing failed")?;
        }
        Operation::RsaRawDecrypt => {
            // What AWS-LC refuses too: another length, a value >= n, 0 or 1.
            let below_two = input.iter().rev().skip(1).all(|&b| b == 0) && input.last().is_some_and(|&b| b < 2);
            if input.len() != k || input >= key.n.as_slice() || below_two {
                return Err(CryptoError("decryption failed"));
            }
            em.copy_from_slice(input);
        }
        Operation::Ecdsa(_) | Operation::Ed25519 => return Err(CryptoError("operation does not match the key type")),
    }
    Ok(em)
}

/// DigestInfo (or the bare 36 bytes of MD5SHA1) for PKCS#1 v1.5, from AWS-LC.
fn digest_info(hash: keyless_protocol::Hash, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out: *mut u8 = ptr::null_mut();
    let mut out_len = 0usize;
    let mut alloced: c_int = 0;
    // SAFETY: md() returns a static table; `digest` is readable; AWS-LC sets
    // `out` to either `digest` itself or a buffer we free below.
    unsafe {
        let nid = ffi::EVP_MD_type(md(hash));
        lc_check(
            ffi::RSA_add_pkcs1_prefix(&mut out, &mut out_len, &mut alloced, nid, digest.as_ptr(), digest.len()),
            "unknown digest for PKCS#1",
        )?;
        let t = std::slice::from_raw_parts(out, out_len).to_vec();
        if alloced != 0 {
            ffi::OPENSSL_free(out.cast());
        }
        Ok(t)
    }
}

fn rsa_ptr(key: &RsaLaneKey) -> *mut ffi::RSA {
    // SAFETY: the EVP_PKEY is live while `key` is and holds an RSA key
    // (LaneKey::from_evp made this an RsaLaneKey because it does).
    unsafe { ffi::EVP_PKEY_get0_RSA(key.key.as_ptr()) }
}

/// `result^e mod n` must give back `em`: a result computed wrongly (a fault
/// in one CRT half) is never sent, as it would reveal a factor of `n`.
pub(super) fn check(key: &RsaLaneKey, result: &[u8], em: &[u8]) -> Result<(), CryptoError> {
    let mut back = Zeroizing::new(vec![0u8; key.n.len()]);
    let mut back_len = 0usize;
    // SAFETY: the RSA key is live; `back` has n bytes writable; `result` is readable.
    let rc = unsafe {
        ffi::RSA_verify_raw(
            rsa_ptr(key),
            &mut back_len,
            back.as_mut_ptr(),
            back.len(),
            result.as_ptr(),
            result.len(),
            ffi::RSA_NO_PADDING,
        )
    };
    let matches = rc == 1 && back_len == em.len() && back[..back_len] == *em;
    if !matches {
        // SAFETY: clears this thread's AWS-LC error queue; no pointers.
        unsafe { ffi::ERR_clear_error() };
    }
    verdict(matches)
}

/// A result whose public operation gave back its message goes out; any
/// other is logged and answered with an error.
fn verdict(matches: bool) -> Result<(), CryptoError> {
    if matches {
        return Ok(());
    }
    tracing::error!("a multi-buffer RSA result failed its check against the public key and was not sent");
    Err(CryptoError("the RSA result failed its check; not sent"))
}
