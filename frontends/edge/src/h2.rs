//! Just enough HTTP/2 (RFC 9113) to answer an h2 client `502` when the
//! upstream cannot be reached: the edge passes bytes and speaks no HTTP
//! otherwise. It reads the client's preface up to its first request's
//! HEADERS frame, then sends its own preface (an empty SETTINGS), the ACK
//! of the client's SETTINGS, `:status 502` on that stream, and GOAWAY.

use crate::conn::Session;

/// The client connection preface (RFC 9113 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// HPACK (RFC 7541 6.2.2): a literal header field without indexing, its
/// name the static table's entry 8 (`:status`), the value `502`.
const STATUS_502: &[u8] = &[0x08, 0x03, b'5', b'0', b'2'];

/// What the client has sent so far, from the preface on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The whole HEADERS frame of its first request, on this stream.
    Request(u32),
    /// Not yet.
    Incomplete,
    /// Not an h2 client preface.
    NotH2,
}

/// Where the client's first request is, in `bytes`.
pub fn first_request_stream(bytes: &[u8]) -> Seen {
    if bytes.len() < PREFACE.len() {
        return if PREFACE.starts_with(bytes) {
            Seen::Incomplete
        } else {
            Seen::NotH2
        };
    }
    if &bytes[..PREFACE.len()] != PREFACE {
        return Seen::NotH2;
    }
    let mut at = PREFACE.len();
    while let Some(header) = bytes.get(at..at + FRAME_HEADER) {
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        if header[3] == HEADERS && stream != 0 && bytes.len() >= at + FRAME_HEADER + length {
            return Seen::Request(stream);
        }
        at += FRAME_HEADER + length;
    }
    Seen::Incomplete
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The server's answer: its preface, the ACK of the client's SETTINGS,
/// `:status 502` ending `stream` (if a request was seen), and GOAWAY
/// naming it as the last stream processed.
pub fn bad_gateway_frames(stream: Option<u32>) -> Vec<u8> {
    let mut out = Vec::new();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    frame(&mut out, SETTINGS, ACK, 0, &[]);
    if let Some(stream) = stream {
        frame(&mut out, HEADERS, END_STREAM | END_HEADERS, stream, STATUS_502);
    }
    let mut goaway = stream.unwrap_or(0).to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
    frame(&mut out, GOAWAY, 0, 0, &goaway);
    out
}

/// Answer an h2 client `502 Bad Gateway` (the caller bounds the time and
/// closes the session).
pub async fn bad_gateway(session: &mut Session) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let stream = loop {
        match first_request_stream(&seen) {
            Seen::Request(stream) => break Some(stream),
            Seen::NotH2 => break None,
            Seen::Incomplete if seen.len() > 64 * 1024 => break None,
            Seen::Incomplete => {}
        }
        match session.read(&mut buf).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    };
    let _ = session.write_all(&bad_gateway_frames(stream)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_is_found_after_the_preface_and_settings() {
        let mut client = PREFACE.to_vec();
        frame(&mut client, SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        frame(&mut client, 0x8, 0, 0, &[0, 0, 0, 1]); // WINDOW_UPDATE
        frame(&mut client, HEADERS, END_HEADERS | END_STREAM, 1, &[0x82, 0x87, 0x84]);
        for cut in 0..client.len() {
            let partial = &client[..cut];
            assert_eq!(first_request_stream(partial), Seen::Incomplete, "cut at {cut}");
        }
        assert_eq!(first_request_stream(&client), Seen::Request(1));
        assert_eq!(first_request_stream(b"GET / HTTP/1.1\r\n"), Seen::NotH2);
    }

    #[test]
    fn the_answer_is_settings_ack_headers_502_and_goaway() {
        let out = bad_gateway_frames(Some(3));
        let mut frames = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let length = u32::from_be_bytes([0, out[at], out[at + 1], out[at + 2]]) as usize;
            let stream = u32::from_be_bytes(out[at + 5..at + 9].try_into().unwrap());
            frames.push((out[at + 3], out[at + 4], stream, out[at + 9..at + 9 + length].to_vec()));
            at += 9 + length;
        }
        assert_eq!(frames[0], (SETTINGS, 0, 0, vec![]));
        assert_eq!(frames[1], (SETTINGS, ACK, 0, vec![]));
        assert_eq!(frames[2], (HEADERS, END_STREAM | END_HEADERS, 3, STATUS_502.to_vec()));
        assert_eq!(frames[3], (GOAWAY, 0, 0, vec![0, 0, 0, 3, 0, 0, 0, 0]));
        assert_eq!(frames.len(), 4);
    }
}
