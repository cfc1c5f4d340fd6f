//! The glommio driver: the edge's cores hold mutually authenticated
//! connections to the key servers (glommio sockets, rustls), so a
//! handshake coroutine's signature request leaves and its answer comes back
//! on a core with no thread in between. Requests are queued and written
//! together. Everything else — IDs, matching, failover, backoff, health —
//! is [`crate::core`]'s, and the [`ServerState`]s are shared by every core.
//!
//! Which cores hold connections ([`Links`]): every core its own
//! (`PerCore`), or a few for the whole process (`PerProcess`, so that a
//! fleet of many-core edges does not multiply the key servers'
//! connections), spread over the cores. A core holding none to a key server
//! hands its requests to a core that holds one, over a queue, and gets the
//! answer back ([`Route`]); so do key servers that dial in
//! (`key_server_listen`), whose connections land on whichever core
//! accepted them ([`KeyClient::adopt`]).
//!
//! The dialed key servers may change while the edge runs (DNS, in
//! [`crate::dns`]): each core follows the [`Directory`], connects to new
//! ones and lets retired ones' connections finish what they carry.

mod directory;
mod link;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::mpsc;
use futures_lite::{AsyncRead, AsyncWrite};
use keyless_protocol::{Message, Opcode, PeerHello};
use rustls::ClientConfig;

pub use directory::{Change, Dialed, Directory, Links, Peer, Route};
use link::Link;

use crate::core::{expect_pong, expect_response, Retry, ServerState, Supervision};
use crate::ClientError;

/// How this core reaches the key servers.
#[derive(Clone)]
pub struct Settings {
    pub tls: Arc<ClientConfig>,
    pub links: Links,
    pub request_timeout: Duration,
    pub health_interval: Duration,
    pub connect_timeout: Duration,
}

/// One key server as this core sees it: the connections it holds to it.
struct Server {
    state: Arc<ServerState>,
    links: RefCell<Vec<Rc<Link>>>,
}

impl Server {
    fn new(state: Arc<ServerState>) -> Rc<Server> {
        Rc::new(Server {
            state,
            links: RefCell::new(Vec::new()),
        })
    }

    fn pick(&self, n: usize) -> Option<Rc<Link>> {
        let links = self.links.borrow();
        let live: Vec<&Rc<Link>> = links.iter().filter(|l| l.closed().is_none()).collect();
        (!live.is_empty()).then(|| live[n % live.len()].clone())
    }
}

/// The key servers as of one version of the directory, with this core's
/// connections to the dialed ones.
struct View {
    version: u64,
    dialed: Vec<(Arc<Dialed>, Rc<Server>)>,
    peers: Vec<Arc<Peer>>,
    /// Dialed ones first, then peers: what [`Retry`] chooses among.
    states: Vec<Arc<ServerState>>,
}

/// This core's way to every key server.
pub struct KeyClient {
    directory: Arc<Directory>,
    view: RefCell<Rc<View>>,
    /// Connections that key servers opened to this core, by instance.
    dialed_in: RefCell<HashMap<u64, Rc<Server>>>,
    next: std::cell::Cell<usize>,
    settings: Settings,
    /// This core's index among `cores`: which connections it holds.
    core: usize,
    cores: usize,
}

type Call = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Message, ClientError>>>>;

