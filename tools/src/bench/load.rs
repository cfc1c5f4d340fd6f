//! The load itself: connections, slots, timestamps, histograms.
//!
//! Each connection has `in_flight` slots; a request's ID is its slot, so
//! the answer finds its send time without a map or a lock. The reader
//! hands finished slots back to the writer, which refills them (closed
//! loop) or spends them on the next tick (open loop).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keyless_keys::memory::PublicKey;
use keyless_keys::Operation;
use keyless_protocol::{Frame, Message, Opcode, Ski};
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::op::BenchOp;
use super::report::{LatencyHistogram, LoadReport};

/// How requests are offered.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Refill a slot as soon as its answer arrives, after an optional pause.
    Closed { pause: Duration },
    /// Send at a fixed total rate (requests/s), whatever the answers do.
    Open { rate: f64 },
}

/// One load run.
#[derive(Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub server_name: String,
    pub tls: Arc<ClientConfig>,
    pub op: BenchOp,
    pub ski: Ski,
    pub payload_len: usize,
    pub connections: usize,
    pub in_flight: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub mode: Mode,
    /// Verify one answer in this many against `verifier` (0: never).
    pub verify_every: u64,
    pub verifier: Option<Arc<PublicKey>>,
    /// Never sleep: poll for answers and pace open-loop requests by
    /// spinning, so the generator behaves like one on another machine (see
    /// [`keep_awake`]).
    pub spin: bool,
}

/// Counters shared by all connections while a run is going (for progress).
#[derive(Default)]
pub struct Live {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
}

struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    verified: u64,
    verify_failures: u64,
    not_sent: u64,
    /// Open loop: send time minus due time.
    lag: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: LatencyHistogram::new_ns(),
            lag: LatencyHistogram::new_ns(),
            ok: 0,
            errors: BTreeMap::new(),
            verified: 0,
            verify_failures: 0,
            not_sent: 0,
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.hist.add(&other.hist);
        let _ = self.lag.add(&other.lag);
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.verified += other.verified;
        self.verify_failures += other.verify_failures;
        self.not_sent += other.not_sent;
    }

    fn error(&mut self, name: String) {
        *self.errors.entry(name).or_default() += 1;
    }
}

/// Run the load and report. `live` is updated as answers arrive.
pub async fn run(spec: LoadSpec, live: Arc<Live>) -> Result<LoadReport, String> {
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let stop_at = measure_from + spec.duration;
    let mut tasks = Vec::new();
    for c in 0..spec.connections {
        let spec = spec.clone();
        let live = live.clone();
        let stream = keyless_client::connect_stream(spec.addr, &spec.server_name, spec.tls.clone())
            .await
            .map_err(|e| format!("connection {c}: {e}"))?;
        tasks.push(tokio::spawn(connection(
            spec,
            stream,
            live,
            start,
            measure_from,
            stop_at,
        )));
    }
    let spinners = if spec.spin { keep_awake() } else { Vec::new() };
    let mut total = Tally::new();
    for t in tasks {
        total.merge(t.await.map_err(|e| e.to_string())??);
    }
    for s in spinners {
        s.abort();
    }
    let secs = spec.duration.as_secs_f64();
    Ok(LoadReport {
        server: spec.addr.to_string(),
        operation: spec.op.name(),
        connections: spec.connections,
        in_flight: spec.in_flight,
        rate: match spec.mode {
            Mode::Open { rate } => Some(rate),
            Mode::Closed { .. } => None,
        },
        duration_s: secs,
        ok: total.ok,
        ops_per_sec: total.ok as f64 / secs,
        latency: super::report::Latency::from_histogram(&total.hist),
        errors: total.errors,
        verified: total.verified,
        verify_failures: total.verify_failures,
        not_sent: total.not_sent,
        send_lag: matches!(spec.mode, Mode::Open { .. }).then(|| super::report::Latency::from_histogram(&total.lag)),
    })
}

