//! The glommio driver: each core keeps its own mutually authenticated
//! connections to every key server (glommio sockets, rustls), so a
//! handshake coroutine's signature request leaves and its answer comes back
//! on the core that needs it, with no thread in between. Requests from the
//! core's handshakes are queued and written together. Everything else —
//! IDs, matching, failover, backoff, health — is [`crate::core`]'s, and
//! the [`ServerState`]s are shared with every other core.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use keyless_protocol::{Message, Opcode};
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
    fn pick(&self, n: usize) -> Option<Rc<Link>> {
        let links = self.links.borrow();
        let live: Vec<&Rc<Link>> = links.iter().filter(|l| l.closed().is_none()).collect();
        (!live.is_empty()).then(|| live[n % live.len()].clone())
    }
}

/// This core's connections to every key server.
pub struct KeyClient {
    servers: Vec<Rc<Server>>,
    states: Vec<Arc<ServerState>>,
    next: std::cell::Cell<usize>,
    request_timeout: Duration,
}

impl KeyClient {
    /// Start connecting (in the background) to each of `servers`.
    pub fn start(servers: &[Arc<ServerState>], settings: Settings) -> Rc<KeyClient> {
        let client = Rc::new(KeyClient {
            servers: servers
                .iter()
                .map(|state| {
                    Rc::new(Server {
                        state: state.clone(),
                        links: RefCell::new(Vec::new()),
                    })
                })
                .collect(),
            states: servers.to_vec(),
            next: std::cell::Cell::new(0),
            request_timeout: settings.request_timeout,
        });
        for server in &client.servers {
            for _ in 0..settings.connections_per_server {
                glommio::spawn_local(supervise(server.clone(), settings.clone())).detach();
            }
        }
        client
    }

    /// Send `request` to a key server; its response payload, or why there
    /// is none (at once when no key server is reachable).
    pub async fn perform(&self, request: Message) -> Result<Vec<u8>, ClientError> {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        let within = self.request_timeout;
        let answer = Retry::new(n, self.servers.len())
            .run(&self.states, |i| {
                let link = self.servers[i].pick(n)?;
                let request = request.clone();
                Some(async move { link.call(request, within).await })
            })
            .await?;
        expect_response(answer)
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

/// Connect, handshake, and start the reader and writer tasks.
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
    let (mut reader, mut writer) = futures_lite::io::split(tls);
    let (frames_tx, frames_rx) = local_channel::new_unbounded::<Vec<u8>>();
    let (stop_tx, stop_rx) = local_channel::new_unbounded::<()>();
    let pipeline = Rc::new(RefCell::new(Pipeline::new(state.addr.to_string())));
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
    // Reader: answers to whoever waits for their ID.
    glommio::spawn_local({
        let pipeline = pipeline.clone();
        async move {
            let mut chunk = vec![0u8; 64 * 1024];
            let reason = loop {
                let read = futures_lite::future::or(async { Some(reader.read(&mut chunk).await) }, async {
                    stop_rx.recv().await;
                    None
                });
                match read.await {
                    Some(Ok(0)) => break "closed by the key server".to_string(),
                    Some(Ok(n)) => pipeline.borrow_mut().receive(&chunk[..n]),
                    Some(Err(e)) => break format!("read failed: {e}"),
                    None => break "closed".to_string(),
                }
            };
            pipeline.borrow_mut().close(reason);
        }
    })
    .detach();
    Ok(Rc::new(Link {
        pipeline,
        frames: frames_tx,
        stop_reader: stop_tx,
    }))
}
