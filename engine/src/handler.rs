//! From request to response: key lookup, then the private-key operation.
//!
//! Sans-I/O: the connection code feeds decoded requests in and writes the
//! returned messages out; this module never sees a socket or the clock.

use keyless_keys::multibuffer::{LaneKey, LaneMath};
use keyless_keys::{CryptoError, KeyStore, Offload, Operation, PrivateKey, Ski};
use keyless_protocol::{ErrorCode, Message, OpKind, Opcode};

use crate::request::Request;

/// A request after key lookup: answered already, or an operation to
/// perform. Where the operation runs is decided here, from the key, so a
/// core cannot block on an HSM by calling things in the wrong order.
// Returned by value once per request and consumed at once: boxing the
// message would cost an allocation per answer for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Prepared<'a> {
    Answer(Message),
    /// A key fast enough to use on the core that holds the request.
    Inline {
        key: &'a dyn PrivateKey,
        op: Operation,
        input: &'a [u8],
    },
    /// A key whose operations run on worker threads (an HSM): submit and
    /// await; never call its blocking `perform` on a core.
    Offloaded {
        offload: &'a dyn Offload,
        ski: Ski,
        op: Operation,
        input: &'a [u8],
    },
}

impl Prepared<'_> {
    /// The answer, when it can be had without waiting for another thread
    /// (`None` for an offloaded key).
    pub fn answer_inline(self) -> Option<Message> {
        match self {
            Prepared::Answer(message) => Some(message),
            Prepared::Inline { key, op, input } => Some(finish(&key.public().ski, op, key.perform(op, input))),
            Prepared::Offloaded { .. } => None,
        }
    }
}

/// Everything but the private-key operation: decoding errors, opcode
/// checks and key lookup.
pub fn prepare<'a>(store: &'a KeyStore, request: &'a Request) -> Prepared<'a> {
    match &request.message {
        Ok(message) => prepare_message(store, message),
        Err(e) => {
            // The body length was honoured, so the stream stays usable.
            tracing::warn!(request_id = request.id, "rejected request: {e}");
            Prepared::Answer(Message::error(e.code()))
        }
    }
}

fn prepare_message<'a>(store: &'a KeyStore, request: &'a Message) -> Prepared<'a> {
    let Some(opcode) = request.opcode else {
        // gokeyless answers a request without an opcode with bad-opcode.
        return Prepared::Answer(Message::error(ErrorCode::BadOpcode));
    };
    let kind = opcode.kind();
    let op = match kind {
        OpKind::Ping => {
            return Prepared::Answer(Message {
                opcode: Some(Opcode::PONG),
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
    let input = request.payload.as_deref().unwrap_or_default();
    match key.offload() {
        // A key of the right type whose (cloud) key version was made for
        // another algorithm: refused without a call.
        Some(offload) if op.applies_to(key.public().algorithm) && !offload.supports(op) => {
            Prepared::Answer(Message::error(ErrorCode::BadOpcode))
        }
        Some(offload) => Prepared::Offloaded {
            offload,
            ski: key.public().ski,
            op,
            input,
        },
        None => Prepared::Inline { key, op, input },
    }
}

/// A request multi-buffer lanes can sign: its key's lane material, the
/// operation, the input and the key's SKI. `None` sends it the usual way
/// (errors, offloaded keys, keys and operations without lanes, classes
/// `math` does not run).
pub fn lane_of<'a>(
    store: &'a KeyStore,
    math: &dyn LaneMath,
    request: &'a Request,
) -> Option<(&'a LaneKey, Operation, &'a [u8], Ski)> {
    let message = request.message.as_ref().ok()?;
    let op = Operation::from_kind(message.opcode?.kind())?;
    let key = store.find(message.ski.as_ref(), message.cert_digest.as_ref())?;
    let lanes = key.lane_key()?;
    let input = message.payload.as_deref().unwrap_or_default();
    (lanes.serves(op) && math.runs(lanes.class())).then_some((lanes, op, input, key.public().ski))
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

/// The response frame for `request` when its key (if any) is used inline;
/// `None` for an offloaded key. For benchmarks and tools: the cores go
/// through [`crate::core::Core`], which also awaits offloaded keys.
pub fn answer_inline(store: &KeyStore, request: &Request) -> Option<keyless_protocol::Frame> {
    prepare(store, request)
        .answer_inline()
        .map(|message| keyless_protocol::Frame::new(request.id, message))
}
