//! Wire error codes and decoding errors.

use std::fmt;

/// The one-byte error code carried in the payload of an [`Opcode::ERROR`](crate::Opcode::ERROR) response.
///
/// gokeyless `protocol.go`: `ErrCrypto Error = iota + 1`, then `ErrKeyNotFound`,
/// `ErrRead`, `ErrVersionMismatch`, `ErrBadOpcode`, `ErrUnexpectedOpcode`,
/// `ErrFormat`, `ErrInternal`, `ErrCertNotFound`, `ErrExpired`,
/// `ErrRemoteConfiguration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum ErrorCode {
    Crypto = 0x01,
    KeyNotFound = 0x02,
    Read = 0x03,
    VersionMismatch = 0x04,
    BadOpcode = 0x05,
    UnexpectedOpcode = 0x06,
    Format = 0x07,
    Internal = 0x08,
    CertNotFound = 0x09,
    Expired = 0x0A,
    RemoteConfiguration = 0x0B,
}

impl ErrorCode {
    /// All codes, in wire order.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::Crypto,
        ErrorCode::KeyNotFound,
        ErrorCode::Read,
        ErrorCode::VersionMismatch,
        ErrorCode::BadOpcode,
        ErrorCode::UnexpectedOpcode,
        ErrorCode::Format,
        ErrorCode::Internal,
        ErrorCode::CertNotFound,
        ErrorCode::Expired,
        ErrorCode::RemoteConfiguration,
    ];

    /// The code for a wire byte, if it is one we know.
    pub fn from_byte(b: u8) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| *c as u8 == b)
    }

    /// The text gokeyless prints for this code.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::Crypto => "cryptography error",
            ErrorCode::KeyNotFound => "key not found due to no matching SKI/SNI/ServerIP",
            ErrorCode::Read => "read failure",
            ErrorCode::VersionMismatch => "version mismatch",
            ErrorCode::BadOpcode => "bad opcode",
            ErrorCode::UnexpectedOpcode => "unexpected opcode",
            ErrorCode::Format => "malformed message",
            ErrorCode::Internal => "internal error",
            ErrorCode::CertNotFound => "certificate not found",
            ErrorCode::Expired => "sealing key expired",
            ErrorCode::RemoteConfiguration => "remote configuration error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "keyless: {} (0x{:02x})", self.description(), *self as u8)
    }
}

/// Why a frame could not be decoded. The framing itself is intact (the body
/// length was honoured), so the server answers with [`DecodeError::code`] and
/// keeps the connection; the detail is for logs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The header's major version is not 1.
    #[error("unsupported protocol version {major}.{minor}")]
    VersionMismatch { major: u8, minor: u8 },
    /// Fewer than three bytes left where an item header should start.
    #[error("item header truncated at offset {offset}")]
    TruncatedItemHeader { offset: usize },
    /// An item's length runs past the end of the body.
    #[error("item 0x{tag:02x} at offset {offset} claims {len} bytes, {available} available")]
    TruncatedItem {
        tag: u8,
        offset: usize,
        len: usize,
        available: usize,
    },
    /// A known tag appeared twice.
    #[error("tag 0x{0:02x} appears more than once")]
    DuplicateTag(u8),
    /// A known tag with a value of the wrong size.
    #[error("tag 0x{tag:02x} has invalid length {len}")]
    InvalidLength { tag: u8, len: usize },
}

impl DecodeError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            _ => ErrorCode::Format,
        }
    }
}
