//! The metrics listener: Prometheus text on `/metrics`, `/healthz`,
//! `/readyz`, and on-demand CPU profiles of the live process:
//! `/debug/pprof/profile?seconds=N` (pprof protobuf) and
//! `/debug/pprof/flamegraph?seconds=N` (SVG). Profiles are only reachable
//! here, never on the keyless port. It runs on its own thread, off the signing cores, and reads
//! the cores' atomic counters at scrape time: no lock on the hot path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keyless_engine::counters::ByFamilyAndError;
use keyless_engine::shared::Shared;
use keyless_protocol::{gokeyless_error, Opcode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::profile;
pub(crate) use keyless_service::http::{respond, OPENMETRICS, TEXT};

/// A histogram read from the cores' atomics at scrape time.
#[derive(Debug)]
struct ConstHistogram(keyless_engine::stats::HistogramSnapshot);

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum,
            self.0.count,
            &self.0.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Reads the per-core counters on each scrape.
#[derive(Debug)]
struct CoreCollector {
    shared: Arc<Shared>,
    /// When the previous scrape was, and the cores' busy time then: the
    /// utilization gauge covers the time between two scrapes.
    last_scrape: std::sync::Mutex<(std::time::Instant, u64)>,
}

type Labels = Vec<(&'static str, String)>;

fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for CoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cores = || self.shared.counters.iter().enumerate();
        let core = |i: usize| vec![("core", i.to_string())];
        let counter = |f: fn(&keyless_engine::counters::CoreCounters) -> u64| {
            cores()
                .map(move |(i, c)| (core(i), ConstCounter::new(f(c))))
                .collect::<Vec<_>>()
        };
        // gokeyless's `keyless_requests{opcode}`, all cores together.
        let mut requests = [0u64; 256];
        let mut by_error = Vec::new();
        for (i, c) in cores() {
            for (op, n) in c.by_opcode.iter().enumerate() {
                requests[op] += n.load(Ordering::Relaxed);
            }
            for (code, n) in c.errors.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let name = gokeyless_error(Some(code as u8)).to_string();
                    by_error.push((vec![("core", i.to_string()), ("code", name)], ConstCounter::new(n)));
                }
            }
        }
        family(
            &mut encoder,
            "keyless_requests",
            "Total number of requests by opcode (gokeyless's name and labels).",
            // Written as gokeyless writes it, without a `_total` suffix
            // (which a counter type would add), so its queries still match.
            MetricType::Unknown,
            requests.iter().enumerate().filter(|(_, n)| **n > 0).map(|(op, n)| {
                (
                    vec![("opcode", Opcode(op as u8).gokeyless_name())],
                    ConstGauge::new(*n as i64),
                )
            }),
        )?;
        family(
            &mut encoder,
            "keyless_errors",
            "Error responses, by core and error code.",
            MetricType::Counter,
            by_error,
        )?;
        family(
            &mut encoder,
            "keyless_core_handled",
            "Requests answered by each core, whichever core read them.",
            MetricType::Counter,
            counter(|c| c.handled.load(Ordering::Relaxed)),
        )?;
        family(
            &mut encoder,
            "keyless_core_handled_for_others",
            "Requests a core answered for connections of other cores.",
            MetricType::Counter,
            counter(|c| c.handled_for_others.load(Ordering::Relaxed)),
        )?;
        family(
            &mut encoder,
            "keyless_core_sent_to_others",
            "Requests a core's connections handed to other cores.",
            MetricType::Counter,
            counter(|c| c.sent_to_others.load(Ordering::Relaxed)),
        )?;
        let loads = self.shared.load_per_core();
        family(
            &mut encoder,
            "keyless_core_queue_depth",
            "Requests assigned to each core and not yet answered.",
            MetricType::Gauge,
            loads
                .iter()
                .enumerate()
                .map(|(i, l)| (core(i), ConstGauge::new(*l as i64))),
        )?;
        family(
            &mut encoder,
            "keyless_connections_open",
            "Open client connections per core.",
            MetricType::Gauge,
            cores().map(|(i, c)| (core(i), ConstGauge::new(c.connections.load(Ordering::Relaxed) as i64))),
        )?;
        family(
            &mut encoder,
            "keyless_keys_loaded",
            "Private keys loaded.",
            MetricType::Gauge,
            [(Vec::new(), ConstGauge::new(self.shared.key_count() as i64))],
        )?;
        self.encode_histograms(&mut encoder)?;
        self.encode_utilization(&mut encoder)?;
        self.encode_hsm(&mut encoder)?;
        self.encode_cloud(&mut encoder)
    }
}

