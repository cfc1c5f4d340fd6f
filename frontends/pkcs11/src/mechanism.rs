//! PKCS#11 mechanisms in keyless terms, with no I/O: which mechanisms each
//! key offers, what one signature or decryption asks of a key server (the
//! opcode and the payload), and how its answer becomes what the standard
//! says the caller gets back.

use aws_lc_rs::digest;
use cryptoki_sys::*;
use keyless_keys::Operation;
use keyless_protocol::{Hash, Opcode};
use zeroize::Zeroizing;

/// What a key is, as far as signing with it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The modulus length in bytes (the signature's length).
    Rsa {
        modulus_len: usize,
    },
    /// The curve's field length in bytes (each half of `r || s`).
    Ec {
        field_len: usize,
    },
    Ed25519,
}

impl KeyKind {
    pub fn key_type(self) -> CK_KEY_TYPE {
        match self {
            KeyKind::Rsa { .. } => CKK_RSA,
            KeyKind::Ec { .. } => CKK_EC,
            KeyKind::Ed25519 => CKK_EC_EDWARDS,
        }
    }

    /// The length of every signature the key makes.
    pub fn signature_len(self) -> usize {
        match self {
            KeyKind::Rsa { modulus_len } => modulus_len,
            KeyKind::Ec { field_len } => 2 * field_len,
            KeyKind::Ed25519 => 64,
        }
    }

    /// The mechanisms this key offers, for CKA_ALLOWED_MECHANISMS.
    pub fn mechanisms(self) -> &'static [CK_MECHANISM_TYPE] {
        match self {
            KeyKind::Rsa { .. } => RSA_MECHANISMS,
            KeyKind::Ec { .. } => EC_MECHANISMS,
            KeyKind::Ed25519 => ED_MECHANISMS,
        }
    }
}

const RSA_MECHANISMS: &[CK_MECHANISM_TYPE] = &[
    CKM_RSA_PKCS,
    CKM_RSA_X_509,
    CKM_SHA1_RSA_PKCS,
    CKM_SHA224_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA384_RSA_PKCS,
    CKM_SHA512_RSA_PKCS,
    CKM_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_SHA512_RSA_PKCS_PSS,
];
const EC_MECHANISMS: &[CK_MECHANISM_TYPE] = &[
    CKM_ECDSA,
    CKM_ECDSA_SHA1,
    CKM_ECDSA_SHA224,
    CKM_ECDSA_SHA256,
    CKM_ECDSA_SHA384,
    CKM_ECDSA_SHA512,
];
const ED_MECHANISMS: &[CK_MECHANISM_TYPE] = &[CKM_EDDSA];

/// Digests, computed here (Java's SunPKCS11 hashes through the token
/// before RSASSA-PSS, and asks for them first).
const DIGEST_MECHANISMS: &[CK_MECHANISM_TYPE] = &[CKM_SHA_1, CKM_SHA224, CKM_SHA256, CKM_SHA384, CKM_SHA512];

/// Every mechanism of the token, for C_GetMechanismList.
pub fn all_mechanisms() -> Vec<CK_MECHANISM_TYPE> {
    [RSA_MECHANISMS, EC_MECHANISMS, ED_MECHANISMS, DIGEST_MECHANISMS].concat()
}

fn signs(mechanism: CK_MECHANISM_TYPE) -> bool {
    [RSA_MECHANISMS, EC_MECHANISMS, ED_MECHANISMS]
        .iter()
        .any(|m| m.contains(&mechanism))
}

/// The digest C_DigestInit's mechanism names, computed here.
pub fn digest_context(mechanism: CK_MECHANISM_TYPE) -> Result<digest::Context, CK_RV> {
    let hash = hash_of(mechanism).ok_or(CKR_MECHANISM_INVALID)?;
    Ok(digest::Context::new(digest_alg(hash)))
}

