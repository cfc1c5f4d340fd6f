//! One client connection: read frames, spread them over the cores, write
//! the answers back.
//!
//! The reader assigns every complete frame of a read to the least-loaded
//! core (often this one), signs this core's share, and hands the rest to
//! other cores. A writer task drains every answer that is ready — local or
//! from other cores — into one TLS write. A per-connection cap on requests
//! in flight (read but not yet written) stops the reader, so memory per
//! connection is bounded whatever the client sends or fails to read.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::sync::Semaphore;
use keyless_engine::core::{Core, Responses};
use keyless_engine::request::Request;
use keyless_protocol::split_frame;

/// Bytes asked for per read once data flows.
const READ_CHUNK: usize = 64 * 1024;
/// What an idle connection waits with: about one padded request. The big
/// chunk is lent by the core ([`keyless_engine::buffers`]) only while data
/// flows, so a connection that waits holds no read buffer of its own.
const FIRST_READ: usize = 2 * 1024;
/// A connection's input buffer grown past this is let go once empty.
const KEEP_INBUF: usize = 4 * 1024;
/// Input gathered (from reads that complete at once) before answering.
const READ_AHEAD: usize = 256 * 1024;
/// A batch of local answers is handed to the writer once this large.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// A batch this deep hands its first half of answers to the writer early.
const SPLIT_BATCH_AT: usize = 32;

/// Limits of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Requests read but not yet answered on the wire (gokeyless: 1024).
    pub max_in_flight: usize,
    /// After the client stops sending, how long answers still in flight
    /// may take before the connection is closed anyway.
    pub drain_timeout: Duration,
    /// The TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// Close a connection that sends nothing for this long (zero: never).
    pub idle_timeout: Duration,
    /// Connections one core holds at most, handshakes included.
    pub max_connections: usize,
    /// Longest request body accepted (the protocol allows 65535). A longer
    /// one is answered with a format error and its bytes skipped: the
    /// connection goes on.
    pub max_body: usize,
    /// While a batch is being signed, hand its answers to the writer at
    /// least this often. Holding every answer until the whole batch is
    /// signed left the server idle while the client, which got all its
    /// answers at once, refilled its pipeline (docs/architecture.md, "Batching").
    pub batch_flush: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: 1024,
            drain_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 16384,
            max_body: 65535,
            batch_flush: Duration::from_millis(2),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The client closed between frames.
    Clean,
    /// The client closed in the middle of a frame: framing was lost.
    MidFrame { buffered: usize },
    /// The client sent nothing for the idle timeout.
    Idle,
    /// The server is draining (SIGTERM) and answered what it had read.
    Drained,
}

/// What a connection the key server opened to an edge (`dial`) does
/// beyond serving requests: it pings the edge with the server's hello
/// (instance and key-set version, [`keyless_protocol::PeerHello`]) at once
/// and then every `interval`, drops the edge's pongs, and counts requests.
#[derive(Clone)]
pub struct Dialed {
    pub interval: Duration,
    pub instance: u64,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Serve one (already TLS-established) stream until the client leaves.
pub async fn serve<S>(stream: S, core: Rc<Core>, limits: &Limits) -> std::io::Result<Closed>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    serve_with(stream, core, limits, None).await
}

/// [`serve`], and for a connection the server dialed, what [`Dialed`] says.
pub async fn serve_with<S>(
    stream: S,
    core: Rc<Core>,
    limits: &Limits,
    dialed: Option<Dialed>,
) -> std::io::Result<Closed>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut reader, writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_unbounded::<Responses>();
    let tx = Rc::new(tx);
    let conn = core.register(tx.clone());
    let cap = limits.max_in_flight.max(1) as u64;
    let permits = Rc::new(Semaphore::new(cap));
    let write_task = glommio::spawn_local(write_loop(writer, rx, permits.clone()));
    let pinger = dialed
        .as_ref()
        .map(|d| glommio::spawn_local(ping_edge(Rc::downgrade(&tx), core.clone(), d.clone())));
    let result = read_loop(&mut reader, &core, conn, &tx, &permits, limits, dialed.as_ref()).await;
    drop(pinger);
    // Let answers still being signed (here or elsewhere) reach the client.
    let _ = glommio::timer::timeout(limits.drain_timeout, async {
        permits
            .acquire(cap)
            .await
            .map_err(|e| glommio::GlommioError::<()>::IoError(e.into()))
    })
    .await;
    core.unregister(conn);
    drop(tx);
    let written = write_task.await;
    match (result, written) {
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(closed), Ok(())) => Ok(closed),
    }
}