impl CoreCollector {
    /// One counter summed over every core.
    fn total(&self, pick: fn(&keyless_engine::counters::CoreCounters) -> &std::sync::atomic::AtomicU64) -> u64 {
        self.shared
            .counters
            .iter()
            .map(|c| pick(c).load(Ordering::Relaxed))
            .sum()
    }
}

/// Nanoseconds every core has been busy so far.
fn busy_ns(shared: &Shared) -> u64 {
    shared.counters.iter().map(|c| c.busy_ns.load(Ordering::Relaxed)).sum()
}

impl CoreCollector {
    /// The cores' busy time: ours per core (a counter), and gokeyless's
    /// `server_utilization{type}` gauge as the cores' mean busy share since
    /// the previous scrape (gokeyless declares it for its worker threads;
    /// here every core signs every type, so one series, `type="cores"`).
    fn encode_utilization(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        family(
            encoder,
            "keyless_core_busy_seconds",
            "Seconds each core's executor ran tasks or polled for I/O (not parked), updated each second.",
            MetricType::Counter,
            self.shared.counters.iter().enumerate().map(|(i, c)| {
                (
                    vec![("core", i.to_string())],
                    ConstCounter::new(c.busy_ns.load(Ordering::Relaxed) as f64 / 1e9),
                )
            }),
        )?;
        let now = (std::time::Instant::now(), busy_ns(&self.shared));
        let (then, busy_then) =
            std::mem::replace(&mut *self.last_scrape.lock().unwrap_or_else(|p| p.into_inner()), now);
        let wall = now.0.duration_since(then).as_secs_f64() * self.shared.counters.len() as f64;
        let share = if wall > 0.0 {
            (now.1.saturating_sub(busy_then) as f64 / 1e9 / wall).clamp(0.0, 1.0)
        } else {
            0.0
        };
        family(
            encoder,
            "server_utilization",
            "The [0,1]-percentage utilization of the server's worker threads (gokeyless's name): the cores' \
             mean busy share since the previous scrape.",
            MetricType::Gauge,
            [(vec![("type", "cores".to_string())], ConstGauge::new(share))],
        )
    }