/// C_GetMechanismInfo's answer: key sizes in bits and what it does.
pub fn info(mechanism: CK_MECHANISM_TYPE) -> Option<CK_MECHANISM_INFO> {
    let (min, max, flags) = if RSA_MECHANISMS.contains(&mechanism) {
        let decrypt = if matches!(mechanism, CKM_RSA_PKCS | CKM_RSA_X_509) {
            CKF_DECRYPT
        } else {
            0
        };
        (1024, 8192, CKF_SIGN | decrypt)
    } else if EC_MECHANISMS.contains(&mechanism) {
        (256, 521, CKF_SIGN | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS)
    } else if ED_MECHANISMS.contains(&mechanism) {
        (255, 255, CKF_SIGN | CKF_EC_NAMEDCURVE)
    } else if DIGEST_MECHANISMS.contains(&mechanism) {
        return Some(CK_MECHANISM_INFO {
            ulMinKeySize: 0,
            ulMaxKeySize: 0,
            flags: CKF_DIGEST,
        });
    } else {
        return None;
    };
    Some(CK_MECHANISM_INFO {
        ulMinKeySize: min,
        ulMaxKeySize: max,
        // CKF_HW: the operation happens outside this library, on the key
        // server (pkcs11-tool --test looks for CKF_SIGN | CKF_HW).
        flags: flags | CKF_HW,
    })
}

/// CK_RSA_PKCS_PSS_PARAMS, read from the caller's mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PssParams {
    pub hash_alg: CK_MECHANISM_TYPE,
    pub mgf: CK_RSA_PKCS_MGF_TYPE,
    pub salt_len: CK_ULONG,
}

/// How a signature is made, chosen at C_SignInit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignPlan {
    /// CKM_RSA_PKCS: the data is a DigestInfo (or the TLS 1.0 MD5+SHA-1
    /// pair); anything else is padded here and raised to the private
    /// exponent by the key server's raw operation.
    RsaPkcs1,
    /// CKM_RSA_X_509: the data, left-padded with zeros to the modulus
    /// length, raised to the private exponent.
    RsaRaw,
    /// The data is the digest itself (CKM_RSA_PKCS_PSS, CKM_ECDSA).
    Digest(Operation),
    /// The data is hashed here first (CKM_SHA256_RSA_PKCS, CKM_ECDSA_SHA384, ...).
    HashThen(Operation),
    /// CKM_EDDSA: the key server signs the message itself.
    Ed25519,
}

/// How a decryption is finished, chosen at C_DecryptInit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecryptPlan {
    /// CKM_RSA_PKCS: PKCS#1 v1.5 padding removed here.
    Pkcs1,
    /// CKM_RSA_X_509: the raw result.
    Raw,
}

fn hash_of(mechanism: CK_MECHANISM_TYPE) -> Option<Hash> {
    Some(match mechanism {
        CKM_SHA_1 => Hash::Sha1,
        CKM_SHA224 => Hash::Sha224,
        CKM_SHA256 => Hash::Sha256,
        CKM_SHA384 => Hash::Sha384,
        CKM_SHA512 => Hash::Sha512,
        _ => return None,
    })
}

fn mgf_of(hash: Hash) -> CK_RSA_PKCS_MGF_TYPE {
    match hash {
        Hash::Sha1 | Hash::Md5Sha1 => CKG_MGF1_SHA1,
        Hash::Sha224 => CKG_MGF1_SHA224,
        Hash::Sha256 => CKG_MGF1_SHA256,
        Hash::Sha384 => CKG_MGF1_SHA384,
        Hash::Sha512 => CKG_MGF1_SHA512,
    }
}

/// PSS as TLS uses it, the only PSS the protocol has: MGF1 with the same
/// hash and a salt as long as the hash, with SHA-256, -384 or -512.
fn pss(params: Option<PssParams>, implied: Option<Hash>) -> Result<Hash, CK_RV> {
    let params = params.ok_or(CKR_MECHANISM_PARAM_INVALID)?;
    let hash = hash_of(params.hash_alg).ok_or(CKR_MECHANISM_PARAM_INVALID)?;
    let fits = implied.is_none_or(|h| h == hash)
        && params.mgf == mgf_of(hash)
        && params.salt_len as usize == hash.len()
        && Operation::RsaPss(hash).opcode().is_some();
    if fits {
        Ok(hash)
    } else {
        Err(CKR_MECHANISM_PARAM_INVALID)
    }
}

