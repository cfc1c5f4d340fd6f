//! The token's objects, made once from the configured certificates: per
//! key a certificate, a public key and a private key sharing CKA_ID (the
//! key's SKI, as the keyless protocol names it) and CKA_LABEL. Everything
//! here is public; listing and reading objects never touches the network.

use cryptoki_sys::*;
use keyless_protocol::Ski;
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;

use crate::mechanism::KeyKind;

/// CK_UNAVAILABLE_INFORMATION (`~0UL`).
pub const UNAVAILABLE: CK_ULONG = CK_ULONG::MAX;

/// One attribute's value as the caller reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bytes(Vec<u8>),
    /// Exists, but its value never leaves the token (CKR_ATTRIBUTE_SENSITIVE).
    Sensitive,
}

/// A token object: its attributes in the encoding C_GetAttributeValue
/// returns (CK_ULONG in native byte order, CK_BBOOL as one byte).
#[derive(Debug, Clone)]
pub struct Object {
    pub attributes: Vec<(CK_ATTRIBUTE_TYPE, Value)>,
}

impl Object {
    pub fn get(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<&Value> {
        self.attributes.iter().find(|(k, _)| *k == kind).map(|(_, v)| v)
    }

    /// Whether every attribute of `template` has exactly the given value.
    pub fn matches(&self, template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> bool {
        template
            .iter()
            .all(|(kind, want)| matches!(self.get(*kind), Some(Value::Bytes(v)) if v == want))
    }
}

/// A configured key: what signing with it needs, and its three objects.
#[derive(Debug, Clone)]
pub struct Key {
    pub label: String,
    pub ski: Ski,
    pub kind: KeyKind,
    /// Certificate, public key, private key.
    pub objects: [Object; 3],
}

/// Object handles: key `i`'s certificate, public and private key are
/// `3i + 1`, `3i + 2` and `3i + 3` (0 is CK_INVALID_HANDLE).
pub fn handle(key: usize, which: usize) -> CK_OBJECT_HANDLE {
    (3 * key + which + 1) as CK_OBJECT_HANDLE
}

/// The key and which of its objects (0: certificate, 1: public, 2: private) a handle names.
pub fn locate(handle: CK_OBJECT_HANDLE) -> Option<(usize, usize)> {
    let h = usize::try_from(handle).ok()?.checked_sub(1)?;
    Some((h / 3, h % 3))
}

fn ulong(v: CK_ULONG) -> Value {
    Value::Bytes(v.to_ne_bytes().to_vec())
}

fn bool(v: bool) -> Value {
    Value::Bytes(vec![if v { CK_TRUE } else { CK_FALSE }])
}

fn bytes(v: &[u8]) -> Value {
    Value::Bytes(v.to_vec())
}

/// DER INTEGER around big-endian `value` (CKA_SERIAL_NUMBER).
fn der_integer(value: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = match value.iter().position(|b| *b != 0) {
        Some(i) => value[i..].to_vec(),
        None => vec![0],
    };
    let mut content = if trimmed[0] & 0x80 != 0 { vec![0] } else { vec![] };
    content.extend_from_slice(&trimmed);
    [vec![0x02], der_len(content.len()), content].concat()
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        vec![len as u8]
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        [vec![0x80 | bytes.len() as u8], bytes].concat()
    }
}

/// DER OCTET STRING around `value` (CKA_EC_POINT).
fn der_octet_string(value: &[u8]) -> Vec<u8> {
    [vec![0x04], der_len(value.len()), value.to_vec()].concat()
}

/// The OID of id-Ed25519 (RFC 8410), DER: CKA_EC_PARAMS of an Ed25519 key.
const ED25519_PARAMS: &[u8] = b"\x06\x03\x2b\x65\x70";

/// The public parts a key's objects carry.
struct Public {
    kind: KeyKind,
    /// RSA: CKA_MODULUS, CKA_PUBLIC_EXPONENT. EC and Ed25519: CKA_EC_PARAMS, CKA_EC_POINT.
    parts: Vec<(CK_ATTRIBUTE_TYPE, Value)>,
    bits: Option<CK_ULONG>,
}

fn public_parts(cert: &X509Certificate<'_>) -> Result<Public, String> {
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let modulus: Vec<u8> = rsa.modulus.iter().skip_while(|b| **b == 0).copied().collect();
            let exponent: Vec<u8> = rsa.exponent.iter().skip_while(|b| **b == 0).copied().collect();
            Ok(Public {
                kind: KeyKind::Rsa {
                    modulus_len: modulus.len(),
                },
                bits: Some(
                    (modulus.len() * 8) as CK_ULONG - modulus.first().map_or(8, |b| b.leading_zeros()) as CK_ULONG,
                ),
                parts: vec![(CKA_MODULUS, bytes(&modulus)), (CKA_PUBLIC_EXPONENT, bytes(&exponent))],
            })
        }
        Ok(PublicKey::EC(point)) => {
            let params = spki
                .algorithm
                .parameters
                .as_ref()
                .ok_or("an EC key without named-curve parameters")?;
            let curve = params
                .as_oid()
                .map_err(|_| "an EC key whose parameters are not a named curve".to_string())?
                .to_id_string();
            let field_len = match curve.as_str() {
                "1.2.840.10045.3.1.7" => 32,
                "1.3.132.0.34" => 48,
                "1.3.132.0.35" => 66,
                other => return Err(format!("curve {other} is not supported (P-256, P-384 and P-521 are)")),
            };
            // CKA_EC_PARAMS is the curve's OID in DER: tag, length, content.
            let oid = params.as_bytes();
            let ec_params = [vec![0x06, oid.len() as u8], oid.to_vec()].concat();
            Ok(Public {
                kind: KeyKind::Ec { field_len },
                bits: Some(if field_len == 66 {
                    521
                } else {
                    field_len as CK_ULONG * 8
                }),
                parts: vec![
                    (CKA_EC_PARAMS, Value::Bytes(ec_params)),
                    (CKA_EC_POINT, Value::Bytes(der_octet_string(point.data()))),
                ],
            })
        }
        _ if algorithm == "1.3.101.112" => Ok(Public {
            kind: KeyKind::Ed25519,
            bits: Some(255),
            parts: vec![
                (CKA_EC_PARAMS, bytes(ED25519_PARAMS)),
                (
                    CKA_EC_POINT,
                    Value::Bytes(der_octet_string(&spki.subject_public_key.data)),
                ),
            ],
        }),
        _ => Err(format!(
            "its public key ({algorithm}) is not RSA, ECDSA P-256/384/521 or Ed25519"
        )),
    }
}

