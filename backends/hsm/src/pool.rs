//! The session pool: one worker thread per PKCS#11 session, all taking
//! requests from one bounded lock-free queue.
//!
//! A core never calls PKCS#11: it queues a job and awaits a one-shot reply
//! (the worker's wake-up reaches the core's executor from another thread).
//! Each worker takes the next job as soon as its session is free and keeps
//! taking until the queue is empty, so every session stays busy while work
//! is queued. A worker whose session fails (token logged out, removed,
//! session closed) reopens it, logs in and finds its objects again; the job
//! is retried once on the new session. While the token stays unreachable,
//! jobs fail at once instead of waiting, and the worker tries again at most
//! every [`REOPEN_BACKOFF`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use futures_channel::oneshot;
use keyless_keys::{CryptoError, Hash, Operation};
use zeroize::Zeroizing;

use crate::token::{self, short, TokenSelector};

/// At saturation, answers a worker holds before handing them back together,
/// and for how long at most (see [`Worker::run`]).
const MAX_HELD: usize = 16;
const MAX_HOLD: Duration = Duration::from_millis(2);

type Reply = (
    oneshot::Sender<Result<Vec<u8>, CryptoError>>,
    Result<Vec<u8>, CryptoError>,
);

fn release(held: &mut Vec<Reply>) {
    for (reply, result) in held.drain(..) {
        let _ = reply.send(result);
    }
}

/// How often a worker retries a token it cannot reach.
const REOPEN_BACKOFF: Duration = Duration::from_millis(200);

/// How a worker finds a key object in its own session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub id: Vec<u8>,
    pub label: Vec<u8>,
}

/// One operation for the pool.
pub struct Job {
    pub object: Arc<ObjectRef>,
    pub op: Operation,
    pub input: Vec<u8>,
    /// For RSA raw decryption: pad the result to the modulus length.
    pub modulus_len: usize,
    pub reply: oneshot::Sender<Result<Vec<u8>, CryptoError>>,
}

/// Pool activity, readable from any thread (for metrics).
#[derive(Debug, Default)]
pub struct PoolStats {
    pub sessions: AtomicUsize,
    /// Workers performing an operation now.
    pub busy: AtomicUsize,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    /// Sessions reopened after a failure.
    pub reopened: AtomicU64,
    /// Jobs dropped unperformed because the core stopped waiting.
    pub abandoned: AtomicU64,
}

/// A snapshot of one pool, for metrics and `keystore-debug`.
#[derive(Debug, Clone)]
pub struct PoolSnapshot {
    pub token: String,
    pub sessions: usize,
    pub busy: usize,
    pub queued: usize,
    pub completed: u64,
    pub failed: u64,
    pub reopened: u64,
    pub abandoned: u64,
}

/// Sessions on one token, shared by every key on it and every core.
pub struct Pool {
    jobs: async_channel::Sender<Job>,
    pub timeout: Duration,
    pub token: String,
    stats: Arc<PoolStats>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Workers finish what is queued, then close their sessions and exit.
        self.jobs.close();
    }
}

impl Pool {
    pub fn sender(&self) -> &async_channel::Sender<Job> {
        &self.jobs
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let s = &self.stats;
        PoolSnapshot {
            token: self.token.clone(),
            sessions: s.sessions.load(Ordering::Relaxed),
            busy: s.busy.load(Ordering::Relaxed),
            queued: self.jobs.len(),
            completed: s.completed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            reopened: s.reopened.load(Ordering::Relaxed),
            abandoned: s.abandoned.load(Ordering::Relaxed),
        }
    }
}

/// What a pool needs to (re)open its sessions.
pub struct PoolSpec {
    pub ctx: Pkcs11,
    pub module: PathBuf,
    pub slot_id: u64,
    pub selector: TokenSelector,
    pub pin: Zeroizing<String>,
    pub sessions: usize,
    pub queue: usize,
    pub timeout: Duration,
}

/// A pool's workers, kept so that [`shutdown`] can stop them.
struct Workers {
    key: (PathBuf, u64),
    pool: Weak<Pool>,
    jobs: async_channel::Sender<Job>,
    spec: Arc<WorkerSpec>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

type Registry = Mutex<Vec<Workers>>;

fn registry() -> &'static Registry {
    static POOLS: OnceLock<Registry> = OnceLock::new();
    POOLS.get_or_init(Default::default)
}

