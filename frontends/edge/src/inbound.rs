//! The client-to-edge direction of a TLS session, without I/O: socket bytes
//! in, plaintext out. Both drivers use it (the proxy and the built-in page),
//! from the end of the handshake on.
//!
//! The rule it keeps: a driver waits on the socket only when nothing is
//! left to give. A TLS 1.3 client sends its first request in the same
//! flight as its Finished, so when the handshake ends that request may be
//! already decrypted inside rustls, or still in bytes rustls has not taken;
//! [`Inbound::poll`] hands both out before it ever answers
//! [`Next::NeedInput`].

use std::io::Read;

use rustls::ServerConnection;

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// `n` bytes of plaintext are in the caller's buffer: pass them on,
    /// then poll again.
    Plaintext(usize),
    /// Nothing is buffered, neither socket bytes nor plaintext: wait for
    /// the socket, give what it reads to [`Inbound::received`], poll again.
    NeedInput,
    /// The client is done sending: close_notify, or the socket closed and
    /// everything before it was handed out.
    Finished,
}

/// Socket bytes not yet taken by rustls, and whether the socket closed.
#[derive(Debug, Default)]
pub struct Inbound {
    pending: Vec<u8>,
    eof: bool,
}

impl Inbound {
    /// During the handshake: give rustls the bytes read so far, until the
    /// handshake ends or they run out. Whatever came after the client's
    /// Finished (a TLS 1.3 client's first request) stays for [`Inbound::poll`],
    /// buffered or already decrypted inside rustls.
    pub fn handshake(&mut self, conn: &mut ServerConnection) -> std::io::Result<()> {
        while conn.is_handshaking() && !self.pending.is_empty() {
            if feed(conn, &mut self.pending)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "rustls takes no more of the client's handshake",
                ));
            }
        }
        Ok(())
    }

    /// Bytes read from the socket.
    pub fn received(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The socket read end-of-file.
    pub fn received_eof(&mut self) {
        self.eof = true;
    }

    /// The buffer socket reads append to (what [`crate::conn::read_some`]
    /// fills), released first if it grew large and is empty.
    pub fn buffer(&mut self, keep: usize) -> &mut Vec<u8> {
        keyless_engine::buffers::release_if_empty(&mut self.pending, keep);
        &mut self.pending
    }

    /// Whether socket bytes wait for rustls.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next step: plaintext into `out` if any is ready or can be made
    /// from buffered bytes; else whether the client finished or must be
    /// waited for. Records rustls queues meanwhile (alerts, key updates)
    /// are for the caller to send after every call (`wants_write`).
    pub fn poll(&mut self, conn: &mut ServerConnection, out: &mut [u8]) -> std::io::Result<Next> {
        loop {
            match conn.reader().read(out) {
                // close_notify: the client is done sending.
                Ok(0) => return Ok(Next::Finished),
                Ok(n) => return Ok(Next::Plaintext(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // EOF without close_notify, after everything before it.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Next::Finished),
                Err(e) => return Err(e),
            }
            if self.pending.is_empty() {
                return Ok(if self.eof { Next::Finished } else { Next::NeedInput });
            }
            // rustls holds no plaintext here, so it has room: it takes
            // bytes, or it never would.
            if feed(conn, &mut self.pending)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "rustls takes no more of the client's bytes",
                ));
            }
        }
    }
}

/// Give rustls as much of `pending` as it takes and process it; how many
/// bytes it took.
pub fn feed(conn: &mut ServerConnection, pending: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut rd = &pending[..];
    let taken = conn.read_tls(&mut rd)?;
    pending.drain(..taken);
    conn.process_new_packets()
        .map(|_| taken)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
