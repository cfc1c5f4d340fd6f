//! The body of a frame: a list of TLV items, decoded into named fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{DecodeError, Opcode};

/// Length of a Subject Key Identifier: SHA-1 of the subjectPublicKey BIT STRING.
pub const SKI_LEN: usize = 20;
/// Length of a certificate digest: SHA-256 of the RSA modulus in upper-case hex.
pub const CERT_DIGEST_LEN: usize = 32;

/// Subject Key Identifier, the key's name on the wire.
pub type Ski = [u8; SKI_LEN];

/// Item tags (gokeyless `protocol.go`, `Tag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag;

impl Tag {
    pub const CERTIFICATE_DIGEST: u8 = 0x01;
    pub const SERVER_NAME: u8 = 0x02;
    pub const CLIENT_IP: u8 = 0x03;
    pub const SUBJECT_KEY_IDENTIFIER: u8 = 0x04;
    pub const SERVER_IP: u8 = 0x05;
    pub const CERT_ID: u8 = 0x06;
    pub const OPCODE: u8 = 0x11;
    pub const PAYLOAD: u8 = 0x12;
    pub const CUSTOM_FUNC_NAME: u8 = 0x13;
    pub const EXTRA: u8 = 0x14;
    pub const JAEGER_SPAN: u8 = 0x15;
    pub const REQ_CONTEXT: u8 = 0x16;
    pub const COMPLIANCE_REGION: u8 = 0x17;
    pub const PADDING: u8 = 0x20;
}

/// One request or response body. Every field is optional on the wire; a
/// field that is `None` is not encoded. Unknown tags are skipped on decode
/// (forward compatibility), padding is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub opcode: Option<Opcode>,
    pub payload: Option<Vec<u8>>,
    pub ski: Option<Ski>,
    pub cert_digest: Option<[u8; CERT_DIGEST_LEN]>,
    pub client_ip: Option<IpAddr>,
    pub server_ip: Option<IpAddr>,
    pub sni: Option<Vec<u8>>,
    pub cert_id: Option<Vec<u8>>,
    pub custom_func_name: Option<Vec<u8>>,
    pub extra: Option<Vec<u8>>,
    pub jaeger_span: Option<Vec<u8>>,
    pub req_context: Option<Vec<u8>>,
    pub compliance_region: Option<Vec<u8>>,
}

impl Message {
    /// A request with an opcode, a payload and a key.
    pub fn request(opcode: Opcode, ski: Option<Ski>, payload: Vec<u8>) -> Message {
        Message {
            opcode: Some(opcode),
            ski,
            payload: Some(payload),
            ..Message::default()
        }
    }

    /// A successful response (opcode 0xF0) carrying `payload`.
    pub fn response(payload: Vec<u8>) -> Message {
        Message {
            opcode: Some(Opcode::RESPONSE),
            payload: Some(payload),
            ..Message::default()
        }
    }

    /// An error response (opcode 0xFF) carrying the one-byte code.
    pub fn error(code: crate::ErrorCode) -> Message {
        Message {
            opcode: Some(Opcode::ERROR),
            payload: Some(vec![code as u8]),
            ..Message::default()
        }
    }

    /// If this is an error response, its code (`Err(byte)` for a code we do not know).
    pub fn error_code(&self) -> Option<Result<crate::ErrorCode, u8>> {
        if self.opcode != Some(Opcode::ERROR) {
            return None;
        }
        let byte = self.payload.as_deref().and_then(|p| p.first().copied()).unwrap_or(0);
        Some(crate::ErrorCode::from_byte(byte).ok_or(byte))
    }

    /// Decode a body (the bytes after the header). Pure; never panics.
    pub fn decode(body: &[u8]) -> Result<Message, DecodeError> {
        let mut msg = Message::default();
        let mut seen = 0u64; // one bit per known tag (all known tags are < 64)
        let mut offset = 0;
        while offset < body.len() {
            let Some(header) = body.get(offset..offset + 3) else {
                return Err(DecodeError::TruncatedItemHeader { offset });
            };
            let tag = header[0];
            let len = u16::from_be_bytes([header[1], header[2]]) as usize;
            let start = offset + 3;
            let Some(value) = body.get(start..start + len) else {
                return Err(DecodeError::TruncatedItem {
                    tag,
                    offset,
                    len,
                    available: body.len() - start,
                });
            };
            offset = start + len;
            if !msg.set(tag, value)? {
                continue; // unknown tag: ignored
            }
            let bit = 1u64 << tag;
            if seen & bit != 0 {
                return Err(DecodeError::DuplicateTag(tag));
            }
            seen |= bit;
        }
        Ok(msg)
    }

