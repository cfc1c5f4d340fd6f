//! From request to response: key lookup, then the private-key operation.
//!
//! Sans-I/O: the connection code feeds raw frames in and writes the returned
//! frames out; this module never sees a socket.

use keyless_keys::{CryptoError, KeyStore, Operation, PrivateKey, Ski};
use keyless_protocol::{DecodeError, ErrorCode, Frame, Message, OpKind, RawFrame};

/// Answer one complete frame. Decoding errors become error responses with
/// the frame's ID: the body length was honoured, so the stream stays usable.
pub fn handle_raw(store: &KeyStore, raw: RawFrame<'_>) -> Frame {
    let id = raw.header.id;
    match raw.decode() {
        Ok(frame) => Frame::new(id, handle(store, &frame.message)),
        Err(e) => {
            log_decode_error(id, &e);
            Frame::new(id, Message::error(e.code()))
        }
    }
}

fn log_decode_error(id: u32, e: &DecodeError) {
    tracing::warn!(request_id = id, "rejected request: {e}");
}

/// Answer one decoded request.
pub fn handle(store: &KeyStore, request: &Message) -> Message {
    match prepare(store, request) {
        Prepared::Answer(message) => message,
        Prepared::Perform { key, op, input } => finish(&key.public().ski, op, key.perform(op, input)),
    }
}

/// A request after key lookup: answered already, or an operation to perform.
// Returned by value once per request and consumed at once: boxing the
// message would cost an allocation per answer for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Prepared<'a> {
    Answer(Message),
    Perform {
        key: &'a dyn PrivateKey,
        op: Operation,
        input: &'a [u8],
    },
}

/// Everything but the private-key operation: opcode checks and key lookup.
pub fn prepare<'a>(store: &'a KeyStore, request: &'a Message) -> Prepared<'a> {
    let Some(opcode) = request.opcode else {
        // gokeyless answers a request without an opcode with bad-opcode.
        return Prepared::Answer(Message::error(ErrorCode::BadOpcode));
    };
    let kind = opcode.kind();
    let op = match kind {
        OpKind::Ping => {
            return Prepared::Answer(Message {
                opcode: Some(keyless_protocol::Opcode::PONG),
                payload: request.payload.clone(),
                ..Message::default()
            })
        }
        OpKind::Response => return Prepared::Answer(Message::error(ErrorCode::UnexpectedOpcode)),
        OpKind::Unsupported | OpKind::Unknown => return Prepared::Answer(Message::error(ErrorCode::BadOpcode)),
        _ => match Operation::from_kind(kind) {
            Some(op) => op,
            None => return Prepared::Answer(Message::error(ErrorCode::BadOpcode)),
        },
    };
    let Some(key) = store.find(request.ski.as_ref(), request.cert_digest.as_ref()) else {
        return Prepared::Answer(Message::error(ErrorCode::KeyNotFound));
    };
    tracing::info!("fetch key with SKI: {}", hex::encode(key.public().ski));
    Prepared::Perform {
        key,
        op,
        input: request.payload.as_deref().unwrap_or_default(),
    }
}

/// The response for an operation's result.
pub fn finish(ski: &Ski, op: Operation, result: Result<Vec<u8>, CryptoError>) -> Message {
    match result {
        Ok(out) => Message::response(out),
        Err(e) => {
            tracing::warn!("{op:?} with key {}: {e}", hex::encode(ski));
            Message::error(ErrorCode::Crypto)
        }
    }
}
