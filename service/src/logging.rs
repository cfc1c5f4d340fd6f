//! Logging to stderr from a writer thread, at gokeyless's levels.

/// Log to stderr (as gokeyless does) at gokeyless's `loglevel` (0 debug, 1
/// info, 2 warning, 3+ error); `KEYLESS_LOG` (an `EnvFilter` string)
/// overrides it; `KEYLESS_LOG_FORMAT=json` writes one JSON object a line.
pub fn init_logging(loglevel: u8) {
    use std::io::IsTerminal;
    let level = match loglevel {
        0 => "debug",
        1 => "info",
        2 => "warn",
        _ => "error",
    };
    let filter = match std::env::var("KEYLESS_LOG") {
        Ok(spec) => tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            // Said once, before anything else: a silently ignored filter
            // leaves an operator wondering where the debug lines went.
            eprintln!("KEYLESS_LOG={spec:?} is not a log filter ({e}); logging at level {level} instead");
            tracing_subscriber::EnvFilter::new(level)
        }),
        Err(_) => tracing_subscriber::EnvFilter::new(level),
    };
    // Lines go to stderr from a writer thread: a core that logs never waits
    // for the disk (a log file under writeback throttling can block a
    // write for seconds, and the stderr lock would stop every core behind
    // it). If that thread falls 128k lines behind, lines are dropped.
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    // One JSON object a line for log shippers (`KEYLESS_LOG_FORMAT=json`).
    let installed = match std::env::var("KEYLESS_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().with_current_span(false).try_init(),
        Ok("text") | Err(_) => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        Ok(other) => {
            eprintln!("KEYLESS_LOG_FORMAT={other:?} is not a log format (text or json); logging text");
            builder.with_ansi(std::io::stderr().is_terminal()).try_init()
        }
    };
    if installed.is_ok() {
        *LOG_WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }
}

/// The log writer thread's guard: dropping it writes out what is queued.
static LOG_WRITER: std::sync::Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> = std::sync::Mutex::new(None);

/// Write out every queued log line; call before the process exits.
pub fn flush_logs() {
    let guard = LOG_WRITER.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(guard);
}
