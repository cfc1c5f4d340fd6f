//! Public keys rebuilt as DER SubjectPublicKeyInfo from the parts an HSM or
//! a cloud key store hands out (modulus and exponent, curve and point), so
//! such keys get the same SKI (and certificate digest) as the same key
//! loaded from a file; and raw `r || s` ECDSA signatures encoded as DER.

use der::asn1::{AnyRef, BitString, ObjectIdentifier, OctetString, UintRef};
use der::{Decode, Encode, Sequence};

/// rsaEncryption, id-ecPublicKey and id-Ed25519.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

#[derive(Sequence)]
struct AlgorithmIdentifier<'a> {
    algorithm: ObjectIdentifier,
    parameters: Option<AnyRef<'a>>,
}

#[derive(Sequence)]
struct SubjectPublicKeyInfo<'a> {
    algorithm: AlgorithmIdentifier<'a>,
    subject_public_key: BitString,
}

#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

fn spki(algorithm: ObjectIdentifier, parameters: Option<AnyRef<'_>>, key: &[u8]) -> Result<Vec<u8>, String> {
    SubjectPublicKeyInfo {
        algorithm: AlgorithmIdentifier { algorithm, parameters },
        subject_public_key: BitString::from_bytes(key).map_err(|e| e.to_string())?,
    }
    .to_der()
    .map_err(|e| format!("cannot encode the public key: {e}"))
}

/// SPKI of an RSA key from CKA_MODULUS and CKA_PUBLIC_EXPONENT (big-endian).
pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, String> {
    let bad = |e: der::Error| format!("bad RSA public key attributes: {e}");
    let key = RsaPublicKey {
        modulus: UintRef::new(modulus).map_err(bad)?,
        public_exponent: UintRef::new(exponent).map_err(bad)?,
    }
    .to_der()
    .map_err(bad)?;
    spki(RSA_ENCRYPTION, Some(AnyRef::NULL), &key)
}

/// SPKI of an ECDSA key from CKA_EC_PARAMS (the curve's OID) and CKA_EC_POINT.
pub fn ec_spki(ec_params: &[u8], ec_point: &[u8]) -> Result<Vec<u8>, String> {
    let curve = ObjectIdentifier::from_der(ec_params).map_err(|_| "CKA_EC_PARAMS is not a named curve".to_string())?;
    let point_len = match curve {
        c if c == P256 => 65,
        c if c == P384 => 97,
        c if c == P521 => 133,
        other => return Err(format!("curve {other} is not supported (P-256, P-384, P-521 are)")),
    };
    let point = unwrap_point(ec_point, point_len)?;
    let params = AnyRef::from_der(ec_params).map_err(|e| e.to_string())?;
    spki(EC_PUBLIC_KEY, Some(params), &point)
}

/// SPKI of an ECDSA key on `curve` from its uncompressed point (`04 || x || y`).
pub fn ec_spki_on(curve: crate::KeyAlgorithm, point: &[u8]) -> Result<Vec<u8>, String> {
    let (oid, len) = match curve {
        crate::KeyAlgorithm::EcdsaP256 => (P256, 65),
        crate::KeyAlgorithm::EcdsaP384 => (P384, 97),
        crate::KeyAlgorithm::EcdsaP521 => (P521, 133),
        other => return Err(format!("{other} is not an ECDSA curve")),
    };
    if point.len() != len || point[0] != 4 {
        return Err(format!(
            "a {curve} point is 04 || x || y, {len} bytes; got {} bytes",
            point.len()
        ));
    }
    let params = oid.to_der().map_err(|e| e.to_string())?;
    let params = AnyRef::from_der(&params).map_err(|e| e.to_string())?;
    spki(EC_PUBLIC_KEY, Some(params), point)
}

/// SPKI of an Ed25519 key from CKA_EC_PARAMS and CKA_EC_POINT.
pub fn ed25519_spki(ec_params: &[u8], ec_point: &[u8]) -> Result<Vec<u8>, String> {
    // PKCS#11 3.0 names the curve by OID or by the printable string "edwards25519".
    let is_ed25519 = ObjectIdentifier::from_der(ec_params).is_ok_and(|oid| oid == ED25519)
        || der::asn1::PrintableStringRef::from_der(ec_params).is_ok_and(|s| s.as_str() == "edwards25519");
    if !is_ed25519 {
        return Err("Edwards curve other than Ed25519 (only Ed25519 is supported)".into());
    }
    let point = unwrap_point(ec_point, 32)?;
    spki(ED25519, None, &point)
}

/// CKA_EC_POINT is a DER OCTET STRING around the point (most modules) or
/// the bare point (some): take whichever has the curve's point length.
fn unwrap_point(ec_point: &[u8], len: usize) -> Result<Vec<u8>, String> {
    if let Ok(inner) = OctetString::from_der(ec_point) {
        if inner.as_bytes().len() == len {
            return Ok(inner.as_bytes().to_vec());
        }
    }
    if ec_point.len() == len {
        return Ok(ec_point.to_vec());
    }
    Err(format!(
        "CKA_EC_POINT of {} bytes does not hold a {len}-byte point",
        ec_point.len()
    ))
}

#[derive(Sequence)]
struct EcdsaSignature<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// The raw `r || s` form of a DER ECDSA signature (what a key server
/// answers), each half left-padded to `field_len` bytes, as PKCS#11's
/// CKM_ECDSA returns it.
pub fn ecdsa_raw(der_sig: &[u8], field_len: usize) -> Result<Vec<u8>, &'static str> {
    let sig = EcdsaSignature::from_der(der_sig).map_err(|_| "an ECDSA signature that is not DER")?;
    let mut raw = vec![0u8; 2 * field_len];
    for (half, out) in [sig.r, sig.s].iter().zip(raw.chunks_mut(field_len)) {
        let bytes = half.as_bytes();
        if bytes.len() > field_len {
            return Err("an ECDSA signature half longer than the curve's field");
        }
        out[field_len - bytes.len()..].copy_from_slice(bytes);
    }
    Ok(raw)
}

/// DER-encode a raw `r || s` ECDSA signature (what CKM_ECDSA and Azure Key
/// Vault return), as TLS wants it.
pub fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err("an ECDSA signature of odd length");
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    EcdsaSignature {
        r: UintRef::new(r).map_err(|_| "bad ECDSA r")?,
        s: UintRef::new(s).map_err(|_| "bad ECDSA s")?,
    }
    .to_der()
    .map_err(|_| "cannot encode the ECDSA signature")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_der_ecdsa_signatures_convert_both_ways() {
        // r with a leading zero byte (DER drops it) and s with its top bit set
        // (DER adds a zero): both come back at the field's width.
        let mut raw = vec![0u8; 64];
        raw[1] = 0x12;
        raw[31] = 0x34;
        raw[32] = 0xff;
        raw[63] = 0x01;
        let der_sig = ecdsa_der(&raw).unwrap();
        assert_eq!(ecdsa_raw(&der_sig, 32).unwrap(), raw);
        assert!(
            ecdsa_raw(&der_sig, 16).is_err(),
            "a half wider than the field is refused"
        );
        assert!(ecdsa_raw(b"\x30\x03\x02\x01", 32).is_err(), "truncated DER is refused");
    }
}
