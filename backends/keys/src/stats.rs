//! Lock-free histograms for the hot path: fixed buckets of atomics that a
//! core bumps with relaxed adds, read by the metrics thread at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (10 us to 10 s).
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 10.0,
];

/// gokeyless's duration buckets, in seconds: 100 us doubling 15 times (to
/// about 1.6 s), so its dashboards' `le` values match ours.
pub const GOKEYLESS_BOUNDS: [f64; 15] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048, 0.4096, 0.8192,
    1.6384,
];

/// Upper bounds of the batch-size buckets (requests signed per read).
pub const BATCH_BOUNDS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// A histogram with fixed bucket bounds.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last counts values above every bound.
    buckets: Vec<AtomicU64>,
    /// Sum in millionths of the unit (microseconds for latencies).
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// What an exporter needs: sum, count and the count in each bucket (not
/// cumulative, as prometheus-client encodes them; the last bound is
/// `f64::INFINITY`, which it writes as `+Inf`).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub sum: f64,
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let index = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.bounds.len() + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, b.load(Ordering::Relaxed)));
        }
        HistogramSnapshot {
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: self.count.load(Ordering::Relaxed),
            buckets,
        }
    }

    /// Add another histogram's snapshot (same bounds) into `into`.
    pub fn merge(into: &mut HistogramSnapshot, other: &HistogramSnapshot) {
        into.sum += other.sum;
        into.count += other.count;
        for (a, b) in into.buckets.iter_mut().zip(&other.buckets) {
            a.1 += b.1;
        }
    }
}
