//! Cross-core sharing: any core can sign any request.
//!
//! A connection lives on the core that accepted it, but one busy connection
//! must be able to keep every core signing. Each core publishes its load (jobs
//! assigned and not yet done) in a shared array of atomics; a core reading a
//! batch of requests assigns each to the least-loaded core, sends the remote
//! ones through glommio's lock-free channel mesh, signs its own share, and
//! the answers flow back through a second mesh to the connection's core.
//!
//! Two meshes, not one: a core blocked sending a job must never be what
//! keeps another core from delivering an answer, so answers travel on their
//! own channels whose receivers never block.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::channels::local_channel::LocalSender;
use keyless_keys::{KeyStore, SharedKey};
use keyless_protocol::{split_frame, ErrorCode, Frame, Message};

use crate::handler::{self, Prepared};
use crate::stats::{AtomicHistogram, BATCH_BOUNDS, LATENCY_BOUNDS};

/// A request handed to another core: one raw frame and where its answer goes.
pub struct Job {
    origin: usize,
    conn: u64,
    frame: Vec<u8>,
    read_at: Instant,
}

/// An answer on its way back: one encoded response frame.
pub struct Answer {
    conn: u64,
    frame: Vec<u8>,
    read_at: Instant,
    opcode: u8,
}

/// Encoded responses for a connection's writer, and how many frames they hold.
pub type Responses = (Vec<u8>, usize);

/// Per-core counters, readable from any thread.
#[derive(Debug)]
pub struct CoreCounters {
    /// Requests by opcode byte.
    pub by_opcode: Vec<AtomicU64>,
    /// Error responses by error code byte.
    pub errors: Vec<AtomicU64>,
    /// Connections open on this core.
    pub connections: AtomicU64,
    /// Requests this core answered (signed or otherwise).
    pub handled: AtomicU64,
    /// Of those, requests that arrived on another core's connection.
    pub handled_for_others: AtomicU64,
    /// Requests this core's connections sent to other cores.
    pub sent_to_others: AtomicU64,
    /// Time to answer a request on this core (decode, key lookup, the
    /// private-key operation), by opcode byte: gokeyless's
    /// `keyless_request_exec_duration_per_opcode`.
    pub exec_duration: Vec<AtomicHistogram>,
    /// Time from reading a request to its answer being ready for the
    /// connection's writer, by opcode byte, wherever it was signed:
    /// gokeyless's `keyless_request_total_duration_per_opcode`.
    pub total_duration: Vec<AtomicHistogram>,
    /// Requests this core signed per read of one connection (its batches).
    pub batch_size: AtomicHistogram,
    /// Connections that failed before serving (TLS handshake refused or
    /// timed out): gokeyless's `keyless_failed_connection`.
    pub failed_connections: AtomicU64,
}

impl Default for CoreCounters {
    fn default() -> Self {
        CoreCounters {
            by_opcode: (0..256).map(|_| AtomicU64::new(0)).collect(),
            errors: (0..256).map(|_| AtomicU64::new(0)).collect(),
            connections: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            handled_for_others: AtomicU64::new(0),
            sent_to_others: AtomicU64::new(0),
            exec_duration: (0..256).map(|_| AtomicHistogram::new(&LATENCY_BOUNDS)).collect(),
            total_duration: (0..256).map(|_| AtomicHistogram::new(&LATENCY_BOUNDS)).collect(),
            batch_size: AtomicHistogram::new(&BATCH_BOUNDS),
            failed_connections: AtomicU64::new(0),
        }
    }
}

/// What all cores share: load and counters, lock-free.
pub struct Shared {
    loads: Vec<AtomicUsize>,
    pub counters: Vec<CoreCounters>,
    jobs: MeshBuilder<Job, Full>,
    answers: MeshBuilder<Answer, Full>,
    /// Bound on jobs queued from one core to another.
    pub channel_capacity: usize,
    draining: std::sync::atomic::AtomicBool,
    /// The key material every core should serve, and its version: a core
    /// compares versions (one atomic load) and rebuilds its own copy when
    /// they differ. The lock is only taken on a reload.
    keys: std::sync::RwLock<Arc<Vec<SharedKey>>>,
    keys_version: AtomicU64,
    /// Seconds each load of the key stores took (start-up and reloads):
    /// gokeyless's `keyless_key_load_duration`.
    pub key_load: AtomicHistogram,
}

