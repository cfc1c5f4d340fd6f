use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyless_protocol::{Message, Ski};

use crate::ClientError;

/// One key server as every connection to it, on any core or thread, sees
/// it: how many connections are up, and what its answers were.
#[derive(Debug)]
pub struct ServerState {
    pub addr: SocketAddr,
    /// The name its certificate must carry.
    pub name: String,
    /// Connections that passed their first ping and are not yet closed.
    links_up: AtomicUsize,
    /// Requests answered with a protocol error, by error code byte.
    pub errors: Vec<AtomicU64>,
    /// Requests lost with their connection or timed out.
    pub failures: AtomicU64,
    pub answered: AtomicU64,
    /// Keys this server answered key-not-found for, and when: requests for
    /// them go to other servers until the mark is [`MISSING_FOR`] old, the
    /// server reconnects, or it announces a key reload.
    missing: Mutex<HashMap<Ski, Instant>>,
    /// Connections that ended after being up, counted for metrics.
    pub reconnects: AtomicU64,
    /// It dials in (we cannot reconnect to it: it must dial again).
    dials_in: bool,
    /// Its name no longer resolves to it (see [`ServerState::retire`]).
    retired: AtomicBool,
}

/// How long a key-not-found answer keeps requests for that key away from
/// the server that gave it (when another server is usable).
pub const MISSING_FOR: Duration = Duration::from_secs(60);

impl ServerState {
    pub fn new(addr: SocketAddr, name: String) -> ServerState {
        ServerState {
            addr,
            name,
            links_up: AtomicUsize::new(0),
            errors: (0..256).map(|_| AtomicU64::new(0)).collect(),
            failures: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            missing: Mutex::new(HashMap::new()),
            reconnects: AtomicU64::new(0),
            dials_in: false,
            retired: AtomicBool::new(false),
        }
    }

    /// A key server that dialed in: when its connections are gone, the
    /// edge waits for it to dial again.
    pub fn dialed_in(addr: SocketAddr, name: String) -> ServerState {
        ServerState {
            dials_in: true,
            ..ServerState::new(addr, name)
        }
    }

    /// Its name no longer resolves to it (DNS): no new connection; those
    /// up take requests only while no server still in the answer is up,
    /// and close once one is and what they carry is answered.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Connections up now.
    pub fn links_up(&self) -> usize {
        self.links_up.load(Ordering::Relaxed)
    }

    /// Whether this server said, recently, that it does not hold `ski`.
    pub fn lacks(&self, ski: &Ski, now: Instant) -> bool {
        let missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        missing.get(ski).is_some_and(|at| now.duration_since(*at) < MISSING_FOR)
    }

    /// The server answered key-not-found for `ski`.
    pub fn learned_missing(&self, ski: Ski, now: Instant) {
        let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        // Old marks go when new ones come: the map holds recent ones only.
        if missing.len() >= 4096 {
            missing.retain(|_, at| now.duration_since(*at) < MISSING_FOR);
        }
        missing.insert(ski, now);
    }

    /// Forget what this server was found to lack (it reconnected or
    /// reloaded its keys).
    pub fn forget_missing(&self) {
        self.missing.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// At least one connection is up (and passed its last health check).
    pub fn healthy(&self) -> bool {
        self.links_up.load(Ordering::Relaxed) > 0
    }

    /// A connection passed its first ping; logged for the first one only.
    pub fn link_up(&self) {
        if self.links_up.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::info!("key server {}: connected", self.addr);
            // A server back from an outage may hold other keys now.
            self.forget_missing();
        }
    }

    /// A connection that was up is gone.
    pub fn link_down(&self, reason: &str) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        if self.links_up.fetch_sub(1, Ordering::Relaxed) == 1 {
            if self.retired() {
                tracing::info!(
                    "key server {}: left the DNS answer; its last connection closed",
                    self.addr
                );
            } else if self.dials_in {
                tracing::warn!(
                    "key server {} ({}): no connection left ({reason}); waiting for it to dial in again",
                    self.addr,
                    self.name
                );
            } else {
                tracing::warn!("key server {}: no connection left ({reason}); reconnecting", self.addr);
            }
        }
    }

    /// Count the server's answer to a request.
    pub fn record_answer(&self, message: &Message) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if let Some(code) = message.error_code() {
            let byte = code.map_or_else(|b| b, |c| c as u8);
            self.errors[byte as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count a request lost on this server, and say why (logged).
    pub fn record_failure(&self, error: &ClientError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("key server {}: {error}", self.addr);
    }
}

/// The servers named by `HOST:PORT` entries: a name with several addresses
/// is several servers. `server_name` overrides the name their certificates
/// must carry (default: each HOST).
pub fn resolve(entries: &[String], server_name: Option<&str>) -> Result<Vec<Arc<ServerState>>, ClientError> {
    let mut servers = Vec::new();
    for entry in entries {
        let (host, port) = super::names::parse_entry(entry)?;
        let addrs: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| ClientError::Config(format!("key server {entry:?}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::Config(format!("key server {entry:?}: no address")));
        }
        let name = server_name.map_or_else(|| host.clone(), str::to_owned);
        servers.extend(
            addrs
                .into_iter()
                .map(|addr| Arc::new(ServerState::new(addr, name.clone()))),
        );
    }
    if servers.is_empty() {
        return Err(ClientError::Config("no key servers configured".into()));
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_resolve_to_servers_named_for_their_certificates() {
        let servers = resolve(&["127.0.0.1:2407".into(), "[::1]:2408".into()], None).unwrap();
        assert_eq!(servers[0].name, "127.0.0.1");
        assert_eq!(servers[1].addr, "[::1]:2408".parse().unwrap());
        let named = resolve(&["127.0.0.1:2407".into()], Some("keyserver.test")).unwrap();
        assert_eq!(named[0].name, "keyserver.test");
        assert!(resolve(&["no-port".into()], None)
            .unwrap_err()
            .to_string()
            .contains("HOST:PORT"));
        assert!(resolve(&[], None).is_err());
    }

    #[test]
    fn a_missing_key_is_remembered_for_a_while_and_forgotten_on_reconnect() {
        let s = ServerState::new("127.0.0.1:1".parse().unwrap(), "x".into());
        let t = Instant::now();
        let ski = [7u8; 20];
        assert!(!s.lacks(&ski, t));
        s.learned_missing(ski, t);
        assert!(s.lacks(&ski, t + Duration::from_secs(1)));
        assert!(!s.lacks(&[8u8; 20], t), "other keys are not affected");
        assert!(!s.lacks(&ski, t + MISSING_FOR), "the mark expires");
        s.link_up();
        s.link_down("gone");
        s.learned_missing(ski, t);
        s.link_up();
        assert!(!s.lacks(&ski, t), "a reconnected server is asked again");
    }

    #[test]
    fn health_follows_the_connections_that_are_up() {
        let s = ServerState::new("127.0.0.1:1".parse().unwrap(), "x".into());
        assert!(!s.healthy());
        s.link_up();
        s.link_up();
        s.link_down("ping failed");
        assert!(s.healthy());
        s.link_down("ping failed");
        assert!(!s.healthy());
    }
}
