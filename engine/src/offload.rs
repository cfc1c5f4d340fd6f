//! Operations performed off the cores (an HSM's worker threads): the core
//! submits and awaits, bounded by the key's timeout.

use std::time::Duration;

use keyless_keys::{Offload, Operation, PendingOperation, Ski};
use keyless_protocol::{ErrorCode, Message};

use crate::handler;

/// A submitted operation.
pub struct Offloaded {
    pending: PendingOperation,
    timeout: Duration,
    ski: Ski,
    op: Operation,
    /// The backend logs its failures itself (once per cause).
    quiet: bool,
}

impl Offloaded {
    /// Queue `op` with the key's workers.
    pub fn submit(offload: &dyn Offload, ski: Ski, op: Operation, input: &[u8]) -> Offloaded {
        Offloaded {
            pending: offload.submit(op, input.to_vec()),
            timeout: offload.timeout(),
            ski,
            op,
            quiet: offload.reports_failures(),
        }
    }

    /// The answer for request `id`: the result, or an internal error when
    /// the key's timeout passes first.
    pub async fn answer(self, id: u32) -> Message {
        let (ski, op, timeout) = (self.ski, self.op, self.timeout);
        let pending = self.pending;
        match glommio::timer::timeout(timeout, async { Ok(pending.await) }).await {
            Ok(Err(_)) if self.quiet => Message::error(ErrorCode::Crypto),
            Ok(result) => handler::finish(&ski, op, result),
            Err(_) => {
                tracing::warn!(
                    "{op:?} with key {}: no answer within {timeout:?}; request {id} fails",
                    hex::encode(ski)
                );
                Message::error(ErrorCode::Internal)
            }
        }
    }
}
