//! A test hook: `KEYLESS_SANDBOX_PROBE` lists things the sandbox must
//! refuse, and the process tries each once the sandbox is on, from a new
//! thread (so a thread started after the filters is what is tested), and
//! logs what happened. Items, separated by `;`:
//!
//! - `open:PATH`: read a file (`/etc/shadow`);
//! - `connect:HOST:PORT`: a TCP connection (to a port something listens on);
//! - `exec:PATH`: replace the process with a program (`execve`);
//! - `spawn:PATH`: start a program as a child (`clone` without a thread).
//!
//! `exec` stops the process: its refusal is the sandbox's own line.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The variable the hook reads.
pub const VAR: &str = "KEYLESS_SANDBOX_PROBE";

fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ALLOWED".to_string(),
        Err(e) => format!("refused ({e})"),
    }
}

fn try_one(item: &str) -> String {
    match item.split_once(':') {
        Some(("open", path)) => format!("open {path}: {}", outcome(std::fs::read(path))),
        Some(("connect", addr)) => match addr.parse::<SocketAddr>() {
            Ok(a) => format!(
                "connect {a}: {}",
                outcome(TcpStream::connect_timeout(&a, Duration::from_secs(2)))
            ),
            Err(e) => format!("connect {addr}: not an address ({e})"),
        },
        Some(("exec", path)) => {
            use std::os::unix::process::CommandExt;
            let e = std::process::Command::new(path).exec();
            format!("exec {path}: refused ({e})")
        }
        Some(("spawn", path)) => format!("spawn {path}: {}", outcome(std::process::Command::new(path).spawn())),
        _ => format!("{item}: not a probe (open:, connect:, exec:, spawn:)"),
    }
}

/// Run the probes `KEYLESS_SANDBOX_PROBE` lists, if any, and wait for them.
pub fn run_from_env() {
    let Ok(list) = std::env::var(VAR) else { return };
    let done = std::thread::Builder::new().name("sandbox-probe".into()).spawn(move || {
        for item in list.split(';').filter(|s| !s.is_empty()) {
            // Straight to stderr: a probe that stops the process must not
            // take the lines before it along, queued in the log writer.
            eprintln!("sandbox probe: {}", try_one(item));
        }
    });
    if let Ok(handle) = done {
        let _ = handle.join();
    }
}
