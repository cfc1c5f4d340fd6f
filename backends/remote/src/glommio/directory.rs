//! Every key server the edge knows, shared by every core: those it dials
//! (`key_servers`, as DNS answers for them now) and those that dialed in.
//! A core holding no connection to a key server reaches it through a core
//! that holds one: each connection's core takes others' requests from a
//! queue ([`Route`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_channel::mpsc;
use keyless_protocol::{Message, PeerHello};

use crate::core::ServerState;
use crate::ClientError;

/// A request handed to the core that holds a connection, by a core that
/// holds none to that key server.
pub(super) type Forwarded = (
    Message,
    Duration,
    futures_channel::oneshot::Sender<Result<Message, ClientError>>,
);

/// One key server as every core reaches it: its state, and a queue per
/// connection (on whichever core holds it) that takes other cores' requests.
pub struct Route {
    pub state: Arc<ServerState>,
    forwarders: Mutex<Vec<(u64, mpsc::UnboundedSender<Forwarded>)>>,
    next_forwarder: AtomicU64,
}

impl Route {
    fn new(state: Arc<ServerState>) -> Route {
        Route {
            state,
            forwarders: Mutex::new(Vec::new()),
            next_forwarder: AtomicU64::new(0),
        }
    }

    /// A queue to a connection for request `n` (connections take turns).
    pub(super) fn forwarder(&self, n: usize) -> Option<mpsc::UnboundedSender<Forwarded>> {
        let forwarders = self.forwarders.lock().unwrap_or_else(|e| e.into_inner());
        (!forwarders.is_empty()).then(|| forwarders[n % forwarders.len()].1.clone())
    }

    /// A connection's queue; the ID to remove it with.
    pub(super) fn add_forwarder(&self, queue: mpsc::UnboundedSender<Forwarded>) -> u64 {
        let id = self.next_forwarder.fetch_add(1, Ordering::Relaxed);
        self.forwarders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, queue));
        id
    }

    pub(super) fn remove_forwarder(&self, id: u64) {
        self.forwarders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(f, _)| *f != id);
    }

    /// Connections that take other cores' requests.
    pub fn forwarders(&self) -> usize {
        self.forwarders.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A key server the edge dials. `id` is unique for the edge's life: it
/// says which cores hold its connections.
pub struct Dialed {
    pub id: u64,
    pub route: Route,
}

/// A key server that connected to the edge (`key_server_listen`): its
/// connections land on whichever core accepted them.
pub struct Peer {
    /// The instance its pings announce.
    pub hello: PeerHello,
    pub route: Route,
}

/// What a change of the dialed key servers did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
}

/// Every key server the edge knows, shared by every core.
pub struct Directory {
    dialed: RwLock<Vec<Arc<Dialed>>>,
    /// Dialed key servers gone from the answer whose connections are
    /// still up: they serve while none in the answer is up.
    retired: RwLock<Vec<Arc<Dialed>>>,
    peers: RwLock<Vec<Arc<Peer>>>,
    /// Bumped at each change of either list: cores compare it to theirs.
    version: AtomicU64,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<_> = self.states().iter().map(|s| s.addr).collect();
        f.debug_struct("Directory").field("servers", &addrs).finish()
    }
}

impl Directory {
    pub fn new(dialed: Vec<Arc<ServerState>>) -> Arc<Directory> {
        let directory = Directory {
            dialed: RwLock::new(Vec::new()),
            retired: RwLock::new(Vec::new()),
            peers: RwLock::new(Vec::new()),
            version: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        };
        *directory.dialed.write().unwrap_or_else(|e| e.into_inner()) =
            dialed.into_iter().map(|s| directory.dialed_entry(s)).collect();
        Arc::new(directory)
    }

    fn dialed_entry(&self, state: Arc<ServerState>) -> Arc<Dialed> {
        Arc::new(Dialed {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            route: Route::new(state),
        })
    }

    pub(super) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Every key server's state: dialed ones first (those retired with
    /// connections still up after them), then those that dialed in.
    pub fn states(&self) -> Vec<Arc<ServerState>> {
        let mut states: Vec<_> = self.dialed().iter().map(|d| d.route.state.clone()).collect();
        states.extend(self.retired().iter().map(|d| d.route.state.clone()));
        states.extend(self.peers().iter().map(|p| p.route.state.clone()));
        states
    }

