//! Multi-buffer calls on one core: a read's requests of one lane class
//! signed together ([`Core::sign_lanes`]), and requests parked for a call
//! across connections and cores ([`Core::park`]), signed after a round of
//! the core's loop. What a batch plans is in [`crate::batch`].

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use keyless_keys::multibuffer::{self, Lane, LaneClass, LaneMath, LANES};
use keyless_keys::{PrivateKey, Ski};
use keyless_protocol::{ErrorCode, Frame, Message};

use crate::batch::{LanePlan, Parked};
use crate::core::Core;
use crate::counters::error_byte;
use crate::handler;
use crate::links::Answer;
use crate::request::Request;

impl Core {
    /// Park `request` (of connection `conn` on core `origin`) for a
    /// multi-buffer call with other connections' requests, and queue the
    /// task that signs the parked ones. `false` if it has no lanes (or no
    /// longer: keys republished since the plan).
    pub(crate) fn park(self: &Rc<Self>, origin: usize, conn: u64, request: &Request) -> bool {
        let store = self.store();
        let Some(math) = self.lanes.as_deref() else {
            return false;
        };
        let looking = Instant::now();
        let Some((lanes, op, input, ski)) = handler::lane_of(&store, math, request) else {
            return false;
        };
        self.counters().key_lookup.observe_duration(looking.elapsed());
        tracing::info!("fetch key with SKI: {}", hex::encode(ski));
        self.parked.borrow_mut().push(Parked {
            origin,
            conn,
            id: request.id,
            opcode: request.opcode_byte(),
            read_at: request.read_at,
            class: lanes.class(),
            ski,
            op,
            input: input.to_vec(),
        });
        if !self.flush_queued.replace(true) {
            let core = self.clone();
            glommio::spawn_local(async move { core.sign_parked().await }).detach();
        }
        true
    }

    /// Sign every parked request: per class, calls of up to eight, each of
    /// at least the class's minimum; the rest alone with AWS-LC.
    ///
    /// First the core goes around its loop (reaping completed I/O, running
    /// what is ready): requests other connections bring in park too. It goes
    /// around again only while each round adds some, no class has eight yet
    /// and `batch_delay` has not passed since the first round: an idle core
    /// signs after one round, a loaded one fills its calls. No timer is
    /// involved, so nothing waits on a wake-up.
    async fn sign_parked(self: Rc<Self>) {
        let started = Instant::now();
        loop {
            let before = self.parked.borrow().len();
            glommio::executor().yield_task_queue_now().await;
            let parked = self.parked.borrow();
            let mut per_class = [0usize; LaneClass::ALL.len()];
            for p in parked.iter() {
                per_class[p.class.index()] += 1;
            }
            let full = per_class.iter().any(|&n| n >= LANES);
            if parked.len() == before || full || started.elapsed() >= self.shared.batch_delay() {
                break;
            }
        }
        self.flush_queued.set(false);
        let parked = std::mem::take(&mut *self.parked.borrow_mut());
        let Some(math) = self.lanes.clone() else {
            return;
        };
        for class in LaneClass::ALL {
            let group: Vec<&Parked> = parked.iter().filter(|p| p.class == class).collect();
            for chunk in group.chunks(LANES) {
                for (origin, answer) in self.answer_parked(math.as_ref(), class, chunk) {
                    self.send_home(origin, answer).await;
                }
                glommio::executor().yield_if_needed().await;
            }
        }
    }