    /// gokeyless's duration histograms (per opcode, all cores merged), our
    /// batch sizes per core, key load time and failed connections.
    fn encode_histograms(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use keyless_engine::stats::AtomicHistogram;
        let per_opcode = |pick: fn(&keyless_engine::counters::CoreCounters) -> &Vec<AtomicHistogram>| {
            let mut out = Vec::new();
            for op in 0..256 {
                let mut merged: Option<keyless_engine::stats::HistogramSnapshot> = None;
                for c in &self.shared.counters {
                    let h = &pick(c)[op];
                    if h.count() == 0 {
                        continue;
                    }
                    match &mut merged {
                        Some(m) => AtomicHistogram::merge(m, &h.snapshot()),
                        None => merged = Some(h.snapshot()),
                    }
                }
                if let Some(m) = merged {
                    let labels: Labels = vec![("opcode", Opcode(op as u8).gokeyless_name())];
                    out.push((labels, ConstHistogram(m)));
                }
            }
            out
        };
        family(
            encoder,
            "keyless_request_exec_duration_per_opcode_seconds",
            "Time to execute a request (decode, key lookup, the private-key operation), by opcode.",
            MetricType::Histogram,
            per_opcode(|c| &c.exec_duration),
        )?;
        family(
            encoder,
            "keyless_request_total_duration_per_opcode_seconds",
            "Time from reading a request to its answer being ready to write, by opcode.",
            MetricType::Histogram,
            per_opcode(|c| &c.total_duration),
        )?;
        family(
            encoder,
            "keyless_core_batch_size",
            "Requests a core signed per read of one connection.",
            MetricType::Histogram,
            self.shared
                .counters
                .iter()
                .enumerate()
                .map(|(i, c)| (vec![("core", i.to_string())], ConstHistogram(c.batch_size.snapshot()))),
        )?;
        family(
            encoder,
            "keyless_core_handoff_size",
            "Answers per hand-off from signing to a connection's writer (a batch hands over at least every \
             batch_flush_us).",
            MetricType::Histogram,
            self.shared
                .counters
                .iter()
                .enumerate()
                .map(|(i, c)| (vec![("core", i.to_string())], ConstHistogram(c.handoff_size.snapshot()))),
        )?;
        let lanes_on = self.shared.lanes().is_some();
        family(
            encoder,
            "keyless_multibuffer_active",
            "1 when the cores sign with multi-buffer lanes (crypto_mb), 0 for AWS-LC single signatures.",
            MetricType::Gauge,
            [(Vec::new(), ConstGauge::new(i64::from(lanes_on)))],
        )?;
        if lanes_on {
            type PerClass = fn(
                &keyless_engine::counters::CoreCounters,
            )
                -> &[std::sync::atomic::AtomicU64; keyless_keys::multibuffer::LaneClass::ALL.len()];
            let per_class = |f: PerClass| {
                self.shared.counters.iter().enumerate().flat_map(move |(i, c)| {
                    keyless_keys::multibuffer::LaneClass::ALL.into_iter().map(move |class| {
                        (
                            vec![("core", i.to_string()), ("class", class.name().to_string())],
                            ConstCounter::new(f(c)[class.index()].load(Ordering::Relaxed)),
                        )
                    })
                })
            };
            family(
                encoder,
                "keyless_multibuffer_calls",
                "Multi-buffer calls, by core and lane class.",
                MetricType::Counter,
                per_class(|c| &c.lane_calls),
            )?;
            family(
                encoder,
                "keyless_multibuffer_lanes",
                "Lanes filled in those calls (lanes / calls is the batch fill, at most 8).",
                MetricType::Counter,
                per_class(|c| &c.lane_filled),
            )?;
            family(
                encoder,
                "keyless_multibuffer_alone",
                "Requests of a lane class signed alone: fewer than its minimum lanes were ready.",
                MetricType::Counter,
                per_class(|c| &c.lane_alone),
            )?;
            family(
                encoder,
                "keyless_multibuffer_fallbacks",
                "Lanes the multi-buffer library refused (it refuses an ECDSA digest that is zero modulo the \
                 order), signed alone through AWS-LC instead.",
                MetricType::Counter,
                per_class(|c| &c.lane_fallbacks),
            )?;
        }
        let mut lookups = self.shared.counters[0].key_lookup.snapshot();
        for c in &self.shared.counters[1..] {
            AtomicHistogram::merge(&mut lookups, &c.key_lookup.snapshot());
        }
        family(
            encoder,
            "keyless_key_load_duration",
            "Time to load a requested key (gokeyless's name and buckets: observed for each request that \
             names a key, found or not).",
            MetricType::Histogram,
            [(Vec::new(), ConstHistogram(lookups))],
        )?;
        family(
            encoder,
            "keyless_key_store_load_duration_seconds",
            "Time each load of the key stores took, start-up and reloads.",
            MetricType::Histogram,
            [(Vec::new(), ConstHistogram(self.shared.key_load.snapshot()))],
        )?;
        family(
            encoder,
            "certificate_expiration_timestamp_seconds",
            "Expiration times of gokeyless certs: the server's chain and CA file, each client (and dialed \
             edge) certificate seen (gokeyless's name and labels).",
            MetricType::Gauge,
            crate::certmetrics::samples()
                .into_iter()
                .map(|(labels, expiry)| (labels.to_vec(), ConstGauge::new(expiry))),
        )?;
        family(
            encoder,
            "keyless_failed_connection",
            "Number of connection/transport failure, in tls handshake and etc. (gokeyless's name and meaning: \
             established connections that ended other than by the idle timeout or a drain, the client's \
             close included; failed handshakes are keyless_failed_handshakes_total).",
            // As gokeyless writes it: no `_total` suffix.
            MetricType::Unknown,
            [(
                Vec::new(),
                ConstGauge::new(self.total(|c| &c.failed_connections) as i64),
            )],
        )?;
        family(
            encoder,
            "keyless_failed_handshakes",
            "Connections whose TLS handshake failed or did not finish in time.",
            MetricType::Counter,
            [(Vec::new(), ConstCounter::new(self.total(|c| &c.failed_handshakes)))],
        )?;
        family(
            encoder,
            "keyless_refused_connections",
            "Connections turned away before TLS: accept() failed (out of file descriptors) or the core was at max_connections_per_core.",
            MetricType::Counter,
            [(
                Vec::new(),
                ConstCounter::new(
                    self.total(|c| &c.refused_connections),
                ),
            )],
        )?;
        // All cores merged, one series per family and error.
        let by_family = |pick: fn(&keyless_engine::counters::CoreCounters) -> &ByFamilyAndError| {
            let mut merged: Vec<(Labels, keyless_engine::stats::HistogramSnapshot)> = Vec::new();
            for c in &self.shared.counters {
                for (family, error, h) in pick(c).iter().filter(|(_, _, h)| h.count() > 0) {
                    let labels: Labels = vec![
                        ("type", family.as_str().to_string()),
                        ("error", gokeyless_error(error).to_string()),
                    ];
                    match merged.iter_mut().find(|(l, _)| *l == labels) {
                        Some((_, m)) => AtomicHistogram::merge(m, &h.snapshot()),
                        None => merged.push((labels, h.snapshot())),
                    }
                }
            }
            merged
                .into_iter()
                .map(|(l, m)| (l, ConstHistogram(m)))
                .collect::<Vec<_>>()
        };
        family(
            encoder,
            "keyless_request_exec_duration_per_opcode",
            "Time to execute a request not including time in queues, broken down by type and error code (gokeyless's name).",
            MetricType::Histogram,
            by_family(|c| &c.exec_by_family),
        )?;
        family(
            encoder,
            "keyless_request_total_duration_per_opcode",
            "Total time to satisfy a request including time in queues, broken down by type and error code (gokeyless's name).",
            MetricType::Histogram,
            by_family(|c| &c.total_by_family),
        )?;
        Ok(())
    }
}

