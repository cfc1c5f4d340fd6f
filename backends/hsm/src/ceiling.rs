//! The HSM's own throughput, for benchmarks: `sessions` threads, each with
//! its own session, calling C_Sign back to back on the key a URI names —
//! the same per-operation work the pool does ([`pool::perform_once`]), no
//! queue and no key server. Server throughput is quoted against this.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use cryptoki::object::{Attribute, ObjectClass};
use keyless_keys::{Operation, Pkcs11Source};

use crate::pool::{perform_once, Performed};
use crate::token::{self, short, TokenSelector};
use crate::uri::Pkcs11Uri;

/// Operations completed by all sessions together in `seconds`.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    pub ops: u64,
    pub seconds: f64,
}

impl Ceiling {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds
    }
}

/// Sign `input` with `op` for `duration` on `sessions` sessions at once.
pub fn measure(
    source: &Pkcs11Source,
    op: Operation,
    input: &[u8],
    sessions: usize,
    duration: Duration,
) -> Result<Ceiling, String> {
    let uri = Pkcs11Uri::parse(source.expose()).map_err(|e| e.to_string())?;
    let pin = uri.pin()?;
    let module = uri.module_path.clone().ok_or("no module-path")?;
    let ctx = token::context(&module)?;
    let selector = TokenSelector::from(&uri);
    let sessions = sessions.max(1);
    let barrier = Barrier::new(sessions);
    let results: Vec<Result<(u64, f64), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..sessions)
            .map(|_| {
                let (ctx, selector, pin, uri, barrier) = (&ctx, &selector, &pin, &uri, &barrier);
                scope.spawn(move || {
                    let prepared = (|| {
                        let slot = selector.find(ctx)?;
                        let session = ctx.open_ro_session(slot).map_err(|e| short(&e))?;
                        token::login(&session, pin)?;
                        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
                        if let Some(id) = &uri.id {
                            template.push(Attribute::Id(id.clone()));
                        }
                        if let Some(label) = &uri.object {
                            template.push(Attribute::Label(label.as_bytes().to_vec()));
                        }
                        let handle = *session
                            .find_objects(&template)
                            .map_err(|e| short(&e))?
                            .first()
                            .ok_or("no private key matches the URI")?;
                        Ok::<_, String>((session, handle))
                    })();
                    barrier.wait();
                    let (session, handle) = prepared?;
                    let once = || {
                        perform_once(&session, handle, op, input, 0).map_err(|e| match e {
                            Performed::Pkcs11(e) => short(&e),
                            Performed::Invalid(r) => r.to_string(),
                        })
                    };
                    once()?;
                    let start = Instant::now();
                    let mut ops = 0u64;
                    while start.elapsed() < duration {
                        std::hint::black_box(once()?);
                        ops += 1;
                    }
                    Ok((ops, start.elapsed().as_secs_f64()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a ceiling thread panicked".into())))
            .collect()
    });
    let mut total = Ceiling { ops: 0, seconds: 0.0 };
    for r in results {
        let (ops, secs) = r?;
        total.ops += ops;
        total.seconds = total.seconds.max(secs);
    }
    Ok(total)
}
