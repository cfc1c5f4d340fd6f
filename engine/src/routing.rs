//! Which core signs a request: the least loaded one, counted by jobs
//! assigned and not yet done. Sans-I/O: atomics only, shared by all cores.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Local,
    Remote(usize),
}

/// Each core's queue depth, readable and writable from every core.
#[derive(Debug)]
pub struct Loads(Vec<AtomicUsize>);

impl Loads {
    pub fn new(cores: usize) -> Loads {
        Loads((0..cores).map(|_| AtomicUsize::new(0)).collect())
    }

    pub fn cores(&self) -> usize {
        self.0.len()
    }

    /// Pick the core for a request read on `here` and count it against that
    /// core. Ties go to `here`: moving work has a cost. While `keep_local`
    /// (draining: other cores may be stopping) every request stays here.
    pub fn assign(&self, here: usize, keep_local: bool) -> Target {
        if keep_local {
            self.0[here].fetch_add(1, Ordering::Relaxed);
            return Target::Local;
        }
        let mut best = here;
        let mut best_load = self.0[here].load(Ordering::Relaxed);
        for (i, l) in self.0.iter().enumerate() {
            let l = l.load(Ordering::Relaxed);
            if l < best_load {
                best = i;
                best_load = l;
            }
        }
        self.0[best].fetch_add(1, Ordering::SeqCst);
        if best == here {
            Target::Local
        } else {
            Target::Remote(best)
        }
    }

    /// A request assigned to `core` is done (answered or failed).
    pub fn done(&self, core: usize) {
        self.0[core].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self, core: usize) -> usize {
        self.0[core].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Vec<usize> {
        self.0.iter().map(|l| l.load(Ordering::Relaxed)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_core_signs_and_ties_stay_here() {
        let loads = Loads::new(3);
        assert_eq!(loads.assign(1, false), Target::Local, "all idle: a tie stays here");
        assert_eq!(loads.assign(1, false), Target::Remote(0), "core 1 now has one queued");
        assert_eq!(loads.assign(1, false), Target::Remote(2));
        assert_eq!(loads.snapshot(), vec![1, 1, 1]);
        loads.done(2);
        assert_eq!(loads.assign(0, false), Target::Remote(2));
        assert_eq!(
            loads.assign(0, false),
            Target::Local,
            "a tie with the lowest stays here"
        );
        assert_eq!(loads.snapshot(), vec![2, 1, 1]);
    }

    #[test]
    fn draining_keeps_every_request_on_its_core() {
        let loads = Loads::new(2);
        for _ in 0..3 {
            assert_eq!(loads.assign(1, true), Target::Local);
        }
        assert_eq!(loads.snapshot(), vec![0, 3]);
        for _ in 0..3 {
            loads.done(1);
        }
        assert_eq!(loads.get(1), 0);
    }
}