/// Ping the edge with this server's hello now and every interval, while
/// the connection's writer is there.
async fn ping_edge(tx: std::rc::Weak<LocalSender<Responses>>, core: Rc<Core>, dialed: Dialed) {
    let mut id: u32 = 0;
    loop {
        let Some(tx) = tx.upgrade() else { return };
        id = id.wrapping_add(1);
        let hello = keyless_protocol::PeerHello {
            instance: dialed.instance,
            keys: core.shared().key_version(),
        };
        let ping = keyless_protocol::Message::request(keyless_protocol::Opcode::PING, None, hello.encode());
        let mut frame = Vec::with_capacity(keyless_protocol::PADDED_LEN);
        if keyless_protocol::Frame::new(id, ping).encode_into(&mut frame).is_ok() && tx.try_send((frame, 0)).is_err() {
            return;
        }
        drop(tx);
        glommio::timer::sleep(dialed.interval).await;
    }
}

fn closed_permits() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "writer stopped")
}

async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    core: &Rc<Core>,
    conn: u64,
    tx: &Rc<LocalSender<Responses>>,
    permits: &Semaphore,
    limits: &Limits,
    dialed: Option<&Dialed>,
) -> std::io::Result<Closed> {
    // A dialed link hears the edge's health pings and its pongs to ours:
    // silence for a few intervals means the edge is gone.
    let idle_timeout = match dialed {
        Some(d) => (d.interval * 5).max(Duration::from_secs(5)),
        None => limits.idle_timeout,
    };
    // Bytes of an over-long request still to be discarded as they arrive.
    let mut skip = 0usize;
    let mut inbuf: Vec<u8> = Vec::new();
    let mut first = [0u8; FIRST_READ];
    let mut local: Vec<Request> = Vec::new();
    loop {
        keyless_engine::buffers::release_if_empty(&mut inbuf, KEEP_INBUF);
        // Draining (SIGTERM): read nothing new, but still answer what this
        // socket has already received, below.
        let read = async {
            if idle_timeout.is_zero() {
                return Some(reader.read(&mut first).await);
            }
            let timed = glommio::timer::timeout(idle_timeout, async {
                reader.read(&mut first).await.map_err(glommio::GlommioError::from)
            });
            match timed.await {
                Ok(n) => Some(Ok(n)),
                Err(glommio::GlommioError::TimedOut(_)) => None,
                Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
            }
        };
        let draining = match crate::listener::until_drain(core, read).await {
            Some(None) => return Ok(Closed::Idle),
            Some(Some(read)) => {
                let n = read?;
                if n == 0 {
                    return Ok(if inbuf.is_empty() {
                        Closed::Clean
                    } else {
                        Closed::MidFrame { buffered: inbuf.len() }
                    });
                }
                inbuf.extend_from_slice(&first[..n]);
                false
            }
            None => true,
        };
        skip_over_long(&mut inbuf, &mut skip);
        // Take everything already received before signing any of it, so a
        // ping at the end of a large write is seen (and answered) first.
        let mut eof = false;
        let mut chunk = keyless_engine::buffers::lend(READ_CHUNK);
        while inbuf.len() < READ_AHEAD {
            match futures_lite::future::poll_once(reader.read(&mut chunk)).await {
                Some(Ok(0)) => {
                    eof = true;
                    break;
                }
                Some(Ok(n)) => inbuf.extend_from_slice(&chunk[..n]),
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        drop(chunk);
        let read_at = std::time::Instant::now();
        skip_over_long(&mut inbuf, &mut skip);
        let mut consumed = 0;
        loop {
            // A header announcing more than max_body: answer now, skip its body.
            if let Some(header) = inbuf
                .get(consumed..consumed + keyless_protocol::HEADER_LEN)
                .and_then(|h| <&[u8; keyless_protocol::HEADER_LEN]>::try_from(h).ok())
                .map(keyless_protocol::Header::parse)
                .filter(|h| h.length as usize > limits.max_body)
            {
                tracing::warn!(
                    request_id = header.id,
                    "request body of {} bytes is over max_body ({}); skipped",
                    header.length,
                    limits.max_body
                );
                let mut out = Vec::with_capacity(1024);
                let _ = keyless_protocol::Frame::new(
                    header.id,
                    keyless_protocol::Message::error(keyless_protocol::ErrorCode::Format),
                )
                .encode_into(&mut out);
                if !permits.try_acquire(1).map_err(|_| closed_permits())? {
                    answer_local(core, conn, &mut local, tx, limits.batch_flush).await;
                    permits.acquire(1).await.map_err(|_| closed_permits())?;
                }
                let _ = tx.try_send((out, 1));
                let frame_end = consumed + header.frame_len();
                let available = frame_end.min(inbuf.len());
                skip = frame_end - available;
                inbuf.drain(consumed..available);
                continue;
            }
            let Some(raw) = split_frame(&inbuf[consumed..]) else {
                break;
            };
            consumed += raw.header.frame_len();
            let request = Request::decode(raw, read_at);
            if let Some(dialed) = dialed {
                if request.opcode == Some(keyless_protocol::Opcode::PONG) {
                    continue; // the edge answering our ping
                }
                dialed.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if !permits.try_acquire(1).map_err(|_| closed_permits())? {
                // At the cap: answer what we hold, then wait for the writer.
                answer_local(core, conn, &mut local, tx, limits.batch_flush).await;
                permits.acquire(1).await.map_err(|_| closed_permits())?;
            }
            if let Some(request) = core.dispatch(conn, request).await {
                local.push(request);
            }
        }
        answer_local(core, conn, &mut local, tx, limits.batch_flush).await;
        inbuf.drain(..consumed);
        if eof || draining {
            return Ok(if !inbuf.is_empty() {
                Closed::MidFrame { buffered: inbuf.len() }
            } else if eof {
                Closed::Clean
            } else {
                Closed::Drained
            });
        }
    }
}

/// Drop the start of `inbuf` that belongs to an over-long request.
fn skip_over_long(inbuf: &mut Vec<u8>, skip: &mut usize) {
    if *skip > 0 {
        let n = (*skip).min(inbuf.len());
        inbuf.drain(..n);
        *skip -= n;
    }
}

/// Sign this core's share of a read and pass the answers to the writer.
async fn answer_local(
    core: &Rc<Core>,
    conn: u64,
    local: &mut Vec<Request>,
    tx: &LocalSender<Responses>,
    batch_flush: Duration,
) {
    if local.is_empty() {
        return;
    }
    core.counters().batch_size.observe(local.len() as f64);
    let mut out = Vec::with_capacity(local.len() * 1024);
    let mut count = 0;
    let mut flushed = std::time::Instant::now();
    // Answers of a deep batch go out once half of it is signed (the client
    // refills its pipeline while the rest is signed), and any batch's at
    // least every `batch_flush`. A shallow batch is not split: one write
    // per batch is what keeps many connections x few requests cheap.
    let half = if local.len() >= SPLIT_BATCH_AT {
        local.len().div_ceil(2)
    } else {
        usize::MAX
    };
    let mut batch = core.local_batch(local);
    let mut i = 0;
    while let Some(step) = core.sign_next(conn, &mut batch, &mut out) {
        let now = std::time::Instant::now();
        if step == keyless_engine::batch::Step::Answered {
            count += 1;
        }
        i += 1;
        if count > 0 && (i == half || out.len() >= WRITE_HIGH_WATER || now - flushed >= batch_flush) {
            core.counters().handoff_size.observe(count as f64);
            let _ = tx.try_send((std::mem::take(&mut out), count));
            count = 0;
            flushed = now;
            futures_lite::future::yield_now().await;
            continue;
        }
        // Let other connections and the cross-core workers have a turn once
        // this task has used its slice (RuntimeConfig::preempt_timer).
        glommio::executor().yield_if_needed().await;
    }
    local.clear();
    if count > 0 {
        core.counters().handoff_size.observe(count as f64);
        let _ = tx.try_send((out, count));
        // Let the writer send these now, before the next read: otherwise a
        // reader that always finds more input starves it, the client gets
        // no answers to refill from, and the pipeline drains.
        futures_lite::future::yield_now().await;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    rx: LocalReceiver<Responses>,
    permits: Rc<Semaphore>,
) -> std::io::Result<()> {
    let result = async {
        while let Some((mut buf, mut count)) = rx.recv().await {
            // The batch closes when nothing more is ready (or at the high
            // water mark): everything ready leaves in one write. Holding a
            // batch open for more answers (we tried 50 and 200 us) bought no
            // throughput, since every 16 KB TLS record is its own send anyway,
            // and cost p99 latency; see docs/performance.md.
            while buf.len() < WRITE_HIGH_WATER {
                match futures_lite::future::poll_once(rx.recv()).await {
                    Some(Some((more, n))) => {
                        buf.extend_from_slice(&more);
                        count += n;
                    }
                    _ => break,
                }
            }
            writer.write_all(&buf).await?;
            writer.flush().await?;
            permits.signal(count as u64);
        }
        Ok(())
    }
    .await;
    // A dead writer must stop the reader, which may be waiting for permits.
    permits.close();
    if result.is_ok() {
        // Every close says so (TLS close_notify): a peer that sees a bare
        // EOF cannot tell it from a truncation. A peer that went away
        // first makes this fail, which changes nothing.
        let _ = glommio::timer::timeout(CLOSE_NOTIFY_WITHIN, async {
            writer.close().await.map_err(glommio::GlommioError::<()>::IoError)
        })
        .await;
    }
    result
}

/// How long a connection's close_notify may take to leave.
const CLOSE_NOTIFY_WITHIN: Duration = Duration::from_secs(1);
