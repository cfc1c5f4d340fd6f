//! One client connection: read frames, answer them, write the answers.
//!
//! Pipelining: every complete frame in what one read returned is answered
//! before the next read, and all those answers leave in one write. A client
//! that stops reading stops being read (the write waits), so memory per
//! connection is bounded by one read plus its answers.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use keyless_engine::handler;
use keyless_keys::KeyStore;
use keyless_protocol::{split_frame, HEADER_LEN};

/// Bytes asked for per read.
const READ_CHUNK: usize = 64 * 1024;
/// Answers are written once this many bytes are pending, even mid-batch.
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The client closed between frames.
    Clean,
    /// The client closed in the middle of a frame: framing was lost.
    MidFrame { buffered: usize },
}

/// Serve one (already TLS-established) stream until the client leaves.
pub async fn serve<S>(stream: &mut S, store: &KeyStore) -> std::io::Result<Closed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut inbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut outbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(if inbuf.is_empty() {
                Closed::Clean
            } else {
                Closed::MidFrame {
                    buffered: inbuf.len(),
                }
            });
        }
        inbuf.extend_from_slice(&chunk[..n]);
        let mut consumed = 0;
        let mut answered = 0u32;
        while let Some(raw) = split_frame(&inbuf[consumed..]) {
            consumed += raw.header.frame_len();
            let response = handler::handle_raw(store, raw);
            if let Err(e) = response.encode_into(&mut outbuf) {
                // Only a response over 64 KiB can fail; none of ours is.
                tracing::error!("cannot encode response {}: {e}", response.id);
            }
            answered += 1;
            if outbuf.len() >= WRITE_HIGH_WATER {
                stream.write_all(&outbuf).await?;
                outbuf.clear();
            }
            if answered.is_multiple_of(16) {
                // Let other connections on this core have a turn.
                glommio::executor().yield_if_needed().await;
            }
        }
        inbuf.drain(..consumed);
        if !outbuf.is_empty() {
            stream.write_all(&outbuf).await?;
            stream.flush().await?;
            outbuf.clear();
        }
        debug_assert!(inbuf.len() < HEADER_LEN + u16::MAX as usize);
    }
}
