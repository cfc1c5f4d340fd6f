use keyless_protocol::{split_frame, DecodeError, Message, Opcode};

use crate::ClientError;

/// Bytes read from a key server, cut into complete answer frames.
#[derive(Debug, Default)]
pub struct AnswerReader {
    buf: Vec<u8>,
    /// Bytes at the start of `buf` already handed out.
    consumed: usize,
}

impl AnswerReader {
    pub fn new() -> AnswerReader {
        AnswerReader::default()
    }

    /// Add bytes as read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete answer: its ID and message (or why it does not
    /// decode). `None` until more bytes come.
    pub fn next_answer(&mut self) -> Option<(u32, Result<Message, DecodeError>)> {
        let raw = split_frame(&self.buf[self.consumed..])?;
        self.consumed += raw.header.frame_len();
        Some((raw.header.id, raw.decode().map(|frame| frame.message)))
    }

    /// Bytes of an answer not yet complete.
    pub fn partial(&self) -> usize {
        self.buf.len() - self.consumed
    }
}

/// The echoed payload of a pong, or why the answer is not one.
pub fn expect_pong(answer: Message) -> Result<Vec<u8>, ClientError> {
    check_error(&answer)?;
    if answer.opcode != Some(Opcode::PONG) {
        return Err(ClientError::Protocol(format!("ping answered with {:?}", answer.opcode)));
    }
    Ok(answer.payload.unwrap_or_default())
}

fn check_error(answer: &Message) -> Result<(), ClientError> {
    match answer.error_code() {
        None => Ok(()),
        Some(Ok(code)) => Err(ClientError::Remote(code)),
        Some(Err(byte)) => Err(ClientError::RemoteUnknown(byte)),
    }
}

/// The payload of a 0xF0 response, or the error it carries.
pub fn expect_response(answer: Message) -> Result<Vec<u8>, ClientError> {
    check_error(&answer)?;
    if answer.opcode != Some(Opcode::RESPONSE) {
        return Err(ClientError::Protocol(format!(
            "expected a response, got {:?}",
            answer.opcode
        )));
    }
    Ok(answer.payload.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyless_protocol::{ErrorCode, Frame};

    #[test]
    fn answers_split_anywhere_come_out_whole_and_in_order() {
        let mut wire = Vec::new();
        for id in 1..=3 {
            Frame::new(id, Message::response(vec![id as u8; 40]))
                .encode_into(&mut wire)
                .unwrap();
        }
        Frame::new(4, Message::error(ErrorCode::KeyNotFound))
            .encode_into(&mut wire)
            .unwrap();
        for cut in [1, 7, 8, 9, 50, wire.len() - 1] {
            let mut reader = AnswerReader::new();
            let mut ids = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                reader.feed(part);
                while let Some((id, message)) = reader.next_answer() {
                    let message = message.unwrap();
                    if id == 4 {
                        assert_eq!(message.error_code(), Some(Ok(ErrorCode::KeyNotFound)));
                    } else {
                        assert_eq!(message.payload, Some(vec![id as u8; 40]));
                    }
                    ids.push(id);
                }
            }
            assert_eq!(ids, [1, 2, 3, 4], "cut at {cut}");
            assert_eq!(reader.partial(), 0);
        }
    }
}
