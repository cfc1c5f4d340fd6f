//! Checking what a key server returns: signature verification and RSA
//! encryption with a public key. Used by the conformance suite and tests,
//! so every signature a test receives is verified.

use super::evp::{self, EvpKey};
use crate::{CryptoError, KeyAlgorithm, Operation};

/// A public key parsed for verification.
pub struct PublicKey {
    key: EvpKey,
    algorithm: KeyAlgorithm,
}

// SAFETY: a public key is only read after parsing: AWS-LC's verify and
// encrypt paths create their own EVP_PKEY_CTX per call and only up-ref the
// shared EVP_PKEY (atomically), so concurrent use from several threads is safe.
unsafe impl Sync for PublicKey {}

impl PublicKey {
    /// Parse a DER SubjectPublicKeyInfo.
    pub fn from_spki(der: &[u8]) -> Result<PublicKey, CryptoError> {
        let key = EvpKey::from_spki(der)?;
        let algorithm = key.algorithm()?;
        Ok(PublicKey { key, algorithm })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Check that `signature` is `op` applied to `input` (a digest, or the
    /// message for Ed25519).
    pub fn verify(&self, op: Operation, input: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        match op {
            Operation::RsaPkcs1(h) => self.key.verify_digest(h, Some(evp::PKCS1), input, signature),
            Operation::RsaPss(h) => self.key.verify_digest(h, Some(evp::PSS), input, signature),
            Operation::Ecdsa(h) => self.key.verify_digest(h, None, input, signature),
            Operation::Ed25519 => self.key.verify_message(input, signature),
            Operation::RsaRawDecrypt => Err(CryptoError("decryption has no signature to verify")),
        }
    }

    /// The raw RSA public operation, to make ciphertexts for decrypt tests.
    pub fn rsa_raw_encrypt(&self, input: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.key.rsa_raw_encrypt(input)
    }
}