/// The plan for signing with `mechanism` on a key of kind `key`.
pub fn sign_plan(mechanism: CK_MECHANISM_TYPE, params: Option<PssParams>, key: KeyKind) -> Result<SignPlan, CK_RV> {
    if !key.mechanisms().contains(&mechanism) {
        return Err(if signs(mechanism) {
            CKR_KEY_TYPE_INCONSISTENT
        } else {
            CKR_MECHANISM_INVALID
        });
    }
    Ok(match mechanism {
        CKM_RSA_PKCS => SignPlan::RsaPkcs1,
        CKM_RSA_X_509 => SignPlan::RsaRaw,
        CKM_SHA1_RSA_PKCS => SignPlan::HashThen(Operation::RsaPkcs1(Hash::Sha1)),
        CKM_SHA224_RSA_PKCS => SignPlan::HashThen(Operation::RsaPkcs1(Hash::Sha224)),
        CKM_SHA256_RSA_PKCS => SignPlan::HashThen(Operation::RsaPkcs1(Hash::Sha256)),
        CKM_SHA384_RSA_PKCS => SignPlan::HashThen(Operation::RsaPkcs1(Hash::Sha384)),
        CKM_SHA512_RSA_PKCS => SignPlan::HashThen(Operation::RsaPkcs1(Hash::Sha512)),
        CKM_RSA_PKCS_PSS => SignPlan::Digest(Operation::RsaPss(pss(params, None)?)),
        CKM_SHA256_RSA_PKCS_PSS => SignPlan::HashThen(Operation::RsaPss(pss(params, Some(Hash::Sha256))?)),
        CKM_SHA384_RSA_PKCS_PSS => SignPlan::HashThen(Operation::RsaPss(pss(params, Some(Hash::Sha384))?)),
        CKM_SHA512_RSA_PKCS_PSS => SignPlan::HashThen(Operation::RsaPss(pss(params, Some(Hash::Sha512))?)),
        // The digest's length says which hash made it.
        CKM_ECDSA => SignPlan::Digest(Operation::Ecdsa(Hash::Sha256)),
        CKM_ECDSA_SHA1 => SignPlan::HashThen(Operation::Ecdsa(Hash::Sha1)),
        CKM_ECDSA_SHA224 => SignPlan::HashThen(Operation::Ecdsa(Hash::Sha224)),
        CKM_ECDSA_SHA256 => SignPlan::HashThen(Operation::Ecdsa(Hash::Sha256)),
        CKM_ECDSA_SHA384 => SignPlan::HashThen(Operation::Ecdsa(Hash::Sha384)),
        CKM_ECDSA_SHA512 => SignPlan::HashThen(Operation::Ecdsa(Hash::Sha512)),
        CKM_EDDSA if params.is_none() => SignPlan::Ed25519,
        CKM_EDDSA => return Err(CKR_MECHANISM_PARAM_INVALID),
        _ => return Err(CKR_KEY_FUNCTION_NOT_PERMITTED),
    })
}

/// The plan for decrypting with `mechanism` on a key of kind `key`.
pub fn decrypt_plan(mechanism: CK_MECHANISM_TYPE, key: KeyKind) -> Result<DecryptPlan, CK_RV> {
    match (mechanism, key) {
        (CKM_RSA_PKCS, KeyKind::Rsa { .. }) => Ok(DecryptPlan::Pkcs1),
        (CKM_RSA_X_509, KeyKind::Rsa { .. }) => Ok(DecryptPlan::Raw),
        (CKM_RSA_PKCS | CKM_RSA_X_509, _) => Err(CKR_KEY_TYPE_INCONSISTENT),
        _ if signs(mechanism) => Err(CKR_KEY_FUNCTION_NOT_PERMITTED),
        _ => Err(CKR_MECHANISM_INVALID),
    }
}

fn digest_alg(hash: Hash) -> &'static digest::Algorithm {
    match hash {
        Hash::Sha1 | Hash::Md5Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        Hash::Sha224 => &digest::SHA224,
        Hash::Sha256 => &digest::SHA256,
        Hash::Sha384 => &digest::SHA384,
        Hash::Sha512 => &digest::SHA512,
    }
}

/// The DER DigestInfo prefixes (RFC 8017 section 9.2, note 1).
const DIGEST_INFOS: [(Hash, &[u8]); 5] = [
    (
        Hash::Sha1,
        b"\x30\x21\x30\x09\x06\x05\x2b\x0e\x03\x02\x1a\x05\x00\x04\x14",
    ),
    (
        Hash::Sha224,
        b"\x30\x2d\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x04\x05\x00\x04\x1c",
    ),
    (
        Hash::Sha256,
        b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20",
    ),
    (
        Hash::Sha384,
        b"\x30\x41\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x02\x05\x00\x04\x30",
    ),
    (
        Hash::Sha512,
        b"\x30\x51\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x03\x05\x00\x04\x40",
    ),
];

