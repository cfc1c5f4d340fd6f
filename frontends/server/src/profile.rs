//! CPU profiles of the running process (every thread, so every core), on
//! demand, from the metrics listener only: `/debug/pprof/profile` (pprof
//! protobuf) and `/debug/pprof/flamegraph` (SVG).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pprof::protos::Message;

use crate::metrics::{respond, TEXT};

/// Samples per second: this kernel's timer ticks at 250 Hz.
const FREQUENCY: i32 = 250;

#[derive(Clone, Copy)]
pub enum Kind {
    Pprof,
    Flamegraph,
}

/// Profile for `seconds` on a thread of its own, so scrapes go on; one
/// profile at a time.
pub fn spawn(request: tiny_http::Request, kind: Kind, seconds: u64, busy: Arc<AtomicBool>) {
    if busy.swap(true, Ordering::AcqRel) {
        respond(request, 409, TEXT, b"a profile is already being taken\n".to_vec());
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("keyless-profile".into())
        .spawn(move || {
            let result = take(kind, seconds);
            busy.store(false, Ordering::Release);
            match result {
                Ok((content_type, body)) => respond(request, 200, content_type, body),
                Err(e) => respond(request, 500, TEXT, format!("profiling failed: {e}\n").into_bytes()),
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start profiling thread: {e}");
    }
}

/// What an idle flame graph answers: an SVG that says why it is empty.
fn idle(seconds: u64) -> (&'static str, Vec<u8>) {
    let why = format!("no CPU samples in {seconds} s: the server was idle; profile it under load");
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"40\">\
         <text x=\"10\" y=\"25\" font-family=\"sans-serif\" font-size=\"16\">{why}</text></svg>\n"
    );
    ("image/svg+xml", svg.into_bytes())
}

fn take(kind: Kind, seconds: u64) -> Result<(&'static str, Vec<u8>), String> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(seconds));
    let report = guard.report().build().map_err(|e| e.to_string())?;
    if report.data.is_empty() && matches!(kind, Kind::Flamegraph) {
        // An idle process takes no samples: say so rather than send an
        // empty body a browser shows as nothing. (An empty pprof profile
        // is valid as it is.)
        return Ok(idle(seconds));
    }
    match kind {
        Kind::Flamegraph => {
            let mut svg = Vec::new();
            report.flamegraph(&mut svg).map_err(|e| e.to_string())?;
            Ok(("image/svg+xml", svg))
        }
        Kind::Pprof => {
            let profile = report.pprof().map_err(|e| e.to_string())?;
            let bytes = profile.write_to_bytes().map_err(|e| e.to_string())?;
            Ok(("application/octet-stream", bytes))
        }
    }
}

/// Whether a client at `peer` may take a profile: only from this machine
/// (a profile shows what a process holding private keys is doing).
pub fn allowed(peer: Option<&std::net::SocketAddr>) -> bool {
    peer.is_some_and(|p| match p.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    })
}

/// How long a profile samples when `seconds` is not given.
pub const PROFILE_SECONDS: u64 = 10;
/// The longest profile: the profile runs on after its client leaves, and
/// holds off every other profile while it runs.
pub const PROFILE_MAX_SECONDS: u64 = 300;

/// `seconds=N` from a query string: default 10, 1 to 300.
pub fn seconds(query: &str) -> Result<u64, String> {
    match query.split('&').find_map(|kv| kv.strip_prefix("seconds=")) {
        None => Ok(PROFILE_SECONDS),
        Some(v) => match v.parse::<u64>() {
            Ok(s) if (1..=PROFILE_MAX_SECONDS).contains(&s) => Ok(s),
            _ => Err(format!(
                "seconds={v}: a whole number of seconds from 1 to {PROFILE_MAX_SECONDS} (default {PROFILE_SECONDS})"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_for_local_clients_and_seconds_is_bounded() {
        for (peer, ok) in [
            ("127.0.0.1:9", true),
            ("127.3.4.5:9", true),
            ("[::1]:9", true),
            ("[::ffff:127.0.0.1]:9", true),
            ("10.1.2.3:9", false),
            ("[2001:db8::1]:9", false),
        ] {
            assert_eq!(allowed(Some(&peer.parse().unwrap())), ok, "{peer}");
        }
        assert!(!allowed(None));
        assert_eq!(seconds(""), Ok(PROFILE_SECONDS));
        assert_eq!(seconds("x=1&seconds=300"), Ok(300));
        for bad in ["seconds=0", "seconds=301", "seconds=abc", "seconds="] {
            assert!(seconds(bad).unwrap_err().contains("from 1 to 300"), "{bad}");
        }
    }
}
