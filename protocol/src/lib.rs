//! Sans-I/O codec for the gokeyless binary protocol, version 1.0.
//!
//! What it does: turns bytes into [`Frame`]s and [`Frame`]s into bytes, exactly
//! as Cloudflare's `gokeyless` writes them (8-byte header, TLV items, padding to
//! 1024 bytes). What it does not do: touch a socket, a clock or a key. Servers,
//! clients, fuzzers and benchmarks all drive the same pure functions.
//!
//! ```text
//! header (8 bytes, big-endian):  major u8 | minor u8 | body length u16 | request id u32
//! body:                          item*   where item = tag u8 | length u16 | value
//! ```

mod error;
mod frame;
mod hello;
mod message;
mod names;
mod opcode;

pub use error::{DecodeError, ErrorCode};
pub use frame::{
    split_frame, EncodeError, Frame, Header, RawFrame, HEADER_LEN, MAJOR_VERSION, MINOR_VERSION, PADDED_LEN,
};
pub use hello::PeerHello;
pub use message::{Message, Ski, Tag, CERT_DIGEST_LEN, SKI_LEN};
pub use names::{gokeyless_error, OpFamily};
pub use opcode::{Hash, OpKind, Opcode};
