//! A value published from one thread and read on every core: cores compare
//! a version number (one atomic load per use) and take the lock only when
//! it moved. Keys, the key server's TLS configuration and the edge's
//! certificates are all published this way (start-up, then SIGHUP).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The current value and how many times it was replaced.
#[derive(Debug)]
pub struct Versioned<T> {
    value: RwLock<Arc<T>>,
    version: AtomicU64,
}

impl<T> Versioned<T> {
    pub fn new(value: Arc<T>) -> Versioned<T> {
        Versioned {
            value: RwLock::new(value),
            version: AtomicU64::new(0),
        }
    }

    /// Serve `value` from now on; readers pick it up at their next use.
    pub fn publish(&self, value: Arc<T>) {
        // The write lock orders the swap before the version bump: a reader
        // that sees the new version reads the new value.
        let mut current = self.value.write().unwrap_or_else(|e| e.into_inner());
        *current = value;
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// The value and its version, read together.
    pub fn load(&self) -> (u64, Arc<T>) {
        let value = self.value.read().unwrap_or_else(|e| e.into_inner());
        (self.version(), value.clone())
    }
}

/// One thread's own copy of a [`Versioned`] value (often something built
/// from it, such as a core's key store or a TLS acceptor).
#[derive(Debug)]
pub struct Cached<L> {
    version: Cell<u64>,
    local: RefCell<L>,
}

impl<L: Clone> Cached<L> {
    /// A copy of what `source` holds now.
    pub fn new<T>(source: &Versioned<T>, make: impl FnOnce(&Arc<T>) -> L) -> Cached<L> {
        let (version, value) = source.load();
        Cached {
            version: Cell::new(version),
            local: RefCell::new(make(&value)),
        }
    }

    /// The local copy, rebuilt first if `source` was republished. When
    /// `make` gives `None` (the new value cannot be used here) the old copy
    /// stays, and the new version is not tried again.
    pub fn get<T>(&self, source: &Versioned<T>, make: impl FnOnce(&Arc<T>) -> Option<L>) -> L {
        if source.version() != self.version.get() {
            let (version, value) = source.load();
            if let Some(local) = make(&value) {
                *self.local.borrow_mut() = local;
            }
            self.version.set(version);
        }
        self.local.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_follows_publishes_and_keeps_the_old_value_when_told_to() {
        let source = Versioned::new(Arc::new(1));
        let cached = Cached::new(&source, |v| **v * 10);
        assert_eq!(cached.get(&source, |_| unreachable!("nothing was published")), 10);
        source.publish(Arc::new(2));
        assert_eq!(cached.get(&source, |v| Some(**v * 10)), 20);
        source.publish(Arc::new(3));
        assert_eq!(cached.get(&source, |_| None), 20, "a refused value keeps the old copy");
        assert_eq!(cached.get(&source, |_| unreachable!("not retried")), 20);
        assert_eq!(source.load(), (2, Arc::new(3)));
    }
}
