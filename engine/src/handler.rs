//! From request to response: key lookup, then the private-key operation.
//!
//! Sans-I/O: the connection code feeds raw frames in and writes the returned
//! frames out; this module never sees a socket.

use keyless_keys::{KeyStore, Operation};
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
    let Some(opcode) = request.opcode else {
        // gokeyless answers a request without an opcode with bad-opcode.
        return Message::error(ErrorCode::BadOpcode);
    };
    let kind = opcode.kind();
    let op = match kind {
        OpKind::Ping => {
            return Message {
                opcode: Some(keyless_protocol::Opcode::PONG),
                payload: request.payload.clone(),
                ..Message::default()
            }
        }
        OpKind::Response => return Message::error(ErrorCode::UnexpectedOpcode),
        OpKind::Unsupported | OpKind::Unknown => return Message::error(ErrorCode::BadOpcode),
        _ => match Operation::from_kind(kind) {
            Some(op) => op,
            None => return Message::error(ErrorCode::BadOpcode),
        },
    };
    let Some(key) = store.find(request.ski.as_ref(), request.cert_digest.as_ref()) else {
        return Message::error(ErrorCode::KeyNotFound);
    };
    tracing::info!("fetch key with SKI: {}", hex::encode(key.public().ski));
    let payload = request.payload.as_deref().unwrap_or_default();
    match key.perform(op, payload) {
        Ok(out) => Message::response(out),
        Err(e) => {
            tracing::warn!("{op:?} with key {}: {e}", hex::encode(key.public().ski));
            Message::error(ErrorCode::Crypto)
        }
    }
}
