//! A key's material in the form the multi-buffer library takes: private
//! numbers as little-endian 64-bit limbs (Ed25519: the RFC 8032 seed), in
//! zeroizing buffers. Built on
//! the core that uses it, from that core's own copy of the key.

use std::fmt;
use std::ptr;

use aws_lc_sys as ffi;
use zeroize::Zeroizing;

use super::LaneClass;
use crate::memory::evp::EvpKey;
use crate::{KeyAlgorithm, Operation};

/// One key's lane material (RSA, ECDSA or Ed25519).
pub enum LaneKey {
    Rsa(RsaLaneKey),
    Ec(EcLaneKey),
    Ed(EdLaneKey),
}

/// An RSA key's CRT numbers; `key` also serves the padding and the check
/// of each result against the public exponent.
pub struct RsaLaneKey {
    pub(crate) class: LaneClass,
    pub(crate) bits: u32,
    pub(crate) p: Zeroizing<Vec<u64>>,
    pub(crate) q: Zeroizing<Vec<u64>>,
    pub(crate) dp: Zeroizing<Vec<u64>>,
    pub(crate) dq: Zeroizing<Vec<u64>>,
    pub(crate) qinv: Zeroizing<Vec<u64>>,
    /// The modulus, big-endian (public).
    pub(crate) n: Vec<u8>,
    /// The modulus as little-endian limbs, for the library's public
    /// operation (which takes e = 65537 only).
    pub(crate) n_limbs: Zeroizing<Vec<u64>>,
    /// Whether the public exponent is 65537.
    pub(crate) e65537: bool,
    pub(crate) key: EvpKey,
}

/// An ECDSA key's private scalar and its curve's order (big-endian).
pub struct EcLaneKey {
    pub(crate) class: LaneClass,
    pub(crate) scalar: Zeroizing<Vec<u64>>,
    pub(crate) order: Vec<u8>,
    pub(crate) key: EvpKey,
}

/// An Ed25519 key: its 32-byte seed (RFC 8032's private key) and public key.
pub struct EdLaneKey {
    pub(crate) seed: Zeroizing<[u8; 32]>,
    pub(crate) public: [u8; 32],
    pub(crate) key: EvpKey,
}

impl fmt::Debug for LaneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaneKey")
            .field("class", &self.class())
            .finish_non_exhaustive()
    }
}

impl LaneKey {
    pub fn class(&self) -> LaneClass {
        match self {
            LaneKey::Rsa(k) => k.class,
            LaneKey::Ec(k) => k.class,
            LaneKey::Ed(_) => LaneClass::Ed25519,
        }
    }

    /// `op` on `input` through AWS-LC's single path, as an `InMemoryKey`
    /// of this key performs it: where the library refuses a lane.
    pub(crate) fn sign_alone(&self, op: Operation, input: &[u8]) -> Result<Vec<u8>, crate::CryptoError> {
        let (key, algorithm) = match self {
            LaneKey::Rsa(k) => (&k.key, KeyAlgorithm::Rsa { bits: k.bits }),
            LaneKey::Ec(k) => (
                &k.key,
                match k.class {
                    LaneClass::EcdsaP384 => KeyAlgorithm::EcdsaP384,
                    LaneClass::EcdsaP521 => KeyAlgorithm::EcdsaP521,
                    _ => KeyAlgorithm::EcdsaP256,
                },
            ),
            LaneKey::Ed(k) => (&k.key, KeyAlgorithm::Ed25519),
        };
        key.perform(algorithm, op, input)
    }

    /// Whether `op` can go into this key's lanes (an operation of another
    /// key type goes to the single path, which refuses it).
    /// MD5SHA1 is a PKCS#1-only digest: with PSS or ECDSA it goes the single
    /// path, which refuses it as it always did.
    pub fn serves(&self, op: Operation) -> bool {
        use keyless_protocol::Hash::Md5Sha1;
        match (self, op) {
            (LaneKey::Rsa(_), Operation::RsaPkcs1(_) | Operation::RsaRawDecrypt) => true,
            (LaneKey::Rsa(_), Operation::RsaPss(h)) | (LaneKey::Ec(_), Operation::Ecdsa(h)) => h != Md5Sha1,
            (LaneKey::Ed(_), Operation::Ed25519) => true,
            _ => false,
        }
    }

    /// The lane material of `key`, if its type and size have a lane class.
    pub(crate) fn from_evp(key: &EvpKey) -> Option<LaneKey> {
        let pkey = key.as_ptr();
        // SAFETY: `pkey` is live for this call; get0 pointers are borrowed
        // from it and only read here.
        unsafe {
            let rsa = ffi::EVP_PKEY_get0_RSA(pkey);
            if !rsa.is_null() {
                return rsa_lane_key(rsa, key);
            }
            let ec = ffi::EVP_PKEY_get0_EC_KEY(pkey);
            if !ec.is_null() {
                return ec_lane_key(ec, key);
            }
            if ffi::EVP_PKEY_id(pkey) == ffi::EVP_PKEY_ED25519 {
                return ed_lane_key(key);
            }
        }
        None
    }
}

