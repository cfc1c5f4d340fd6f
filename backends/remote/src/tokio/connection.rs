//! One pipelined connection to a key server.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use keyless_protocol::{Message, Opcode, Ski};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;

use crate::core::{expect_pong, expect_response, Pipeline};
use crate::ClientError;

/// The TLS stream type, for callers that want to write raw bytes.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A multiplexed connection. Cheap to share behind an `Arc`; every method
/// takes `&self`, and any number of calls may be in flight at once.
pub struct Connection {
    pipeline: Arc<Mutex<Pipeline>>,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    peer: String,
}

fn lock(pipeline: &Mutex<Pipeline>) -> std::sync::MutexGuard<'_, Pipeline> {
    pipeline.lock().unwrap_or_else(|e| e.into_inner())
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
    pipeline: Arc<Mutex<Pipeline>>,
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
            lock(&pipeline).close(format!("write failed: {e}"));
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop<S: AsyncRead>(
    mut reader: ReadHalf<S>,
    pipeline: Arc<Mutex<Pipeline>>,
    // Weak: dropping the Connection (its sender) must still close the writer.
    writer: mpsc::WeakUnboundedSender<Vec<u8>>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    let reason = loop {
        match reader.read(&mut chunk).await {
            Ok(0) => break "closed by the key server".to_string(),
            Ok(n) => {
                let pongs = lock(&pipeline).receive(&chunk[..n]);
                if let Some(writer) = writer.upgrade().filter(|_| !pongs.is_empty()) {
                    let _ = writer.send(pongs);
                }
            }
            Err(e) => break format!("read failed: {e}"),
        }
    };
    lock(&pipeline).close(reason);
}

impl Connection {
    /// Start the reader and writer tasks over an established stream, on the
    /// current tokio runtime.
    pub fn start<S>(stream: S, peer: String) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let pipeline = Arc::new(Mutex::new(Pipeline::new(peer.clone())));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, rx, pipeline.clone()));
        tokio::spawn(read_loop(reader, pipeline.clone(), tx.downgrade()));
        Connection {
            pipeline,
            writer: tx,
            peer,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Why the connection is closed, if it is.
    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        lock(&self.pipeline).in_flight()
    }

    pub fn closed(&self) -> Option<String> {
        lock(&self.pipeline).closed().map(str::to_owned)
    }

    /// Send one message and wait for the answer with the same ID.
    pub async fn call(&self, message: Message) -> Result<Message, ClientError> {
        let (id, frame, answer) = lock(&self.pipeline).request(message)?;
        if self.writer.send(frame).is_err() {
            lock(&self.pipeline).cancel(id);
            return Err(ClientError::Closed(
                self.closed().unwrap_or_else(|| "writer stopped".into()),
            ));
        }
        let result = answer.await;
        crate::core::answered(result, self.closed())
    }

    /// Perform `opcode` with key `ski` on `payload`; the result or the server's error.
    pub async fn perform(&self, opcode: Opcode, ski: Ski, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        expect_response(self.call(Message::request(opcode, Some(ski), payload.to_vec())).await?)
    }

    /// Ping with a payload; returns the echoed payload.
    pub async fn ping(&self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        expect_pong(
            self.call(Message::request(Opcode::PING, None, payload.to_vec()))
                .await?,
        )
    }
}
