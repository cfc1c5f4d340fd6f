//! Keeping the private keys (or the edge's ticket keys) in this process's
//! memory and nowhere else: no core file and no ptrace by other users
//! ([`forbid_dumps`]), no swap ([`lock_memory`]). Through rustix's safe
//! calls (prctl, setrlimit, mlockall, capget): no `unsafe` here.

use rustix::mm::{mlockall, MlockAllFlags};
use rustix::process::{getrlimit, set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};
use rustix::thread::{capabilities, CapabilitySet};

/// `PR_SET_DUMPABLE` 0 and `RLIMIT_CORE` 0: a crash, `kill -ABRT` or an
/// OOM-time dump writes no core, and only root can ptrace the process or
/// read its `/proc/<pid>/mem`. Call before any key is read.
pub fn forbid_dumps() -> Result<(), String> {
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(|e| format!("prctl(PR_SET_DUMPABLE, 0): {e}"))?;
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .map_err(|e| format!("setrlimit(RLIMIT_CORE, 0): {e}"))
}

/// What [`lock_memory`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Locked {
    /// Every page, now and later, is locked once touched.
    Yes,
    /// Not tried: `RLIMIT_MEMLOCK` is finite (bytes) and the process lacks
    /// `CAP_IPC_LOCK`, so memory mapped later could fail to map.
    LimitTooLow(u64),
    /// `mlockall` failed.
    Failed(String),
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: no page of the
/// process goes to swap. `MCL_ONFAULT` locks pages as they are touched, so
/// reserved but untouched memory (thread stacks, the allocator's arenas)
/// costs nothing. Tried only where nothing can fail later: the memlock
/// limit is unlimited (`LimitMEMLOCK=infinity`) or the process holds
/// `CAP_IPC_LOCK` (root does), since with `MCL_FUTURE` a mapping beyond the
/// limit would fail.
pub fn lock_memory() -> Locked {
    let limit = getrlimit(Resource::Memlock);
    let privileged = capabilities(None).is_ok_and(|c| c.effective.contains(CapabilitySet::IPC_LOCK));
    if let (Some(bytes), false) = (limit.current, privileged) {
        return Locked::LimitTooLow(bytes);
    }
    match mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT) {
        Ok(()) => Locked::Yes,
        Err(e) => Locked::Failed(e.to_string()),
    }
}

/// Apply both at start-up, as `allow_core_dumps` and `disable_mlock` say,
/// logging what was done (a warning for anything left open).
/// `forbid_dumps` failing is an error: a key server that cannot keep its
/// keys out of a core file does not start.
pub fn keep_keys_in(what: &str, allow_core_dumps: bool) -> Result<(), String> {
    if allow_core_dumps {
        tracing::warn!("allow_core_dumps: true: a crash can write the {what} into a core file");
        return Ok(());
    }
    forbid_dumps()
}

/// Lock memory unless `disable_mlock`, saying what happened.
pub fn lock_unless(disable_mlock: bool) {
    if disable_mlock {
        tracing::warn!("disable_mlock: true: memory may be swapped to disk");
        return;
    }
    match lock_memory() {
        Locked::Yes => tracing::info!("memory locked (mlockall): nothing is swapped to disk"),
        Locked::LimitTooLow(bytes) => tracing::warn!(
            "memory not locked: RLIMIT_MEMLOCK is {} KiB and the process lacks CAP_IPC_LOCK; set \
             LimitMEMLOCK=infinity (the packaged unit does) or disable_mlock: true",
            bytes / 1024
        ),
        Locked::Failed(e) => tracing::warn!("memory not locked: mlockall: {e}; it may be swapped to disk"),
    }
}

/// Who the process runs as, for log lines (`uid 998`).
pub fn user_name() -> String {
    format!("uid {}", rustix::process::getuid().as_raw())
}
