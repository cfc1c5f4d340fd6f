//! The module's state in this process: the configuration and objects read
//! at C_Initialize, the open sessions, and the links (made later).
//!
//! Each session has its own lock, so application threads signing on
//! different sessions never wait for each other here; the table's lock is
//! held only to find a session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use cryptoki_sys::*;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::mechanism::{DecryptPlan, SignPlan};
use crate::remote::Remote;

/// The only slot; its token is always present.
pub const SLOT: CK_SLOT_ID = 0;

pub struct Module {
    pub config: Config,
    pub remote: Remote,
    /// The process that called C_Initialize (a child calls it again).
    pid: AtomicU32,
    /// Each session's flags (fixed at C_OpenSession, read without its lock)
    /// and its operations.
    sessions: Mutex<HashMap<CK_SESSION_HANDLE, OpenSession>>,
    next_session: AtomicU64,
    /// C_Login is accepted (no PIN protects anything here); sessions report it.
    pub logged_in: AtomicBool,
}

/// An operation begun by C_SignInit.
pub struct Signing {
    pub key: usize,
    pub plan: SignPlan,
    /// Data from C_SignUpdate, signed at C_SignFinal.
    pub data: Vec<u8>,
}

/// An operation begun by C_DecryptInit.
pub struct Decrypting {
    pub key: usize,
    pub plan: DecryptPlan,
    /// The plaintext, kept when the caller's buffer was too small so the
    /// retry does not ask the key server again.
    pub result: Option<Zeroizing<Vec<u8>>>,
}

#[derive(Default)]
pub struct Session {
    /// A digest begun by C_DigestInit.
    pub digesting: Option<aws_lc_rs::digest::Context>,
    /// Handles C_FindObjects has yet to return.
    pub found: Option<Vec<CK_OBJECT_HANDLE>>,
    pub signing: Option<Signing>,
    pub decrypting: Option<Decrypting>,
}

/// A session's flags and its operations.
type OpenSession = (CK_FLAGS, Arc<Mutex<Session>>);

static MODULE: RwLock<Option<Arc<Module>>> = RwLock::new(None);

/// The module, if C_Initialize has been called.
pub fn module() -> Result<Arc<Module>, CK_RV> {
    MODULE
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or(CKR_CRYPTOKI_NOT_INITIALIZED)
}

/// C_Initialize: read the configuration named by `reserved` or the
/// environment. In a child of an initialized process this is CKR_OK and
/// keeps what the parent had (sessions and handles stay valid; links are
/// made anew by [`Remote`]).
pub fn initialize(reserved: Option<String>) -> Result<(), CK_RV> {
    let mut slot = MODULE.write().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some(module) = slot.as_ref() {
        if module.pid.swap(pid, Ordering::Relaxed) == pid {
            return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
        }
        return Ok(());
    }
    let path = crate::config::path(reserved);
    let config = crate::config::load(&path).map_err(|e| {
        crate::log::early(format_args!("{e}"));
        CKR_GENERAL_ERROR
    })?;
    crate::log::init(&config);
    let labels: Vec<&str> = config.keys.iter().map(|k| k.label.as_str()).collect();
    tracing::info!(
        "{}: keys {}; key servers {}",
        config.path.display(),
        labels.join(", "),
        config.key_servers.join(", ")
    );
    *slot = Some(Arc::new(Module {
        config,
        remote: Remote::default(),
        pid: AtomicU32::new(pid),
        sessions: Mutex::default(),
        next_session: AtomicU64::new(1),
        logged_in: AtomicBool::new(false),
    }));
    Ok(())
}

/// C_Finalize: forget everything (links close when the last call using
/// them returns).
pub fn finalize() -> Result<(), CK_RV> {
    let module = MODULE.write().unwrap_or_else(|e| e.into_inner()).take();
    module.map(drop).ok_or(CKR_CRYPTOKI_NOT_INITIALIZED)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Module {
    pub fn open_session(&self, flags: CK_FLAGS) -> CK_SESSION_HANDLE {
        let handle = self.next_session.fetch_add(1, Ordering::Relaxed) as CK_SESSION_HANDLE;
        lock(&self.sessions).insert(handle, (flags, Arc::default()));
        handle
    }

    pub fn close_session(&self, handle: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
        lock(&self.sessions)
            .remove(&handle)
            .map(drop)
            .ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    pub fn close_all_sessions(&self) {
        lock(&self.sessions).clear();
        self.logged_in.store(false, Ordering::Relaxed);
    }

    /// Sessions open, and of those read-write: no session's own lock is
    /// taken (one may be held through a signature's round trip).
    pub fn session_count(&self) -> (usize, usize) {
        let sessions = lock(&self.sessions);
        let rw = sessions
            .values()
            .filter(|(flags, _)| flags & CKF_RW_SESSION != 0)
            .count();
        (sessions.len(), rw)
    }

    /// The flags session `handle` was opened with.
    pub fn session_flags(&self, handle: CK_SESSION_HANDLE) -> Result<CK_FLAGS, CK_RV> {
        lock(&self.sessions)
            .get(&handle)
            .map(|(flags, _)| *flags)
            .ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    /// The session `handle` names (its operations, behind their lock).
    pub fn session(&self, handle: CK_SESSION_HANDLE) -> Result<Arc<Mutex<Session>>, CK_RV> {
        lock(&self.sessions)
            .get(&handle)
            .map(|(_, session)| session.clone())
            .ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    /// Run `f` on the locked session `handle`.
    pub fn with_session<R>(
        &self,
        handle: CK_SESSION_HANDLE,
        f: impl FnOnce(&mut Session) -> Result<R, CK_RV>,
    ) -> Result<R, CK_RV> {
        let session = self.session(handle)?;
        let mut guard = lock(&session);
        f(&mut guard)
    }
}
