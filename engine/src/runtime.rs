//! Thread-per-core: one pinned glommio executor per core.

use std::future::Future;
use std::sync::Arc;

use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};
use keyless_keys::multibuffer::LaneMath;

/// How to lay out the executors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Number of cores (executors). Each gets its own thread, pinned.
    pub cores: usize,
    /// io_uring registered buffer memory per executor. Locked memory counts
    /// against `ulimit -l` (often 8 MiB), so keep it small: 1 MiB each.
    pub io_memory: usize,
    /// Submission ring depth per executor.
    pub ring_depth: usize,
    /// Thread name prefix.
    pub name: String,
    /// How long a task may run before `yield_if_needed` yields: bounds how
    /// long a ping waits behind a batch of signatures.
    pub preempt_timer: std::time::Duration,
    /// Log any core that runs nothing (not even a timer) for
    /// `stall_threshold`, from a watchdog thread ([`crate::watchdog`]).
    pub detect_stalls: bool,
    pub stall_threshold: std::time::Duration,
    /// Spin this long for new work before sleeping in the kernel: trades
    /// idle CPU for the wake-up latency of a sleeping core (zero: never spin).
    pub spin_before_park: std::time::Duration,
    /// Requests one core may have queued for another core at most; at the
    /// bound the sending core stops reading its sockets.
    pub core_queue: usize,
    /// Multi-buffer signing, when on (`multibuffer`).
    pub lanes: Lanes,
    /// How long requests parked for a multi-buffer call across connections
    /// may gather while more keep arriving (`batch_delay_us`).
    pub batch_delay: std::time::Duration,
}

/// What computes the cores' multi-buffer lanes (`None`: AWS-LC single
/// signatures only).
#[derive(Clone, Default)]
pub struct Lanes(pub Option<Arc<dyn LaneMath>>);

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(math) => f.write_str(&math.describe()),
            None => f.write_str("single signatures"),
        }
    }
}

impl PartialEq for Lanes {
    fn eq(&self, other: &Lanes) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for Lanes {}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cores: available_cores(),
            io_memory: 1 << 20,
            ring_depth: 128,
            name: "keyless-core".into(),
            preempt_timer: std::time::Duration::from_millis(2),
            detect_stalls: true,
            stall_threshold: std::time::Duration::from_millis(100),
            spin_before_park: std::time::Duration::ZERO,
            core_queue: 1024,
            lanes: Lanes::default(),
            batch_delay: std::time::Duration::from_micros(200),
        }
    }
}

/// Cores this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Errors starting or running the executors.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start executors: {0}")]
    Start(String),
    #[error("executor {core} failed: {reason}")]
    Core { core: usize, reason: String },
}

/// Run `task(core_index)` on every core and wait for all of them. A core
/// whose task returns an error is reported; the first error is returned.
pub fn run_per_core<F, Fut, E>(config: &RuntimeConfig, task: F) -> Result<(), RuntimeError>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), E>> + 'static,
    E: std::fmt::Display + 'static,
{
    let cores = config.cores.max(1);
    // Pin only when we have at least as many CPUs as executors.
    let placement = match CpuSet::online() {
        Ok(set) if set.len() >= cores => PoolPlacement::MaxSpread(cores, Some(set)),
        _ => PoolPlacement::Unbound(cores),
    };
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let builder = LocalExecutorPoolBuilder::new(placement)
        .io_memory(config.io_memory)
        .ring_depth(config.ring_depth)
        .preempt_timer(config.preempt_timer)
        .spin_before_park(config.spin_before_park)
        // glommio numbers its threads from 1 in its own order; each core
        // renames its thread below, so this prefix is left on glommio's
        // helper threads only.
        .name(&format!("{}-io", config.name));
    let beats = crate::watchdog::Heartbeats::new(cores);
    let name = config.name.clone();
    let handles = builder
        .on_all_shards({
            let beats = beats.clone();
            let name = name.clone();
            let detect_stalls = config.detect_stalls;
            move || {
                let core = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // `keyless-core-0`: the index metrics label the core with
                // (`core="0"`), so a profile's threads and the metrics agree.
                let _ = rustix::thread::set_name(&std::ffi::CString::new(format!("{name}-{core}")).unwrap_or_default());
                let task = task.clone();
                let beats = beats.clone();
                async move {
                    if detect_stalls {
                        glommio::spawn_local(beats.clone().beat(core)).detach();
                        glommio::spawn_local(beats.clone().kickable(core)).detach();
                    }
                    let result = task(core).await.map_err(|e| (core, e.to_string()));
                    beats.finished(core);
                    result
                }
            }
        })
        .map_err(|e| RuntimeError::Start(e.to_string()))?;
    // Started once the cores run, so nothing is left behind if they cannot
    // start; a watchdog that cannot start only costs the stall log.
    let watchdog = match config.detect_stalls.then(|| beats.watch(config.stall_threshold)) {
        Some(Ok(handle)) => Some(handle),
        Some(Err(e)) => {
            tracing::warn!("cannot start the stall watchdog: {e}");
            None
        }
        None => None,
    };
    let mut first_error = None;
    for result in handles.join_all() {
        let err = match result {
            Ok(Ok(())) => continue,
            Ok(Err((core, reason))) => RuntimeError::Core { core, reason },
            Err(e) => RuntimeError::Start(e.to_string()),
        };
        tracing::error!("{err}");
        first_error.get_or_insert(err);
    }
    beats.stop();
    if let Some(watchdog) = watchdog {
        let _ = watchdog.join();
    }
    first_error.map_or(Ok(()), Err)
}
