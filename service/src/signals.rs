//! SIGHUP reloads, SIGTERM and SIGINT drain: the same for every binary.

use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// What a binary does on each signal.
pub struct Handlers<R, D, S> {
    /// SIGHUP: reload; the text says what is served now, the error why
    /// nothing changed.
    pub reload: R,
    /// SIGTERM or SIGINT: stop taking new work and finish what is in flight.
    pub drain: D,
    /// The process is still running `grace` after the drain started (a core
    /// stuck, or one that slept through its wake-up): the exit code to
    /// leave with.
    pub stuck: S,
    pub grace: Duration,
}

/// Handle signals on a thread of their own from now on.
pub fn spawn<R, D, S>(name: &'static str, handlers: Handlers<R, D, S>) -> std::io::Result<()>
where
    R: Fn() -> Result<String, String> + Send + 'static,
    D: Fn() + Send + 'static,
    S: FnOnce() -> i32 + Send + 'static,
{
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name(format!("{name}-signals"))
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    match (handlers.reload)() {
                        Ok(what) => tracing::info!("SIGHUP: reloaded; {what}"),
                        Err(e) => tracing::error!("SIGHUP: reload failed, keeping the current state: {e}"),
                    }
                    continue;
                }
                tracing::info!("signal {sig}: draining (no new connections or requests)");
                (handlers.drain)();
                // Safety net: the cores must stop within the drain timeout.
                std::thread::sleep(handlers.grace);
                let code = (handlers.stuck)();
                tracing::error!("the cores did not stop within the drain timeout; exiting with {code}");
                crate::flush_logs();
                std::process::exit(code);
            }
        })?;
    Ok(())
}