/// The hash a DigestInfo names and the digest it holds.
fn digest_info(data: &[u8]) -> Option<(Hash, &[u8])> {
    DIGEST_INFOS.iter().find_map(|(hash, prefix)| {
        data.strip_prefix(*prefix)
            .filter(|digest| digest.len() == hash.len())
            .map(|digest| (*hash, digest))
    })
}

/// The one request a signature needs: opcode and payload.
pub fn sign_request(plan: SignPlan, key: KeyKind, data: &[u8]) -> Result<(Opcode, Vec<u8>), CK_RV> {
    let opcode = |op: Operation| op.opcode().ok_or(CKR_MECHANISM_INVALID);
    match plan {
        SignPlan::RsaPkcs1 => {
            if let Some((hash, digest)) = digest_info(data) {
                return Ok((opcode(Operation::RsaPkcs1(hash))?, digest.to_vec()));
            }
            if data.len() == Hash::Md5Sha1.len() {
                return Ok((opcode(Operation::RsaPkcs1(Hash::Md5Sha1))?, data.to_vec()));
            }
            // Any other data: EMSA-PKCS1-v1_5 padding here, then the raw
            // private operation, which is what a signature is.
            let KeyKind::Rsa { modulus_len } = key else {
                return Err(CKR_KEY_TYPE_INCONSISTENT);
            };
            if data.len() + 11 > modulus_len {
                return Err(CKR_DATA_LEN_RANGE);
            }
            let mut block = vec![0xffu8; modulus_len];
            block[0] = 0;
            block[1] = 1;
            block[modulus_len - data.len() - 1] = 0;
            block[modulus_len - data.len()..].copy_from_slice(data);
            Ok((Opcode::RSA_DECRYPT, block))
        }
        SignPlan::RsaRaw => match key {
            KeyKind::Rsa { modulus_len } if data.len() <= modulus_len => {
                Ok((Opcode::RSA_DECRYPT, left_pad(data, modulus_len).to_vec()))
            }
            KeyKind::Rsa { .. } => Err(CKR_DATA_LEN_RANGE),
            _ => Err(CKR_KEY_TYPE_INCONSISTENT),
        },
        SignPlan::Digest(Operation::Ecdsa(_)) => {
            let hash = [Hash::Sha1, Hash::Sha224, Hash::Sha256, Hash::Sha384, Hash::Sha512]
                .into_iter()
                .find(|h| h.len() == data.len())
                .ok_or(CKR_DATA_LEN_RANGE)?;
            Ok((opcode(Operation::Ecdsa(hash))?, data.to_vec()))
        }
        SignPlan::Digest(op) => match op.digest() {
            Some(hash) if hash.len() == data.len() => Ok((opcode(op)?, data.to_vec())),
            _ => Err(CKR_DATA_LEN_RANGE),
        },
        SignPlan::HashThen(op) => {
            let hash = op.digest().ok_or(CKR_MECHANISM_INVALID)?;
            let digest = digest::digest(digest_alg(hash), data);
            Ok((opcode(op)?, digest.as_ref().to_vec()))
        }
        SignPlan::Ed25519 => Ok((Opcode::ED25519_SIGN, data.to_vec())),
    }
}

/// The signature, as PKCS#11 returns it, from the key server's answer.
pub fn signature(plan: SignPlan, key: KeyKind, answer: &[u8]) -> Result<Vec<u8>, CK_RV> {
    let ecdsa = matches!(
        plan,
        SignPlan::Digest(Operation::Ecdsa(_)) | SignPlan::HashThen(Operation::Ecdsa(_))
    );
    match key {
        KeyKind::Ec { field_len } if ecdsa => {
            keyless_keys::spki::ecdsa_raw(answer, field_len).map_err(|_| CKR_DEVICE_ERROR)
        }
        _ if answer.len() == key.signature_len() => Ok(answer.to_vec()),
        KeyKind::Rsa { modulus_len } if answer.len() < modulus_len => Ok(left_pad(answer, modulus_len).to_vec()),
        _ => Err(CKR_DEVICE_ERROR),
    }
}

fn left_pad(value: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    out[len - value.len()..].copy_from_slice(value);
    out
}

