//! A read's requests kept on one core, signed in order. With multi-buffer
//! signing on, requests of one lane class (same algorithm and size, any
//! key) are signed together when the core reaches the first of them: up
//! to eight per call, if at least the class's `min_lanes` are there.
//!
//! Fewer than that (one connection with one request in flight, among
//! many such) are parked on the core: a task queued behind the tasks that
//! are ready now signs them after those have run, so what other
//! connections' reads (and requests other cores hand over) add fills the
//! same calls. Nothing waits on a timer: a lone request is signed as soon
//! as the core has nothing else ready.

use std::time::{Duration, Instant};

use keyless_keys::multibuffer::{LaneClass, LaneMath};
use keyless_keys::{KeyStore, Operation, Ski};
use keyless_protocol::Message;

use crate::handler;
use crate::request::Request;

/// The requests of one read for one core (see [`crate::core::Core::sign_next`]).
pub struct LocalBatch<'r> {
    pub(crate) requests: &'r [Request],
    pub(crate) next: usize,
    pub(crate) lanes: Option<LanePlan>,
}

/// What [`crate::core::Core::sign_next`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Its response is in `out`.
    Answered,
    /// Parked for a multi-buffer call with other connections' requests:
    /// its response reaches the connection's writer on its own.
    Parked,
}

/// A request parked for a call across connections: what answering it needs.
pub(crate) struct Parked {
    /// The core that holds the connection (another one's for a request
    /// handed over by [`crate::links`]).
    pub(crate) origin: usize,
    pub(crate) conn: u64,
    pub(crate) id: u32,
    pub(crate) opcode: u8,
    pub(crate) read_at: Instant,
    pub(crate) class: LaneClass,
    pub(crate) ski: Ski,
    pub(crate) op: Operation,
    pub(crate) input: Vec<u8>,
}

/// Which requests can share multi-buffer calls, and their answers once a
/// call has signed them ahead of their turn.
pub(crate) struct LanePlan {
    pub(crate) classes: Vec<Option<LaneClass>>,
    pub(crate) signed: Vec<Option<(Message, Duration)>>,
    /// Per class: requests not yet reached and not yet signed.
    pub(crate) remaining: [usize; LaneClass::ALL.len()],
}

impl<'r> LocalBatch<'r> {
    pub(crate) fn new(requests: &'r [Request], lanes: Option<(&KeyStore, &dyn LaneMath)>) -> LocalBatch<'r> {
        LocalBatch {
            requests,
            next: 0,
            lanes: lanes.map(|(store, math)| LanePlan::new(store, math, requests)),
        }
    }
}

impl LanePlan {
    fn new(store: &KeyStore, math: &dyn LaneMath, requests: &[Request]) -> LanePlan {
        let mut remaining = [0; LaneClass::ALL.len()];
        let classes = requests
            .iter()
            .map(|r| {
                let class = handler::lane_of(store, math, r).map(|(key, ..)| key.class());
                if let Some(c) = class {
                    remaining[c.index()] += 1;
                }
                class
            })
            .collect();
        LanePlan {
            classes,
            signed: (0..requests.len()).map(|_| None).collect(),
            remaining,
        }
    }

    /// Up to `lanes` requests of `class` not yet signed, from `from` on.
    pub(crate) fn gather(&self, class: LaneClass, from: usize, lanes: usize) -> Vec<usize> {
        (from..self.classes.len())
            .filter(|&j| self.classes[j] == Some(class) && self.signed[j].is_none())
            .take(lanes)
            .collect()
    }
}
