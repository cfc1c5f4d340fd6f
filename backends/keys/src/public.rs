//! What is public about a key: its algorithm, its SPKI and the identifiers
//! clients use to name it.

use aws_lc_rs::digest;
use keyless_protocol::{Ski, CERT_DIGEST_LEN};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Key type and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Rsa { bits: u32 },
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Ed25519,
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyAlgorithm::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyAlgorithm::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyAlgorithm::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyAlgorithm::EcdsaP521 => f.write_str("ECDSA P-521"),
            KeyAlgorithm::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// The public half of a key and the names it goes by on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    pub algorithm: KeyAlgorithm,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// SHA-1 of the subjectPublicKey BIT STRING contents (gokeyless `GetSKI`).
    pub ski: Ski,
    /// For RSA: SHA-256 of the modulus in upper-case hex without leading
    /// zeros (gokeyless `GetDigest`, `fmt.Sprintf("%X", N)`).
    pub cert_digest: Option<[u8; CERT_DIGEST_LEN]>,
}

impl PublicKeyInfo {
    /// Derive the identifiers from a DER SubjectPublicKeyInfo.
    pub fn from_spki(algorithm: KeyAlgorithm, spki_der: Vec<u8>) -> Result<PublicKeyInfo, String> {
        let (ski, cert_digest) = identifiers(&spki_der)?;
        Ok(PublicKeyInfo {
            algorithm,
            spki_der,
            ski,
            cert_digest,
        })
    }

    pub fn ski_hex(&self) -> String {
        hex::encode(self.ski)
    }
}

/// SKI and (for RSA) certificate digest of a DER SubjectPublicKeyInfo.
pub fn identifiers(spki_der: &[u8]) -> Result<(Ski, Option<[u8; CERT_DIGEST_LEN]>), String> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| format!("bad SubjectPublicKeyInfo: {e}"))?;
    let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &spki.subject_public_key.data);
    let ski: Ski = sha1
        .as_ref()
        .try_into()
        .map_err(|_| "SHA-1 output is not 20 bytes".to_string())?;
    let cert_digest = match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let modulus = rsa
                .modulus
                .iter()
                .skip_while(|b| **b == 0)
                .copied()
                .collect::<Vec<u8>>();
            let upper_hex = hex::encode_upper(modulus);
            let d = digest::digest(&digest::SHA256, upper_hex.trim_start_matches('0').as_bytes());
            Some(
                d.as_ref()
                    .try_into()
                    .map_err(|_| "SHA-256 output is not 32 bytes".to_string())?,
            )
        }
        _ => None,
    };
    Ok((ski, cert_digest))
}
