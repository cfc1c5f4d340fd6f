//! The glommio driver: each core keeps its own mutually authenticated
//! connections to every key server (glommio sockets, rustls), so a
//! handshake coroutine's signature request leaves and its answer comes back
//! on the core that needs it, with no thread in between. Requests from the
//! core's handshakes are queued and written together. Everything else —
//! IDs, matching, failover, backoff, health — is [`crate::core`]'s, and
//! the [`ServerState`]s are shared with every other core.
//!
//! Key servers may also dial in (`key_server_listen`): a connection one
//! opened lands on the core that accepted it ([`KeyClient::adopt`]), and
//! cores holding none to that key server hand their requests to that core
//! (the [`Directory`] lists every key server for every core).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_channel::mpsc;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use keyless_protocol::{Message, Opcode, PeerHello};
use rustls::ClientConfig;

use crate::core::{expect_pong, expect_response, Pipeline, Retry, ServerState, Supervision};
use crate::ClientError;

/// How this core reaches the key servers.
#[derive(Clone)]
pub struct Settings {
    pub tls: Arc<ClientConfig>,
    pub connections_per_server: usize,
    pub request_timeout: Duration,
    pub health_interval: Duration,
    pub connect_timeout: Duration,
}

/// One connection: the pipeline, and the writer's queue (an empty frame
/// tells the writer to close).
struct Link {
    pipeline: Rc<RefCell<Pipeline>>,
    frames: LocalSender<Vec<u8>>,
    /// Stops the reader even if the key server never closes.
    stop_reader: LocalSender<()>,
}

impl Link {
    fn closed(&self) -> Option<String> {
        self.pipeline.borrow().closed().map(str::to_owned)
    }

    /// Fail what waits and close the connection.
    fn close(&self, reason: &str) {
        self.pipeline.borrow_mut().close(reason);
        let _ = self.frames.try_send(Vec::new());
        let _ = self.stop_reader.try_send(());
    }

    async fn call(&self, message: Message, within: Duration) -> Result<Message, ClientError> {
        let (id, frame, answer) = self.pipeline.borrow_mut().request(message)?;
        if self.frames.try_send(frame).is_err() {
            self.pipeline.borrow_mut().cancel(id);
            return Err(ClientError::Closed("writer stopped".into()));
        }
        let peer = self.pipeline.borrow().peer().to_owned();
        match glommio::timer::timeout(within, async { Ok(answer.await) }).await {
            Ok(result) => crate::core::answered(result, self.closed()),
            Err(_) => {
                self.pipeline.borrow_mut().cancel(id);
                Err(ClientError::Closed(format!("{peer}: no answer within {within:?}")))
            }
        }
    }
}

/// One key server as this core sees it.
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

/// A request handed to the core that holds a dialed-in connection, by a
/// core that holds none to that key server.
type Forwarded = (
    Message,
    Duration,
    futures_channel::oneshot::Sender<Result<Message, ClientError>>,
);

/// A key server that connected to the edge (`key_server_listen`): its
/// connections land on whichever core accepted them, so every core can
/// reach each of them through the core that holds it.
pub struct Peer {
    /// The instance its pings announce.
    pub hello: PeerHello,
    pub state: Arc<ServerState>,
    forwarders: Mutex<Vec<(u64, mpsc::UnboundedSender<Forwarded>)>>,
}

impl Peer {
    fn forwarder(&self, n: usize) -> Option<mpsc::UnboundedSender<Forwarded>> {
        let forwarders = self.forwarders.lock().unwrap_or_else(|e| e.into_inner());
        (!forwarders.is_empty()).then(|| forwarders[n % forwarders.len()].1.clone())
    }
}

/// Every key server the edge knows: those it dials (`key_servers`) and
/// those that dialed in, shared by every core.
pub struct Directory {
    configured: Vec<Arc<ServerState>>,
    peers: RwLock<Vec<Arc<Peer>>>,
    version: AtomicU64,
    next_forwarder: AtomicU64,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<_> = self.states().iter().map(|s| s.addr).collect();
        f.debug_struct("Directory").field("servers", &addrs).finish()
    }
}

impl Directory {
    pub fn new(configured: Vec<Arc<ServerState>>) -> Arc<Directory> {
        Arc::new(Directory {
            configured,
            peers: RwLock::new(Vec::new()),
            version: AtomicU64::new(0),
            next_forwarder: AtomicU64::new(0),
        })
    }

    /// Every key server's state: dialed ones first, then those that dialed in.
    pub fn states(&self) -> Vec<Arc<ServerState>> {
        let mut states = self.configured.clone();
        states.extend(self.peers().iter().map(|p| p.state.clone()));
        states
    }