/// The one request a decryption needs.
pub fn decrypt_request(key: KeyKind, ciphertext: &[u8]) -> Result<(Opcode, Vec<u8>), CK_RV> {
    match key {
        KeyKind::Rsa { modulus_len } if ciphertext.len() == modulus_len => {
            Ok((Opcode::RSA_DECRYPT, ciphertext.to_vec()))
        }
        KeyKind::Rsa { .. } => Err(CKR_ENCRYPTED_DATA_LEN_RANGE),
        _ => Err(CKR_KEY_TYPE_INCONSISTENT),
    }
}

/// The plaintext from the key server's raw answer.
pub fn plaintext(plan: DecryptPlan, key: KeyKind, answer: &[u8]) -> Result<Zeroizing<Vec<u8>>, CK_RV> {
    let KeyKind::Rsa { modulus_len } = key else {
        return Err(CKR_KEY_TYPE_INCONSISTENT);
    };
    if answer.len() > modulus_len {
        return Err(CKR_DEVICE_ERROR);
    }
    let block = left_pad(answer, modulus_len);
    match plan {
        DecryptPlan::Raw => Ok(block),
        DecryptPlan::Pkcs1 => {
            // 00 || 02 || at least eight non-zero bytes || 00 || message.
            let separator = block
                .iter()
                .skip(2)
                .position(|b| *b == 0)
                .map(|i| i + 2)
                .filter(|i| *i >= 10 && block[0] == 0 && block[1] == 2)
                .ok_or(CKR_ENCRYPTED_DATA_INVALID)?;
            Ok(Zeroizing::new(block[separator + 1..].to_vec()))
        }
    }
}

