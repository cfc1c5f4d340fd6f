//! One configured cloud key: the provider's client, a bound on calls in
//! flight, the per-request deadline with retries inside it, failures logged
//! once per cause, and the figures metrics read.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use keyless_keys::stats::{AtomicHistogram, HistogramSnapshot, LATENCY_BOUNDS};
use keyless_keys::{CryptoError, LoadedKey, Offload, Operation, PendingOperation, PrivateKey, PublicKeyInfo};
use tokio::sync::Semaphore;

use crate::failure::{Cause, Failure};
use crate::runtime::runtime;

/// A provider's signing call, for one key version.
pub(crate) trait Signer: Send + Sync + 'static {
    /// Sign `digest`, already hashed as `op` says, once (no retries).
    fn sign(&self, op: Operation, digest: Vec<u8>) -> Call<'_, Vec<u8>>;
}

pub(crate) type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send + 'a>>;

/// What a provider reports about a key version at load.
pub(crate) struct Opened {
    pub signer: Arc<dyn Signer>,
    pub spki: Vec<u8>,
    /// What the key version was created for; anything else is refused
    /// without a call.
    pub operations: Vec<Operation>,
}

/// How calls to one store are bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// A request that has no signature after this long fails (queueing,
    /// every attempt and the pauses between them included).
    pub timeout: Duration,
    /// Calls in flight per store; more wait their turn (within `timeout`).
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(3),
            concurrency: 64,
        }
    }
}

/// First pause after a throttled or failed attempt; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(25);
const MAX_PAUSE: Duration = Duration::from_millis(800);
/// A cause already logged is logged again at most this often (with a count).
const RELOG_AFTER: Duration = Duration::from_secs(60);

/// Figures for one store, read at scrape time.
#[derive(Debug)]
pub struct StoreStats {
    pub store: String,
    pub in_flight: AtomicUsize,
    pub waiting: AtomicUsize,
    pub signed: AtomicU64,
    /// Attempts that failed, by [`Cause::ALL`] index (a retried attempt counts too).
    pub errors: [AtomicU64; Cause::ALL.len()],
    /// Time from submit to answer, successful or not.
    pub latency: AtomicHistogram,
}

/// A snapshot of one store, for metrics.
#[derive(Debug, Clone)]
pub struct StoreSnapshot {
    pub store: String,
    pub in_flight: usize,
    pub waiting: usize,
    pub signed: u64,
    pub errors: Vec<(Cause, u64)>,
    pub latency: HistogramSnapshot,
}

fn registry() -> &'static Mutex<Vec<Weak<StoreStats>>> {
    static STORES: OnceLock<Mutex<Vec<Weak<StoreStats>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// Every store still loaded (a reload replaces them; the old ones leave
/// once their last request is answered).
pub fn snapshots() -> Vec<StoreSnapshot> {
    let mut stores = registry().lock().unwrap_or_else(|e| e.into_inner());
    stores.retain(|s| s.strong_count() > 0);
    stores
        .iter()
        .filter_map(Weak::upgrade)
        .map(|s| StoreSnapshot {
            store: s.store.clone(),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            waiting: s.waiting.load(Ordering::Relaxed),
            signed: s.signed.load(Ordering::Relaxed),
            errors: Cause::ALL
                .iter()
                .zip(&s.errors)
                .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
                .collect(),
            latency: s.latency.snapshot(),
        })
        .collect()
}

/// Logs each cause of failure once (then at most once a minute, with how
/// many were not logged), and says when calls succeed again.
#[derive(Default)]
struct FailureLog {
    seen: Mutex<HashMap<Cause, (Instant, u64)>>,
}

impl FailureLog {
    fn failed(&self, store: &str, failure: &Failure) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match seen.get_mut(&failure.cause) {
            Some((last, quiet)) if now.duration_since(*last) < RELOG_AFTER => *quiet += 1,
            Some((last, quiet)) => {
                tracing::warn!("{store}: {failure} ({} more since the last report)", *quiet);
                *last = now;
                *quiet = 0;
            }
            None => {
                tracing::warn!("{store}: {failure}");
                seen.insert(failure.cause, (now, 0));
            }
        }
    }

    fn succeeded(&self, store: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.is_empty() {
            let causes: Vec<&str> = seen.keys().map(|c| c.label()).collect();
            tracing::info!("{store}: signing again (after {})", causes.join(", "));
            seen.clear();
        }
    }
}

/// One `uri:` entry, shared by every core.
pub(crate) struct Store {
    name: String,
    signer: Arc<dyn Signer>,
    limit: Semaphore,
    timeout: Duration,
    stats: Arc<StoreStats>,
    log: FailureLog,
}

