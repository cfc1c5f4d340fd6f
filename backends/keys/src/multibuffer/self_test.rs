//! What crypto_mb must get right before its lanes carry requests. An ECDSA
//! or Ed25519 result is not checked per call (an RSA one is, against the
//! public exponent), so at load each of those classes signs fixed inputs
//! and must give the answers AWS-LC gives: ECDSA with nonces we choose (so
//! the signature is determined), Ed25519 with RFC 8032's test vectors. A
//! class that fails is signed alone, and the start-up log says so: the
//! same request gets the same answer whichever path signs it. The public
//! operation that checks RSA results must give AWS-LC's `x^65537 mod n`
//! too, or RSA results are checked with AWS-LC.
//!
//! Not hypothetical: Debian 13's crypto_mb 1.0.14 derives wrong Ed25519
//! public keys and signatures on AMD EPYC (Zen 4), failing the library's
//! own Wycheproof known-answer test, while its ECDSA and RSA are right.

use std::ptr;

use aws_lc_sys as ffi;

use super::ecdsa::draw_nonces;
use super::{EcLane, EdLane, LaneClass, LaneKey, LaneMath, Reference, LANES};
use crate::memory::evp::EvpKey;

/// RFC 8032, 7.1, TEST 1 to 3: seed, message, signature (hex).
pub const RFC_8032_VECTORS: [(&str, &str, &str); 3] = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
];

/// The classes `math` gets wrong, each with why.
pub(super) fn failures(math: &dyn LaneMath) -> Vec<(LaneClass, String)> {
    let mut failed = Vec::new();
    for class in [LaneClass::EcdsaP256, LaneClass::EcdsaP384, LaneClass::EcdsaP521] {
        if let Err(why) = ecdsa(math, class) {
            failed.push((class, why));
        }
    }
    if let Err(why) = ed25519(math) {
        failed.push((LaneClass::Ed25519, why));
    }
    failed
}

/// Eight lanes of a fresh key, fixed messages and drawn nonces: the same
/// `(r, s)` as AWS-LC's with those nonces.
fn ecdsa(math: &dyn LaneMath, class: LaneClass) -> Result<(), String> {
    use aws_lc_rs::signature::{
        EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
    };
    let alg = match class {
        LaneClass::EcdsaP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
        LaneClass::EcdsaP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        _ => &ECDSA_P521_SHA512_ASN1_SIGNING,
    };
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &aws_lc_rs::rand::SystemRandom::new())
        .map_err(|_| "cannot make a test key".to_string())?;
    let evp = EvpKey::from_der(pkcs8.as_ref()).map_err(|e| e.0.to_string())?;
    let Some(LaneKey::Ec(key)) = LaneKey::from_evp(&evp) else {
        return Err("no lane material for the test key".into());
    };
    let len = class.scalar_len();
    // Below every order: a zero top byte (P-521's order starts 0x01).
    let messages: Vec<Vec<u8>> = (0..LANES as u8)
        .map(|i| {
            (0..len)
                .map(|j| if j == 0 { 0 } else { i.wrapping_mul(31) ^ j as u8 })
                .collect()
        })
        .collect();
    let nonces = draw_nonces(&key.order, LANES).map_err(|e| e.0.to_string())?;
    let lanes: Vec<EcLane<'_>> = messages
        .iter()
        .zip(&nonces)
        .map(|(msg, nonce)| EcLane { key: &key, msg, nonce })
        .collect();
    let run = |m: &dyn LaneMath| {
        let (mut r, mut s) = (vec![vec![0u8; len]; LANES], vec![vec![0u8; len]; LANES]);
        let good = m.ecdsa(class, &lanes, &mut r, &mut s);
        (good, r, s)
    };
    let (good, r, s) = run(math);
    let (_, want_r, want_s) = run(&Reference::new());
    if good != [true; LANES] {
        return Err(format!("refused lanes of a valid call ({good:?})"));
    }
    if r != want_r || s != want_s {
        return Err("signatures differ from AWS-LC's with the same nonces".into());
    }
    Ok(())
}

