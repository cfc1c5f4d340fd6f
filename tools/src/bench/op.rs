//! Operation names on the command line.

use keyless_keys::{KeyAlgorithm, Operation};
use keyless_protocol::{Hash, Opcode};

/// What each request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchOp {
    pub opcode: Opcode,
    /// The private-key operation, `None` for ping.
    pub operation: Option<Operation>,
}

impl BenchOp {
    /// Parse names such as `ecdsa-sha256`, `rsa-pkcs1-sha256`, `rsa-pss-sha384`, `ed25519`, `ping`.
    pub fn parse(name: &str) -> Result<BenchOp, String> {
        let hash = |h: &str| -> Result<Hash, String> {
            Ok(match h {
                "md5sha1" => Hash::Md5Sha1,
                "sha1" => Hash::Sha1,
                "sha224" => Hash::Sha224,
                "sha256" => Hash::Sha256,
                "sha384" => Hash::Sha384,
                "sha512" => Hash::Sha512,
                _ => return Err(format!("unknown hash {h:?}")),
            })
        };
        if name == "ping" {
            return Ok(BenchOp {
                opcode: Opcode::PING,
                operation: None,
            });
        }
        let operation = match name.split('-').collect::<Vec<_>>().as_slice() {
            ["ecdsa", h] => Operation::Ecdsa(hash(h)?),
            ["rsa", "pkcs1", h] => Operation::RsaPkcs1(hash(h)?),
            ["rsa", "pss", h] => Operation::RsaPss(hash(h)?),
            ["ed25519"] => Operation::Ed25519,
            ["rsa", "decrypt"] => Operation::RsaRawDecrypt,
            _ => {
                return Err(format!(
                    "unknown operation {name:?} (e.g. ecdsa-sha256, rsa-pkcs1-sha256, rsa-pss-sha256, ed25519, ping)"
                ))
            }
        };
        Ok(BenchOp {
            opcode: opcode_for(operation),
            operation: Some(operation),
        })
    }

    /// The usual TLS operation for a key type.
    pub fn default_for(alg: KeyAlgorithm) -> BenchOp {
        let operation = match alg {
            KeyAlgorithm::Rsa { .. } => Operation::RsaPkcs1(Hash::Sha256),
            KeyAlgorithm::EcdsaP256 => Operation::Ecdsa(Hash::Sha256),
            KeyAlgorithm::EcdsaP384 => Operation::Ecdsa(Hash::Sha384),
            KeyAlgorithm::EcdsaP521 => Operation::Ecdsa(Hash::Sha512),
            KeyAlgorithm::Ed25519 => Operation::Ed25519,
        };
        BenchOp {
            opcode: opcode_for(operation),
            operation: Some(operation),
        }
    }

    /// Payload size: the digest length, 32 bytes for Ed25519 and ping, or the modulus for decrypt.
    pub fn payload_len(&self, alg: KeyAlgorithm) -> usize {
        match (self.operation, alg) {
            (Some(Operation::RsaRawDecrypt), KeyAlgorithm::Rsa { bits }) => bits as usize / 8,
            (Some(op), _) => op.digest().map_or(32, |h| h.len()),
            (None, _) => 32,
        }
    }

    pub fn name(&self) -> String {
        match self.operation {
            None => "ping".into(),
            Some(op) => format!("{op:?}"),
        }
    }
}

fn opcode_for(op: Operation) -> Opcode {
    op.opcode()
        .expect("every operation the load generator offers has an opcode")
}