/// Keep every generator thread out of `epoll_wait`, so that an answer
/// arriving finds no sleeping thread to wake. On loopback the sender pays
/// for waking the receiver (`sock_def_readable`, an IPI, a VM exit here), so
/// a sleeping generator makes the server's core do the generator's work; a
/// generator on another machine would cost the server nothing of the kind.
/// A task that always yields makes tokio poll its driver with a zero timeout
/// instead of parking: one such task per worker thread (tokio places them;
/// with the default single generator thread that is exact).
fn keep_awake() -> Vec<tokio::task::JoinHandle<()>> {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    (0..workers)
        .map(|_| {
            tokio::spawn(async {
                loop {
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect()
}

fn nanos_since(start: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(start).as_nanos() as u64
}

async fn connection(
    spec: LoadSpec,
    stream: keyless_client::TlsStream,
    live: Arc<Live>,
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
) -> Result<Tally, String> {
    let slots = spec.in_flight.clamp(1, 65536);
    // Send time of the request in each slot, in ns since `start`.
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..slots).map(|_| AtomicU64::new(0)).collect());
    let (reader, writer) = tokio::io::split(stream);
    let (free_tx, free_rx) = mpsc::unbounded_channel::<usize>();
    let writer_done = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut payload = vec![0u8; spec.payload_len];
    aws_lc_rs::rand::fill(&mut payload).map_err(|_| "no randomness")?;
    if payload.len() > 1 && spec.op.operation == Some(Operation::RsaRawDecrypt) {
        payload[0] = 0;
    }
    let payload = Arc::new(payload);
    let writer_task = tokio::spawn(write_side(
        spec.clone(),
        writer,
        free_rx,
        sent.clone(),
        payload.clone(),
        start,
        measure_from,
        stop_at,
        Flight {
            done: writer_done.clone(),
            count: in_flight.clone(),
        },
    ));
    let flight = Flight {
        done: writer_done,
        count: in_flight,
    };
    let mut tally = read_side(
        &spec,
        reader,
        free_tx,
        &sent,
        &payload,
        &live,
        start,
        measure_from,
        stop_at,
        &flight,
    )
    .await;
    let (not_sent, lag) = writer_task.await.map_err(|e| e.to_string())?;
    tally.not_sent += not_sent;
    let _ = tally.lag.add(&lag);
    Ok(tally)
}

#[allow(clippy::too_many_arguments)]
async fn write_side(
    spec: LoadSpec,
    mut writer: tokio::io::WriteHalf<keyless_client::TlsStream>,
    mut free: mpsc::UnboundedReceiver<usize>,
    sent: Arc<Vec<AtomicU64>>,
    payload: Arc<Vec<u8>>,
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
    flight: Flight,
) -> (u64, Histogram<u64>) {
    let request = |slot: usize| {
        let message = match spec.op.opcode {
            Opcode::PING => Message::request(Opcode::PING, None, payload.to_vec()),
            opcode => Message::request(opcode, Some(spec.ski), payload.to_vec()),
        };
        Frame::new(slot as u32, message)
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut not_sent = 0u64;
    let mut lag = LatencyHistogram::new_ns();
    let mut sent_dues: Vec<Instant> = Vec::new();
    let mut ready: Vec<usize> = (0..sent.len()).collect();
    match spec.mode {
        Mode::Closed { pause } => loop {
            if Instant::now() >= stop_at {
                break;
            }
            if !pause.is_zero() {
                sleep_until_precise(Instant::now() + pause).await;
            }
            buf.clear();
            let now = nanos_since(start, Instant::now());
            flight.count.fetch_add(ready.len(), Ordering::Relaxed);
            for slot in ready.drain(..) {
                sent[slot].store(now, Ordering::Relaxed);
                let _ = request(slot).encode_into(&mut buf);
            }
            if writer.write_all(&buf).await.is_err() {
                break;
            }
            match tokio::time::timeout_at(stop_at.into(), free.recv()).await {
                Ok(Some(slot)) => ready.push(slot),
                Ok(None) | Err(_) => break,
            }
            while let Ok(slot) = free.try_recv() {
                ready.push(slot);
            }
        },
        Mode::Open { rate } => {
            let per_conn = (rate / spec.connections as f64).max(0.001);
            let interval = Duration::from_secs_f64(1.0 / per_conn);
            let mut ticks = if spec.spin {
                Ticks::Spin {
                    next: Instant::now(),
                    interval,
                    stop_at,
                }
            } else {
                Ticks::Thread(pacer(interval, stop_at))
            };
            let mut dues = Vec::new();
            while ticks.next_batch(&mut dues).await {
                while let Ok(slot) = free.try_recv() {
                    ready.push(slot);
                }
                buf.clear();
                sent_dues.clear();
                for due in dues.drain(..) {
                    match ready.pop() {
                        Some(slot) => {
                            sent_dues.push(due);
                            flight.count.fetch_add(1, Ordering::Relaxed);
                            // Timed from when it was due, not when it left.
                            sent[slot].store(nanos_since(start, due), Ordering::Relaxed);
                            let _ = request(slot).encode_into(&mut buf);
                        }
                        None => not_sent += 1,
                    }
                }
                if !buf.is_empty() && writer.write_all(&buf).await.is_err() {
                    break;
                }
                let now = Instant::now();
                for due in sent_dues.iter().filter(|d| **d >= measure_from) {
                    let _ = lag.record(nanos_since(*due, now).max(1));
                }
            }
        }
    }
    let _ = writer.flush().await;
    flight.done.store(true, Ordering::Release);
    (not_sent, lag)
}

/// Sleep until `deadline`. tokio's timer has a 1 ms granularity, which
/// would turn a 100 us pause into 1 ms; the last stretch is spent yielding.
/// (Closed loop only: one connection's pause, nothing else waits on it.)
async fn sleep_until_precise(deadline: Instant) {
    let coarse = Duration::from_millis(2);
    if let Some(early) = deadline.checked_sub(coarse) {
        if early > Instant::now() {
            tokio::time::sleep_until(early.into()).await;
        }
    }
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

/// The open-loop clock, as batches of due times.
enum Ticks {
    /// Sent by a pacing thread ([`pacer`]).
    Thread(mpsc::UnboundedReceiver<Instant>),
    /// Read off the clock between yields (`--spin`): no thread to wake,
    /// so a request leaves within a poll of its due time.
    Spin {
        next: Instant,
        interval: Duration,
        stop_at: Instant,
    },
}

impl Ticks {
    /// Wait for the next due time(s) and append every one that has come;
    /// false at the end of the run.
    async fn next_batch(&mut self, dues: &mut Vec<Instant>) -> bool {
        match self {
            Ticks::Thread(rx) => {
                let Some(due) = rx.recv().await else {
                    return false;
                };
                dues.push(due);
                while let Ok(d) = rx.try_recv() {
                    dues.push(d);
                }
                true
            }
            Ticks::Spin {
                next,
                interval,
                stop_at,
            } => loop {
                if *next >= *stop_at {
                    return false;
                }
                let now = Instant::now();
                while *next <= now && *next < *stop_at {
                    dues.push(*next);
                    *next += *interval;
                }
                if !dues.is_empty() {
                    return true;
                }
                tokio::task::yield_now().await;
            },
        }
    }
}

/// The open-loop clock: a thread of its own sends each due time, at
/// `interval`, until `stop_at`. An OS thread with a tight timer slack keeps
/// ticks within microseconds without a spinning task that could starve the
/// reader on the generator's runtime.
fn pacer(interval: Duration, stop_at: Instant) -> mpsc::UnboundedReceiver<Instant> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        tight_timer_slack();
        let mut next = Instant::now();
        while next < stop_at {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            if tx.send(next).is_err() {
                return;
            }
            next += interval;
        }
    });
    rx
}

/// Ask the kernel to wake this thread within 1 us of its deadline (the
/// default slack is 50 us, more than a signature takes).
fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and only changes the
    // calling thread's timer slack; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

/// What the writer tells the reader: requests on the wire, and that it has stopped.
struct Flight {
    done: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
}

#[allow(clippy::too_many_arguments)]
async fn read_side(
    spec: &LoadSpec,
    mut reader: tokio::io::ReadHalf<keyless_client::TlsStream>,
    free: mpsc::UnboundedSender<usize>,
    sent: &[AtomicU64],
    payload: &[u8],
    live: &Live,
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
    flight: &Flight,
) -> Tally {
    let mut tally = Tally::new();
    let mut answers_in = keyless_client::core::AnswerReader::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut answers = 0u64;
    let drain_deadline = stop_at + Duration::from_secs(5);
    loop {
        let now = Instant::now();
        if now >= stop_at && flight.done.load(Ordering::Acquire) && flight.count.load(Ordering::Relaxed) == 0 {
            break; // every request sent has been answered
        }
        // Before the end, wait for data; after it, look up every 20 ms.
        let timeout = if now < stop_at {
            stop_at - now
        } else {
            Duration::from_millis(20)
        };
        let n = match tokio::time::timeout(timeout, reader.read(&mut chunk)).await {
            Ok(Ok(0)) => {
                tally.error("connection closed".into());
                break;
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tally.error(format!("read: {e}"));
                break;
            }
            Err(_) if Instant::now() >= drain_deadline => {
                tally.error("no answer 5 s after the end".into());
                break;
            }
            Err(_) => continue,
        };
        answers_in.feed(&chunk[..n]);
        let now = Instant::now();
        let now_ns = nanos_since(start, now);
        let measuring = now >= measure_from && now < stop_at;
        while let Some((id, message)) = answers_in.next_answer() {
            let slot = id as usize;
            if slot >= sent.len() {
                tally.error("answer with an unknown ID".into());
                continue;
            }
            answers += 1;
            flight.count.fetch_sub(1, Ordering::Relaxed);
            if measuring {
                let latency = now_ns.saturating_sub(sent[slot].load(Ordering::Relaxed));
                let _ = tally.hist.record(latency.max(1));
                match &message {
                    Ok(m) => match m.error_code() {
                        None => {
                            tally.ok += 1;
                            live.ok.fetch_add(1, Ordering::Relaxed);
                            if spec.verify_every > 0 && answers.is_multiple_of(spec.verify_every) {
                                verify(spec, payload, m, &mut tally);
                            }
                        }
                        Some(code) => {
                            live.errors.fetch_add(1, Ordering::Relaxed);
                            tally.error(match code {
                                Ok(c) => c.to_string(),
                                Err(b) => format!("unknown error 0x{b:02x}"),
                            })
                        }
                    },
                    Err(e) => tally.error(format!("undecodable answer: {e}")),
                }
            }
            let _ = free.send(slot);
        }
    }
    tally
}

fn verify(spec: &LoadSpec, payload: &[u8], answer: &Message, tally: &mut Tally) {
    let (Some(verifier), Some(op)) = (&spec.verifier, spec.op.operation) else {
        return;
    };
    let output = answer.payload.as_deref().unwrap_or_default();
    let good = match op {
        Operation::RsaRawDecrypt => verifier.rsa_raw_encrypt(output).is_ok_and(|c| c == payload),
        _ => verifier.verify(op, payload, output).is_ok(),
    };
    tally.verified += 1;
    if !good {
        tally.verify_failures += 1;
    }
}
