//! Leaving the process cleanly.
//!
//! A PKCS#11 module expects C_Finalize before the process ends. SoftHSM2
//! otherwise tears itself down in a static destructor at exit, after its
//! crypto library may already have cleaned up, and while a worker may still
//! be inside C_Sign: the process then dies with `free(): invalid pointer`
//! or SIGSEGV after all its work is done. So the first C_Initialize
//! registers an exit handler that stops the workers (each finishes the call
//! it is in and closes its session) and then finalizes every module.
//! Handlers run in reverse order of registration, so this one runs before
//! the module's own teardown, which was registered when it was loaded.

use std::sync::Once;
use std::time::Duration;

/// How long exit waits for workers to finish the calls they are in; a
/// module still in use after this is not finalized.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Register the exit handler (once per process).
pub(crate) fn finalize_at_exit() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: `at_exit` takes no arguments, returns nothing and never
        // unwinds (it catches panics); atexit has no other precondition.
        if unsafe { libc::atexit(at_exit) } != 0 {
            tracing::warn!("cannot register the PKCS#11 exit handler; modules are not finalized at exit");
        }
    });
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        if crate::pool::stop_for_exit(EXIT_GRACE) {
            crate::token::finalize_all();
        }
    });
}