/// RFC 8032's vectors, each alone in a call of eight and all mixed in one.
fn ed25519(math: &dyn LaneMath) -> Result<(), String> {
    let decode = |h: &str| hex::decode(h).expect("a test vector");
    let mut keys = Vec::new();
    for (seed, ..) in RFC_8032_VECTORS {
        // PKCS#8 around the seed (RFC 8410).
        let der = [decode("302e020100300506032b657004220420"), decode(seed)].concat();
        let evp = EvpKey::from_der(&der).map_err(|e| e.0.to_string())?;
        match LaneKey::from_evp(&evp) {
            Some(LaneKey::Ed(key)) => keys.push(key),
            _ => return Err("no lane material for the test key".into()),
        }
    }
    let messages: Vec<Vec<u8>> = RFC_8032_VECTORS.iter().map(|(_, m, _)| decode(m)).collect();
    let expected: Vec<Vec<u8>> = RFC_8032_VECTORS.iter().map(|(.., s)| decode(s)).collect();
    let mut plans: Vec<[usize; LANES]> = (0..RFC_8032_VECTORS.len()).map(|v| [v; LANES]).collect();
    plans.push(std::array::from_fn(|i| i % RFC_8032_VECTORS.len()));
    for plan in plans {
        let lanes: Vec<EdLane<'_>> = plan
            .iter()
            .map(|&v| EdLane {
                key: &keys[v],
                msg: &messages[v],
            })
            .collect();
        let mut sig = [[0u8; 64]; LANES];
        let good = math.ed25519(&lanes, &mut sig);
        for (i, &v) in plan.iter().enumerate() {
            if !good[i] || sig[i][..] != expected[v][..] {
                return Err(format!("RFC 8032 TEST {} gives a wrong signature", v + 1));
            }
        }
    }
    Ok(())
}

/// The library's 8-lane `x^65537 mod n` (big-endian inputs and outputs,
/// the modulus in little-endian limbs), as [`super::CryptoMb::public_65537`].
pub(super) type Public65537<'a> = dyn Fn(usize, &[&[u8]], &[&[u64]], &mut [&mut [u8]]) -> u32 + 'a;

/// Eight random moduli of each RSA size (odd, top bit set: the operation
/// is the same whether or not they are products of two primes) and inputs
/// below them: `public` must give AWS-LC's `x^65537 mod n` for each.
pub(super) fn rsa_public(public: &Public65537<'_>) -> Result<(), String> {
    for bits in [2048usize, 3072, 4096] {
        let len = bits / 8;
        let mut n = vec![vec![0u8; len]; LANES];
        let mut x = vec![vec![0u8; len]; LANES];
        for (n, x) in n.iter_mut().zip(x.iter_mut()) {
            aws_lc_rs::rand::fill(n).map_err(|_| "cannot draw a test modulus")?;
            aws_lc_rs::rand::fill(x).map_err(|_| "cannot draw a test input")?;
            n[0] |= 0x80;
            n[len - 1] |= 1;
            x[0] = 0; // below n
        }
        let limbs: Vec<Vec<u64>> = n
            .iter()
            .map(|n| {
                n.rchunks_exact(8)
                    .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                    .collect()
            })
            .collect();
        let mut got = vec![vec![0u8; len]; LANES];
        let from: Vec<&[u8]> = x.iter().map(Vec::as_slice).collect();
        let n_limbs: Vec<&[u64]> = limbs.iter().map(Vec::as_slice).collect();
        let mut to: Vec<&mut [u8]> = got.iter_mut().map(Vec::as_mut_slice).collect();
        if public(bits, &from, &n_limbs, &mut to) != 0 {
            return Err(format!("the public operation refused valid RSA-{bits} lanes"));
        }
        for i in 0..LANES {
            if got[i] != mod_exp_65537(&x[i], &n[i])? {
                return Err(format!("the public operation differs from AWS-LC's for RSA-{bits}"));
            }
        }
    }
    Ok(())
}