/// The key in `cert_der` (the leaf of the configured chain), named `label`
/// (default: the certificate's common name), as key number `index`.
pub fn key_from_certificate(cert_der: &[u8], label: Option<&str>) -> Result<Key, String> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let public = public_parts(&cert)?;
    let spki_der = cert.public_key().raw.to_vec();
    let (ski, _) = keyless_keys::identifiers(&spki_der)?;
    let label = match label {
        Some(l) => l.to_string(),
        None => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| hex_string(&ski)),
    };
    let kind = public.kind;
    let common = |class: CK_OBJECT_CLASS| {
        vec![
            (CKA_CLASS, ulong(class)),
            (CKA_TOKEN, bool(true)),
            (CKA_PRIVATE, bool(false)),
            (CKA_MODIFIABLE, bool(false)),
            (CKA_COPYABLE, bool(false)),
            (CKA_DESTROYABLE, bool(false)),
            (CKA_LABEL, bytes(label.as_bytes())),
            (CKA_ID, bytes(&ski)),
        ]
    };
    let key_common = |class| {
        let mechanisms: Vec<u8> = kind.mechanisms().iter().flat_map(|m| m.to_ne_bytes()).collect();
        let mut a = common(class);
        a.extend([
            (CKA_KEY_TYPE, ulong(kind.key_type())),
            (CKA_SUBJECT, bytes(cert.subject().as_raw())),
            (CKA_START_DATE, bytes(&[])),
            (CKA_END_DATE, bytes(&[])),
            (CKA_DERIVE, bool(false)),
            (CKA_LOCAL, bool(false)),
            (CKA_KEY_GEN_MECHANISM, ulong(UNAVAILABLE)),
            (CKA_ALLOWED_MECHANISMS, Value::Bytes(mechanisms)),
            (CKA_PUBLIC_KEY_INFO, bytes(&spki_der)),
        ]);
        a.extend(public.parts.iter().cloned());
        if let (KeyKind::Rsa { .. }, Some(bits)) = (kind, public.bits) {
            a.push((CKA_MODULUS_BITS, ulong(bits)));
        }
        a
    };
    let rsa = matches!(kind, KeyKind::Rsa { .. });

    let mut certificate = common(CKO_CERTIFICATE);
    certificate.extend([
        (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
        (CKA_CERTIFICATE_CATEGORY, ulong(1)), // token user
        (CKA_TRUSTED, bool(false)),
        (CKA_VALUE, bytes(cert_der)),
        (CKA_SUBJECT, bytes(cert.subject().as_raw())),
        (CKA_ISSUER, bytes(cert.issuer().as_raw())),
        (CKA_SERIAL_NUMBER, Value::Bytes(der_integer(cert.raw_serial()))),
        (CKA_START_DATE, bytes(&[])),
        (CKA_END_DATE, bytes(&[])),
    ]);

    let mut public_key = key_common(CKO_PUBLIC_KEY);
    public_key.extend([
        (CKA_ENCRYPT, bool(rsa)),
        (CKA_VERIFY, bool(true)),
        (CKA_VERIFY_RECOVER, bool(false)),
        (CKA_WRAP, bool(false)),
        (CKA_TRUSTED, bool(false)),
    ]);

    let mut private_key = key_common(CKO_PRIVATE_KEY);
    private_key.extend([
        (CKA_SENSITIVE, bool(true)),
        (CKA_ALWAYS_SENSITIVE, bool(true)),
        (CKA_EXTRACTABLE, bool(false)),
        (CKA_NEVER_EXTRACTABLE, bool(true)),
        (CKA_SIGN, bool(true)),
        (CKA_SIGN_RECOVER, bool(false)),
        (CKA_DECRYPT, bool(rsa)),
        (CKA_UNWRAP, bool(false)),
        (CKA_WRAP_WITH_TRUSTED, bool(false)),
        (CKA_ALWAYS_AUTHENTICATE, bool(false)),
        (CKA_VALUE, Value::Sensitive),
    ]);
    if rsa {
        for kind in [
            CKA_PRIVATE_EXPONENT,
            CKA_PRIME_1,
            CKA_PRIME_2,
            CKA_EXPONENT_1,
            CKA_EXPONENT_2,
            CKA_COEFFICIENT,
        ] {
            private_key.push((kind, Value::Sensitive));
        }
    }
    Ok(Key {
        label,
        ski,
        kind,
        objects: [
            Object {
                attributes: certificate,
            },
            Object { attributes: public_key },
            Object {
                attributes: private_key,
            },
        ],
    })
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_name_each_object_once() {
        for key in 0..4 {
            for which in 0..3 {
                assert_eq!(locate(handle(key, which)), Some((key, which)));
            }
        }
        assert_eq!(locate(0), None);
    }

    #[test]
    fn der_integers_are_minimal_and_positive() {
        assert_eq!(der_integer(&[0, 0, 5]), [2, 1, 5]);
        assert_eq!(der_integer(&[0x80]), [2, 2, 0, 0x80]);
        assert_eq!(der_integer(&[]), [2, 1, 0]);
        assert_eq!(der_octet_string(&[9; 200])[..3], [4, 0x81, 200]);
    }
}