impl CoreCollector {
    /// HSM session pools, one series per token.
    fn encode_hsm(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pools = keyless_hsm::snapshots();
        let token = |p: &keyless_hsm::PoolSnapshot| vec![("token", p.token.clone())];
        let gauge = |f: fn(&keyless_hsm::PoolSnapshot) -> usize| {
            pools
                .iter()
                .map(|p| (token(p), ConstGauge::new(f(p) as i64)))
                .collect::<Vec<_>>()
        };
        family(
            encoder,
            "keyless_hsm_sessions",
            "PKCS#11 sessions (worker threads) per token.",
            MetricType::Gauge,
            gauge(|p| p.sessions),
        )?;
        family(
            encoder,
            "keyless_hsm_sessions_busy",
            "PKCS#11 sessions performing an operation now.",
            MetricType::Gauge,
            gauge(|p| p.busy),
        )?;
        family(
            encoder,
            "keyless_hsm_queue_depth",
            "Requests waiting for a free PKCS#11 session.",
            MetricType::Gauge,
            gauge(|p| p.queued),
        )?;
        let mut operations = Vec::new();
        for p in &pools {
            for (result, n) in [("ok", p.completed), ("failed", p.failed), ("abandoned", p.abandoned)] {
                operations.push((
                    vec![("token", p.token.clone()), ("result", result.to_string())],
                    ConstCounter::new(n),
                ));
            }
        }
        family(
            encoder,
            "keyless_hsm_operations",
            "PKCS#11 operations by result (abandoned: the request timed out before a session was free).",
            MetricType::Counter,
            operations,
        )?;
        family(
            encoder,
            "keyless_hsm_sessions_reopened",
            "PKCS#11 sessions reopened after a failure (logged out, closed, token removed).",
            MetricType::Counter,
            pools.iter().map(|p| (token(p), ConstCounter::new(p.reopened))),
        )?;
        Ok(())
    }

    /// Cloud key stores, one series per configured `uri:`.
    fn encode_cloud(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stores = keyless_cloud::snapshots();
        let store = |s: &keyless_cloud::StoreSnapshot| -> Labels { vec![("store", s.store.clone())] };
        family(
            encoder,
            "keyless_cloud_in_flight",
            "Calls to a cloud key store in flight now (at most cloud_concurrency).",
            MetricType::Gauge,
            stores.iter().map(|s| (store(s), ConstGauge::new(s.in_flight as i64))),
        )?;
        family(
            encoder,
            "keyless_cloud_waiting",
            "Requests waiting for a free slot to call their cloud key store.",
            MetricType::Gauge,
            stores.iter().map(|s| (store(s), ConstGauge::new(s.waiting as i64))),
        )?;
        family(
            encoder,
            "keyless_cloud_signatures",
            "Signatures a cloud key store made.",
            MetricType::Counter,
            stores.iter().map(|s| (store(s), ConstCounter::new(s.signed))),
        )?;
        let mut errors = Vec::new();
        for s in &stores {
            for (cause, n) in &s.errors {
                errors.push((
                    vec![("store", s.store.clone()), ("cause", cause.label().to_string())],
                    ConstCounter::new(*n),
                ));
            }
        }
        family(
            encoder,
            "keyless_cloud_errors",
            "Failed cloud key store calls by cause (a retried call counts each attempt).",
            MetricType::Counter,
            errors,
        )?;
        family(
            encoder,
            "keyless_cloud_duration_seconds",
            "Time from a request reaching its cloud key store to its answer, retries included.",
            MetricType::Histogram,
            stores
                .iter()
                .map(|s| (store(s), ConstHistogram(s.latency.clone())))
                .collect::<Vec<_>>(),
        )?;
        Ok(())
    }
}