impl KeyClient {
    /// Core `core` of `cores`: start connecting (in the background) to the
    /// dialed key servers whose connections this core holds, and follow the
    /// directory's changes; key servers that dial in join with
    /// [`adopt`](Self::adopt).
    pub fn start(directory: Arc<Directory>, settings: Settings, core: usize, cores: usize) -> Rc<KeyClient> {
        let client = Rc::new(KeyClient {
            directory,
            view: RefCell::new(Rc::new(View {
                version: u64::MAX,
                dialed: Vec::new(),
                peers: Vec::new(),
                states: Vec::new(),
            })),
            dialed_in: RefCell::new(HashMap::new()),
            next: std::cell::Cell::new(0),
            settings,
            core,
            cores,
        });
        client.refresh();
        // Key servers added while no request comes are connected to anyway.
        let weak = Rc::downgrade(&client);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                match weak.upgrade() {
                    Some(client) => {
                        client.refresh();
                    }
                    None => break,
                }
            }
        })
        .detach();
        client
    }

    /// Catch up with the directory: connect to dialed key servers new to
    /// it (as many connections as this core holds), drop retired ones
    /// (their connections finish by themselves), see new peers.
    fn refresh(&self) -> Rc<View> {
        let version = self.directory.version();
        let current = self.view.borrow().clone();
        if current.version == version {
            return current;
        }
        let mut dialed = Vec::new();
        for entry in self.directory.dialed() {
            let known = current.dialed.iter().find(|(d, _)| d.id == entry.id);
            let server = match known {
                Some((_, server)) => server.clone(),
                None => {
                    let server = Server::new(entry.route.state.clone());
                    for _ in 0..self.settings.links.on_core(entry.id, self.core, self.cores) {
                        glommio::spawn_local(supervise(
                            server.clone(),
                            entry.clone(),
                            self.directory.clone(),
                            self.settings.clone(),
                        ))
                        .detach();
                    }
                    server
                }
            };
            dialed.push((entry, server));
        }
        // Retired ones serve (through the connections they still have)
        // while none in the answer is up.
        for entry in self.directory.retired() {
            if let Some(known) = current.dialed.iter().find(|(d, _)| d.id == entry.id) {
                dialed.push(known.clone());
            }
        }
        let peers = self.directory.peers();
        let mut states: Vec<Arc<ServerState>> = dialed.iter().map(|(d, _)| d.route.state.clone()).collect();
        states.extend(peers.iter().map(|p| p.route.state.clone()));
        let view = Rc::new(View {
            version,
            dialed,
            peers,
            states,
        });
        *self.view.borrow_mut() = view.clone();
        view
    }

    /// Send `request` to a key server that holds its key; its response
    /// payload, or why there is none (at once when no key server is
    /// reachable).
    pub async fn perform(&self, request: Message) -> Result<Vec<u8>, ClientError> {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        let within = self.settings.request_timeout;
        let view = self.refresh();
        let dialed = view.dialed.len();
        let answer = Retry::new(n, view.states.len())
            .run(request.ski.as_ref(), &view.states, |i| -> Option<Call> {
                let request = request.clone();
                let (route, here) = if i < dialed {
                    let (entry, server) = &view.dialed[i];
                    (&entry.route, Some(server.clone()))
                } else {
                    let peer = &view.peers[i - dialed];
                    let here = self.dialed_in.borrow().get(&peer.hello.instance).cloned();
                    (&peer.route, here)
                };
                if let Some(link) = here.and_then(|s| s.pick(n)) {
                    return Some(Box::pin(async move { link.call(request, within).await }));
                }
                // Held by another core: it sends the request and hands the
                // answer back.
                let forwarder = route.forwarder(n)?;
                let (tx, rx) = futures_channel::oneshot::channel();
                forwarder.unbounded_send((request, within, tx)).ok()?;
                Some(Box::pin(async move {
                    match glommio::timer::timeout(within, async { Ok(rx.await) }).await {
                        Ok(Ok(answer)) => answer,
                        Ok(Err(_)) => Err(ClientError::Closed("the core holding the connection dropped it".into())),
                        Err(_) => Err(ClientError::Closed(format!("no answer within {within:?}"))),
                    }
                }))
            })
            .await?;
        expect_response(answer)
    }

    /// Serve a connection a key server opened to this core (TLS done): wait
    /// for the ping that says which instance it is (within `hello_within`),
    /// then send it requests until it fails a health check or closes.
    pub async fn adopt<S>(
        self: &Rc<Self>,
        stream: S,
        addr: std::net::SocketAddr,
        hello_within: Duration,
    ) -> Result<(), ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let link = Link::start(stream, addr.to_string());
        let deadline = std::time::Instant::now() + hello_within;
        let hello = loop {
            let (payload, count) = {
                let pipeline = link.pipeline.borrow();
                let (payload, count) = pipeline.peer_ping();
                (payload.map(<[u8]>::to_vec), count)
            };
            if count > 0 {
                match payload.as_deref().and_then(PeerHello::parse) {
                    Some(hello) => break hello,
                    None => {
                        link.close("its first ping is not a key server's hello");
                        return Err(ClientError::Protocol(format!(
                            "{addr}: its first ping is not a key server's hello"
                        )));
                    }
                }
            }
            if let Some(reason) = link.closed() {
                return Err(ClientError::Closed(format!("{addr}: {reason} before its hello")));
            }
            if std::time::Instant::now() >= deadline {
                link.close("no hello");
                return Err(ClientError::Closed(format!("{addr}: no hello within {hello_within:?}")));
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        };
        let peer = self.directory.register(hello, addr);
        let state = peer.route.state.clone();
        let server = self
            .dialed_in
            .borrow_mut()
            .entry(hello.instance)
            .or_insert_with(|| Server::new(state.clone()))
            .clone();
        server.links.borrow_mut().push(link.clone());
        // Other cores reach this connection through a queue this core reads.
        let (tx, rx) = mpsc::unbounded();
        let forwarder = peer.route.add_forwarder(tx);
        let forwarding = link.serve_forwarded(rx);
        state.link_up();
        let mut keys = hello.keys;
        let reason = loop {
            glommio::timer::sleep(self.settings.health_interval).await;
            if let Some(reason) = link.closed() {
                break reason;
            }
            let ping = Message::request(Opcode::PING, None, b"health".to_vec());
            if let Err(e) = link
                .call(ping, self.settings.request_timeout)
                .await
                .and_then(expect_pong)
            {
                break format!("health check: {e}");
            }
            // A key server that reloaded may hold other keys: ask it again.
            let announced = link.pipeline.borrow().peer_ping().0.and_then(PeerHello::parse);
            if let Some(now) = announced.filter(|h| h.keys != keys) {
                keys = now.keys;
                tracing::info!("key server {addr}: keys reloaded; learning again which it holds");
                state.forget_missing();
            }
        };
        link.close(&reason);
        peer.route.remove_forwarder(forwarder);
        drop(forwarding);
        server.links.borrow_mut().retain(|l| !Rc::ptr_eq(l, &link));
        if server.links.borrow().is_empty() {
            self.dialed_in.borrow_mut().remove(&hello.instance);
        }
        state.link_down(&reason);
        Ok(())
    }
}

