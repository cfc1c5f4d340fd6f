//! Opcodes and what each one asks for.

use std::fmt;

/// A digest algorithm named by a signing opcode. The payload of such a
/// request is the digest itself, already computed by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    /// The TLS 1.0/1.1 36-byte MD5 || SHA-1 concatenation, signed without DigestInfo.
    Md5Sha1,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// Digest length in bytes: the exact payload size a sign request must carry.
    pub fn len(self) -> usize {
        match self {
            Hash::Md5Sha1 => 36,
            Hash::Sha1 => 20,
            Hash::Sha224 => 28,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// Never true: every hash has a non-empty digest (satisfies clippy's `len_without_is_empty`).
    pub fn is_empty(self) -> bool {
        false
    }
}

/// What an opcode asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// 0x01: raw RSA private operation (no padding removed).
    RsaDecrypt,
    /// 0x02–0x07: RSA PKCS#1 v1.5 signature of a digest.
    RsaPkcs1Sign(Hash),
    /// 0x35–0x37: RSA-PSS signature of a digest, salt length = hash length.
    RsaPssSign(Hash),
    /// 0x12–0x17: ECDSA signature of a digest, DER encoded.
    EcdsaSign(Hash),
    /// 0x18: Ed25519 signature of the message itself.
    Ed25519Sign,
    /// 0xF1: answered with 0xF2 echoing the payload.
    Ping,
    /// Known to gokeyless but not served here (seal, unseal, RPC, custom,
    /// get-certificate): answered with the bad-opcode error.
    Unsupported,
    /// A response opcode (0xF0, 0xF2, 0xFF) sent as a request.
    Response,
    /// Not an opcode of the protocol.
    Unknown,
}

/// One opcode byte (tag 0x11).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opcode(pub u8);

impl Opcode {
    pub const RSA_DECRYPT: Opcode = Opcode(0x01);
    pub const RSA_SIGN_MD5SHA1: Opcode = Opcode(0x02);
    pub const RSA_SIGN_SHA1: Opcode = Opcode(0x03);
    pub const RSA_SIGN_SHA224: Opcode = Opcode(0x04);
    pub const RSA_SIGN_SHA256: Opcode = Opcode(0x05);
    pub const RSA_SIGN_SHA384: Opcode = Opcode(0x06);
    pub const RSA_SIGN_SHA512: Opcode = Opcode(0x07);
    pub const ECDSA_SIGN_MD5SHA1: Opcode = Opcode(0x12);
    pub const ECDSA_SIGN_SHA1: Opcode = Opcode(0x13);
    pub const ECDSA_SIGN_SHA224: Opcode = Opcode(0x14);
    pub const ECDSA_SIGN_SHA256: Opcode = Opcode(0x15);
    pub const ECDSA_SIGN_SHA384: Opcode = Opcode(0x16);
    pub const ECDSA_SIGN_SHA512: Opcode = Opcode(0x17);
    pub const ED25519_SIGN: Opcode = Opcode(0x18);
    pub const GET_CERTIFICATE: Opcode = Opcode(0x20);
    pub const SEAL: Opcode = Opcode(0x21);
    pub const UNSEAL: Opcode = Opcode(0x22);
    pub const RPC: Opcode = Opcode(0x23);
    pub const CUSTOM: Opcode = Opcode(0x24);
    pub const RSA_PSS_SIGN_SHA256: Opcode = Opcode(0x35);
    pub const RSA_PSS_SIGN_SHA384: Opcode = Opcode(0x36);
    pub const RSA_PSS_SIGN_SHA512: Opcode = Opcode(0x37);
    pub const RESPONSE: Opcode = Opcode(0xF0);
    pub const PING: Opcode = Opcode(0xF1);
    pub const PONG: Opcode = Opcode(0xF2);
    pub const ERROR: Opcode = Opcode(0xFF);

    /// Every signing opcode, for conformance suites and benchmarks.
    pub const SIGNING: [Opcode; 16] = [
        Self::RSA_SIGN_MD5SHA1,
        Self::RSA_SIGN_SHA1,
        Self::RSA_SIGN_SHA224,
        Self::RSA_SIGN_SHA256,
        Self::RSA_SIGN_SHA384,
        Self::RSA_SIGN_SHA512,
        Self::RSA_PSS_SIGN_SHA256,
        Self::RSA_PSS_SIGN_SHA384,
        Self::RSA_PSS_SIGN_SHA512,
        Self::ECDSA_SIGN_MD5SHA1,
        Self::ECDSA_SIGN_SHA1,
        Self::ECDSA_SIGN_SHA224,
        Self::ECDSA_SIGN_SHA256,
        Self::ECDSA_SIGN_SHA384,
        Self::ECDSA_SIGN_SHA512,
        Self::ED25519_SIGN,
    ];

    /// Classify the opcode.
    pub fn kind(self) -> OpKind {
        use Hash::*;
        match self.0 {
            0x01 => OpKind::RsaDecrypt,
            0x02 => OpKind::RsaPkcs1Sign(Md5Sha1),
            0x03 => OpKind::RsaPkcs1Sign(Sha1),
            0x04 => OpKind::RsaPkcs1Sign(Sha224),
            0x05 => OpKind::RsaPkcs1Sign(Sha256),
            0x06 => OpKind::RsaPkcs1Sign(Sha384),
            0x07 => OpKind::RsaPkcs1Sign(Sha512),
            0x12 => OpKind::EcdsaSign(Md5Sha1),
            0x13 => OpKind::EcdsaSign(Sha1),
            0x14 => OpKind::EcdsaSign(Sha224),
            0x15 => OpKind::EcdsaSign(Sha256),
            0x16 => OpKind::EcdsaSign(Sha384),
            0x17 => OpKind::EcdsaSign(Sha512),
            0x18 => OpKind::Ed25519Sign,
            0x20..=0x24 => OpKind::Unsupported,
            0x35 => OpKind::RsaPssSign(Sha256),
            0x36 => OpKind::RsaPssSign(Sha384),
            0x37 => OpKind::RsaPssSign(Sha512),
            0xF1 => OpKind::Ping,
            0xF0 | 0xF2 | 0xFF => OpKind::Response,
            _ => OpKind::Unknown,
        }
    }
}

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opcode(0x{:02x} {:?})", self.0, self.kind())
    }
}
