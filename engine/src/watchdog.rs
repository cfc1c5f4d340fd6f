//! Stall detection that never runs on the stalled core.
//!
//! Every core stamps a heartbeat every 20 ms from a task of its own; a
//! watchdog thread logs a core whose heartbeat is older than the threshold,
//! and logs again when it runs again. That catches a task that does not
//! yield, a blocking call, and a core that sleeps through its wake-ups
//! alike. A core found stalled is also kicked: a task of its own is woken
//! from the watchdog thread, which wakes a parked executor through its
//! eventfd (glommio can sleep through its own timers: Known issues).
//! (glommio's own detector resolves a backtrace on the stalled core
//! itself, reading the binary's debug information: in a debug build that
//! took up to seconds and 300 MB the first time, on the core.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often each core stamps its heartbeat.
const BEAT: Duration = Duration::from_millis(20);
/// How often the watchdog looks.
const LOOK: Duration = Duration::from_millis(25);

/// A heartbeat value: the core's task has ended.
const FINISHED: u64 = u64::MAX;

/// The cores' heartbeats, in milliseconds since `epoch` (0: not started).
pub struct Heartbeats {
    epoch: Instant,
    beats: Vec<AtomicU64>,
    stop: AtomicBool,
    /// A waker of a task on each core, for the watchdog to wake it.
    kicks: Vec<std::sync::Mutex<Option<std::task::Waker>>>,
}

impl Heartbeats {
    pub fn new(cores: usize) -> Arc<Heartbeats> {
        Arc::new(Heartbeats {
            epoch: Instant::now(),
            beats: (0..cores).map(|_| AtomicU64::new(0)).collect(),
            stop: AtomicBool::new(false),
            kicks: (0..cores).map(|_| std::sync::Mutex::new(None)).collect(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Stamp `core`'s heartbeat until the watchdog stops (run on that core).
    pub async fn beat(self: Arc<Self>, core: usize) {
        while !self.stop.load(Ordering::Relaxed) && self.beats[core].load(Ordering::Relaxed) != FINISHED {
            self.beats[core].store(self.now_ms(), Ordering::Relaxed);
            glommio::timer::sleep(BEAT).await;
        }
    }

    /// Wait to be kicked by the watchdog, forever (run on `core`): each
    /// kick wakes the core's executor from another thread.
    pub async fn kickable(self: Arc<Self>, core: usize) {
        std::future::poll_fn(|cx| {
            *self.kicks[core].lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            std::task::Poll::<()>::Pending
        })
        .await
    }

    fn kick(&self, core: usize) {
        let waker = self.kicks[core].lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// `core`'s task has ended: no more heartbeats are expected from it.
    pub fn finished(&self, core: usize) {
        self.beats[core].store(FINISHED, Ordering::Relaxed);
        // No kick may reach a core whose executor is going away.
        drop(self.kicks[core].lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// Watch the heartbeats on a thread of its own until [`Heartbeats::stop`].
    pub fn watch(self: &Arc<Self>, threshold: Duration) -> std::io::Result<std::thread::JoinHandle<()>> {
        let beats = self.clone();
        let threshold_ms = threshold.as_millis() as u64;
        std::thread::Builder::new()
            .name("keyless-watchdog".into())
            .spawn(move || {
                // When each core's current stall began (0: not stalled).
                let mut stalled_since = vec![0u64; beats.beats.len()];
                while !beats.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(LOOK);
                    let now = beats.now_ms();
                    for (core, beat) in beats.beats.iter().enumerate() {
                        let last = beat.load(Ordering::Relaxed);
                        if last == 0 || last == FINISHED {
                            continue;
                        }
                        let age = now.saturating_sub(last);
                        if age > threshold_ms {
                            // A parked core that missed its wake-up runs
                            // again; a busy one is not disturbed by this.
                            beats.kick(core);
                        }
                        if age > threshold_ms && stalled_since[core] == 0 {
                            stalled_since[core] = last;
                            tracing::warn!(
                                "core {core} has run nothing for {age} ms (a task that does not yield, \
                                 a blocking call, or a missed wake-up)"
                            );
                        } else if age <= threshold_ms && stalled_since[core] != 0 {
                            tracing::warn!(
                                "core {core} runs again after a stall of about {} ms",
                                last.saturating_sub(stalled_since[core])
                            );
                            stalled_since[core] = 0;
                        }
                    }
                }
            })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