    /// Store one item; `Ok(false)` for a tag we do not know.
    fn set(&mut self, tag: u8, value: &[u8]) -> Result<bool, DecodeError> {
        let bad_len = || DecodeError::InvalidLength { tag, len: value.len() };
        match tag {
            Tag::OPCODE => match value {
                [op] => self.opcode = Some(Opcode(*op)),
                _ => return Err(bad_len()),
            },
            Tag::PAYLOAD => self.payload = Some(value.to_vec()),
            Tag::SUBJECT_KEY_IDENTIFIER => self.ski = Some(value.try_into().map_err(|_| bad_len())?),
            Tag::CERTIFICATE_DIGEST => self.cert_digest = Some(value.try_into().map_err(|_| bad_len())?),
            Tag::CLIENT_IP => self.client_ip = Some(decode_ip(value).ok_or_else(bad_len)?),
            Tag::SERVER_IP => self.server_ip = Some(decode_ip(value).ok_or_else(bad_len)?),
            Tag::SERVER_NAME => self.sni = Some(value.to_vec()),
            Tag::CERT_ID => self.cert_id = Some(value.to_vec()),
            Tag::CUSTOM_FUNC_NAME => self.custom_func_name = Some(value.to_vec()),
            Tag::EXTRA => self.extra = Some(value.to_vec()),
            Tag::JAEGER_SPAN => self.jaeger_span = Some(value.to_vec()),
            Tag::REQ_CONTEXT => self.req_context = Some(value.to_vec()),
            Tag::COMPLIANCE_REGION => self.compliance_region = Some(value.to_vec()),
            Tag::PADDING => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Length of the encoded items, without padding.
    pub fn encoded_len(&self) -> usize {
        let mut n = 0;
        self.for_each_item(|_, v| n += 3 + v.len());
        n
    }

    /// Append the items (without padding) in gokeyless's order.
    pub(crate) fn encode_items(&self, out: &mut Vec<u8>) {
        self.for_each_item(|tag, value| {
            out.push(tag);
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
            out.extend_from_slice(value);
        });
    }

    fn for_each_item(&self, mut f: impl FnMut(u8, &[u8])) {
        if let Some(op) = self.opcode {
            f(Tag::OPCODE, &[op.0]);
        }
        if let Some(p) = &self.payload {
            f(Tag::PAYLOAD, p);
        }
        if let Some(ski) = &self.ski {
            f(Tag::SUBJECT_KEY_IDENTIFIER, ski);
        }
        if let Some(d) = &self.cert_digest {
            f(Tag::CERTIFICATE_DIGEST, d);
        }
        if let Some(ip) = self.client_ip {
            encode_ip(ip, |b| f(Tag::CLIENT_IP, b));
        }
        if let Some(ip) = self.server_ip {
            encode_ip(ip, |b| f(Tag::SERVER_IP, b));
        }
        let opaque = [
            (Tag::SERVER_NAME, &self.sni),
            (Tag::CERT_ID, &self.cert_id),
            (Tag::CUSTOM_FUNC_NAME, &self.custom_func_name),
            (Tag::EXTRA, &self.extra),
            (Tag::JAEGER_SPAN, &self.jaeger_span),
            (Tag::REQ_CONTEXT, &self.req_context),
            (Tag::COMPLIANCE_REGION, &self.compliance_region),
        ];
        for (tag, value) in opaque {
            if let Some(v) = value {
                f(tag, v);
            }
        }
    }
}

fn decode_ip(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

fn encode_ip(ip: IpAddr, f: impl FnOnce(&[u8])) {
    match ip {
        IpAddr::V4(v4) => f(&v4.octets()),
        IpAddr::V6(v6) => f(&v6.octets()),
    }
}
