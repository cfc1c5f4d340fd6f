//! What a core's accept loop does when it cannot take a connection: out of
//! file descriptors (EMFILE, ENFILE, ENOBUFS), or at its connection cap.
//!
//! - Out of descriptors: stop accepting for a while (100 ms, doubling to
//!   1 s while it lasts) instead of retrying at once; the connections the
//!   core holds go on being served, and accepting resumes by itself.
//! - At the cap: each new connection is closed at once (its client learns
//!   at once, rather than waiting in the backlog).
//! - Either way, one log line when an episode starts and one when it ends,
//!   with how many were turned away, never one per connection; every one
//!   is counted for the metrics.
//!
//! No I/O here: the accept loop sleeps as long as it is told.

use std::time::{Duration, Instant};

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// accept() failed (out of descriptors, or another resource).
    AcceptFailed,
    /// The core already holds its maximum of connections.
    AtCapacity,
}

/// One accept loop's state (one per listener and core).
#[derive(Debug)]
pub struct Admission {
    /// What this loop serves, for the log (`core 0`, `key_server_listen`).
    name: String,
    episode: Option<Episode>,
    pause: Duration,
}

#[derive(Debug)]
struct Episode {
    why: Refusal,
    since: Instant,
    last: Instant,
    refused: u64,
}

impl Admission {
    pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
    pub const MAX_PAUSE: Duration = Duration::from_secs(1);
    /// An episode ends with a connection taken this long after the last
    /// refusal: accepts that succeed between failures (descriptors freed
    /// one at a time) do not end it.
    pub const CALM: Duration = Duration::from_secs(1);

    pub fn new(name: impl Into<String>) -> Admission {
        Admission {
            name: name.into(),
            episode: None,
            pause: Self::FIRST_PAUSE,
        }
    }

    /// accept() failed with `error`: how long to stop accepting.
    pub fn accept_failed(&mut self, error: &dyn std::fmt::Display) -> Duration {
        self.refused(Refusal::AcceptFailed, error);
        let pause = self.pause;
        self.pause = (self.pause * 2).min(Self::MAX_PAUSE);
        pause
    }

    /// A connection arrived while `open` connections are held and the cap
    /// is `max`: whether to close it at once.
    pub fn over_capacity(&mut self, open: usize, max: usize) -> bool {
        if open < max {
            return false;
        }
        self.refused(
            Refusal::AtCapacity,
            &format_args!("{open} connections open (max_connections_per_core); closing new ones"),
        );
        true
    }

    /// A connection was taken: an episode, if one was going and has been
    /// calm for [`CALM`](Self::CALM), is over.
    pub fn accepted(&mut self) {
        self.accepted_at(Instant::now());
    }

    fn accepted_at(&mut self, now: Instant) {
        if self
            .episode
            .as_ref()
            .is_some_and(|e| now.duration_since(e.last) < Self::CALM)
        {
            return;
        }
        self.pause = Self::FIRST_PAUSE;
        if let Some(episode) = self.episode.take() {
            tracing::warn!(
                "{}: accepting again after {:.1} s; {} {} turned away",
                self.name,
                episode.since.elapsed().as_secs_f64(),
                episode.refused,
                match episode.why {
                    Refusal::AcceptFailed => "accepts failed,",
                    Refusal::AtCapacity => "connections over the cap",
                }
            );
        }
    }

    /// Connections turned away in the episode going on now.
    pub fn refused_now(&self) -> u64 {
        self.episode.as_ref().map_or(0, |e| e.refused)
    }

    fn refused(&mut self, why: Refusal, detail: &dyn std::fmt::Display) {
        match &mut self.episode {
            Some(episode) if episode.why == why => {
                episode.refused += 1;
                episode.last = Instant::now();
            }
            _ => {
                tracing::warn!("{}: {detail} (said once, until accepting resumes)", self.name);
                self.episode = Some(Episode {
                    why,
                    since: Instant::now(),
                    last: Instant::now(),
                    refused: 1,
                });
            }
        }
    }
}

/// One log line a second at most, saying how many were left out.
#[derive(Debug, Default)]
pub struct LogLimit {
    last: std::cell::Cell<Option<std::time::Instant>>,
    skipped: std::cell::Cell<u64>,
}

impl LogLimit {
    /// `Some(suffix)` when a line may be logged now (the suffix says how
    /// many were left out since the last); `None` when it is left out.
    pub fn allow(&self) -> Option<String> {
        let now = std::time::Instant::now();
        if self.last.get().is_some_and(|t| now - t < Duration::from_secs(1)) {
            self.skipped.set(self.skipped.get() + 1);
            return None;
        }
        self.last.set(Some(now));
        let skipped = self.skipped.replace(0);
        Some(match skipped {
            0 => String::new(),
            n => format!(" (and {n} more like it since the last line)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_pause_longer_while_they_last_and_reset_once_one_succeeds() {
        let mut a = Admission::new("test");
        let pauses: Vec<u64> = (0..6).map(|_| a.accept_failed(&"EMFILE").as_millis() as u64).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(a.refused_now(), 6, "one episode");
        a.accepted();
        assert_eq!(a.refused_now(), 6, "one accept between failures does not end it");
        a.accepted_at(Instant::now() + Admission::CALM);
        assert_eq!(a.refused_now(), 0, "a calm second does");
        assert_eq!(a.accept_failed(&"EMFILE"), Duration::from_millis(100));
    }

    #[test]
    fn the_cap_refuses_from_its_limit_on_in_one_episode() {
        let mut a = Admission::new("test");
        assert!(!a.over_capacity(2, 3));
        assert!(a.over_capacity(3, 3));
        assert!(a.over_capacity(4, 3));
        assert_eq!(a.refused_now(), 2);
        a.accepted_at(Instant::now() + Admission::CALM);
        assert_eq!(a.refused_now(), 0);
    }
}