impl Store {
    pub(crate) fn new(name: String, signer: Arc<dyn Signer>, options: &Options) -> Arc<Store> {
        let stats = Arc::new(StoreStats {
            store: name.clone(),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            signed: AtomicU64::new(0),
            errors: Default::default(),
            latency: AtomicHistogram::new(&LATENCY_BOUNDS),
        });
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&stats));
        Arc::new(Store {
            name,
            signer,
            limit: Semaphore::new(options.concurrency.max(1)),
            timeout: options.timeout,
            stats,
            log: FailureLog::default(),
        })
    }

    /// Sign within the deadline: wait for a slot, call, and after a
    /// transient failure pause (doubling) and call again while time is left.
    async fn sign(&self, op: Operation, digest: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.timeout);
        let result = self.sign_by(deadline, op, digest).await;
        self.stats.latency.observe_duration(started.elapsed());
        // Each failed attempt was counted and logged (once per cause) as it came.
        if result.is_ok() {
            self.stats.signed.fetch_add(1, Ordering::Relaxed);
            self.log.succeeded(&self.name);
        }
        result
    }

    async fn sign_by(
        &self,
        deadline: tokio::time::Instant,
        op: Operation,
        digest: Vec<u8>,
    ) -> Result<Vec<u8>, Failure> {
        let timed_out = || Failure::new(Cause::Timeout, format!("no signature within {:?}", self.timeout));
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = tokio::time::timeout_at(deadline, self.limit.acquire()).await;
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        let Ok(Ok(_permit)) = permit else {
            return Err(self.failed(timed_out()));
        };
        let _flight = InFlight::enter(&self.stats.in_flight);
        let mut pause = FIRST_PAUSE;
        loop {
            let failure = match tokio::time::timeout_at(deadline, self.signer.sign(op, digest.clone())).await {
                Ok(Ok(signature)) => return Ok(signature),
                Ok(Err(failure)) => failure,
                Err(_) => return Err(self.failed(timed_out())),
            };
            let failure = self.failed(failure);
            // Jitter (half to all of the pause): requests throttled together
            // must not all retry together.
            let wait = pause.mul_f64(0.5 + fastrand::f64() / 2.0);
            if !failure.cause.transient() || tokio::time::Instant::now() + wait >= deadline {
                return Err(failure);
            }
            tokio::time::sleep(wait).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Count and log (once per cause) a failed attempt.
    fn failed(&self, failure: Failure) -> Failure {
        let index = Cause::ALL
            .iter()
            .position(|c| *c == failure.cause)
            .unwrap_or(Cause::ALL.len() - 1);
        self.stats.errors[index].fetch_add(1, Ordering::Relaxed);
        self.log.failed(&self.name, &failure);
        failure
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(n: &'a AtomicUsize) -> InFlight<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A cloud key. Every core's instance shares the store.
#[derive(Clone)]
pub(crate) struct CloudKey(Arc<KeyInner>);

struct KeyInner {
    public: PublicKeyInfo,
    operations: Vec<Operation>,
    store: Arc<Store>,
}

impl CloudKey {
    pub(crate) fn new(public: PublicKeyInfo, operations: Vec<Operation>, store: Arc<Store>) -> CloudKey {
        CloudKey(Arc::new(KeyInner {
            public,
            operations,
            store,
        }))
    }
}

impl LoadedKey for CloudKey {
    fn public(&self) -> &PublicKeyInfo {
        &self.0.public
    }

    fn origin(&self) -> String {
        self.0.store.name.clone()
    }

    fn instantiate(&self) -> Result<Box<dyn PrivateKey>, CryptoError> {
        Ok(Box::new(self.clone()))
    }
}

impl PrivateKey for CloudKey {
    fn public(&self) -> &PublicKeyInfo {
        &self.0.public
    }

    fn offload(&self) -> Option<&dyn Offload> {
        Some(self)
    }
}

impl Offload for CloudKey {
    fn submit(&self, op: Operation, input: Vec<u8>) -> PendingOperation {
        if let Err(e) = op.check(self.0.public.algorithm, &input) {
            return Box::pin(std::future::ready(Err(e)));
        }
        if !self.supports(op) {
            return Box::pin(std::future::ready(Err(CryptoError(
                "the cloud key version was not created for this operation",
            ))));
        }
        let Ok(runtime) = runtime() else {
            return Box::pin(std::future::ready(Err(CryptoError(
                "the cloud key store threads are not running",
            ))));
        };
        let (reply, answer) = futures_channel::oneshot::channel();
        let store = self.0.store.clone();
        runtime.spawn(async move {
            let result = store.sign(op, input).await;
            let _ = reply.send(result.map_err(|f| CryptoError(f.cause.describe())));
        });
        Box::pin(async move {
            answer
                .await
                .map_err(|_| CryptoError("the cloud key store dropped the request"))?
        })
    }

    /// A little past the store's own deadline, so the store reports its
    /// timeout (once) before the core gives up on the request.
    fn timeout(&self) -> Duration {
        self.0.store.timeout + Duration::from_millis(250)
    }

    fn supports(&self, op: Operation) -> bool {
        self.0.operations.contains(&op)
    }

    fn reports_failures(&self) -> bool {
        true
    }
}