/// The pool for this module and slot: the running one if any key still
/// uses it (a reload keeps its sessions), else a new one.
pub fn get_or_start(spec: PoolSpec) -> Result<Arc<Pool>, String> {
    let mut pools = registry().lock().unwrap_or_else(|e| e.into_inner());
    pools.retain(|w| w.pool.strong_count() > 0 || w.threads.iter().any(|t| !t.is_finished()));
    let key = (spec.module.clone(), spec.slot_id);
    if let Some(pool) = pools.iter().find(|w| w.key == key).and_then(|w| w.pool.upgrade()) {
        return Ok(pool);
    }
    let (tx, rx) = async_channel::bounded(spec.queue.max(1));
    let stats = Arc::new(PoolStats::default());
    let token = spec.selector.describe();
    let shared = Arc::new(WorkerSpec {
        ctx: spec.ctx,
        selector: spec.selector,
        pin: spec.pin,
        token: token.clone(),
        stopping: AtomicBool::new(false),
    });
    let mut threads = Vec::new();
    for index in 0..spec.sessions.max(1) {
        let worker = Worker {
            spec: shared.clone(),
            index,
            session: None,
            handles: HashMap::new(),
            retry_after: None,
            unreachable: false,
        };
        let rx = rx.clone();
        let stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("pkcs11-{index}"))
            .spawn(move || worker.run(rx, stats))
            .map_err(|e| format!("cannot start a PKCS#11 worker thread: {e}"))?;
        threads.push(thread);
    }
    let pool = Arc::new(Pool {
        jobs: tx.clone(),
        timeout: spec.timeout,
        token,
        stats,
    });
    pools.push(Workers {
        key,
        pool: Arc::downgrade(&pool),
        jobs: tx,
        spec: shared,
        threads,
    });
    Ok(pool)
}

/// Stop every pool before the process exits: no new jobs are taken, and
/// workers finish their current call and close their sessions, waiting at
/// most `timeout` for them. True when every worker has stopped. (Exiting
/// while a worker is inside the module can crash in the module's own
/// teardown.)
pub fn shutdown(timeout: Duration) -> bool {
    let workers = std::mem::take(&mut *registry().lock().unwrap_or_else(|e| e.into_inner()));
    stop(workers, timeout)
}

/// [`shutdown`] from an exit handler: a registry held by a thread that
/// exit interrupted is left alone (false) rather than waited for.
pub(crate) fn stop_for_exit(timeout: Duration) -> bool {
    match registry().try_lock() {
        Ok(mut pools) => {
            let workers = std::mem::take(&mut *pools);
            drop(pools);
            stop(workers, timeout)
        }
        Err(_) => false,
    }
}

fn stop(workers: Vec<Workers>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    for w in &workers {
        w.spec.stopping.store(true, Ordering::Relaxed);
        w.jobs.close();
    }
    let mut all_stopped = true;
    for w in workers {
        for thread in w.threads {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                all_stopped = false;
            }
        }
    }
    all_stopped
}

/// Every pool still in use.
pub fn snapshots() -> Vec<PoolSnapshot> {
    let pools = registry().lock().unwrap_or_else(|e| e.into_inner());
    pools
        .iter()
        .filter_map(|w| w.pool.upgrade())
        .map(|p| p.snapshot())
        .collect()
}

struct WorkerSpec {
    ctx: Pkcs11,
    selector: TokenSelector,
    pin: Zeroizing<String>,
    token: String,
    /// Set by [`shutdown`]: workers leave what is still queued unperformed
    /// (its requesters get an error) instead of draining the queue.
    stopping: AtomicBool,
}

struct Worker {
    spec: Arc<WorkerSpec>,
    index: usize,
    session: Option<Session>,
    handles: HashMap<Arc<ObjectRef>, ObjectHandle>,
    retry_after: Option<Instant>,
    /// The token could not be reached on the last attempt (logged once).
    unreachable: bool,
}

/// Why an attempt failed: the session (retry on a new one) or the operation.
enum Failure {
    Session(String),
    Operation(CryptoError),
}