impl Shared {
    pub fn new(cores: usize, channel_capacity: usize) -> Arc<Shared> {
        Arc::new(Shared {
            loads: (0..cores).map(|_| AtomicUsize::new(0)).collect(),
            counters: (0..cores).map(|_| CoreCounters::default()).collect(),
            jobs: MeshBuilder::full(cores, channel_capacity),
            answers: MeshBuilder::full(cores, channel_capacity),
            channel_capacity,
            draining: std::sync::atomic::AtomicBool::new(false),
            keys: std::sync::RwLock::new(Arc::new(Vec::new())),
            keys_version: AtomicU64::new(0),
            key_load: AtomicHistogram::new(&LATENCY_BOUNDS),
        })
    }

    /// Serve these keys from now on (start-up and SIGHUP). Cores pick them
    /// up before their next request; requests already being signed finish
    /// with the old keys.
    pub fn publish_keys(&self, keys: Vec<SharedKey>) {
        let mut current = self.keys.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(keys);
        self.keys_version.fetch_add(1, Ordering::SeqCst);
    }

    fn current_keys(&self) -> (u64, Arc<Vec<SharedKey>>) {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        (self.keys_version.load(Ordering::SeqCst), keys.clone())
    }

    /// Ask every core to stop accepting and reading, finish what is in
    /// flight and stop (SIGTERM). Safe to call from any thread.
    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn cores(&self) -> usize {
        self.loads.len()
    }

    /// Requests handled by each core so far.
    pub fn handled_per_core(&self) -> Vec<u64> {
        self.counters
            .iter()
            .map(|c| c.handled.load(Ordering::Relaxed))
            .collect()
    }
}

impl Shared {
    /// Jobs assigned to each core and not yet done (its queue depth).
    pub fn load_per_core(&self) -> Vec<usize> {
        self.loads.iter().map(|l| l.load(Ordering::Relaxed)).collect()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("loads", &self.load_per_core())
            .field("handled", &self.handled_per_core())
            .finish_non_exhaustive()
    }
}

// SAFETY: MeshBuilder is only cloned (it is `Send`, and glommio declares it so)
// and joined on each core; the other fields are atomics.
unsafe impl Sync for Shared {}

/// One core's side of the sharing.
pub struct Core {
    id: usize,
    drain: Rc<crate::drain::Drain>,
    shared: Arc<Shared>,
    store: RefCell<Rc<KeyStore>>,
    keys_version: Cell<u64>,
    jobs: Senders<Job>,
    answers: Senders<Answer>,
    conns: RefCell<HashMap<u64, Rc<LocalSender<Responses>>>>,
    next_conn: Cell<u64>,
}

/// One core's own copy of the keys.
fn build_store(keys: &[SharedKey]) -> Result<KeyStore, String> {
    let mut store = KeyStore::new();
    for k in keys {
        let key = k.instantiate().map_err(|e| format!("{}: {e}", k.origin()))?;
        store.insert(key);
    }
    Ok(store)
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Local,
    Remote(usize),
}

impl Core {
    /// Join the meshes (waits for every core) and start this core's workers.
    pub async fn join(shared: Arc<Shared>) -> Result<Rc<Core>, String> {
        // glommio notices a peer connecting to a shared channel only when its
        // reactor runs; an executor with nothing else to do can sleep through
        // it and the mesh join never completes (seen under load). A ticker
        // keeps the reactor turning until the join is done.
        let joining = Rc::new(Cell::new(true));
        let ticker = {
            let joining = joining.clone();
            glommio::spawn_local(async move {
                while joining.get() {
                    glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                }
            })
        };
        let core = Self::join_meshes(shared).await;
        joining.set(false);
        ticker.await;
        core
    }

    async fn join_meshes(shared: Arc<Shared>) -> Result<Rc<Core>, String> {
        let (keys_version, keys) = shared.current_keys();
        let store = Rc::new(build_store(&keys)?);
        let (jobs, job_rx) = shared
            .jobs
            .clone()
            .join()
            .await
            .map_err(|_| "cannot join the job mesh")?;
        let (answers, answer_rx) = shared
            .answers
            .clone()
            .join()
            .await
            .map_err(|_| "cannot join the answer mesh")?;
        let drain = crate::drain::Drain::watch(shared.clone());
        let core = Rc::new(Core {
            id: jobs.peer_id(),
            drain,
            shared,
            store: RefCell::new(store),
            keys_version: Cell::new(keys_version),
            jobs,
            answers,
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(0),
        });
        core.clone().spawn_workers(job_rx, answer_rx);
        Ok(core)
    }