/// The upper bound of a decryption's output, for length queries.
pub fn plaintext_bound(plan: DecryptPlan, key: KeyKind) -> usize {
    match (plan, key) {
        (DecryptPlan::Raw, KeyKind::Rsa { modulus_len }) => modulus_len,
        (DecryptPlan::Pkcs1, KeyKind::Rsa { modulus_len }) => modulus_len.saturating_sub(11),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: KeyKind = KeyKind::Rsa { modulus_len: 256 };
    const P256: KeyKind = KeyKind::Ec { field_len: 32 };

    fn params(hash_alg: CK_MECHANISM_TYPE, mgf: CK_RSA_PKCS_MGF_TYPE, salt_len: CK_ULONG) -> Option<PssParams> {
        Some(PssParams {
            hash_alg,
            mgf,
            salt_len,
        })
    }

    #[test]
    fn rsa_pkcs1_reads_the_digest_info_to_choose_the_opcode() {
        for (hash, prefix) in DIGEST_INFOS {
            let digest = vec![7u8; hash.len()];
            let (opcode, payload) = sign_request(SignPlan::RsaPkcs1, RSA, &[prefix, &digest].concat()).unwrap();
            assert_eq!(Some(opcode), Operation::RsaPkcs1(hash).opcode());
            assert_eq!(payload, digest);
        }
        let (opcode, payload) = sign_request(SignPlan::RsaPkcs1, RSA, &[1u8; 36]).unwrap();
        assert_eq!(opcode, Opcode::RSA_SIGN_MD5SHA1);
        assert_eq!(payload, [1u8; 36]);
    }

    #[test]
    fn rsa_pkcs1_pads_other_data_for_the_raw_operation() {
        let (opcode, block) = sign_request(SignPlan::RsaPkcs1, RSA, b"hello").unwrap();
        assert_eq!(opcode, Opcode::RSA_DECRYPT);
        assert_eq!(block.len(), 256);
        assert_eq!(&block[..3], &[0, 1, 0xff]);
        assert_eq!(&block[250..], b"\0hello");
        assert!(block[2..250].iter().all(|b| *b == 0xff));
        assert_eq!(
            sign_request(SignPlan::RsaPkcs1, RSA, &[0u8; 246]),
            Err(CKR_DATA_LEN_RANGE)
        );
        assert!(sign_request(SignPlan::RsaPkcs1, RSA, &[0u8; 245]).is_ok());
    }

    #[test]
    fn pss_takes_only_what_tls_uses() {
        let plan = |m, p| sign_plan(m, p, RSA);
        assert_eq!(
            plan(CKM_RSA_PKCS_PSS, params(CKM_SHA256, CKG_MGF1_SHA256, 32)),
            Ok(SignPlan::Digest(Operation::RsaPss(Hash::Sha256)))
        );
        assert_eq!(
            plan(CKM_SHA384_RSA_PKCS_PSS, params(CKM_SHA384, CKG_MGF1_SHA384, 48)),
            Ok(SignPlan::HashThen(Operation::RsaPss(Hash::Sha384)))
        );
        for bad in [
            None,
            params(CKM_SHA256, CKG_MGF1_SHA256, 20),
            params(CKM_SHA256, CKG_MGF1_SHA1, 32),
            params(CKM_SHA_1, CKG_MGF1_SHA1, 20),
            params(0x1234, CKG_MGF1_SHA256, 32),
        ] {
            assert_eq!(plan(CKM_RSA_PKCS_PSS, bad), Err(CKR_MECHANISM_PARAM_INVALID), "{bad:?}");
        }
        assert_eq!(
            plan(CKM_SHA256_RSA_PKCS_PSS, params(CKM_SHA384, CKG_MGF1_SHA384, 48)),
            Err(CKR_MECHANISM_PARAM_INVALID)
        );
    }

    #[test]
    fn mechanisms_for_another_key_type_or_none_are_refused() {
        assert_eq!(sign_plan(CKM_ECDSA, None, RSA), Err(CKR_KEY_TYPE_INCONSISTENT));
        assert_eq!(sign_plan(CKM_RSA_PKCS, None, P256), Err(CKR_KEY_TYPE_INCONSISTENT));
        assert_eq!(sign_plan(CKM_AES_CBC, None, RSA), Err(CKR_MECHANISM_INVALID));
        assert_eq!(sign_plan(CKM_SHA256, None, RSA), Err(CKR_MECHANISM_INVALID));
        assert_eq!(sign_plan(CKM_RSA_X_509, None, RSA), Ok(SignPlan::RsaRaw));
        assert_eq!(decrypt_plan(CKM_RSA_PKCS, P256), Err(CKR_KEY_TYPE_INCONSISTENT));
        assert_eq!(decrypt_plan(CKM_ECDSA, P256), Err(CKR_KEY_FUNCTION_NOT_PERMITTED));
    }

    #[test]
    fn ecdsa_digest_length_chooses_the_opcode() {
        let plan = sign_plan(CKM_ECDSA, None, P256).unwrap();
        for (len, opcode) in [
            (20, Opcode::ECDSA_SIGN_SHA1),
            (28, Opcode::ECDSA_SIGN_SHA224),
            (32, Opcode::ECDSA_SIGN_SHA256),
            (48, Opcode::ECDSA_SIGN_SHA384),
            (64, Opcode::ECDSA_SIGN_SHA512),
        ] {
            assert_eq!(sign_request(plan, P256, &vec![1; len]).unwrap().0, opcode);
        }
        assert_eq!(sign_request(plan, P256, &[1; 33]), Err(CKR_DATA_LEN_RANGE));
        let plan = sign_plan(CKM_ECDSA_SHA384, None, P256).unwrap();
        let (opcode, payload) = sign_request(plan, P256, b"message").unwrap();
        assert_eq!(opcode, Opcode::ECDSA_SIGN_SHA384);
        assert_eq!(payload, digest::digest(&digest::SHA384, b"message").as_ref());
    }

    #[test]
    fn pkcs1_type_2_padding_is_removed_or_refused() {
        let mut block = vec![0u8; 256];
        block[1] = 2;
        block[2..200].fill(0x55);
        block[201..].fill(9);
        let out = plaintext(DecryptPlan::Pkcs1, RSA, &block[1..]).unwrap();
        assert_eq!(&out[..], &[9u8; 55][..]);
        assert_eq!(&plaintext(DecryptPlan::Raw, RSA, &block[1..]).unwrap()[..], &block[..]);
        // Fewer than eight padding bytes, or the wrong block type.
        let mut short = block.clone();
        short[2..9].fill(0x55);
        short[9] = 0;
        assert_eq!(
            plaintext(DecryptPlan::Pkcs1, RSA, &short),
            Err(CKR_ENCRYPTED_DATA_INVALID)
        );
        let mut wrong = block.clone();
        wrong[1] = 1;
        assert_eq!(
            plaintext(DecryptPlan::Pkcs1, RSA, &wrong),
            Err(CKR_ENCRYPTED_DATA_INVALID)
        );
        assert_eq!(decrypt_request(RSA, &[0; 255]), Err(CKR_ENCRYPTED_DATA_LEN_RANGE));
    }
}