impl Worker {
    fn run(mut self, rx: async_channel::Receiver<Job>, stats: Arc<PoolStats>) {
        stats.sessions.fetch_add(1, Ordering::Relaxed);
        // Open the session now, not inside the first request.
        if let Err(e) = self.open() {
            tracing::warn!("{} session {}: {e}", self.spec.token, self.index);
        }
        // Answers are handed back in small batches while more jobs are
        // queued: each hand-back wakes the requesting core (an eventfd
        // write and a context switch), so one wake per batch instead of per
        // signature leaves that CPU to signing. With nothing queued, an
        // answer goes back at once: no added latency below saturation.
        let mut held: Vec<Reply> = Vec::with_capacity(MAX_HELD);
        let mut held_since = Instant::now();
        while !self.spec.stopping.load(Ordering::Relaxed) {
            let job = if held.is_empty() {
                match rx.recv_blocking() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            } else {
                match rx.try_recv() {
                    Ok(job) => job,
                    Err(async_channel::TryRecvError::Empty) => {
                        release(&mut held);
                        continue;
                    }
                    Err(async_channel::TryRecvError::Closed) => break,
                }
            };
            if job.reply.is_canceled() {
                // The core stopped waiting (timeout): don't spend the HSM on it.
                stats.abandoned.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            stats.busy.fetch_add(1, Ordering::Relaxed);
            let result = self.perform(&job, &stats);
            stats.busy.fetch_sub(1, Ordering::Relaxed);
            let counter = if result.is_ok() {
                &stats.completed
            } else {
                &stats.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if held.is_empty() {
                held_since = Instant::now();
            }
            held.push((job.reply, result));
            if held.len() >= MAX_HELD || held_since.elapsed() >= MAX_HOLD {
                release(&mut held);
            }
        }
        release(&mut held);
        // Stopped: what is still queued is answered with an error now (its
        // reply dropped) rather than left to its requester's timeout.
        while let Ok(job) = rx.try_recv() {
            drop(job);
        }
        stats.sessions.fetch_sub(1, Ordering::Relaxed);
    }

    fn perform(&mut self, job: &Job, stats: &PoolStats) -> Result<Vec<u8>, CryptoError> {
        for attempt in 0..2 {
            match self.attempt(job) {
                Ok(out) => {
                    if self.unreachable {
                        self.unreachable = false;
                        tracing::info!("{} session {}: serving again", self.spec.token, self.index);
                    }
                    return Ok(out);
                }
                Err(Failure::Operation(e)) => return Err(e),
                Err(Failure::Session(reason)) => {
                    let had_session = self.session.is_some();
                    self.reset();
                    if had_session && attempt == 0 {
                        tracing::warn!("{} session {}: {reason}; reopening", self.spec.token, self.index);
                        stats.reopened.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // Log the first failure of an outage, not every request's.
                    if !self.unreachable {
                        self.unreachable = true;
                        tracing::error!(
                            "{} session {}: {reason}; requests fail until the token is reachable",
                            self.spec.token,
                            self.index
                        );
                    }
                    return Err(CryptoError("the HSM is unavailable"));
                }
            }
        }
        Err(CryptoError("the HSM is unavailable"))
    }

    fn reset(&mut self) {
        self.handles.clear();
        if let Some(session) = self.session.take() {
            let _ = session.close();
        }
    }

    fn open(&mut self) -> Result<(), String> {
        if self.session.is_some() {
            return Ok(());
        }
        if self.retry_after.is_some_and(|t| Instant::now() < t) {
            return Err("token unreachable; retrying shortly".into());
        }
        let opened = (|| {
            let slot = self.spec.selector.find(&self.spec.ctx)?;
            let session = self
                .spec
                .ctx
                .open_ro_session(slot)
                .map_err(|e| format!("cannot open a session: {}", short(&e)))?;
            token::login(&session, &self.spec.pin)?;
            Ok::<_, String>(session)
        })();
        match opened {
            Ok(session) => {
                self.session = Some(session);
                self.retry_after = None;
                Ok(())
            }
            Err(e) => {
                self.retry_after = Some(Instant::now() + REOPEN_BACKOFF);
                Err(e)
            }
        }
    }

    fn attempt(&mut self, job: &Job) -> Result<Vec<u8>, Failure> {
        self.open().map_err(Failure::Session)?;
        let handle = self.handle(&job.object)?;
        let session = self.session.as_ref().ok_or(Failure::Session("no session".into()))?;
        perform_once(session, handle, job.op, &job.input, job.modulus_len).map_err(|e| match e {
            Performed::Pkcs11(e) if is_session_failure(&e) => Failure::Session(short(&e)),
            Performed::Pkcs11(e) => {
                tracing::warn!("{}: {:?}: {}", self.spec.token, job.op, short(&e));
                Failure::Operation(CryptoError("the HSM refused the operation"))
            }
            Performed::Invalid(reason) => Failure::Operation(CryptoError(reason)),
        })
    }

    /// The object's handle in this session (found once, then cached).
    fn handle(&mut self, object: &Arc<ObjectRef>) -> Result<ObjectHandle, Failure> {
        if let Some(h) = self.handles.get(object) {
            return Ok(*h);
        }
        let session = self.session.as_ref().ok_or(Failure::Session("no session".into()))?;
        let template = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(object.id.clone()),
            Attribute::Label(object.label.clone()),
        ];
        let found = session
            .find_objects(&template)
            .map_err(|e| Failure::Session(short(&e)))?;
        // Not found is a session failure too: a logged-out session sees no
        // private objects.
        let handle = *found.first().ok_or_else(|| {
            Failure::Session(format!(
                "private key (id {}, label {:?}) not visible",
                hex::encode(&object.id),
                String::from_utf8_lossy(&object.label)
            ))
        })?;
        self.handles.insert(object.clone(), handle);
        Ok(handle)
    }
}

/// Why one operation failed: the module said so, or the request or the
/// module's answer made no sense.
pub(crate) enum Performed {
    Pkcs11(Error),
    Invalid(&'static str),
}

/// One operation on one session: the mechanism, the input as the mechanism
/// wants it (DigestInfo for PKCS#1) and the output as TLS wants it (DER for
/// ECDSA). Shared by the workers and the raw-throughput ceiling, so both
/// do the same work.
pub(crate) fn perform_once(
    session: &Session,
    handle: ObjectHandle,
    op: Operation,
    input: &[u8],
    modulus_len: usize,
) -> Result<Vec<u8>, Performed> {
    let pkcs11 = Performed::Pkcs11;
    match op {
        Operation::Ecdsa(_) => {
            let raw = session.sign(&Mechanism::Ecdsa, handle, input).map_err(pkcs11)?;
            keyless_keys::spki::ecdsa_der(&raw).map_err(Performed::Invalid)
        }
        Operation::RsaPkcs1(hash) => {
            let mut data = digest_info(hash).to_vec();
            data.extend_from_slice(input);
            session.sign(&Mechanism::RsaPkcs, handle, &data).map_err(pkcs11)
        }
        Operation::RsaPss(hash) => {
            let (hash_alg, mgf) = pss_hash(hash).ok_or(Performed::Invalid("no PSS with MD5-SHA1"))?;
            let params = PkcsPssParams {
                hash_alg,
                mgf,
                s_len: (hash.len() as u64).into(),
            };
            session
                .sign(&Mechanism::RsaPkcsPss(params), handle, input)
                .map_err(pkcs11)
        }
        Operation::Ed25519 => {
            let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
            session.sign(&mechanism, handle, input).map_err(pkcs11)
        }
        Operation::RsaRawDecrypt => {
            let out = session.decrypt(&Mechanism::RsaX509, handle, input).map_err(pkcs11)?;
            // Some modules drop leading zero bytes; the protocol answers
            // with the full modulus length.
            let mut padded = vec![0u8; modulus_len.saturating_sub(out.len())];
            padded.extend_from_slice(&out);
            Ok(padded)
        }
    }
}

/// Errors after which the session (or the token) must be opened again.
fn is_session_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::GeneralError
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// The DER DigestInfo prefix PKCS#1 v1.5 puts before a digest (RFC 8017
/// section 9.2, note 1). MD5-SHA1 (TLS 1.0/1.1) is signed bare.
fn digest_info(hash: Hash) -> &'static [u8] {
    match hash {
        Hash::Md5Sha1 => &[],
        Hash::Sha1 => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
        ],
        Hash::Sha224 => &[
            0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04,
            0x1c,
        ],
        Hash::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
            0x20,
        ],
        Hash::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04,
            0x30,
        ],
        Hash::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04,
            0x40,
        ],
    }
}

/// CKM_RSA_PKCS_PSS parameters: the digest's hash and MGF1 with the same hash.
fn pss_hash(hash: Hash) -> Option<(MechanismType, PkcsMgfType)> {
    Some(match hash {
        Hash::Md5Sha1 => return None,
        Hash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        Hash::Sha224 => (MechanismType::SHA224, PkcsMgfType::MGF1_SHA224),
        Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        Hash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
    })
}
