//! The private-key operations a key server performs.

use keyless_protocol::{Hash, OpKind, Opcode};

use crate::KeyAlgorithm;

/// One private-key operation. Signing operations take a digest the client
/// already computed, except Ed25519, which signs the message itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    RsaPkcs1(Hash),
    RsaPss(Hash),
    Ecdsa(Hash),
    Ed25519,
    /// The raw RSA private operation (`c^d mod n`), no padding removed.
    RsaRawDecrypt,
}

impl Operation {
    /// The operation a protocol opcode asks for, if it asks for one.
    pub fn from_kind(kind: OpKind) -> Option<Operation> {
        Some(match kind {
            OpKind::RsaDecrypt => Operation::RsaRawDecrypt,
            OpKind::RsaPkcs1Sign(h) => Operation::RsaPkcs1(h),
            OpKind::RsaPssSign(h) => Operation::RsaPss(h),
            OpKind::EcdsaSign(h) => Operation::Ecdsa(h),
            OpKind::Ed25519Sign => Operation::Ed25519,
            _ => return None,
        })
    }

    /// The opcode that asks a key server for this operation (none for PSS
    /// with SHA-1, SHA-224 or MD5+SHA-1: the protocol has no such opcode).
    pub fn opcode(self) -> Option<Opcode> {
        Opcode::SIGNING
            .into_iter()
            .chain([Opcode::RSA_DECRYPT])
            .find(|o| Operation::from_kind(o.kind()) == Some(self))
    }

    /// Whether a key of this type can perform the operation.
    pub fn applies_to(self, key: KeyAlgorithm) -> bool {
        use KeyAlgorithm::*;
        match self {
            Operation::RsaPkcs1(_) | Operation::RsaPss(_) | Operation::RsaRawDecrypt => {
                matches!(key, Rsa { .. })
            }
            Operation::Ecdsa(_) => matches!(key, EcdsaP256 | EcdsaP384 | EcdsaP521),
            Operation::Ed25519 => key == Ed25519,
        }
    }

    /// Refuse what no key of type `key` could do with `input`: an
    /// operation for another key type, or a digest of the wrong length.
    pub fn check(self, key: KeyAlgorithm, input: &[u8]) -> Result<(), crate::CryptoError> {
        if !self.applies_to(key) {
            return Err(crate::CryptoError("operation does not match the key type"));
        }
        if self.digest().is_some_and(|hash| hash.len() != input.len()) {
            return Err(crate::CryptoError("payload length does not match the digest algorithm"));
        }
        Ok(())
    }

    /// The digest the input must be, if the operation signs a digest.
    pub fn digest(self) -> Option<Hash> {
        match self {
            Operation::RsaPkcs1(h) | Operation::RsaPss(h) | Operation::Ecdsa(h) => Some(h),
            Operation::Ed25519 | Operation::RsaRawDecrypt => None,
        }
    }
}