    fn spawn_workers(self: Rc<Self>, mut job_rx: Receivers<Job>, mut answer_rx: Receivers<Answer>) {
        for (_, rx) in job_rx.streams() {
            let core = self.clone();
            glommio::spawn_local(async move {
                while let Some(job) = rx.recv().await {
                    core.run_job(job).await;
                }
            })
            .detach();
        }
        for (_, rx) in answer_rx.streams() {
            let core = self.clone();
            glommio::spawn_local(async move {
                while let Some(answer) = rx.recv().await {
                    core.deliver(answer);
                }
            })
            .detach();
        }
    }

    /// This core's index in the mesh (and in [`Shared::counters`]).
    pub fn id(&self) -> usize {
        self.id
    }

    /// This core's keys, rebuilt first if new ones were published.
    pub fn store(&self) -> Rc<KeyStore> {
        if self.shared.keys_version.load(Ordering::SeqCst) != self.keys_version.get() {
            let (version, keys) = self.shared.current_keys();
            match build_store(&keys) {
                Ok(store) => {
                    tracing::info!("core {}: now serving {} keys", self.id, store.len());
                    *self.store.borrow_mut() = Rc::new(store);
                }
                Err(e) => tracing::error!("core {}: keeping the old keys: {e}", self.id),
            }
            self.keys_version.set(version);
        }
        self.store.borrow().clone()
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// This core's view of the drain (SIGTERM) signal.
    pub fn drain(&self) -> &crate::drain::Drain {
        &self.drain
    }

    /// Connections open on this core and requests assigned to it: what a
    /// draining core waits for before it stops.
    pub fn busy(&self) -> (u64, usize) {
        (
            self.shared.counters[self.id].connections.load(Ordering::Relaxed),
            self.shared.loads[self.id].load(Ordering::Relaxed),
        )
    }

    /// Register a connection's response channel; answers from other cores
    /// for it are delivered there until [`Core::unregister`].
    pub fn register(&self, tx: Rc<LocalSender<Responses>>) -> u64 {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        self.conns.borrow_mut().insert(id, tx);
        self.shared.counters[self.id]
            .connections
            .fetch_add(1, Ordering::Relaxed);
        id
    }

    pub fn unregister(&self, conn: u64) {
        if self.conns.borrow_mut().remove(&conn).is_some() {
            self.shared.counters[self.id]
                .connections
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Pick the core for the next request and count it against that core.
    /// Ties go to this core: moving work has a cost.
    pub fn assign(&self) -> Target {
        let loads = &self.shared.loads;
        if self.shared.draining() {
            // Other cores may be stopping: keep the work here. (The shared
            // flag, not this core's event: another core may have seen the
            // drain first and be about to stop.)
            loads[self.id].fetch_add(1, Ordering::Relaxed);
            return Target::Local;
        }
        let mut best = self.id;
        let mut best_load = loads[self.id].load(Ordering::Relaxed);
        for (i, l) in loads.iter().enumerate() {
            let l = l.load(Ordering::Relaxed);
            if l < best_load {
                best = i;
                best_load = l;
            }
        }
        loads[best].fetch_add(1, Ordering::SeqCst);
        if best == self.id {
            Target::Local
        } else {
            Target::Remote(best)
        }
    }

    /// Answer one raw frame here, appending the response to `out`. The frame
    /// must have been [`assign`](Core::assign)ed to this core.
    pub fn handle_local(&self, frame: &[u8], out: &mut Vec<u8>) {
        self.handle_now(frame, out);
        self.shared.loads[self.id].fetch_sub(1, Ordering::Relaxed);
    }

    /// Answer one raw frame here without going through [`assign`](Core::assign)
    /// (pings and other requests that need no key).
    pub fn handle_now(&self, frame: &[u8], out: &mut Vec<u8>) {
        if let Some(raw) = split_frame(frame) {
            let counters = &self.shared.counters[self.id];
            let opcode = raw.opcode().map(|op| op.0 as usize);
            if let Some(op) = opcode {
                counters.by_opcode[op].fetch_add(1, Ordering::Relaxed);
            }
            let started = Instant::now();
            let response = handler::handle_raw(&self.store(), raw);
            if let Some(op) = opcode {
                counters.exec_duration[op].observe_duration(started.elapsed());
            }
            if let Some(code) = response.message.error_code() {
                let byte = code.map_or_else(|b| b, |c| c as u8);
                counters.errors[byte as usize].fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = response.encode_into(out) {
                tracing::error!("cannot encode response {}: {e}", response.id);
            }
        }
        self.shared.counters[self.id].handled.fetch_add(1, Ordering::Relaxed);
    }

    /// If `frame` asks a key that performs its operations off the cores (an
    /// HSM key) for an operation, start it and return `true`: the answer
    /// reaches `tx` when a worker is done, or an error when the key's
    /// timeout passes first. Such requests are not shared between cores: the
    /// workers serve all cores already, and this core only waits.
    pub fn try_offload(&self, frame: &[u8], tx: &Rc<LocalSender<Responses>>, read_at: Instant) -> bool {
        let store = self.store();
        if !store.has_offloaded() {
            return false;
        }
        let Some(raw) = split_frame(frame) else {
            return false;
        };
        let Ok(request) = raw.decode() else {
            return false;
        };
        let message = &request.message;
        let offloaded = store
            .find(message.ski.as_ref(), message.cert_digest.as_ref())
            .is_some_and(|key| key.offload().is_some());
        if !offloaded {
            return false;
        }
        let Prepared::Perform { key, op, input } = handler::prepare(&store, message) else {
            return false;
        };
        let Some(offload) = key.offload() else {
            return false;
        };
        let counters = &self.shared.counters[self.id];
        let opcode = message.opcode.map_or(0, |o| o.0 as usize);
        counters.by_opcode[opcode].fetch_add(1, Ordering::Relaxed);
        let submitted = Instant::now();
        let pending = offload.submit(op, input.to_vec());
        let timeout = offload.timeout();
        let ski = key.public().ski;
        let id = raw.header.id;
        let tx = tx.clone();
        let shared = self.shared.clone();
        let core = self.id;
        glommio::spawn_local(async move {
            let result = glommio::timer::timeout(timeout, async { Ok(pending.await) }).await;
            let message = match result {
                Ok(result) => handler::finish(&ski, op, result),
                Err(_) => {
                    tracing::warn!(
                        "{op:?} with key {}: no answer within {timeout:?}; request {id} fails",
                        hex::encode(ski)
                    );
                    Message::error(ErrorCode::Internal)
                }
            };
            let counters = &shared.counters[core];
            if let Some(code) = message.error_code() {
                let byte = code.map_or_else(|b| b, |c| c as u8);
                counters.errors[byte as usize].fetch_add(1, Ordering::Relaxed);
            }
            counters.handled.fetch_add(1, Ordering::Relaxed);
            counters.exec_duration[opcode].observe_duration(submitted.elapsed());
            counters.total_duration[opcode].observe_duration(read_at.elapsed());
            let mut out = Vec::with_capacity(1024);
            if let Err(e) = Frame::new(id, message).encode_into(&mut out) {
                tracing::error!("cannot encode response {id}: {e}");
            }
            let _ = tx.try_send((out, 1));
        })
        .detach();
        true
    }

    /// Send one raw frame to another core. Waits while that core's queue
    /// from us is full: this is the backpressure that stops the reader.
    pub async fn send_remote(&self, target: usize, conn: u64, frame: Vec<u8>, read_at: Instant) {
        let (id, opcode) = split_frame(&frame).map_or((0, 0), |raw| (raw.header.id, raw.opcode().map_or(0, |o| o.0)));
        let job = Job {
            origin: self.id,
            conn,
            frame,
            read_at,
        };
        self.shared.counters[self.id]
            .sent_to_others
            .fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.jobs.send_to(target, job).await {
            // The other core is gone (shutting down): the request fails, visibly.
            tracing::warn!("cannot hand request {id} to core {target}: {e}");
            self.shared.loads[target].fetch_sub(1, Ordering::Relaxed);
            let mut out = Vec::with_capacity(1024);
            let response = Frame::new(id, Message::error(ErrorCode::Internal));
            let _ = response.encode_into(&mut out);
            self.deliver(Answer {
                conn,
                frame: out,
                read_at,
                opcode,
            });
        }
    }

    async fn run_job(&self, job: Job) {
        let mut out = Vec::with_capacity(1024);
        self.handle_local(&job.frame, &mut out);
        self.shared.counters[self.id]
            .handled_for_others
            .fetch_add(1, Ordering::Relaxed);
        let answer = Answer {
            conn: job.conn,
            frame: out,
            read_at: job.read_at,
            opcode: split_frame(&job.frame).and_then(|raw| raw.opcode()).map_or(0, |o| o.0),
        };
        if job.origin == self.id {
            self.deliver(answer);
        } else if self.answers.send_to(job.origin, answer).await.is_err() {
            tracing::warn!("core {} gone; an answer is dropped", job.origin);
        }
        glommio::executor().yield_if_needed().await;
    }

    fn deliver(&self, answer: Answer) {
        self.shared.counters[self.id].total_duration[answer.opcode as usize].observe_duration(answer.read_at.elapsed());
        if let Some(tx) = self.conns.borrow().get(&answer.conn) {
            // Unbounded: the connection's in-flight cap bounds it.
            let _ = tx.try_send((answer.frame, 1));
        }
    }
}
