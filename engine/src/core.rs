//! One core's side of the engine: its own copy of the keys, its
//! connections' answer queues, and the routing of each request to the core
//! that signs it.
//!
//! A connection lives on the core that accepted it, but one busy connection
//! must be able to keep every core signing. A core reading a batch of
//! requests assigns each to the least-loaded core ([`crate::routing`]),
//! sends the remote ones over [`crate::links`], signs its own share, and the
//! answers flow back to the connection's core.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::LocalSender;
use keyless_keys::multibuffer::LaneMath;
use keyless_keys::{KeyStore, SharedKey};
use keyless_protocol::{ErrorCode, Frame, Message};

use crate::batch::{LocalBatch, Parked, Step};
use crate::counters::{error_byte, CoreCounters};
use crate::drain::Drain;
use crate::handler::{self, Prepared};
use crate::links::{Answer, Inboxes, Job, Links};
use crate::offload::Offloaded;
use crate::request::Request;
use crate::routing::Target;
use crate::shared::Shared;
use crate::versioned::Cached;

/// Encoded responses for a connection's writer, and how many frames they hold.
pub type Responses = (Vec<u8>, usize);

pub struct Core {
    pub(crate) id: usize,
    pub(crate) drain: Rc<Drain>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) store: Cached<Rc<KeyStore>>,
    pub(crate) links: Links,
    pub(crate) conns: RefCell<HashMap<u64, Rc<LocalSender<Responses>>>>,
    pub(crate) next_conn: Cell<u64>,
    /// What computes multi-buffer lanes, when that path is on.
    pub(crate) lanes: Option<Arc<dyn LaneMath>>,
    /// Requests waiting for a multi-buffer call across connections
    /// ([`crate::batch`]), and whether the task that signs them is queued.
    pub(crate) parked: RefCell<Vec<Parked>>,
    pub(crate) flush_queued: Cell<bool>,
}

/// One core's own copy of the keys, with their multi-buffer material
/// built now (not in a request) when `lanes` is on.
fn build_store(keys: &[SharedKey], lanes: bool) -> Result<KeyStore, String> {
    let mut store = KeyStore::new();
    for k in keys {
        let key = k.instantiate().map_err(|e| format!("{}: {e}", k.origin()))?;
        if lanes {
            let _ = key.lane_key();
        }
        store.insert(key);
    }
    Ok(store)
}

impl Core {
    /// Become core `id`: connect its channels to every other core (waits
    /// for all of them) and start its workers.
    pub async fn join(shared: Arc<Shared>, id: usize) -> Result<Rc<Core>, String> {
        let ends = shared
            .take_links(id)
            .ok_or_else(|| format!("core {id} joined twice or does not exist"))?;
        let (_, keys) = shared.keys.load();
        let lanes = shared.lanes().cloned();
        let store = Rc::new(build_store(&keys, lanes.is_some())?);
        let store = Cached::new(&shared.keys, |_| store);
        let (links, inboxes) = while_reactor_turns(ends.connect()).await;
        let drain = Drain::watch(shared.drain_signal());
        let core = Rc::new(Core {
            id,
            drain,
            shared,
            store,
            links,
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(0),
            lanes,
            parked: RefCell::new(Vec::new()),
            flush_queued: Cell::new(false),
        });
        core.spawn_workers(inboxes);
        Ok(core)
    }

