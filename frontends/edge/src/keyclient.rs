//! The remote backend on a core: each core keeps its own mutually
//! authenticated connections to every key server (glommio sockets, rustls),
//! so a handshake coroutine's signature request leaves and its answer comes
//! back on the core that needs it, with no thread in between. Requests from
//! the core's handshakes are queued and written together; answers are
//! matched by ID. Each connection is pinged every `health_interval` and
//! replaced when it fails (backoff 100 ms doubling to 5 s); a request
//! whose connection fails is retried once on another server.
//!
//! Counters go to the shared [`ServerState`]s of the process-wide pool, so
//! the metrics cover every core.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use keyless_client::pool::ServerState;
use keyless_client::ClientError;
use keyless_protocol::{split_frame, ErrorCode, Frame, Message, Opcode};
use rustls::ClientConfig;

/// How this core reaches the key servers.
#[derive(Clone)]
pub struct Settings {
    pub tls: Arc<ClientConfig>,
    pub connections_per_server: usize,
    pub request_timeout: Duration,
    pub health_interval: Duration,
    pub connect_timeout: Duration,
}

type Waiter = futures_channel::oneshot::Sender<Message>;

/// What a connection's reader and writer tasks share with it (not the
/// link itself, so the tasks end when the link is dropped).
struct LinkState {
    waiting: RefCell<HashMap<u32, Waiter>>,
    closed: Cell<bool>,
    /// Tells the reader to stop even if the key server never closes (a
    /// hung server must not keep the socket and the task alive).
    stop_reader: LocalSender<()>,
}

impl LinkState {
    fn fail_all(&self) {
        self.closed.set(true);
        self.waiting.borrow_mut().clear(); // dropped senders wake every waiter
        let _ = self.stop_reader.try_send(());
    }
}

/// One connection: queued frames for the writer, requests waiting by ID.
struct Link {
    next_id: Cell<u32>,
    state: Rc<LinkState>,
    frames: LocalSender<Vec<u8>>,
}

impl Link {
    fn closed(&self) -> bool {
        self.state.closed.get()
    }

    /// Fail what waits and close the connection (an empty frame tells the
    /// writer to send close_notify; the reader then sees the end).
    fn close(&self) {
        self.state.fail_all();
        let _ = self.frames.try_send(Vec::new());
    }

    async fn call(&self, message: Message) -> Result<Message, ClientError> {
        if self.closed() {
            return Err(ClientError::Closed("connection closed".into()));
        }
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let bytes = Frame::new(id, message)
            .encode()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (tx, rx) = futures_channel::oneshot::channel();
        self.state.waiting.borrow_mut().insert(id, tx);
        if self.frames.try_send(bytes).is_err() {
            self.state.waiting.borrow_mut().remove(&id);
            return Err(ClientError::Closed("writer stopped".into()));
        }
        rx.await.map_err(|_| ClientError::Closed("connection lost".into()))
    }
}

struct Server {
    state: Arc<ServerState>,
    links: RefCell<Vec<Rc<Link>>>,
}

impl Server {
    fn pick(&self, n: usize) -> Option<Rc<Link>> {
        let links = self.links.borrow();
        let live: Vec<&Rc<Link>> = links.iter().filter(|l| !l.closed()).collect();
        (!live.is_empty()).then(|| live[n % live.len()].clone())
    }
}

/// This core's connections to every key server.
pub struct KeyClient {
    servers: Vec<Rc<Server>>,
    next: Cell<usize>,
    request_timeout: Duration,
}

impl KeyClient {
    /// Start connecting (in the background) to each of `servers`.
    pub fn start(servers: &[Arc<ServerState>], settings: Settings) -> Rc<KeyClient> {
        let servers: Vec<Rc<Server>> = servers
            .iter()
            .map(|state| {
                Rc::new(Server {
                    state: state.clone(),
                    links: RefCell::new(Vec::new()),
                })
            })
            .collect();
        for server in &servers {
            for _ in 0..settings.connections_per_server {
                glommio::spawn_local(supervise(server.clone(), settings.clone())).detach();
            }
        }
        Rc::new(KeyClient {
            servers,
            next: Cell::new(0),
            request_timeout: settings.request_timeout,
        })
    }

