//! A request as it travels through the engine: decoded once, where it was
//! read, then moved (never re-parsed) to the core that answers it.

use std::time::Instant;

use keyless_keys::Operation;
use keyless_protocol::{DecodeError, Message, Opcode, RawFrame};

/// One request frame.
#[derive(Debug)]
pub struct Request {
    pub id: u32,
    /// The opcode as sent, found even when the rest does not decode (for
    /// counters and routing).
    pub opcode: Option<Opcode>,
    /// The decoded message, or why it does not decode (answered with the
    /// matching error code and this request's ID).
    pub message: Result<Message, DecodeError>,
    /// When the frame was read: total latency counts from here.
    pub read_at: Instant,
}

impl Request {
    pub fn decode(raw: RawFrame<'_>, read_at: Instant) -> Request {
        Request {
            id: raw.header.id,
            opcode: raw.opcode(),
            message: raw.decode().map(|frame| frame.message),
            read_at,
        }
    }

    /// Whether answering needs a private key. Requests that do are spread
    /// over the cores; the rest (pings, bad opcodes) are answered at once.
    pub fn needs_key(&self) -> bool {
        self.opcode.is_some_and(|op| Operation::from_kind(op.kind()).is_some())
    }

    /// The opcode byte for per-opcode counters (0 when there is none).
    pub fn opcode_byte(&self) -> u8 {
        self.opcode.map_or(0, |op| op.0)
    }
}
