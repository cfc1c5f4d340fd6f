//! Multi-buffer signing: one call of Intel's crypto_mb computes eight
//! private-key operations at once with AVX-512 IFMA, for about the time of
//! two or three single signatures.
//!
//! This module turns requests into lanes and lanes back into answers; what
//! computes the lanes is a [`LaneMath`]: [`CryptoMb`] (the library, loaded at
//! run time) or, in tests, [`Reference`] (AWS-LC, one lane at a time). The
//! parts a reviewer reads first live here, the same whichever computes:
//!
//! - ECDSA nonces come from AWS-LC's CSPRNG, uniform in [1, n-1], one per
//!   lane and never kept; signatures are DER, with `s` as computed (not
//!   normalised to low-s, like AWS-LC's own).
//! - RSA messages are padded with AWS-LC (PKCS#1 v1.5 DigestInfo or the
//!   36-byte MD5SHA1, PSS with salt = hash length), so PKCS#1 signatures are
//!   byte-identical to AWS-LC's; every result is raised to the public
//!   exponent and compared before it leaves ([`rsa::check`]): a faulty CRT
//!   result would give away the key's factors.
//! - Ed25519 is deterministic (RFC 8032): a lane's signature is byte for
//!   byte AWS-LC's.

mod crypto_mb;
mod ecdsa;
mod ed25519;
mod key;
mod reference;
mod rsa;
mod select;
mod self_test;

pub use crypto_mb::CryptoMb;
pub use key::{EcLaneKey, EdLaneKey, LaneKey, RsaLaneKey};
pub use reference::Reference;
pub use select::{select, Mode, Selected};
pub use self_test::RFC_8032_VECTORS;

use zeroize::Zeroizing;

use crate::{CryptoError, Operation};

/// Lanes in one multi-buffer call.
pub const LANES: usize = 8;

/// Requests that can share one multi-buffer call: same algorithm and size
/// (lanes may hold different keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LaneClass {
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    Ed25519,
}

impl LaneClass {
    pub const ALL: [LaneClass; 7] = [
        LaneClass::EcdsaP256,
        LaneClass::EcdsaP384,
        LaneClass::EcdsaP521,
        LaneClass::Rsa2048,
        LaneClass::Rsa3072,
        LaneClass::Rsa4096,
        LaneClass::Ed25519,
    ];

    /// Position in [`LaneClass::ALL`] (for per-class counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            LaneClass::EcdsaP256 => "ecdsa-p256",
            LaneClass::EcdsaP384 => "ecdsa-p384",
            LaneClass::EcdsaP521 => "ecdsa-p521",
            LaneClass::Rsa2048 => "rsa-2048",
            LaneClass::Rsa3072 => "rsa-3072",
            LaneClass::Rsa4096 => "rsa-4096",
            LaneClass::Ed25519 => "ed25519",
        }
    }

    /// Fewest lanes worth one call. A call costs about the same with one
    /// lane filled as with eight, so below this the requests are signed
    /// alone. Measured with `cargo bench --bench multibuffer` on one core
    /// of an AMD EPYC (Zen 4, AVX-512 IFMA), crypto_mb 2021.12.1, the
    /// fewest lanes whose call beats single AWS-LC signatures: P-256 3
    /// (57.9k/s against 52.8k/s; 2 lanes: 39.0k/s), P-384 3 (14.8k/s
    /// against 11.4k/s), P-521 2 (7.5k/s against 5.9k/s), RSA-2048 3
    /// (4.0k/s against 2.8k/s; 2 lanes: 2.7k/s), Ed25519 4 (117k/s against
    /// 101k/s; 3 lanes: 93k/s; timed although that library's Ed25519 fails
    /// its self-test on that CPU). RSA-3072 and 4096 take RSA-2048's figure.
    pub fn min_lanes(self) -> usize {
        match self {
            LaneClass::EcdsaP521 => 2,
            LaneClass::EcdsaP256 | LaneClass::EcdsaP384 => 3,
            LaneClass::Rsa2048 | LaneClass::Rsa3072 | LaneClass::Rsa4096 => 3,
            LaneClass::Ed25519 => 4,
        }
    }

    /// Bytes of a scalar (ECDSA, Ed25519; P-521's 521 bits in 66) or of the
    /// modulus (RSA).
    pub fn scalar_len(self) -> usize {
        match self {
            LaneClass::EcdsaP256 => 32,
            LaneClass::EcdsaP384 => 48,
            LaneClass::EcdsaP521 => 66,
            LaneClass::Rsa2048 => 256,
            LaneClass::Rsa3072 => 384,
            LaneClass::Rsa4096 => 512,
            LaneClass::Ed25519 => 32,
        }
    }
}

/// One RSA lane: `input^d mod n` for `key`, `input` of the modulus' length.
pub struct RsaLane<'a> {
    pub key: &'a RsaLaneKey,
    pub input: &'a [u8],
}

/// One ECDSA lane: `msg` (big-endian, reduced below the order) signed with
/// `nonce` (little-endian limbs, in [1, n-1]).
pub struct EcLane<'a> {
    pub key: &'a EcLaneKey,
    pub msg: &'a [u8],
    pub nonce: &'a [u64],
}

