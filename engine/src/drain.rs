//! Graceful stop: a process-wide flag (set from a signal thread) turned into
//! a per-core event that tasks can await without timers or locks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

/// How often a core looks at the process-wide flag.
const POLL: Duration = Duration::from_millis(20);

/// The process-wide request to drain (SIGTERM), set from any thread.
#[derive(Debug, Default)]
pub struct DrainSignal(AtomicBool);

impl DrainSignal {
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn started(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One core's drain event.
#[derive(Default)]
pub struct Drain {
    set: Cell<bool>,
    waiters: RefCell<HashMap<u64, Waker>>,
    next_key: Cell<u64>,
}

impl Drain {
    /// A drain event for this core, set when `signal` is started.
    pub fn watch(signal: Arc<DrainSignal>) -> Rc<Drain> {
        let drain = Rc::new(Drain::default());
        let event = drain.clone();
        glommio::spawn_local(async move {
            while !signal.started() {
                glommio::timer::sleep(POLL).await;
            }
            event.trigger();
        })
        .detach();
        drain
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    fn trigger(&self) {
        self.set.set(true);
        let waiters: Vec<Waker> = self.waiters.borrow_mut().drain().map(|(_, w)| w).collect();
        for w in waiters {
            w.wake();
        }
    }

    /// Resolves once draining has started. Dropping it unregisters it, so
    /// connections that come and go leave nothing behind.
    pub fn wait(&self) -> DrainWait<'_> {
        DrainWait { drain: self, key: None }
    }
}

/// The future of [`Drain::wait`].
pub struct DrainWait<'a> {
    drain: &'a Drain,
    key: Option<u64>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.set.get() {
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(k) => k,
            None => {
                let k = self.drain.next_key.get();
                self.drain.next_key.set(k + 1);
                self.key = Some(k);
                k
            }
        };
        self.drain.waiters.borrow_mut().insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.drain.waiters.borrow_mut().remove(&k);
        }
    }
}