/// Keep one connection to `server` alive, as [`Supervision`] says, and
/// let other cores send through it; once the key server is retired and a
/// key server in the answer is up, let it finish what it carries and stop.
async fn supervise(server: Rc<Server>, entry: Arc<Dialed>, directory: Arc<Directory>, settings: Settings) {
    let state = server.state.clone();
    let mut life = Supervision::new(state.clone());
    while !state.retired() {
        let opened = glommio::timer::timeout(settings.connect_timeout, async {
            Ok(link::open(&state, &settings).await)
        })
        .await
        .unwrap_or_else(|_| Err(ClientError::Closed("connect timed out".into())));
        // The first ping proves the key server accepted our certificate.
        let proven = match opened {
            Ok(link) => {
                let pong = link
                    .call(
                        Message::request(Opcode::PING, None, b"hello".to_vec()),
                        settings.connect_timeout,
                    )
                    .await
                    .and_then(expect_pong);
                match pong {
                    Ok(_) => Ok(link),
                    Err(e) => {
                        link.close("no answer to the first ping");
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        };
        let link = match proven {
            Ok(link) => link,
            Err(e) => {
                glommio::timer::sleep(life.attempt_failed(&e)).await;
                continue;
            }
        };
        server.links.borrow_mut().push(link.clone());
        let (tx, rx) = mpsc::unbounded();
        let forwarder = entry.route.add_forwarder(tx);
        let forwarding = link.serve_forwarded(rx);
        life.up();
        let reason = loop {
            glommio::timer::sleep(settings.health_interval).await;
            if let Some(reason) = link.closed() {
                break reason;
            }
            if state.retired() && directory.answer_up() {
                break "no longer in the DNS answer".to_string();
            }
            let ping = Message::request(Opcode::PING, None, b"health".to_vec());
            if let Err(e) = link.call(ping, settings.request_timeout).await.and_then(expect_pong) {
                break format!("health check: {e}");
            }
        };
        // No new request; those sent are answered (or time out) first.
        entry.route.remove_forwarder(forwarder);
        server.links.borrow_mut().retain(|l| !Rc::ptr_eq(l, &link));
        drop(forwarding);
        let deadline = Instant::now() + settings.request_timeout;
        while link.closed().is_none() && link.in_flight() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        link.close(&reason);
        life.down(&reason);
    }
}
