//! ECDSA lanes: the digest as the curve's integer, a fresh nonce per lane
//! from AWS-LC's CSPRNG, one call, DER out.

use std::ptr::NonNull;

use aws_lc_sys as ffi;
use zeroize::Zeroizing;

use super::{EcLane, EcLaneKey, Lane, LaneClass, LaneKey, LaneMath, Outcome, LANES};
use crate::{CryptoError, Operation};

type Prepared<'a> = (usize, &'a EcLaneKey, Vec<u8>, Zeroizing<Vec<u64>>);

pub(super) fn sign(math: &dyn LaneMath, class: LaneClass, lanes: &[Lane<'_>]) -> Vec<Outcome> {
    let mut results: Vec<Outcome> = Vec::with_capacity(lanes.len());
    // (lane index, key, message, nonce) of the lanes that go into the call.
    let mut ready: Vec<Prepared<'_>> = Vec::with_capacity(LANES);
    let mut nonces = match Nonces::new() {
        Ok(n) => n,
        Err(e) => return lanes.iter().map(|_| Outcome::Done(Err(e))).collect(),
    };
    for (i, lane) in lanes.iter().enumerate() {
        let LaneKey::Ec(key) = lane.key else {
            results.push(Outcome::Done(Err(CryptoError("operation does not match the key type"))));
            continue;
        };
        let prepared = message(key, lane.op, lane.input).and_then(|msg| Ok((msg, nonces.draw(key)?)));
        match prepared {
            Ok((msg, nonce)) => {
                ready.push((i, key, msg, nonce));
                results.push(Outcome::Refused); // until computed
            }
            Err(e) => results.push(Outcome::Done(Err(e))),
        }
    }
    if ready.is_empty() {
        return results;
    }
    let call: Vec<EcLane<'_>> = ready
        .iter()
        .map(|(_, key, msg, nonce)| EcLane { key, msg, nonce })
        .collect();
    let len = class.scalar_len();
    let mut r = vec![vec![0u8; len]; call.len()];
    let mut s = vec![vec![0u8; len]; call.len()];
    let good = math.ecdsa(class, &call, &mut r, &mut s);
    for (j, (i, ..)) in ready.iter().enumerate() {
        results[*i] = if good[j] {
            let mut raw = std::mem::take(&mut r[j]);
            raw.extend_from_slice(&s[j]);
            Outcome::Done(crate::spki::ecdsa_der(&raw).map_err(CryptoError))
        } else {
            Outcome::Refused
        };
    }
    results
}

/// The digest as ECDSA's integer `e` (FIPS 186-5 6.4.1: its leftmost bits,
/// as many as the order has), reduced below the order as the library
/// wants; big-endian, the scalar's length.
pub(super) fn message(key: &EcLaneKey, op: Operation, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let Operation::Ecdsa(hash) = op else {
        return Err(CryptoError("operation does not match the key type"));
    };
    if digest.len() != hash.len() {
        return Err(CryptoError("payload length does not match the digest algorithm"));
    }
    let len = key.order.len();
    let mut e = vec![0u8; len];
    if digest.len() >= len {
        // P-256 and P-384 orders are whole bytes: the leftmost bits are bytes.
        e.copy_from_slice(&digest[..len]);
    } else {
        e[len - digest.len()..].copy_from_slice(digest);
    }
    if e >= key.order {
        // e < 2^bits < 2n, so one subtraction reduces it.
        let mut borrow = 0i16;
        for (x, n) in e.iter_mut().zip(&key.order).rev() {
            let d = *x as i16 - *n as i16 - borrow;
            borrow = i16::from(d < 0);
            *x = d.rem_euclid(256) as u8;
        }
    }
    Ok(e)
}

/// Nonces drawn with one scratch BIGNUM (cleared and freed on drop).
struct Nonces(NonNull<ffi::BIGNUM>);

impl Nonces {
    fn new() -> Result<Nonces, CryptoError> {
        // SAFETY: allocates a BIGNUM that Drop frees.
        NonNull::new(unsafe { ffi::BN_new() })
            .map(Nonces)
            .ok_or(CryptoError("cannot allocate a nonce"))
    }

    /// A nonce uniform in [1, n-1] from AWS-LC's CSPRNG, as limbs.
    fn draw(&mut self, key: &EcLaneKey) -> Result<Zeroizing<Vec<u64>>, CryptoError> {
        let len = key.order.len();
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        // SAFETY: the BIGNUMs are live (the order one freed before return);
        // `bytes` has `len` writable bytes.
        let ok = unsafe {
            let order = ffi::BN_bin2bn(key.order.as_ptr(), len, std::ptr::null_mut());
            let ok = !order.is_null()
                && ffi::BN_rand_range_ex(self.0.as_ptr(), 1, order) == 1
                && ffi::BN_bn2le_padded(bytes.as_mut_ptr(), len, self.0.as_ptr()) == 1;
            ffi::BN_free(order);
            ok
        };
        if !ok {
            // SAFETY: clears this thread's AWS-LC error queue.
            unsafe { ffi::ERR_clear_error() };
            return Err(CryptoError("cannot draw a nonce"));
        }
        Ok(Zeroizing::new(
            bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ))
    }
}

impl Drop for Nonces {
    fn drop(&mut self) {
        // SAFETY: allocated by BN_new and owned here; clear_free zeroizes.
        unsafe { ffi::BN_clear_free(self.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_in_range_and_differ() {
        let key = crate::multibuffer::tests::ec_key(LaneClass::EcdsaP256);
        let LaneKey::Ec(key) = &key else { unreachable!() };
        let mut nonces = Nonces::new().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let k = nonces.draw(key).unwrap();
            let mut be: Vec<u8> = k.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
            assert!(be.iter().any(|&b| b != 0), "a zero nonce");
            assert!(be < key.order, "a nonce not below the order");
            assert!(seen.insert(std::mem::take(&mut be)), "a nonce drawn twice");
        }
    }

    #[test]
    fn long_digests_keep_their_leftmost_bits_and_reduce_below_the_order() {
        let key = crate::multibuffer::tests::ec_key(LaneClass::EcdsaP256);
        let LaneKey::Ec(key) = &key else { unreachable!() };
        let sha512 = [0xffu8; 64];
        let e = message(key, Operation::Ecdsa(keyless_protocol::Hash::Sha512), &sha512).unwrap();
        // 2^256 - 1 - n
        let mut expected = vec![0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = 0xff - key.order[i] as i16 - borrow;
            borrow = i16::from(d < 0);
            expected[i] = d.rem_euclid(256) as u8;
        }
        assert_eq!(e, expected);
        let sha1 = [7u8; 20];
        let e = message(key, Operation::Ecdsa(keyless_protocol::Hash::Sha1), &sha1).unwrap();
        assert_eq!(&e[..12], &[0u8; 12]);
        assert_eq!(&e[12..], &sha1);
    }
}
