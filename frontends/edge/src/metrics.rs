//! The edge's metrics: handshakes by kind, remote signatures (latency and
//! failures), key servers (health, errors by code and server), ticket key
//! age. Prometheus text on `/metrics`, with `/healthz` and `/readyz` (at
//! least one key server healthy), on the edge's own metrics port.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use keyless_client::glommio::Directory;
use keyless_client::ServerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::tickets::Ticketer;

/// Counters updated on the handshake path (atomics, no locks).
#[derive(Debug)]
pub struct EdgeMetrics {
    pub full_handshakes: Counter,
    pub resumed_handshakes: Counter,
    pub failed_handshakes: Counter,
    pub sign_failures: Counter,
    /// Connections whose upstream could not be reached (answered 502).
    pub upstream_failures: Counter,
    /// Connections turned away before TLS: accept() failed (out of file
    /// descriptors) or the core was at max_connections_per_core.
    pub refused_connections: Counter,
    /// Seconds per remote signature, as the handshake thread waited for it.
    pub remote_sign: Histogram,
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        EdgeMetrics {
            full_handshakes: Counter::default(),
            resumed_handshakes: Counter::default(),
            failed_handshakes: Counter::default(),
            sign_failures: Counter::default(),
            upstream_failures: Counter::default(),
            refused_connections: Counter::default(),
            remote_sign: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        }
    }
}

#[derive(Debug)]
struct PoolCollector {
    servers: Arc<Directory>,
    ticketer: Arc<Ticketer>,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let servers = self.servers.states();
        let per_server = |encoder: &mut DescriptorEncoder,
                          name: &str,
                          help: &str,
                          kind: MetricType,
                          value: &dyn Fn(&ServerState) -> u64|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for s in &servers {
                let labels = [("server", s.addr.to_string())];
                let sample = family.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(value(s)).encode(sample)?,
                    _ => ConstGauge::new(value(s) as i64).encode(sample)?,
                }
            }
            Ok(())
        };
        per_server(
            &mut encoder,
            "keyless_edge_key_server_up",
            "Whether the edge has a live, health-checked connection to each key server.",
            MetricType::Gauge,
            &|s| s.healthy() as u64,
        )?;
        per_server(
            &mut encoder,
            "keyless_edge_key_server_links",
            "Connections up to each key server (dialed by the edge or dialed in).",
            MetricType::Gauge,
            &|s| s.links_up() as u64,
        )?;
        per_server(
            &mut encoder,
            "keyless_edge_key_server_link_losses",
            "Connections to each key server that were up and went down.",
            MetricType::Counter,
            &|s| s.reconnects.load(Ordering::Relaxed),
        )?;
        per_server(
            &mut encoder,
            "keyless_edge_key_server_answers",
            "Requests each key server answered, errors included (health pings not counted).",
            MetricType::Counter,
            &|s| s.answered.load(Ordering::Relaxed),
        )?;
        let mut errors = encoder.encode_descriptor(
            "keyless_edge_key_server_errors",
            "Key server answers that were errors, by server and error code; `lost` counts requests lost with their connection or timed out.",
            None,
            MetricType::Counter,
        )?;
        for s in &servers {
            for (code, n) in s.errors.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let name = keyless_protocol::gokeyless_error(Some(code as u8)).to_string();
                    let labels = [("server", s.addr.to_string()), ("code", name)];
                    ConstCounter::new(n).encode(errors.encode_family(&labels)?)?;
                }
            }
            let lost = s.failures.load(Ordering::Relaxed);
            let labels = [("server", s.addr.to_string()), ("code", "lost".to_string())];
            ConstCounter::new(lost).encode(errors.encode_family(&labels)?)?;
        }
        let age = encoder.encode_descriptor(
            "keyless_edge_ticket_key_age_seconds",
            "Age of the session ticket key that encrypts new tickets.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.ticketer.current_key_age() as i64).encode(age)?;
        Ok(())
    }
}

/// Serve metrics on `addr` (port 0 picks one) from a thread of its own.
pub fn start(
    addr: SocketAddr,
    metrics: Arc<EdgeMetrics>,
    servers: Arc<Directory>,
    ticketer: Arc<Ticketer>,
) -> Result<SocketAddr, String> {
    // `Registry::register` ends each HELP text with a period itself.
    let mut registry = Registry::default();
    registry.register(
        "keyless_edge_full_handshakes",
        "TLS handshakes that needed a remote signature",
        metrics.full_handshakes.clone(),
    );
    registry.register(
        "keyless_edge_resumed_handshakes",
        "TLS handshakes resumed from a session ticket (no key server)",
        metrics.resumed_handshakes.clone(),
    );
    registry.register(
        "keyless_edge_failed_handshakes",
        "TLS handshakes that failed",
        metrics.failed_handshakes.clone(),
    );
    registry.register(
        "keyless_edge_remote_sign_failures",
        "Remote signatures that failed (the handshake failed with them)",
        metrics.sign_failures.clone(),
    );
    registry.register(
        "keyless_edge_refused_connections",
        "Connections turned away before TLS: accept() failed (out of file descriptors) or the core was at max_connections_per_core",
        metrics.refused_connections.clone(),
    );
    registry.register(
        "keyless_edge_upstream_failures",
        "Connections whose upstream could not be reached; the client got a 502",
        metrics.upstream_failures.clone(),
    );
    registry.register(
        "keyless_edge_remote_sign_seconds",
        "Time a handshake waited for its remote signature",
        metrics.remote_sign.clone(),
    );
    registry.register_collector(Box::new(PoolCollector {
        servers: servers.clone(),
        ticketer,
    }));
    let server = tiny_http::Server::http(addr).map_err(|e| format!("metrics listener {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or("metrics listener has no IP address")?;
    std::thread::Builder::new()
        .name("keyless-edge-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                use keyless_service::http::{respond, OPENMETRICS, TEXT};
                let (status, kind, body) = match request.url() {
                    "/metrics" => {
                        let mut text = String::new();
                        match prometheus_client::encoding::text::encode(&mut text, &registry) {
                            Ok(()) => (200, OPENMETRICS, text),
                            Err(e) => (500, TEXT, format!("{e}\n")),
                        }
                    }
                    "/healthz" => (200, TEXT, "ok\n".to_string()),
                    "/readyz" if servers.states().iter().any(|s| s.healthy()) => (200, TEXT, "ready\n".to_string()),
                    "/readyz" => (503, TEXT, "no key server reachable\n".to_string()),
                    _ => (404, TEXT, "not found\n".to_string()),
                };
                respond(request, status, kind, body.into_bytes());
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(bound)
}
