use std::collections::HashMap;

use futures_channel::oneshot;
use keyless_protocol::{ErrorCode, Frame, Message, Opcode};

use super::AnswerReader;
use crate::ClientError;

/// The answer to one request, as its waiter receives it.
pub type Answer = oneshot::Receiver<Message>;

/// One connection's requests in flight.
///
/// A driver calls [`request`](Pipeline::request) and writes the frame it
/// returns, feeds every byte it reads to [`receive`](Pipeline::receive), and
/// calls [`close`](Pipeline::close) when the connection ends. Waiters get
/// their answer, or see their channel close when the connection is gone.
#[derive(Debug)]
pub struct Pipeline {
    peer: String,
    next_id: u32,
    waiting: HashMap<u32, oneshot::Sender<Message>>,
    answers: AnswerReader,
    closed: Option<String>,
    /// The payload of the last ping the peer sent us, and how many it sent.
    peer_ping: Option<Vec<u8>>,
    peer_pings: u64,
}

impl Pipeline {
    pub fn new(peer: impl Into<String>) -> Pipeline {
        Pipeline {
            peer: peer.into(),
            next_id: 1,
            waiting: HashMap::new(),
            answers: AnswerReader::new(),
            closed: None,
            peer_ping: None,
            peer_pings: 0,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Why the connection is closed, if it is.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    pub fn in_flight(&self) -> usize {
        self.waiting.len()
    }

    /// Give `message` an ID no request in flight has; the frame to write
    /// and where its answer will come.
    pub fn request(&mut self, message: Message) -> Result<(u32, Vec<u8>, Answer), ClientError> {
        if let Some(reason) = &self.closed {
            return Err(ClientError::Closed(reason.clone()));
        }
        if self.waiting.len() >= u32::MAX as usize {
            return Err(ClientError::Closed("every request ID is in use".into()));
        }
        let mut id = self.next_id;
        while self.waiting.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        let frame = Frame::new(id, message)
            .encode()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(id, tx);
        Ok((id, frame, rx))
    }

    /// Forget request `id` (its frame could not be written, or its waiter
    /// gave up): a late answer to it is then logged as unmatched.
    pub fn cancel(&mut self, id: u32) {
        self.waiting.remove(&id);
    }

    /// Bytes read from the connection: hand every complete answer to its
    /// waiter. A ping from the peer (a key server that dialed in pings the
    /// edge) is answered: the bytes returned are the pongs to write back.
    pub fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut replies = Vec::new();
        self.answers.feed(bytes);
        while let Some((id, message)) = self.answers.next_answer() {
            let message = message.unwrap_or_else(|e| {
                tracing::warn!("key server {}: undecodable answer {id}: {e}", self.peer);
                Message::error(ErrorCode::Format)
            });
            if message.opcode == Some(Opcode::PING) {
                let payload = message.payload.unwrap_or_default();
                let pong = Message {
                    opcode: Some(Opcode::PONG),
                    payload: Some(payload.clone()),
                    ..Message::default()
                };
                let _ = Frame::new(id, pong).encode_into(&mut replies);
                self.peer_ping = Some(payload);
                self.peer_pings += 1;
                continue;
            }
            match self.waiting.remove(&id) {
                // A waiter that gave up (timed out) dropped its receiver.
                Some(tx) => {
                    let _ = tx.send(message);
                }
                None => tracing::warn!("key server {}: answer {id} matches no request", self.peer),
            }
        }
        replies
    }

    /// The last ping the peer sent (its payload), and how many it has sent.
    pub fn peer_ping(&self) -> (Option<&[u8]>, u64) {
        (self.peer_ping.as_deref(), self.peer_pings)
    }

    /// The connection is gone: every request in flight fails with `reason`.
    pub fn close(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        if self.closed.is_none() {
            if !self.waiting.is_empty() {
                tracing::warn!(
                    "key server {}: {reason}; {} requests in flight fail",
                    self.peer,
                    self.waiting.len()
                );
            }
            self.closed = Some(reason);
        }
        // Dropping the senders wakes every waiter with an error.
        self.waiting.clear();
    }
}

/// What a waiter makes of its answer channel.
pub fn answered(
    answer: Result<Message, oneshot::Canceled>,
    pipeline_closed: Option<String>,
) -> Result<Message, ClientError> {
    answer.map_err(|_| ClientError::Closed(pipeline_closed.unwrap_or_else(|| "connection lost".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use keyless_protocol::split_frame;

    fn answer_bytes(id: u32, payload: &[u8]) -> Vec<u8> {
        Frame::new(id, Message::response(payload.to_vec())).encode().unwrap()
    }

    #[test]
    fn answers_reach_their_requests_in_any_order() {
        let mut p = Pipeline::new("test");
        let (a, frame_a, rx_a) = p.request(Message::response(b"a".to_vec())).unwrap();
        let (b, _, rx_b) = p.request(Message::response(b"b".to_vec())).unwrap();
        assert_eq!((a, b), (1, 2), "IDs start at 1");
        assert_eq!(split_frame(&frame_a).unwrap().header.id, a);
        let mut wire = answer_bytes(b, b"for b");
        wire.extend(answer_bytes(a, b"for a"));
        p.receive(&wire[..10]);
        assert_eq!(p.in_flight(), 2);
        p.receive(&wire[10..]);
        assert_eq!(block_on(rx_a).unwrap().payload.unwrap(), b"for a");
        assert_eq!(block_on(rx_b).unwrap().payload.unwrap(), b"for b");
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn ids_still_in_flight_are_skipped_when_the_counter_wraps() {
        let mut p = Pipeline::new("test");
        p.next_id = u32::MAX;
        let (first, _, _rx1) = p.request(Message::default()).unwrap();
        let (second, _, _rx2) = p.request(Message::default()).unwrap();
        assert_eq!((first, second), (u32::MAX, 0));
        p.next_id = u32::MAX;
        let (third, _, _rx3) = p.request(Message::default()).unwrap();
        assert_eq!(third, 1, "u32::MAX and 0 are in flight");
    }

    #[test]
    fn closing_fails_every_waiter_and_every_later_request() {
        let mut p = Pipeline::new("test");
        let (_, _, rx) = p.request(Message::default()).unwrap();
        p.close("read failed");
        let err = answered(block_on(rx), p.closed().map(str::to_owned)).unwrap_err();
        assert_eq!(err.to_string(), "connection closed: read failed");
        assert!(matches!(p.request(Message::default()), Err(ClientError::Closed(r)) if r == "read failed"));
    }

    #[test]
    fn a_ping_from_the_peer_is_answered_with_a_pong_and_remembered() {
        let mut p = Pipeline::new("test");
        let (id, _, rx) = p.request(Message::default()).unwrap();
        let mut wire = Frame::new(77, Message::request(Opcode::PING, None, b"hi".to_vec()))
            .encode()
            .unwrap();
        wire.extend(answer_bytes(id, b"mine"));
        let replies = p.receive(&wire);
        let pong = split_frame(&replies).unwrap();
        assert_eq!(pong.header.id, 77);
        let pong = pong.decode().unwrap().message;
        assert_eq!(
            (pong.opcode, pong.payload.as_deref()),
            (Some(Opcode::PONG), Some(&b"hi"[..]))
        );
        assert_eq!(p.peer_ping(), (Some(&b"hi"[..]), 1));
        assert_eq!(
            block_on(rx).unwrap().payload.unwrap(),
            b"mine",
            "answers still reach their waiters"
        );
    }

    #[test]
    fn unmatched_and_undecodable_answers_leave_the_rest_alone() {
        let mut p = Pipeline::new("test");
        let (id, _, rx) = p.request(Message::default()).unwrap();
        let (cancelled, _, _) = p.request(Message::default()).unwrap();
        p.cancel(cancelled);
        let mut wire = answer_bytes(cancelled, b"late");
        wire.extend(answer_bytes(999, b"stray"));
        // A frame of the right length whose body is not valid TLV.
        wire.extend([1, 0, 0, 3, 0, 0, 0, id as u8, 0x11, 0x00, 0x05]);
        p.receive(&wire);
        let message = block_on(rx).unwrap();
        assert_eq!(message.error_code(), Some(Ok(ErrorCode::Format)));
        assert_eq!(p.in_flight(), 0);
    }
}