/// The connections the server dialed, per edge (ours; gokeyless has none).
#[derive(Debug)]
struct DialCollector {
    targets: Vec<crate::dial::Target>,
}

impl Collector for DialCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let edge = |t: &crate::dial::Target| -> Labels { vec![("edge", t.entry.clone())] };
        family(
            &mut encoder,
            "keyless_dial_links_up",
            "Connections this key server dialed to each edge that are up.",
            MetricType::Gauge,
            self.targets
                .iter()
                .map(|t| (edge(t), ConstGauge::new(t.stats.up.load(Ordering::Relaxed) as i64))),
        )?;
        family(
            &mut encoder,
            "keyless_dial_link_losses",
            "Dialed connections that were up and ended (each is re-dialed).",
            MetricType::Counter,
            self.targets
                .iter()
                .map(|t| (edge(t), ConstCounter::new(t.stats.lost.load(Ordering::Relaxed)))),
        )?;
        family(
            &mut encoder,
            "keyless_dial_requests",
            "Requests each edge sent over the connections this key server dialed.",
            MetricType::Counter,
            self.targets
                .iter()
                .map(|t| (edge(t), ConstCounter::new(t.stats.requests.load(Ordering::Relaxed)))),
        )
    }
}

/// A running metrics listener.
pub struct MetricsServer {
    pub addr: SocketAddr,
}

/// Serve metrics on `addr` from a thread of its own.
pub fn start(addr: SocketAddr, shared: Arc<Shared>, dial: Vec<crate::dial::Target>) -> Result<MetricsServer, String> {
    let server = tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
    let addr = server.server_addr().to_ip().unwrap_or(addr);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(CoreCollector {
        last_scrape: std::sync::Mutex::new((std::time::Instant::now(), busy_ns(&shared))),
        shared,
    }));
    if !dial.is_empty() {
        registry.register_collector(Box::new(DialCollector { targets: dial }));
    }
    let profiling = Arc::new(AtomicBool::new(false));
    std::thread::Builder::new()
        .name("keyless-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let url = request.url().to_owned();
                let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
                match path {
                    "/metrics" => {
                        let mut text = String::new();
                        match prometheus_client::encoding::text::encode(&mut text, &registry) {
                            Ok(()) => respond(request, 200, OPENMETRICS, text.into_bytes()),
                            Err(_) => respond(request, 500, TEXT, b"encoding failed\n".to_vec()),
                        }
                    }
                    // The same words as the edge's: alive, and ready to serve.
                    "/healthz" => respond(request, 200, TEXT, b"ok\n".to_vec()),
                    "/readyz" => respond(request, 200, TEXT, b"ready\n".to_vec()),
                    "/debug/pprof/profile" | "/debug/pprof/flamegraph" if !profile::allowed(request.remote_addr()) => {
                        respond(
                            request,
                            403,
                            TEXT,
                            b"CPU profiles are served to local clients only\n".to_vec(),
                        )
                    }
                    "/debug/pprof/profile" | "/debug/pprof/flamegraph" => {
                        let kind = if path.ends_with("flamegraph") {
                            profile::Kind::Flamegraph
                        } else {
                            profile::Kind::Pprof
                        };
                        match profile::seconds(query) {
                            Ok(seconds) => profile::spawn(request, kind, seconds, profiling.clone()),
                            Err(e) => respond(request, 400, TEXT, format!("{e}\n").into_bytes()),
                        }
                    }
                    _ => respond(request, 404, TEXT, b"not found\n".to_vec()),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(MetricsServer { addr })
}
