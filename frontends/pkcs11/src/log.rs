//! The module's log: to the configured file or to standard error (an
//! nginx worker's stderr is its error log), at the configured level, with
//! no thread of its own. A failure that repeats is logged once per cause,
//! so a key server that is down does not write a line per handshake.

use std::collections::HashSet;
use std::fmt::Arguments;
use std::sync::{Mutex, OnceLock};

use crate::config::Config;

/// Send this library's log lines (and the client core's) where `config`
/// says. Once per process: the first configuration read wins.
pub fn init(config: &Config) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let builder = tracing_subscriber::fmt()
            .with_max_level(config.log_level)
            .with_target(false)
            .with_ansi(false);
        let file = config.log_file.as_ref().and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .inspect_err(|e| {
                    eprintln!(
                        "keyless-pkcs11: cannot open log_file {}: {e}; logging to stderr",
                        path.display()
                    )
                })
                .ok()
        });
        let _ = match file {
            Some(file) => tracing::subscriber::set_global_default(builder.with_writer(Mutex::new(file)).finish()),
            None => tracing::subscriber::set_global_default(builder.with_writer(std::io::stderr).finish()),
        };
    });
}

/// Log `message` as a warning the first time `cause` happens in this process.
pub fn once(cause: &str, message: Arguments<'_>) {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let first = SEEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(cause.to_string());
    if first {
        tracing::warn!("{message} (logged once)");
    }
}

/// An error before any configuration was read (C_Initialize's own).
pub fn early(message: Arguments<'_>) {
    eprintln!("keyless-pkcs11: {message}");
}