/// `bn` as `limbs` little-endian 64-bit words, or `None` if it does not fit.
///
/// # Safety
/// `bn` must be a live BIGNUM.
unsafe fn limbs(bn: *const ffi::BIGNUM, limbs: usize) -> Option<Zeroizing<Vec<u64>>> {
    if bn.is_null() {
        return None;
    }
    let mut bytes = Zeroizing::new(vec![0u8; limbs * 8]);
    if ffi::BN_bn2le_padded(bytes.as_mut_ptr(), bytes.len(), bn) != 1 {
        return None;
    }
    Some(Zeroizing::new(
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    ))
}

/// # Safety
/// `rsa` must be the live RSA key inside `key`.
unsafe fn rsa_lane_key(rsa: *const ffi::RSA, key: &EvpKey) -> Option<LaneKey> {
    let bits = ffi::RSA_bits(rsa);
    let class = match bits {
        2048 => LaneClass::Rsa2048,
        3072 => LaneClass::Rsa3072,
        4096 => LaneClass::Rsa4096,
        _ => return None,
    };
    let (mut p, mut q) = (ptr::null(), ptr::null());
    ffi::RSA_get0_factors(rsa, &mut p, &mut q);
    let (mut dp, mut dq, mut qinv) = (ptr::null(), ptr::null(), ptr::null());
    ffi::RSA_get0_crt_params(rsa, &mut dp, &mut dq, &mut qinv);
    if p.is_null() || q.is_null() {
        return None;
    }
    // The library's CRT works on two primes of half the modulus each.
    let half = bits / 2;
    if ffi::BN_num_bits(p) != half || ffi::BN_num_bits(q) != half {
        return None;
    }
    let limbs_per_prime = (half as usize).div_ceil(64);
    let mut modulus = vec![0u8; class.scalar_len()];
    if ffi::BN_bn2bin_padded(modulus.as_mut_ptr(), modulus.len(), ffi::RSA_get0_n(rsa)) != 1 {
        return None;
    }
    let n = limbs_per_prime;
    let e = ffi::RSA_get0_e(rsa);
    let e65537 = !e.is_null() && ffi::BN_num_bits(e) <= 64 && ffi::BN_get_word(e) == 65537;
    Some(LaneKey::Rsa(RsaLaneKey {
        class,
        bits,
        p: limbs(p, n)?,
        q: limbs(q, n)?,
        dp: limbs(dp, n)?,
        dq: limbs(dq, n)?,
        qinv: limbs(qinv, n)?,
        n: modulus,
        n_limbs: limbs(ffi::RSA_get0_n(rsa), 2 * n)?,
        e65537,
        key: key.share(),
    }))
}

/// # Safety
/// `ec` must be the live EC key inside `key`.
unsafe fn ec_lane_key(ec: *const ffi::EC_KEY, key: &EvpKey) -> Option<LaneKey> {
    let group = ffi::EC_KEY_get0_group(ec);
    if group.is_null() {
        return None;
    }
    let class = match ffi::EC_GROUP_get_curve_name(group) {
        ffi::NID_X9_62_prime256v1 => LaneClass::EcdsaP256,
        ffi::NID_secp384r1 => LaneClass::EcdsaP384,
        ffi::NID_secp521r1 => LaneClass::EcdsaP521,
        _ => return None,
    };
    let len = class.scalar_len();
    let order_bn = ffi::EC_GROUP_get0_order(group);
    let mut order = vec![0u8; len];
    if order_bn.is_null() || ffi::BN_bn2bin_padded(order.as_mut_ptr(), len, order_bn) != 1 {
        return None;
    }
    Some(LaneKey::Ec(EcLaneKey {
        class,
        scalar: limbs(ffi::EC_KEY_get0_private_key(ec), len.div_ceil(8))?,
        order,
        key: key.share(),
    }))
}

/// # Safety
/// `key` must hold a live Ed25519 EVP_PKEY.
unsafe fn ed_lane_key(key: &EvpKey) -> Option<LaneKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    let mut public = [0u8; 32];
    let (mut seed_len, mut public_len) = (seed.len(), public.len());
    if ffi::EVP_PKEY_get_raw_private_key(key.as_ptr(), seed.as_mut_ptr(), &mut seed_len) != 1
        || ffi::EVP_PKEY_get_raw_public_key(key.as_ptr(), public.as_mut_ptr(), &mut public_len) != 1
        || seed_len != 32
        || public_len != 32
    {
        return None;
    }
    Some(LaneKey::Ed(EdLaneKey {
        seed,
        public,
        key: key.share(),
    }))
}
