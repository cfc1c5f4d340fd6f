//! Per-core counters, bumped with relaxed atomics on the core and read by
//! the metrics thread at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keyless_keys::multibuffer::LaneClass;
use keyless_protocol::{Message, OpFamily, Opcode};

use crate::stats::{AtomicHistogram, BATCH_BOUNDS, GOKEYLESS_BOUNDS, LATENCY_BOUNDS};

/// Per-core counters, readable from any thread.
#[derive(Debug)]
pub struct CoreCounters {
    /// Requests by opcode byte.
    pub by_opcode: Vec<AtomicU64>,
    /// Error responses by error code byte.
    pub errors: Vec<AtomicU64>,
    /// Connections open on this core.
    pub connections: AtomicU64,
    /// Requests this core answered (signed or otherwise).
    pub handled: AtomicU64,
    /// Of those, requests that arrived on another core's connection.
    pub handled_for_others: AtomicU64,
    /// Requests this core's connections sent to other cores.
    pub sent_to_others: AtomicU64,
    /// Time to answer a request on this core (decode, key lookup, the
    /// private-key operation), by opcode byte: gokeyless's
    /// `keyless_request_exec_duration_per_opcode`.
    pub exec_duration: Vec<AtomicHistogram>,
    /// Time from reading a request to its answer being ready for the
    /// connection's writer, by opcode byte, wherever it was signed:
    /// gokeyless's `keyless_request_total_duration_per_opcode`.
    pub total_duration: Vec<AtomicHistogram>,
    /// Requests this core signed per read of one connection (its batches).
    pub batch_size: AtomicHistogram,
    /// Answers per hand-off from signing to a connection's writer: a batch
    /// hands its answers over at least every `batch_flush`, so a long batch
    /// shows as many small hand-offs.
    pub handoff_size: AtomicHistogram,
    /// Connections that failed before serving (TLS handshake refused or
    /// timed out).
    pub failed_handshakes: AtomicU64,
    /// Established connections that ended other than by the idle timeout
    /// or a drain (the client closed, or a read or write failed):
    /// gokeyless's `keyless_failed_connection`, which counts every read
    /// error that is not a timeout, end of stream included.
    pub failed_connections: AtomicU64,
    /// Connections turned away before TLS: accept() failed (out of file
    /// descriptors) or the core was at `max_connections_per_core`.
    pub refused_connections: AtomicU64,
    /// gokeyless's `keyless_request_exec_duration_per_opcode`: by opcode
    /// family and answer error ([`ByFamilyAndError`]), gokeyless's buckets.
    pub exec_by_family: ByFamilyAndError,
    /// gokeyless's `keyless_request_total_duration_per_opcode`.
    pub total_by_family: ByFamilyAndError,
    /// Time to find each signing request's key (gokeyless's
    /// `keyless_key_load_duration`, observed per request as gokeyless does;
    /// gokeyless's buckets).
    pub key_lookup: AtomicHistogram,
    /// Nanoseconds this core's executor spent running tasks and polling
    /// for I/O (glommio's `total_runtime`: not parked, not spinning),
    /// added once a second: busy share = its rate.
    pub busy_ns: AtomicU64,
    /// Multi-buffer calls by lane class ([`LaneClass::index`]).
    pub lane_calls: [AtomicU64; LANE_CLASSES],
    /// Lanes filled in those calls (fill = lanes / calls, at most 8).
    pub lane_filled: [AtomicU64; LANE_CLASSES],
    /// Requests of a lane class signed alone: fewer than the class's
    /// `min_lanes` were ready.
    pub lane_alone: [AtomicU64; LANE_CLASSES],
    /// Lanes the library refused (a lane status; crypto_mb refuses an
    /// ECDSA message that is zero modulo the order) and that were signed
    /// alone through AWS-LC instead.
    pub lane_fallbacks: [AtomicU64; LANE_CLASSES],
}

const LANE_CLASSES: usize = LaneClass::ALL.len();

/// Histograms indexed by opcode family and the answer's error byte (0: no
/// error; the last slot: an error byte gokeyless does not know).
#[derive(Debug)]
pub struct ByFamilyAndError(Vec<AtomicHistogram>);

impl ByFamilyAndError {
    /// Error slots: none, the eleven codes, unknown.
    pub const ERRORS: usize = 13;

    fn new() -> ByFamilyAndError {
        ByFamilyAndError(
            (0..OpFamily::ALL.len() * Self::ERRORS)
                .map(|_| AtomicHistogram::new(&GOKEYLESS_BOUNDS))
                .collect(),
        )
    }

    fn slot(opcode: u8, error: u8) -> usize {
        let family = Opcode(opcode).family().index();
        family * Self::ERRORS + (error as usize).min(Self::ERRORS - 1)
    }

    pub fn observe(&self, opcode: u8, error: u8, d: Duration) {
        self.0[Self::slot(opcode, error)].observe_duration(d);
    }

    /// Each family and error slot with its histogram (error `None`: no error).
    pub fn iter(&self) -> impl Iterator<Item = (OpFamily, Option<u8>, &AtomicHistogram)> {
        self.0.iter().enumerate().map(|(i, h)| {
            let family = OpFamily::ALL[i / Self::ERRORS];
            let error = (i % Self::ERRORS) as u8;
            (family, (error != 0).then_some(error), h)
        })
    }
}

/// The error byte of an answer, 0 for none.
pub fn error_byte(message: &Message) -> u8 {
    message
        .error_code()
        .map_or(0, |code| code.map_or_else(|b| b, |c| c as u8))
}

impl Default for CoreCounters {
    fn default() -> Self {
        CoreCounters {
            by_opcode: (0..256).map(|_| AtomicU64::new(0)).collect(),
            errors: (0..256).map(|_| AtomicU64::new(0)).collect(),
            connections: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            handled_for_others: AtomicU64::new(0),
            sent_to_others: AtomicU64::new(0),
            exec_duration: (0..256).map(|_| AtomicHistogram::new(&LATENCY_BOUNDS)).collect(),
            total_duration: (0..256).map(|_| AtomicHistogram::new(&LATENCY_BOUNDS)).collect(),
            batch_size: AtomicHistogram::new(&BATCH_BOUNDS),
            handoff_size: AtomicHistogram::new(&BATCH_BOUNDS),
            failed_connections: AtomicU64::new(0),
            failed_handshakes: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
            exec_by_family: ByFamilyAndError::new(),
            total_by_family: ByFamilyAndError::new(),
            lane_calls: Default::default(),
            lane_filled: Default::default(),
            lane_alone: Default::default(),
            lane_fallbacks: Default::default(),
            busy_ns: AtomicU64::new(0),
            key_lookup: AtomicHistogram::new(&GOKEYLESS_BOUNDS),
        }
    }
}

impl CoreCounters {
    /// A request with this opcode byte was received.
    pub fn received(&self, opcode: u8) {
        self.by_opcode[opcode as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request was answered here with `message` after `exec` of work.
    pub fn answered(&self, opcode: u8, message: &Message, exec: Duration) {
        let error = error_byte(message);
        if error != 0 {
            self.errors[error as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.exec_duration[opcode as usize].observe_duration(exec);
        self.exec_by_family.observe(opcode, error, exec);
    }

    /// An answer (error byte `error`, 0 for none) is ready for its
    /// connection's writer, `total` after its request was read (counted on
    /// the connection's core).
    pub fn delivered(&self, opcode: u8, error: u8, total: Duration) {
        self.total_duration[opcode as usize].observe_duration(total);
        self.total_by_family.observe(opcode, error, total);
    }
}
