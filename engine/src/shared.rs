//! What all cores share: load, counters, the published keys and the drain
//! flag — atomics and locks only, so `Shared` is `Sync` by its fields.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use keyless_keys::multibuffer::LaneMath;
use keyless_keys::SharedKey;

use crate::counters::CoreCounters;
use crate::drain::DrainSignal;
use crate::links::{self, Unconnected};
use crate::routing::Loads;
use crate::stats::{AtomicHistogram, LATENCY_BOUNDS};
use crate::versioned::Versioned;

pub struct Shared {
    pub(crate) loads: Loads,
    pub counters: Vec<CoreCounters>,
    /// The key material every core should serve; each core builds its own
    /// copy from it.
    pub(crate) keys: Versioned<Vec<SharedKey>>,
    drain: Arc<DrainSignal>,
    /// Each core's channel ends until that core takes them.
    links: Mutex<Vec<Option<Unconnected>>>,
    /// Bound on jobs queued from one core to another.
    pub channel_capacity: usize,
    /// Seconds each load of the key stores took (start-up and reloads):
    /// `keyless_key_store_load_duration_seconds` (gokeyless's
    /// `keyless_key_load_duration` is per request: `CoreCounters::key_lookup`).
    pub key_load: AtomicHistogram,
    /// What computes multi-buffer lanes, when that path is on (set once,
    /// before the cores start).
    lanes: OnceLock<Arc<dyn LaneMath>>,
    /// How long parked requests may gather across connections at most.
    batch_delay: OnceLock<Duration>,
}

// Cores share `Shared` through an `Arc`: prove it may be, at compile time.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Shared>();
};

impl Shared {
    /// Client connections open now, over every core.
    pub fn open_connections(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.connections.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    pub fn new(cores: usize, channel_capacity: usize) -> Arc<Shared> {
        let cores = cores.max(1);
        Arc::new(Shared {
            loads: Loads::new(cores),
            counters: (0..cores).map(|_| CoreCounters::default()).collect(),
            keys: Versioned::new(Arc::new(Vec::new())),
            drain: Arc::default(),
            links: Mutex::new(links::build(cores, channel_capacity).into_iter().map(Some).collect()),
            channel_capacity,
            key_load: AtomicHistogram::new(&LATENCY_BOUNDS),
            lanes: OnceLock::new(),
            batch_delay: OnceLock::new(),
        })
    }

    /// Sign with multi-buffer lanes computed by `math`. Call before the
    /// cores start; a second call is ignored.
    pub fn use_lanes(&self, math: Arc<dyn LaneMath>, batch_delay: Duration) {
        let _ = self.lanes.set(math);
        let _ = self.batch_delay.set(batch_delay);
    }

    /// How long requests parked for a multi-buffer call across connections
    /// may gather while more keep arriving ([`crate::batch`]).
    pub fn batch_delay(&self) -> Duration {
        self.batch_delay.get().copied().unwrap_or_default()
    }

    /// The multi-buffer path, if on.
    pub fn lanes(&self) -> Option<&Arc<dyn LaneMath>> {
        self.lanes.get()
    }

    /// Serve these keys from now on (start-up and SIGHUP). Cores pick them
    /// up before their next request; requests already being signed finish
    /// with the old keys.
    pub fn publish_keys(&self, keys: Vec<SharedKey>) {
        self.keys.publish(Arc::new(keys));
    }

    /// How many times keys were published (start-up is 0): a key server
    /// that dials out tells its edges, so they re-learn its keys.
    pub fn key_version(&self) -> u64 {
        self.keys.version()
    }

    /// How many keys are published now.
    pub fn key_count(&self) -> usize {
        self.keys.load().1.len()
    }

    /// Core `core`'s channel ends; `None` once taken.
    pub(crate) fn take_links(&self, core: usize) -> Option<Unconnected> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.get_mut(core).and_then(Option::take)
    }

    /// Ask every core to stop accepting and reading, finish what is in
    /// flight and stop (SIGTERM). Safe to call from any thread.
    pub fn start_drain(&self) {
        self.drain.start();
    }

    pub fn draining(&self) -> bool {
        self.drain.started()
    }

    pub fn drain_signal(&self) -> Arc<DrainSignal> {
        self.drain.clone()
    }

    pub fn cores(&self) -> usize {
        self.loads.cores()
    }

    /// Requests handled by each core so far.
    pub fn handled_per_core(&self) -> Vec<u64> {
        self.counters
            .iter()
            .map(|c| c.handled.load(Ordering::Relaxed))
            .collect()
    }

    /// Jobs assigned to each core and not yet done (its queue depth).
    pub fn load_per_core(&self) -> Vec<usize> {
        self.loads.snapshot()
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