    /// Sign `chunk` and answer it: to this core's connections directly; the
    /// answers for other cores' connections are returned, to send home.
    fn answer_parked(&self, math: &dyn LaneMath, class: LaneClass, chunk: &[&Parked]) -> Vec<(usize, Answer)> {
        let store = self.store();
        let counters = self.counters();
        let c = class.index();
        let started = Instant::now();
        // In-memory keys only: one republished under the same SKI as an
        // HSM key is not performed here (that would block the core).
        let keys: Vec<Option<&dyn PrivateKey>> = chunk
            .iter()
            .map(|p| store.find(Some(&p.ski), None).filter(|k| k.lane_key().is_some()))
            .collect();
        let lane_keys: Option<Vec<_>> = keys.iter().map(|k| (*k)?.lane_key()).collect();
        let messages: Vec<Message> = if let Some(lane_keys) = lane_keys.filter(|_| chunk.len() >= class.min_lanes()) {
            let lanes: Vec<Lane<'_>> = chunk
                .iter()
                .zip(lane_keys)
                .map(|(p, key)| Lane {
                    key,
                    op: p.op,
                    input: &p.input,
                })
                .collect();
            let skis: Vec<Ski> = chunk.iter().map(|p| p.ski).collect();
            self.call_lanes(math, class, &lanes, &skis)
        } else {
            counters.lane_alone[c].fetch_add(chunk.len() as u64, Ordering::Relaxed);
            chunk
                .iter()
                .zip(&keys)
                .map(|(p, key)| match key {
                    Some(key) => handler::finish(&p.ski, p.op, key.perform(p.op, &p.input)),
                    None => Message::error(ErrorCode::KeyNotFound),
                })
                .collect()
        };
        let share = started.elapsed() / chunk.len().max(1) as u32;
        let mut remote = Vec::new();
        for (p, message) in chunk.iter().zip(messages) {
            counters.received(p.opcode);
            counters.answered(p.opcode, &message, share);
            let error = error_byte(&message);
            let mut frame = Vec::with_capacity(1024);
            if let Err(e) = Frame::new(p.id, message).encode_into(&mut frame) {
                tracing::error!("cannot encode response {}: {e}", p.id);
            }
            self.shared.loads.done(self.id);
            if p.origin == self.id {
                counters.delivered(p.opcode, error, p.read_at.elapsed());
                self.to_connection(p.conn, (frame, 1));
            } else {
                let answer = Answer {
                    conn: p.conn,
                    frame,
                    opcode: p.opcode,
                    error,
                    read_at: p.read_at,
                };
                remote.push((p.origin, answer));
            }
        }
        remote
    }

    /// One multi-buffer call, counted: each lane's answer (`skis[i]` names
    /// lane i's key in the log of a failure).
    fn call_lanes(&self, math: &dyn LaneMath, class: LaneClass, lanes: &[Lane<'_>], skis: &[Ski]) -> Vec<Message> {
        let counters = self.counters();
        counters.lane_calls[class.index()].fetch_add(1, Ordering::Relaxed);
        counters.lane_filled[class.index()].fetch_add(lanes.len() as u64, Ordering::Relaxed);
        let signed = multibuffer::sign(math, lanes);
        if signed.fallbacks > 0 {
            counters.lane_fallbacks[class.index()].fetch_add(signed.fallbacks as u64, Ordering::Relaxed);
        }
        signed
            .results
            .into_iter()
            .zip(lanes.iter().zip(skis))
            .map(|(result, (lane, ski))| handler::finish(ski, lane.op, result))
            .collect()
    }

    /// One multi-buffer call for the request at `first` and up to seven
    /// later ones of `class`; their answers wait in `plan`.
    pub(crate) fn sign_lanes(
        &self,
        math: &dyn LaneMath,
        plan: &mut LanePlan,
        requests: &[Request],
        class: LaneClass,
        first: usize,
    ) {
        let store = self.store();
        let started = Instant::now();
        let (mut members, mut skis, mut lanes) = (Vec::new(), Vec::new(), Vec::new());
        let mut looking = started;
        for j in plan.gather(class, first, LANES) {
            // None only if the keys were republished since the plan was made:
            // that request then signs alone when reached.
            let found = handler::lane_of(&store, math, &requests[j]);
            let now = Instant::now();
            self.counters().key_lookup.observe_duration(now - looking);
            looking = now;
            if let Some((key, op, input, ski)) = found {
                tracing::info!("fetch key with SKI: {}", hex::encode(ski));
                members.push(j);
                skis.push(ski);
                lanes.push(Lane { key, op, input });
            }
        }
        let messages = self.call_lanes(math, class, &lanes, &skis);
        let share = started.elapsed() / (lanes.len().max(1) as u32);
        let c = class.index();
        plan.remaining[c] = plan.remaining[c].saturating_sub(members.len().max(1));
        for (j, message) in members.into_iter().zip(messages) {
            plan.signed[j] = Some((message, share));
        }
    }
}
