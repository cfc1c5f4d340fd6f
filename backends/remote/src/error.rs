//! Client errors: each says whether trying again (elsewhere) may help.

use keyless_protocol::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting or the TLS handshake failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The connection broke; requests in flight on it are lost.
    #[error("connection closed: {0}")]
    Closed(String),
    /// The server answered with a protocol error.
    #[error("key server answered {0}")]
    Remote(ErrorCode),
    /// The server answered with an error byte we do not know.
    #[error("key server answered unknown error 0x{0:02x}")]
    RemoteUnknown(u8),
    /// The server's answer made no sense (wrong opcode, missing payload).
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// Bad TLS configuration (files, certificates).
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// Whether the same request may succeed on another connection or server.
    pub fn retryable(&self) -> bool {
        matches!(self, ClientError::Connect { .. } | ClientError::Closed(_))
            || matches!(self, ClientError::Remote(ErrorCode::Internal | ErrorCode::Read))
    }
}