    fn spawn_workers(self: &Rc<Self>, inboxes: Inboxes) {
        // The executor's busy time, for `server_utilization` (glommio's
        // stats are taken and reset by each read: a delta per second).
        let shared = self.shared.clone();
        let id = self.id;
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(std::time::Duration::from_secs(1)).await;
                let busy = glommio::executor().executor_stats().total_runtime();
                shared.counters[id]
                    .busy_ns
                    .fetch_add(busy.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .detach();
        for rx in inboxes.jobs {
            let core = self.clone();
            glommio::spawn_local(async move {
                while let Some(job) = rx.recv().await {
                    core.run_job(job).await;
                }
            })
            .detach();
        }
        for rx in inboxes.answers {
            let core = self.clone();
            glommio::spawn_local(async move {
                while let Some(answer) = rx.recv().await {
                    core.deliver(answer);
                }
            })
            .detach();
        }
    }

    /// This core's index (in [`Shared::counters`] too).
    pub fn id(&self) -> usize {
        self.id
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn counters(&self) -> &CoreCounters {
        &self.shared.counters[self.id]
    }

    /// This core's view of the drain (SIGTERM) signal.
    pub fn drain(&self) -> &Drain {
        &self.drain
    }

    /// This core's keys, rebuilt first if new ones were published.
    pub fn store(&self) -> Rc<KeyStore> {
        self.store.get(&self.shared.keys, |keys| {
            match build_store(keys, self.lanes.is_some()) {
                Ok(store) => {
                    let n = store.len();
                    tracing::info!(
                        "core {}: now serving {n} {}",
                        self.id,
                        if n == 1 { "key" } else { "keys" }
                    );
                    Some(Rc::new(store))
                }
                Err(e) => {
                    tracing::error!("core {}: keeping the old keys: {e}", self.id);
                    None
                }
            }
        })
    }

    /// Connections open on this core and requests assigned to it: what a
    /// draining core waits for before it stops.
    pub fn busy(&self) -> (u64, usize) {
        (
            self.counters().connections.load(Ordering::Relaxed),
            self.shared.loads.get(self.id),
        )
    }

    /// Register a connection's answer queue; answers for it are delivered
    /// there until [`Core::unregister`].
    pub fn register(&self, tx: Rc<LocalSender<Responses>>) -> u64 {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        self.conns.borrow_mut().insert(id, tx);
        self.counters().connections.fetch_add(1, Ordering::Relaxed);
        id
    }

    pub fn unregister(&self, conn: u64) {
        if self.conns.borrow_mut().remove(&conn).is_some() {
            self.counters().connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Route one request read on this core for connection `conn`. Requests
    /// that need no key are answered at once (never queued behind a batch
    /// of signatures), HSM requests go to their workers, and the rest go to
    /// the least-loaded core. Returns the request when that is this core:
    /// the caller signs it with the rest of its batch ([`Core::sign_local`]).
    pub async fn dispatch(self: &Rc<Self>, conn: u64, request: Request) -> Option<Request> {
        if !request.needs_key() {
            let mut out = Vec::with_capacity(256);
            let _ = self.answer_here(self.id, conn, &request, &mut out, None);
            self.to_connection(conn, (out, 1));
            return None;
        }
        let store = self.store();
        if store.has_offloaded() {
            let looking = Instant::now();
            if let Prepared::Offloaded {
                offload,
                ski,
                op,
                input,
            } = handler::prepare(&store, &request)
            {
                let counters = self.counters();
                counters.key_lookup.observe_duration(looking.elapsed());
                // Counted as every other request is (gokeyless's keyless_requests).
                counters.received(request.opcode_byte());
                let offloaded = Offloaded::submit(offload, ski, op, input);
                self.spawn_offloaded(self.id, conn, &request, offloaded);
                return None;
            }
        }
        match self.shared.loads.assign(self.id, self.shared.draining()) {
            Target::Local => Some(request),
            Target::Remote(core) => {
                self.send_remote(core, conn, request).await;
                None
            }
        }
    }

    /// The requests [`dispatch`](Core::dispatch) kept on this core from
    /// one read, to sign with [`sign_next`](Core::sign_next).
    pub fn local_batch<'r>(&self, requests: &'r [Request]) -> LocalBatch<'r> {
        let store = self.lanes.as_ref().map(|_| self.store());
        LocalBatch::new(requests, store.as_deref().zip(self.lanes.as_deref()))
    }

    /// Sign the batch's next request, appending its response to `out`
    /// (`None` when none is left). With multi-buffer signing on, reaching a
    /// request of a lane class signs it together with the batch's later
    /// requests of that class, or parks it for a call with other
    /// connections' requests when too few are here.
    pub fn sign_next(self: &Rc<Self>, conn: u64, batch: &mut LocalBatch<'_>, out: &mut Vec<u8>) -> Option<Step> {
        let i = batch.next;
        let request = batch.requests.get(i)?;
        batch.next += 1;
        let signed = match (&mut batch.lanes, &self.lanes) {
            (Some(plan), Some(math)) => match plan.classes[i] {
                Some(class) if plan.signed[i].is_none() => {
                    let c = class.index();
                    if plan.remaining[c] >= class.min_lanes() {
                        self.sign_lanes(math.as_ref(), plan, batch.requests, class, i);
                    } else {
                        plan.remaining[c] -= 1;
                        if self.park(self.id, conn, request) {
                            return Some(Step::Parked);
                        }
                    }
                    plan.signed[i].take()
                }
                _ => plan.signed[i].take(),
            },
            _ => None,
        };
        let _ = self.answer_here(self.id, conn, request, out, signed);
        self.shared.loads.done(self.id);
        Some(Step::Answered)
    }

    /// Answer `request` on this core: its response is appended to `out` (its
    /// error byte returned, 0 for none), or, for a key performed elsewhere,
    /// reaches connection `conn` on core `origin` when the workers are done
    /// (`None`).
    /// `signed`: the answer and time of a multi-buffer call that already
    /// signed it.
    fn answer_here(
        self: &Rc<Self>,
        origin: usize,
        conn: u64,
        request: &Request,
        out: &mut Vec<u8>,
        signed: Option<(Message, Duration)>,
    ) -> Option<u8> {
        let counters = self.counters();
        if let Some(op) = request.opcode {
            counters.received(op.0);
        }
        let started = Instant::now();
        if let Some((message, exec)) = signed {
            return Some(self.answered_here(origin, request, message, exec, out));
        }
        let store = self.store();
        let prepared = handler::prepare(&store, request);
        if request.needs_key() {
            counters.key_lookup.observe_duration(started.elapsed());
        }
        let message = match prepared {
            Prepared::Offloaded {
                offload,
                ski,
                op,
                input,
            } => {
                // Only when keys were republished between routing and now.
                let offloaded = Offloaded::submit(offload, ski, op, input);
                self.spawn_offloaded(origin, conn, request, offloaded);
                return None;
            }
            prepared => prepared
                .answer_inline()
                .unwrap_or_else(|| Message::error(ErrorCode::Internal)),
        };
        Some(self.answered_here(origin, request, message, started.elapsed(), out))
    }

    /// Count `message` as the answer to `request` and encode it into `out`.
    fn answered_here(
        &self,
        origin: usize,
        request: &Request,
        message: Message,
        exec: Duration,
        out: &mut Vec<u8>,
    ) -> u8 {
        let counters = self.counters();
        let opcode = request.opcode_byte();
        let error = error_byte(&message);
        counters.answered(opcode, &message, exec);
        if origin == self.id {
            counters.delivered(opcode, error, request.read_at.elapsed());
        }
        if let Err(e) = Frame::new(request.id, message).encode_into(out) {
            tracing::error!("cannot encode response {}: {e}", request.id);
        }
        error
    }

    /// Wait for an offloaded operation on this core (an HSM's workers serve
    /// every core already, so it is not shared) and send its answer home.
    fn spawn_offloaded(self: &Rc<Self>, origin: usize, conn: u64, request: &Request, offloaded: Offloaded) {
        let core = self.clone();
        let (id, opcode, read_at) = (request.id, request.opcode_byte(), request.read_at);
        glommio::spawn_local(async move {
            let started = Instant::now();
            let message = offloaded.answer(id).await;
            core.counters().answered(opcode, &message, started.elapsed());
            let error = error_byte(&message);
            let mut frame = Vec::with_capacity(1024);
            if let Err(e) = Frame::new(id, message).encode_into(&mut frame) {
                tracing::error!("cannot encode response {id}: {e}");
            }
            let answer = Answer {
                conn,
                frame,
                opcode,
                error,
                read_at,
            };
            core.send_home(origin, answer).await;
        })
        .detach();
    }

    /// Send one request to another core. Waits while that core's queue
    /// from us is full: this is the backpressure that stops the reader.
    async fn send_remote(&self, target: usize, conn: u64, request: Request) {
        self.counters().sent_to_others.fetch_add(1, Ordering::Relaxed);
        let (id, opcode, read_at) = (request.id, request.opcode_byte(), request.read_at);
        let job = Job {
            origin: self.id,
            conn,
            request,
        };
        let sent = match &self.links.jobs[target] {
            Some(tx) => tx.send(job).await.map_err(|e| e.to_string()),
            None => Err("no channel".into()),
        };
        if let Err(e) = sent {
            // The other core is gone (shutting down): the request fails, visibly.
            tracing::warn!("cannot hand request {id} to core {target}: {e}");
            self.shared.loads.done(target);
            let mut frame = Vec::with_capacity(64);
            let _ = Frame::new(id, Message::error(ErrorCode::Internal)).encode_into(&mut frame);
            self.deliver(Answer {
                conn,
                frame,
                opcode,
                error: ErrorCode::Internal as u8,
                read_at,
            });
        }
    }

    async fn run_job(self: &Rc<Self>, job: Job) {
        // With lanes on, a handed-over request of a lane class joins this
        // core's parked ones (its answer goes home from there).
        if self.lanes.is_some() && self.park(job.origin, job.conn, &job.request) {
            self.counters().handled_for_others.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (opcode, read_at) = (job.request.opcode_byte(), job.request.read_at);
        let mut frame = Vec::with_capacity(1024);
        let answered = self.answer_here(job.origin, job.conn, &job.request, &mut frame, None);
        self.shared.loads.done(self.id);
        self.counters().handled_for_others.fetch_add(1, Ordering::Relaxed);
        if let Some(error) = answered {
            let answer = Answer {
                conn: job.conn,
                frame,
                opcode,
                error,
                read_at,
            };
            self.send_home(job.origin, answer).await;
        }
        glommio::executor().yield_if_needed().await;
    }

    /// Pass an answer to the core that holds its connection.
    pub(crate) async fn send_home(&self, origin: usize, answer: Answer) {
        if origin == self.id {
            self.deliver(answer);
            return;
        }
        let sent = match &self.links.answers[origin] {
            Some(tx) => tx.send(answer).await.is_ok(),
            None => false,
        };
        if !sent {
            tracing::warn!("core {origin} gone; an answer is dropped");
        }
    }

    fn deliver(&self, answer: Answer) {
        self.counters()
            .delivered(answer.opcode, answer.error, answer.read_at.elapsed());
        self.to_connection(answer.conn, (answer.frame, 1));
    }

    pub(crate) fn to_connection(&self, conn: u64, responses: Responses) {
        if let Some(tx) = self.conns.borrow().get(&conn) {
            // Unbounded: the connection's in-flight cap bounds it.
            let _ = tx.try_send(responses);
        }
    }
}

/// Run `fut` while keeping this core's reactor turning. glommio notices a
/// peer connecting to a shared channel only when its reactor runs, and a
/// connecting peer does not wake it: an executor with nothing else to do
/// sleeps through it and the connection never completes (seen under load).
async fn while_reactor_turns<T>(fut: impl std::future::Future<Output = T>) -> T {
    let turning = Rc::new(Cell::new(true));
    let ticker = glommio::spawn_local({
        let turning = turning.clone();
        async move {
            while turning.get() {
                glommio::timer::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let out = fut.await;
    turning.set(false);
    ticker.await;
    out
}
