//! Framing: the 8-byte header, padding, and splitting a byte stream into frames.

use crate::{DecodeError, Message, Tag};

/// Size of the fixed header.
pub const HEADER_LEN: usize = 8;
/// gokeyless pads every message shorter than this (header included).
pub const PADDED_LEN: usize = 1024;
pub const MAJOR_VERSION: u8 = 1;
pub const MINOR_VERSION: u8 = 0;

/// The fixed header: `major u8 | minor u8 | length u16 | id u32`, big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub major: u8,
    pub minor: u8,
    /// Body length in bytes (the header not included).
    pub length: u16,
    pub id: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            major: b[0],
            minor: b[1],
            length: u16::from_be_bytes([b[2], b[3]]),
            id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.major;
        b[1] = self.minor;
        b[2..4].copy_from_slice(&self.length.to_be_bytes());
        b[4..8].copy_from_slice(&self.id.to_be_bytes());
        b
    }

    /// Bytes of the whole frame, header included.
    pub fn frame_len(self) -> usize {
        HEADER_LEN + self.length as usize
    }
}

/// A complete frame still in wire form: the header and a borrowed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    pub header: Header,
    pub body: &'a [u8],
}

impl RawFrame<'_> {
    /// The opcode item, found without decoding the rest (for counters).
    pub fn opcode(&self) -> Option<crate::Opcode> {
        let mut rest = self.body;
        while let [tag, hi, lo, tail @ ..] = rest {
            let len = u16::from_be_bytes([*hi, *lo]) as usize;
            let value = tail.get(..len)?;
            if *tag == Tag::OPCODE {
                return (len == 1).then(|| crate::Opcode(value[0]));
            }
            rest = &tail[len..];
        }
        None
    }

    /// Decode the body. A major version other than 1 is
    /// [`DecodeError::VersionMismatch`]: the body length is still honoured, so
    /// the stream stays in sync and the caller can answer with the frame's ID.
    pub fn decode(&self) -> Result<Frame, DecodeError> {
        if self.header.major != MAJOR_VERSION {
            return Err(DecodeError::VersionMismatch {
                major: self.header.major,
                minor: self.header.minor,
            });
        }
        Ok(Frame {
            id: self.header.id,
            message: Message::decode(self.body)?,
        })
    }
}

/// Find the first complete frame at the start of `buf`.
///
/// Returns `None` when more bytes are needed; otherwise the frame, whose
/// [`Header::frame_len`] says how many bytes to consume.
pub fn split_frame(buf: &[u8]) -> Option<RawFrame<'_>> {
    let header = Header::parse(buf.get(..HEADER_LEN)?.try_into().ok()?);
    let body = buf.get(HEADER_LEN..header.frame_len())?;
    Some(RawFrame { header, body })
}

/// A decoded frame: a request ID and a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    pub id: u32,
    pub message: Message,
}

impl Frame {
    pub fn new(id: u32, message: Message) -> Frame {
        Frame { id, message }
    }

    /// Append the wire form to `out`, padded to [`PADDED_LEN`] as gokeyless does:
    /// when header + items are shorter than 1024 bytes, a padding item fills the
    /// rest (when fewer than 3 bytes are missing, an empty padding item makes the
    /// frame 1 or 2 bytes longer than 1024, exactly like gokeyless).
    ///
    /// Returns an error only when the items exceed the 65535-byte body limit.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let items = self.message.encoded_len();
        let padding = if HEADER_LEN + items < PADDED_LEN {
            Some(PADDED_LEN.saturating_sub(HEADER_LEN + items + 3))
        } else {
            None
        };
        let body_len = items + padding.map_or(0, |p| 3 + p);
        let length = u16::try_from(body_len).map_err(|_| EncodeError::TooLong(body_len))?;
        out.reserve(HEADER_LEN + body_len);
        let header = Header {
            major: crate::MAJOR_VERSION,
            minor: crate::MINOR_VERSION,
            length,
            id: self.id,
        };
        out.extend_from_slice(&header.to_bytes());
        self.message.encode_items(out);
        if let Some(p) = padding {
            out.push(Tag::PADDING);
            out.extend_from_slice(&(p as u16).to_be_bytes());
            out.resize(out.len() + p, 0);
        }
        Ok(())
    }

    /// The wire form in a new buffer.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(PADDED_LEN);
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

/// A message too large for the 16-bit body length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message body of {0} bytes exceeds the 65535-byte limit")]
    TooLong(usize),
}