    pub fn peers(&self) -> Vec<Arc<Peer>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key server instance `hello` names, met first now from `addr`.
    /// Instances with no connection left are forgotten when a new one
    /// arrives (a restarted key server is a new instance).
    fn register(&self, hello: PeerHello, addr: std::net::SocketAddr) -> Arc<Peer> {
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = peers.iter().find(|p| p.hello.instance == hello.instance) {
            return peer.clone();
        }
        peers.retain(|p| p.state.links_up() > 0);
        let peer = Arc::new(Peer {
            hello,
            state: Arc::new(ServerState::dialed_in(
                addr,
                format!("instance {}", hello.instance_name()),
            )),
            forwarders: Mutex::new(Vec::new()),
        });
        tracing::info!("key server {addr} dialed in (instance {})", hello.instance_name());
        peers.push(peer.clone());
        self.version.fetch_add(1, Ordering::Release);
        peer
    }
}

/// This core's connections to every key server.
pub struct KeyClient {
    directory: Arc<Directory>,
    configured: Vec<Rc<Server>>,
    /// Connections that key servers opened to this core, by instance.
    dialed_in: RefCell<HashMap<u64, Rc<Server>>>,
    peers: RefCell<(u64, Vec<Arc<Peer>>)>,
    next: std::cell::Cell<usize>,
    settings: Settings,
}

type Call = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Message, ClientError>>>>;

impl KeyClient {
    /// Start connecting (in the background) to each key server `directory`
    /// lists as dialed by us; those that dial in join with [`adopt`](Self::adopt).
    pub fn start(directory: Arc<Directory>, settings: Settings) -> Rc<KeyClient> {
        let client = Rc::new(KeyClient {
            configured: directory.configured.iter().cloned().map(Server::new).collect(),
            directory,
            dialed_in: RefCell::new(HashMap::new()),
            peers: RefCell::new((u64::MAX, Vec::new())),
            next: std::cell::Cell::new(0),
            settings: settings.clone(),
        });
        for server in &client.configured {
            for _ in 0..settings.connections_per_server {
                glommio::spawn_local(supervise(server.clone(), settings.clone())).detach();
            }
        }
        client
    }

    /// The dialed-in key servers, as of the directory's last change.
    fn peers(&self) -> Vec<Arc<Peer>> {
        let version = self.directory.version.load(Ordering::Acquire);
        let mut cached = self.peers.borrow_mut();
        if cached.0 != version {
            *cached = (version, self.directory.peers());
        }
        cached.1.clone()
    }

    /// Send `request` to a key server that holds its key; its response
    /// payload, or why there is none (at once when no key server is
    /// reachable).
    pub async fn perform(&self, request: Message) -> Result<Vec<u8>, ClientError> {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        let within = self.settings.request_timeout;
        let peers = self.peers();
        let mut states: Vec<Arc<ServerState>> = self.configured.iter().map(|s| s.state.clone()).collect();
        states.extend(peers.iter().map(|p| p.state.clone()));
        let configured = self.configured.len();
        let answer = Retry::new(n, states.len())
            .run(request.ski.as_ref(), &states, |i| -> Option<Call> {
                let request = request.clone();
                if i < configured {
                    let link = self.configured[i].pick(n)?;
                    return Some(Box::pin(async move { link.call(request, within).await }));
                }
                let peer = &peers[i - configured];
                let local = self
                    .dialed_in
                    .borrow()
                    .get(&peer.hello.instance)
                    .and_then(|s| s.pick(n));
                if let Some(link) = local {
                    return Some(Box::pin(async move { link.call(request, within).await }));
                }
                // Held by another core: it sends the request and hands the
                // answer back.
                let forwarder = peer.forwarder(n)?;
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
        let server = self
            .dialed_in
            .borrow_mut()
            .entry(hello.instance)
            .or_insert_with(|| Server::new(peer.state.clone()))
            .clone();
        server.links.borrow_mut().push(link.clone());
        // Other cores reach this connection through a queue this core reads.
        let (tx, mut rx) = mpsc::unbounded::<Forwarded>();
        let forwarder = self.directory.next_forwarder.fetch_add(1, Ordering::Relaxed);
        peer.forwarders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((forwarder, tx));
        let forwarding = glommio::spawn_local({
            let link = link.clone();
            async move {
                use futures_lite::StreamExt;
                while let Some((request, within, reply)) = rx.next().await {
                    let link = link.clone();
                    glommio::spawn_local(async move {
                        let _ = reply.send(link.call(request, within).await);
                    })
                    .detach();
                }
            }
        });
        peer.state.link_up();
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
                peer.state.forget_missing();
            }
        };
        link.close(&reason);
        peer.forwarders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != forwarder);
        drop(forwarding);
        server.links.borrow_mut().retain(|l| !Rc::ptr_eq(l, &link));
        if server.links.borrow().is_empty() {
            self.dialed_in.borrow_mut().remove(&hello.instance);
        }
        peer.state.link_down(&reason);
        Ok(())
    }
}