    /// The dialed key servers in the answer.
    pub fn dialed(&self) -> Vec<Arc<Dialed>> {
        self.dialed.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Dialed key servers gone from the answer, connections still up.
    pub fn retired(&self) -> Vec<Arc<Dialed>> {
        let retired = self.retired.read().unwrap_or_else(|e| e.into_inner());
        retired
            .iter()
            .filter(|d| d.route.state.links_up() > 0)
            .cloned()
            .collect()
    }

    /// Whether a dialed key server in the answer has a connection up: the
    /// retired ones' connections may close.
    pub fn answer_up(&self) -> bool {
        self.dialed().iter().any(|d| d.route.state.healthy())
    }

    pub fn peers(&self) -> Vec<Arc<Peer>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key servers to dial are now `wanted` (address, name its
    /// certificate carries): new ones are added (cores connect to them),
    /// those no longer wanted are retired (no new request goes to them;
    /// their connections close once what they carry is answered).
    pub fn set_dialed(&self, wanted: &[(SocketAddr, String)]) -> Change {
        let mut dialed = self.dialed.write().unwrap_or_else(|e| e.into_inner());
        let mut retired = self.retired.write().unwrap_or_else(|e| e.into_inner());
        retired.retain(|d| d.route.state.links_up() > 0);
        let mut change = Change::default();
        dialed.retain(|d| {
            let state = &d.route.state;
            let keep = wanted.iter().any(|(a, n)| *a == state.addr && *n == state.name);
            if !keep {
                state.retire();
                change.removed.push(state.addr);
                retired.push(d.clone());
            }
            keep
        });
        for (addr, name) in wanted {
            let known = dialed
                .iter()
                .any(|d| d.route.state.addr == *addr && d.route.state.name == *name);
            if !known {
                dialed.push(self.dialed_entry(Arc::new(ServerState::new(*addr, name.clone()))));
                change.added.push(*addr);
            }
        }
        if change != Change::default() {
            self.version.fetch_add(1, Ordering::Release);
        }
        change
    }

    /// The key server instance `hello` names, met first now from `addr`.
    /// Instances with no connection left are forgotten when a new one
    /// arrives (a restarted key server is a new instance).
    pub(super) fn register(&self, hello: PeerHello, addr: SocketAddr) -> Arc<Peer> {
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = peers.iter().find(|p| p.hello.instance == hello.instance) {
            return peer.clone();
        }
        peers.retain(|p| p.route.state.links_up() > 0);
        let peer = Arc::new(Peer {
            hello,
            route: Route::new(Arc::new(ServerState::dialed_in(
                addr,
                format!("instance {}", hello.instance_name()),
            ))),
        });
        tracing::info!("key server {addr} dialed in (instance {})", hello.instance_name());
        peers.push(peer.clone());
        self.version.fetch_add(1, Ordering::Release);
        peer
    }
}

/// How many connections to a key server each core holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// `n` on every core (`connections_per_server`).
    PerCore(usize),
    /// `n` for the whole process, spread over the cores; the others hand
    /// their requests to those (`key_server_connections`).
    PerProcess(usize),
}

impl Links {
    /// Connections core `core` of `cores` holds to dialed key server `id`:
    /// connection `j` of `n` is held by core `(id + j) % cores`, so that
    /// key servers' connections start on different cores.
    pub fn on_core(self, id: u64, core: usize, cores: usize) -> usize {
        match self {
            Links::PerCore(n) => n,
            Links::PerProcess(n) => {
                let cores = cores.max(1) as u64;
                (0..n as u64).filter(|j| (id + j) % cores == core as u64).count()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_process_connections_spread_over_the_cores() {
        let links = Links::PerProcess(2);
        let on = |id, cores| (0..cores).map(|c| links.on_core(id, c, cores)).collect::<Vec<_>>();
        assert_eq!(on(0, 4), [1, 1, 0, 0]);
        assert_eq!(on(1, 4), [0, 1, 1, 0], "the next key server starts one core on");
        assert_eq!(on(3, 4), [1, 0, 0, 1]);
        assert_eq!(on(0, 1), [2]);
        assert_eq!(Links::PerProcess(5).on_core(0, 0, 2), 3);
        assert_eq!(Links::PerProcess(5).on_core(0, 1, 2), 2);
        assert_eq!(Links::PerCore(2).on_core(7, 3, 4), 2);
    }

    #[test]
    fn dialed_key_servers_follow_the_answer_and_the_gone_are_retired() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:1".parse().unwrap();
        let dir = Directory::new(vec![Arc::new(ServerState::new(a, "ks".into()))]);
        let first = dir.dialed()[0].clone();
        let v = dir.version();
        assert_eq!(dir.set_dialed(&[(a, "ks".into())]), Change::default());
        assert_eq!(dir.version(), v, "no change, no new version");
        let change = dir.set_dialed(&[(a, "ks".into()), (b, "ks".into())]);
        assert_eq!(change.added, [b]);
        assert!(dir.version() > v);
        assert!(Arc::ptr_eq(&dir.dialed()[0], &first), "A is kept as it was");
        first.route.state.link_up();
        let change = dir.set_dialed(&[(b, "ks".into())]);
        assert_eq!(change.removed, [a]);
        assert!(first.route.state.retired());
        let addrs = |dir: &Directory| dir.states().iter().map(|s| s.addr).collect::<Vec<_>>();
        assert_eq!(addrs(&dir), [b, a], "A still has a connection up");
        assert!(!dir.answer_up(), "B has none yet");
        first.route.state.link_down("closed");
        assert_eq!(addrs(&dir), [b]);
        assert_ne!(dir.dialed()[0].id, first.id);
    }
}
