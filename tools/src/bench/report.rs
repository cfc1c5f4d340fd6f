//! What a run measured, for people and for scripts.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Histograms of latency in nanoseconds, 1 ns to 60 s, 3 significant digits.
pub struct LatencyHistogram;

impl LatencyHistogram {
    pub fn new_ns() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    /// From a histogram recorded in nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// One load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub server: String,
    pub operation: String,
    pub connections: usize,
    pub in_flight: usize,
    /// Offered rate (open loop), requests per second in total.
    pub rate: Option<f64>,
    pub duration_s: f64,
    /// Successful answers in the measured window.
    pub ok: u64,
    pub ops_per_sec: f64,
    pub latency: Latency,
    /// Errors by name (protocol error code, or a local reason).
    pub errors: BTreeMap<String, u64>,
    /// Signatures checked against the public key, and how many failed.
    pub verified: u64,
    pub verify_failures: u64,
    /// Open loop: ticks at which every slot was busy (the offered rate was not sent).
    pub not_sent: u64,
    /// Open loop: how late requests left the generator, after they were
    /// due. Latency counts from the due time, so a lag here is the
    /// generator's own, not the server's.
    pub send_lag: Option<Latency>,
}

impl LoadReport {
    pub fn print(&self) {
        println!(
            "{} on {}: {} connection(s) x {} in flight{}",
            self.operation,
            self.server,
            self.connections,
            self.in_flight,
            self.rate.map_or(String::new(), |r| format!(", open loop at {r:.0}/s"))
        );
        println!(
            "  ops/s     {:.0}  ({} ok in {:.1} s)",
            self.ops_per_sec, self.ok, self.duration_s
        );
        let l = &self.latency;
        println!(
            "  latency   p50 {:.0} us  p90 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
        );
        println!(
            "  verified  {} signatures, {} failed",
            self.verified, self.verify_failures
        );
        if let Some(l) = &self.send_lag {
            println!(
                "  send lag  p50 {:.0} us  p99 {:.0} us  max {:.0} us (generator behind its schedule)",
                l.p50_us, l.p99_us, l.max_us
            );
        }
        if self.not_sent > 0 {
            println!("  not sent  {} (all slots busy at the offered rate)", self.not_sent);
        }
        if self.errors.is_empty() {
            println!("  errors    none");
        }
        for (name, n) in &self.errors {
            println!("  errors    {name}: {n}");
        }
    }
}
