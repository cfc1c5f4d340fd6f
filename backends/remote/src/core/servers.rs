use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use keyless_protocol::Message;

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
}

impl ServerState {
    pub fn new(addr: SocketAddr, name: String) -> ServerState {
        ServerState {
            addr,
            name,
            links_up: AtomicUsize::new(0),
            errors: (0..256).map(|_| AtomicU64::new(0)).collect(),
            failures: AtomicU64::new(0),
            answered: AtomicU64::new(0),
        }
    }

    /// At least one connection is up (and passed its last health check).
    pub fn healthy(&self) -> bool {
        self.links_up.load(Ordering::Relaxed) > 0
    }

    /// A connection passed its first ping; logged for the first one only.
    pub fn link_up(&self) {
        if self.links_up.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::info!("key server {}: connected", self.addr);
        }
    }

    /// A connection that was up is gone.
    pub fn link_down(&self, reason: &str) {
        if self.links_up.fetch_sub(1, Ordering::Relaxed) == 1 {
            tracing::warn!("key server {}: no connection left ({reason}); reconnecting", self.addr);
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
        let host = entry
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
            .ok_or_else(|| ClientError::Config(format!("key server {entry:?}: expected HOST:PORT")))?;
        let addrs: Vec<SocketAddr> = entry
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
