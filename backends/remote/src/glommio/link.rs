//! One connection to a key server on this core: a writer task that sends
//! everything queued in one write, a reader task that hands answers to
//! their waiters (and answers the peer's pings), and the [`Pipeline`] that
//! matches them.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use keyless_protocol::Message;

use super::Settings;
use crate::core::{Pipeline, ServerState};
use crate::ClientError;

/// One connection: the pipeline, and the writer's queue (an empty frame
/// tells the writer to close).
pub(super) struct Link {
    pub(super) pipeline: Rc<RefCell<Pipeline>>,
    frames: LocalSender<Vec<u8>>,
    /// Stops the reader even if the key server never closes.
    stop_reader: LocalSender<()>,
}

impl Link {
    pub(super) fn closed(&self) -> Option<String> {
        self.pipeline.borrow().closed().map(str::to_owned)
    }

    /// Fail what waits and close the connection.
    pub(super) fn close(&self, reason: &str) {
        self.pipeline.borrow_mut().close(reason);
        let _ = self.frames.try_send(Vec::new());
        let _ = self.stop_reader.try_send(());
    }

    /// Requests sent and not yet answered.
    pub(super) fn in_flight(&self) -> usize {
        self.pipeline.borrow().in_flight()
    }

    /// Take other cores' requests for this connection from `queue`, until
    /// the returned task is dropped.
    pub(super) fn serve_forwarded(
        self: &Rc<Self>,
        mut queue: futures_channel::mpsc::UnboundedReceiver<super::directory::Forwarded>,
    ) -> glommio::Task<()> {
        let link = self.clone();
        glommio::spawn_local(async move {
            use futures_lite::StreamExt;
            while let Some((request, within, reply)) = queue.next().await {
                let link = link.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(link.call(request, within).await);
                })
                .detach();
            }
        })
    }

    pub(super) async fn call(&self, message: Message, within: Duration) -> Result<Message, ClientError> {
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

/// Connect and handshake, then start the connection's tasks.
pub(super) async fn open(state: &ServerState, settings: &Settings) -> Result<Rc<Link>, ClientError> {
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
    pub(super) fn start<S>(stream: S, peer: String) -> Rc<Link>
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
