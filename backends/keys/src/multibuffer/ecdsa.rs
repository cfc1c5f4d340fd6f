//! ECDSA lanes: the digest as the curve's integer, a fresh nonce per lane
//! from AWS-LC's CSPRNG, one call, DER out.

use zeroize::Zeroizing;

use super::{EcLane, EcLaneKey, Lane, LaneClass, LaneKey, LaneMath, Outcome, LANES};
use crate::{CryptoError, Operation};

pub(super) fn sign(math: &dyn LaneMath, class: LaneClass, lanes: &[Lane<'_>]) -> Vec<Outcome> {
    let mut results: Vec<Outcome> = Vec::with_capacity(lanes.len());
    // (lane index, key, message) of the lanes that go into the call.
    let mut ready: Vec<(usize, &EcLaneKey, Vec<u8>)> = Vec::with_capacity(LANES);
    for (i, lane) in lanes.iter().enumerate() {
        let LaneKey::Ec(key) = lane.key else {
            results.push(Outcome::Done(Err(CryptoError("operation does not match the key type"))));
            continue;
        };
        match message(key, lane.op, lane.input) {
            Ok(msg) => {
                ready.push((i, key, msg));
                results.push(Outcome::Refused); // until computed
            }
            Err(e) => results.push(Outcome::Done(Err(e))),
        }
    }
    if ready.is_empty() {
        return results;
    }
    // Every lane of a call is of one curve: one order.
    let nonces = match draw_nonces(&ready[0].1.order, ready.len()) {
        Ok(n) => n,
        Err(e) => return lanes.iter().map(|_| Outcome::Done(Err(e))).collect(),
    };
    let call: Vec<EcLane<'_>> = ready
        .iter()
        .zip(&nonces)
        .map(|((_, key, msg), nonce)| EcLane { key, msg, nonce })
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
/// wants; big-endian, the scalar's length. (P-521's order is wider than any
/// digest, which is then the integer as it is.)
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

/// `count` nonces below `order` (big-endian), each uniform in [1, n-1], as
/// little-endian limbs: one draw from AWS-LC's CSPRNG for the whole call (a
/// draw per lane cost 6% of a core at 100k signatures/s), each lane's
/// candidate redrawn alone until it is in range (rejection sampling, as
/// `BN_rand_range_ex` does; for P-256 and P-384 a redraw has a chance below
/// 2^-32). Never kept: zeroized on drop.
pub(super) fn draw_nonces(order: &[u8], count: usize) -> Result<Vec<Zeroizing<Vec<u64>>>, CryptoError> {
    let len = order.len();
    // P-521's order has 521 bits in 66 bytes: the candidate's top bits
    // beyond them are cleared, or most candidates would be rejected.
    let top = 0xffu8 >> order[0].leading_zeros();
    let limbs = len.div_ceil(8);
    let mut pool = Zeroizing::new(vec![0u8; len * count]);
    let fill = |bytes: &mut [u8]| {
        aws_lc_rs::rand::fill(bytes).map_err(|_| CryptoError("cannot draw a nonce"))?;
        bytes[0] &= top;
        Ok::<(), CryptoError>(())
    };
    fill(&mut pool)?;
    for k in pool.chunks_exact_mut(len) {
        k[0] &= top;
    }
    pool.chunks_exact_mut(len)
        .map(|k| {
            while k.iter().all(|&b| b == 0) || &*k >= order {
                fill(k)?;
            }
            // Big-endian bytes to little-endian limbs, the top one padded.
            let mut padded = Zeroizing::new(vec![0u8; limbs * 8]);
            padded[limbs * 8 - len..].copy_from_slice(k);
            Ok(Zeroizing::new(
                padded
                    .rchunks_exact(8)
                    .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_in_range_and_differ() {
        for class in [LaneClass::EcdsaP256, LaneClass::EcdsaP384, LaneClass::EcdsaP521] {
            let key = crate::multibuffer::tests::ec_key(class);
            let LaneKey::Ec(key) = &key else { unreachable!() };
            let mut seen = std::collections::HashSet::new();
            for _ in 0..250 {
                for k in draw_nonces(&key.order, LANES).unwrap() {
                    let be: Vec<u8> = k.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
                    let (pad, be) = be.split_at(be.len() - key.order.len());
                    assert!(pad.iter().all(|&b| b == 0), "a nonce wider than the order");
                    let be = be.to_vec();
                    assert!(be.iter().any(|&b| b != 0), "a zero nonce");
                    assert!(be < key.order, "a nonce not below the order");
                    assert!(seen.insert(be), "a nonce drawn twice");
                }
            }
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