    /// Send `request` to a key server; its response payload, or why there
    /// is none. Retried once on another server if its connection fails.
    pub async fn perform(&self, request: Message) -> Result<Vec<u8>, ClientError> {
        // No connection up (start-up, or every key server reconnecting):
        // wait for one, within the request's timeout, rather than fail a
        // handshake that a moment later would have been served.
        let deadline = std::time::Instant::now() + self.request_timeout;
        while !self.servers.iter().any(|s| s.pick(0).is_some()) {
            if std::time::Instant::now() >= deadline {
                return Err(ClientError::Closed(format!(
                    "no key server reachable within {:?}",
                    self.request_timeout
                )));
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        let count = self.servers.len();
        let mut tried = None;
        let mut last_error = None;
        for attempt in 0..2 {
            let Some((index, link)) = (0..count)
                .map(|i| (n + i + attempt) % count)
                .filter(|&i| Some(i) != tried)
                .find_map(|i| self.servers[i].pick(n).map(|l| (i, l)))
            else {
                break;
            };
            let state = &self.servers[index].state;
            let answer =
                glommio::timer::timeout(self.request_timeout, async { Ok(link.call(request.clone()).await) }).await;
            match answer {
                Ok(Ok(message)) => {
                    state.answered.fetch_add(1, Ordering::Relaxed);
                    if let Some(code) = message.error_code() {
                        let byte = code.map_or_else(|b| b, |c| c as u8);
                        state.errors[byte as usize].fetch_add(1, Ordering::Relaxed);
                    }
                    return keyless_client::expect_response(message);
                }
                Ok(Err(e)) => {
                    state.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("key server {}: {e}; retrying elsewhere", state.addr);
                    last_error = Some(e);
                }
                Err(_) => {
                    state.failures.fetch_add(1, Ordering::Relaxed);
                    last_error = Some(ClientError::Closed(format!(
                        "{}: no answer within {:?}",
                        state.addr, self.request_timeout
                    )));
                }
            }
            tried = Some(index);
        }
        Err(last_error.unwrap_or_else(|| ClientError::Closed("no key server is reachable".into())))
    }
}

/// Keep one connection to `server` alive.
async fn supervise(server: Rc<Server>, settings: Settings) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let opened =
            glommio::timer::timeout(settings.connect_timeout, async { Ok(open(&server, &settings).await) }).await;
        let link = match opened {
            Ok(Ok(link)) => link,
            _ => {
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // The first ping proves the key server accepted our certificate.
        let ping = |payload: &'static [u8]| {
            let link = link.clone();
            async move {
                glommio::timer::timeout(settings.request_timeout, async {
                    Ok(link.call(Message::request(Opcode::PING, None, payload.to_vec())).await)
                })
                .await
            }
        };
        if !matches!(ping(b"hello").await, Ok(Ok(ref m)) if m.opcode == Some(Opcode::PONG)) {
            link.close();
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        backoff = Duration::from_millis(100);
        server.links.borrow_mut().push(link.clone());
        loop {
            glommio::timer::sleep(settings.health_interval).await;
            if link.closed() || !matches!(ping(b"health").await, Ok(Ok(_))) {
                break;
            }
        }
        link.close();
        server.links.borrow_mut().retain(|l| !Rc::ptr_eq(l, &link));
    }
}

/// Connect, handshake, and start the reader and writer tasks.
async fn open(server: &Server, settings: &Settings) -> Result<Rc<Link>, String> {
    let state = &server.state;
    let tcp = glommio::net::TcpStream::connect(state.addr)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::try_from(state.name.clone()).map_err(|e| e.to_string())?;
    let tls = futures_rustls::TlsConnector::from(settings.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut reader, mut writer) = futures_lite::io::split(tls);
    let (frames_tx, frames_rx) = local_channel::new_unbounded::<Vec<u8>>();
    let (stop_tx, stop_rx) = local_channel::new_unbounded::<()>();
    let state = Rc::new(LinkState {
        waiting: RefCell::new(HashMap::new()),
        closed: Cell::new(false),
        stop_reader: stop_tx,
    });
    let link = Rc::new(Link {
        next_id: Cell::new(0),
        state: state.clone(),
        frames: frames_tx,
    });
    // Writer: everything queued leaves in one write; an empty frame (or
    // the link dropped) closes the connection.
    glommio::spawn_local({
        let state = state.clone();
        async move {
            let mut batch = Vec::new();
            'frames: while let Some(first) = frames_rx.recv().await {
                if first.is_empty() {
                    break;
                }
                batch.clear();
                batch.extend_from_slice(&first);
                while let Some(Some(more)) = futures_lite::future::poll_once(frames_rx.recv()).await {
                    if more.is_empty() {
                        let _ = writer.write_all(&batch).await;
                        break 'frames;
                    }
                    batch.extend_from_slice(&more);
                }
                if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
            state.fail_all();
            let _ = writer.close().await;
        }
    })
    .detach();
    // Reader: answers to whoever waits for their ID.
    glommio::spawn_local({
        let link = state;
        async move {
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let read = futures_lite::future::or(async { Some(reader.read(&mut chunk).await) }, async {
                    stop_rx.recv().await;
                    None
                });
                let n = match read.await {
                    Some(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut consumed = 0;
                while let Some(raw) = split_frame(&buf[consumed..]) {
                    consumed += raw.header.frame_len();
                    let message = raw
                        .decode()
                        .map_or_else(|_| Message::error(ErrorCode::Format), |f| f.message);
                    let waiter = link.waiting.borrow_mut().remove(&raw.header.id);
                    if let Some(tx) = waiter {
                        let _ = tx.send(message);
                    }
                }
                buf.drain(..consumed);
            }
            link.fail_all();
        }
    })
    .detach();
    Ok(link)
}