/// Keep one connection to `server` alive, as [`Supervision`] says.
async fn supervise(server: Rc<Server>, settings: Settings) {
    let mut life = Supervision::new(server.state.clone());
    loop {
        let opened = glommio::timer::timeout(settings.connect_timeout, async {
            Ok(open(&server.state, &settings).await)
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
        life.up();
        let reason = loop {
            glommio::timer::sleep(settings.health_interval).await;
            if let Some(reason) = link.closed() {
                break reason;
            }
            let ping = Message::request(Opcode::PING, None, b"health".to_vec());
            if let Err(e) = link.call(ping, settings.request_timeout).await.and_then(expect_pong) {
                break format!("health check: {e}");
            }
        };
        link.close(&reason);
        server.links.borrow_mut().retain(|l| !Rc::ptr_eq(l, &link));
        life.down(&reason);
    }
}

/// Connect and handshake, then start the connection's tasks.
async fn open(state: &ServerState, settings: &Settings) -> Result<Rc<Link>, ClientError> {
    let err = |e: std::io::Error| ClientError::Connect {
        addr: state.addr.to_string(),
        source: e,
    };
    let tcp = glommio::net::TcpStream::connect(state.addr)
        .await
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::try_from(state.name.clone())
        .map_err(|e| ClientError::Config(format!("server name {:?}: {e}", state.name)))?;
    let tls = futures_rustls::TlsConnector::from(settings.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(err)?;
    Ok(Link::start(tls, state.addr.to_string()))
}

impl Link {
    /// Start the reader and writer tasks of an established connection.
    fn start<S>(stream: S, peer: String) -> Rc<Link>
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let (frames_tx, frames_rx) = local_channel::new_unbounded::<Vec<u8>>();
        let (stop_tx, stop_rx) = local_channel::new_unbounded::<()>();
        let pipeline = Rc::new(RefCell::new(Pipeline::new(peer)));
        // Writer: everything queued leaves in one write; an empty frame (or
        // the link dropped) closes the connection.
        glommio::spawn_local({
            let pipeline = pipeline.clone();
            async move {
                let mut batch = Vec::new();
                let reason = 'frames: loop {
                    let Some(first) = frames_rx.recv().await else {
                        break "closed".to_string();
                    };
                    if first.is_empty() {
                        break "closed".to_string();
                    }
                    batch.clear();
                    batch.extend_from_slice(&first);
                    while let Some(Some(more)) = futures_lite::future::poll_once(frames_rx.recv()).await {
                        if more.is_empty() {
                            let _ = writer.write_all(&batch).await;
                            break 'frames "closed".to_string();
                        }
                        batch.extend_from_slice(&more);
                    }
                    if let Err(e) = async {
                        writer.write_all(&batch).await?;
                        writer.flush().await
                    }
                    .await
                    {
                        break format!("write failed: {e}");
                    }
                };
                pipeline.borrow_mut().close(reason);
                let _ = writer.close().await;
            }
        })
        .detach();
        let link = Rc::new(Link {
            pipeline: pipeline.clone(),
            frames: frames_tx,
            stop_reader: stop_tx,
        });
        // Reader: answers to whoever waits for their ID; the peer's pings
        // answered.
        glommio::spawn_local({
            let link = Rc::downgrade(&link);
            async move {
                let mut chunk = vec![0u8; 64 * 1024];
                let reason = loop {
                    let read = futures_lite::future::or(async { Some(reader.read(&mut chunk).await) }, async {
                        stop_rx.recv().await;
                        None
                    });
                    match read.await {
                        Some(Ok(0)) => break "closed by the key server".to_string(),
                        Some(Ok(n)) => {
                            let pongs = pipeline.borrow_mut().receive(&chunk[..n]);
                            if let Some(link) = link.upgrade().filter(|_| !pongs.is_empty()) {
                                let _ = link.frames.try_send(pongs);
                            }
                        }
                        Some(Err(e)) => break format!("read failed: {e}"),
                        None => break "closed".to_string(),
                    }
                };
                pipeline.borrow_mut().close(reason);
            }
        })
        .detach();
        link
    }
}