/// One Ed25519 lane: `msg` (the message itself, as RFC 8032 signs it)
/// signed with `key`.
pub struct EdLane<'a> {
    pub key: &'a EdLaneKey,
    pub msg: &'a [u8],
}

/// What computes the lanes of one call. Each method takes 1 to [`LANES`]
/// lanes of one class and says, per lane, whether its output is good.
pub trait LaneMath: Send + Sync {
    /// For logs: which implementation and version.
    fn describe(&self) -> String;
    /// Whether this computes lanes of `class` (requests of a class it does
    /// not are signed alone, as with multi-buffer off).
    fn runs(&self, class: LaneClass) -> bool;
    /// The raw RSA private operation (CRT) of each lane, into `out[i]`.
    fn rsa_private(&self, class: LaneClass, lanes: &[RsaLane<'_>], out: &mut [Zeroizing<Vec<u8>>]) -> [bool; LANES];
    /// Each lane's input raised to the public exponent, into `out[i]`: the
    /// check of each private result. Only keys whose exponent is 65537 come
    /// here (the library's public operation knows no other).
    fn rsa_public(&self, class: LaneClass, lanes: &[RsaLane<'_>], out: &mut [Vec<u8>]) -> [bool; LANES];
    /// Each lane's ECDSA `(r, s)`, big-endian of the scalar's length.
    fn ecdsa(&self, class: LaneClass, lanes: &[EcLane<'_>], r: &mut [Vec<u8>], s: &mut [Vec<u8>]) -> [bool; LANES];
    /// Each lane's Ed25519 signature (`R || S`, 64 bytes), into `sig[i]`.
    fn ed25519(&self, lanes: &[EdLane<'_>], sig: &mut [[u8; 64]]) -> [bool; LANES];
}

/// One request of a batch.
pub struct Lane<'a> {
    pub key: &'a LaneKey,
    pub op: Operation,
    pub input: &'a [u8],
}

/// The answers of one call, in the lanes' order.
#[derive(Debug)]
pub struct Signed {
    pub results: Vec<Result<Vec<u8>, CryptoError>>,
    /// Lanes the library refused (a non-zero lane status) and that were
    /// signed alone through AWS-LC instead.
    pub fallbacks: usize,
}

/// Perform every lane's operation in one call of `math`. All lanes must
/// be of one class and at most [`LANES`]; a lane whose input is bad fails
/// alone, with the error the single path gives. A lane the library refuses
/// (crypto_mb refuses an ECDSA message that is zero modulo the order, which
/// AWS-LC signs) is signed alone through AWS-LC, so every input gets the
/// answer the single path gives.
pub fn sign(math: &dyn LaneMath, lanes: &[Lane<'_>]) -> Signed {
    let Some(first) = lanes.first() else {
        return Signed {
            results: Vec::new(),
            fallbacks: 0,
        };
    };
    let class = first.key.class();
    if lanes.len() > LANES || lanes.iter().any(|l| l.key.class() != class) {
        return Signed {
            results: lanes
                .iter()
                .map(|_| Err(CryptoError("lanes of different classes in one call")))
                .collect(),
            fallbacks: 0,
        };
    }
    // The engine never forms lanes of a class `math` does not run; were it
    // to, each lane is signed alone.
    let outcomes = match class {
        _ if !math.runs(class) => lanes.iter().map(|_| Outcome::Refused).collect(),
        LaneClass::EcdsaP256 | LaneClass::EcdsaP384 | LaneClass::EcdsaP521 => ecdsa::sign(math, class, lanes),
        LaneClass::Rsa2048 | LaneClass::Rsa3072 | LaneClass::Rsa4096 => rsa::sign(math, class, lanes),
        LaneClass::Ed25519 => ed25519::sign(math, lanes),
    };
    let mut fallbacks = 0;
    let results = outcomes
        .into_iter()
        .zip(lanes)
        .map(|(outcome, lane)| match outcome {
            Outcome::Done(result) => result,
            Outcome::Refused => {
                fallbacks += 1;
                lane.key.sign_alone(lane.op, lane.input)
            }
        })
        .collect();
    Signed { results, fallbacks }
}

/// One lane's outcome in a call.
pub(crate) enum Outcome {
    /// Its answer (a signature, or the error the single path gives too).
    Done(Result<Vec<u8>, CryptoError>),
    /// The library refused the lane (a non-zero lane status): it is signed
    /// alone through AWS-LC.
    Refused,
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING};

    use super::*;
    use crate::memory::evp::EvpKey;

    /// A fresh key's lane material.
    pub(crate) fn ec_key(class: LaneClass) -> LaneKey {
        let alg = match class {
            LaneClass::EcdsaP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            LaneClass::EcdsaP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
            LaneClass::EcdsaP521 => &aws_lc_rs::signature::ECDSA_P521_SHA512_ASN1_SIGNING,
            _ => unreachable!("not an EC class"),
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        LaneKey::from_evp(&EvpKey::from_der(pkcs8.as_ref()).unwrap()).unwrap()
    }
}
