//! One pipelined connection to a key server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use keyless_protocol::{split_frame, ErrorCode, Frame, Message, Opcode, Ski};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::ClientError;

/// The TLS stream type, for callers that want to write raw bytes.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

type Pending = Arc<Mutex<PendingState>>;

#[derive(Default)]
struct PendingState {
    waiting: HashMap<u32, oneshot::Sender<Message>>,
    /// Set once the reader stops: why the connection is gone.
    closed: Option<String>,
}

/// A multiplexed connection. Cheap to share behind an `Arc`; every method
/// takes `&self`, and any number of calls may be in flight at once.
pub struct Connection {
    next_id: AtomicU32,
    pending: Pending,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    peer: String,
}

/// Open TCP and the TLS handshake, without starting the multiplexer.
pub async fn connect_stream(
    addr: SocketAddr,
    server_name: &str,
    tls: Arc<ClientConfig>,
) -> Result<TlsStream, ClientError> {
    let err = |source| ClientError::Connect {
        addr: addr.to_string(),
        source,
    };
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| ClientError::Config(format!("server name {server_name:?}: {e}")))?;
    let tcp = TcpStream::connect(addr).await.map_err(err)?;
    tcp.set_nodelay(true).map_err(err)?;
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(err)?;
    // With TLS 1.3 the server checks our certificate after the handshake
    // completes on our side; a zero-length flush surfaces nothing, so callers
    // learn of a refusal on their first read.
    stream.flush().await.map_err(err)?;
    Ok(stream)
}

/// Connect and start the reader and writer tasks on the current tokio runtime.
pub async fn connect(addr: SocketAddr, server_name: &str, tls: Arc<ClientConfig>) -> Result<Connection, ClientError> {
    let stream = connect_stream(addr, server_name, tls).await?;
    Ok(Connection::start(stream, addr.to_string()))
}

/// Connect over a Unix socket (mutual TLS inside, as over TCP).
pub async fn connect_unix(path: &Path, server_name: &str, tls: Arc<ClientConfig>) -> Result<Connection, ClientError> {
    let err = |source| ClientError::Connect {
        addr: path.display().to_string(),
        source,
    };
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| ClientError::Config(format!("server name {server_name:?}: {e}")))?;
    let unix = UnixStream::connect(path).await.map_err(err)?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, unix)
        .await
        .map_err(err)?;
    Ok(Connection::start(stream, path.display().to_string()))
}

async fn write_loop<S: AsyncWrite>(
    mut writer: WriteHalf<S>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Pending,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        // Coalesce whatever else is queued into the same write.
        while batch.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = async {
            writer.write_all(&batch).await?;
            writer.flush().await
        }
        .await
        {
            fail_all(&pending, format!("write failed: {e}"));
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop<S: AsyncRead>(mut reader: ReadHalf<S>, pending: Pending) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let reason = loop {
        match reader.read(&mut chunk).await {
            Ok(0) => break "closed by the key server".to_string(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break format!("read failed: {e}"),
        }
        let mut consumed = 0;
        while let Some(raw) = split_frame(&buf[consumed..]) {
            consumed += raw.header.frame_len();
            let id = raw.header.id;
            let message = match raw.decode() {
                Ok(f) => f.message,
                Err(e) => {
                    tracing::warn!("undecodable response {id}: {e}");
                    Message::error(ErrorCode::Format)
                }
            };
            let waiter = pending.lock().map(|mut p| p.waiting.remove(&id)).ok().flatten();
            match waiter {
                Some(tx) => {
                    let _ = tx.send(message);
                }
                None => tracing::warn!("response {id} matches no request"),
            }
        }
        buf.drain(..consumed);
    };
    fail_all(&pending, reason);
}

fn fail_all(pending: &Pending, reason: String) {
    if let Ok(mut p) = pending.lock() {
        p.closed.get_or_insert(reason);
        // Dropping the senders wakes every waiter with an error.
        p.waiting.clear();
    }
}

impl Connection {
    /// Start the reader and writer tasks over an established stream, on the
    /// current tokio runtime.
    pub fn start<S>(stream: S, peer: String) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, rx, pending.clone()));
        tokio::spawn(read_loop(reader, pending.clone()));
        Connection {
            next_id: AtomicU32::new(1),
            pending,
            writer: tx,
            peer,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Why the connection is closed, if it is.
    pub fn closed(&self) -> Option<String> {
        self.pending.lock().ok().and_then(|p| p.closed.clone())
    }

    /// Send one message and wait for the answer with the same ID.
    pub async fn call(&self, message: Message) -> Result<Message, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = Frame::new(id, message)
            .encode()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self
                .pending
                .lock()
                .map_err(|_| ClientError::Closed("poisoned".into()))?;
            if let Some(reason) = &p.closed {
                return Err(ClientError::Closed(reason.clone()));
            }
            p.waiting.insert(id, tx);
        }
        if self.writer.send(bytes).is_err() {
            self.pending.lock().ok().map(|mut p| p.waiting.remove(&id));
            return Err(ClientError::Closed(
                self.closed().unwrap_or_else(|| "writer stopped".into()),
            ));
        }
        rx.await
            .map_err(|_| ClientError::Closed(self.closed().unwrap_or_else(|| "connection lost".into())))
    }

    /// Perform `opcode` with key `ski` on `payload`; the result or the server's error.
    pub async fn perform(&self, opcode: Opcode, ski: Ski, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        expect_response(self.call(Message::request(opcode, Some(ski), payload.to_vec())).await?)
    }

    /// Ping with a payload; returns the echoed payload.
    pub async fn ping(&self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        let answer = self
            .call(Message::request(Opcode::PING, None, payload.to_vec()))
            .await?;
        check_error(&answer)?;
        if answer.opcode != Some(Opcode::PONG) {
            return Err(ClientError::Protocol(format!("ping answered with {:?}", answer.opcode)));
        }
        Ok(answer.payload.unwrap_or_default())
    }
}

fn check_error(answer: &Message) -> Result<(), ClientError> {
    match answer.error_code() {
        None => Ok(()),
        Some(Ok(code)) => Err(ClientError::Remote(code)),
        Some(Err(byte)) => Err(ClientError::RemoteUnknown(byte)),
    }
}

/// The payload of a 0xF0 response, or the error it carries.
pub fn expect_response(answer: Message) -> Result<Vec<u8>, ClientError> {
    check_error(&answer)?;
    if answer.opcode != Some(Opcode::RESPONSE) {
        return Err(ClientError::Protocol(format!(
            "expected a response, got {:?}",
            answer.opcode
        )));
    }
    Ok(answer.payload.unwrap_or_default())
}