/// AWS-LC's `x^65537 mod n`, big-endian of `n`'s length.
fn mod_exp_65537(x: &[u8], n: &[u8]) -> Result<Vec<u8>, String> {
    struct Bn(*mut ffi::BIGNUM);
    impl Drop for Bn {
        fn drop(&mut self) {
            // SAFETY: a BIGNUM from BN_new/BN_bin2bn (or null), freed once.
            unsafe { ffi::BN_free(self.0) }
        }
    }
    struct Ctx(*mut ffi::BN_CTX);
    impl Drop for Ctx {
        fn drop(&mut self) {
            // SAFETY: a BN_CTX from BN_CTX_new (or null), freed once.
            unsafe { ffi::BN_CTX_free(self.0) }
        }
    }
    let mut out = vec![0u8; n.len()];
    // SAFETY: each BIGNUM and the context are owned by a guard that frees
    // them; the inputs are readable for their lengths and `out` is writable
    // for `n`'s length, which bounds the result.
    let ok = unsafe {
        let (xb, nb, e, r) = (
            Bn(ffi::BN_bin2bn(x.as_ptr(), x.len(), ptr::null_mut())),
            Bn(ffi::BN_bin2bn(n.as_ptr(), n.len(), ptr::null_mut())),
            Bn(ffi::BN_new()),
            Bn(ffi::BN_new()),
        );
        let ctx = Ctx(ffi::BN_CTX_new());
        !xb.0.is_null()
            && !nb.0.is_null()
            && !e.0.is_null()
            && !r.0.is_null()
            && !ctx.0.is_null()
            && ffi::BN_set_word(e.0, 65537) == 1
            && ffi::BN_mod_exp(r.0, xb.0, e.0, nb.0, ctx.0) == 1
            && ffi::BN_bn2bin_padded(out.as_mut_ptr(), out.len(), r.0) == 1
    };
    if ok {
        Ok(out)
    } else {
        Err("AWS-LC cannot compute the expected result".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::multibuffer::RsaLane;
    use zeroize::Zeroizing;

    #[test]
    fn the_reference_passes() {
        assert!(failures(&Reference::new()).is_empty());
    }

    /// The reference with one bit of every ECDSA `s` and every Ed25519
    /// signature flipped: a library that is wrong, but says each lane is good.
    struct Wrong(Reference);

    impl LaneMath for Wrong {
        fn describe(&self) -> String {
            "wrong".into()
        }
        fn runs(&self, _: LaneClass) -> bool {
            true
        }
        fn rsa_private(
            &self,
            class: LaneClass,
            lanes: &[RsaLane<'_>],
            out: &mut [Zeroizing<Vec<u8>>],
        ) -> [bool; LANES] {
            self.0.rsa_private(class, lanes, out)
        }
        fn rsa_public(&self, class: LaneClass, lanes: &[RsaLane<'_>], out: &mut [Vec<u8>]) -> [bool; LANES] {
            self.0.rsa_public(class, lanes, out)
        }
        fn ecdsa(&self, class: LaneClass, lanes: &[EcLane<'_>], r: &mut [Vec<u8>], s: &mut [Vec<u8>]) -> [bool; LANES] {
            let good = self.0.ecdsa(class, lanes, r, s);
            s[LANES - 1][3] ^= 1;
            good
        }
        fn ed25519(&self, lanes: &[EdLane<'_>], sig: &mut [[u8; 64]]) -> [bool; LANES] {
            let good = self.0.ed25519(lanes, sig);
            sig[2][40] ^= 1;
            good
        }
    }

    #[test]
    fn a_wrong_library_fails_every_class_it_gets_wrong() {
        let failed = failures(&Wrong(Reference::new()));
        let classes: Vec<LaneClass> = failed.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            classes,
            [
                LaneClass::EcdsaP256,
                LaneClass::EcdsaP384,
                LaneClass::EcdsaP521,
                LaneClass::Ed25519
            ]
        );
        assert_eq!(failed[0].1, "signatures differ from AWS-LC's with the same nonces");
        assert_eq!(failed[3].1, "RFC 8032 TEST 1 gives a wrong signature");
    }

    /// AWS-LC's own `x^65537 mod n` as an 8-lane call, optionally wrong in
    /// one lane's last byte.
    fn aws_lc_public(wrong: bool) -> Box<Public65537<'static>> {
        Box::new(move |bits, from, n, to| {
            let len = bits / 8;
            for i in 0..from.len() {
                let n: Vec<u8> = n[i].iter().rev().flat_map(|l| l.to_be_bytes()).collect();
                to[i].copy_from_slice(&mod_exp_65537(from[i], &n).unwrap());
                if wrong && i == 5 {
                    to[i][len - 1] ^= 1;
                }
            }
            0
        })
    }

    #[test]
    fn the_rsa_public_operation_must_be_aws_lcs() {
        assert_eq!(rsa_public(&aws_lc_public(false)), Ok(()));
        assert_eq!(
            rsa_public(&aws_lc_public(true)),
            Err("the public operation differs from AWS-LC's for RSA-2048".to_string())
        );
        assert_eq!(
            rsa_public(&|_, _, _, _| 0x10),
            Err("the public operation refused valid RSA-2048 lanes".to_string())
        );
    }
}
