//! The links to the key servers: the client core's tokio pool (its IDs,
//! answer matching, failover, backoff and health), started at the first
//! signature and not before, and started anew in a child process.
//!
//! nginx and Apache load the module in a master process and fork workers:
//! no thread may exist and no connection may be open when they fork. A
//! child inherits the parent's pool as memory whose threads did not
//! survive the fork; the pool is left untouched (dropping it would wait
//! for threads that are not there) and the child connects on its own.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use cryptoki_sys::*;
use keyless_client::pool::{KeyServerPool, PoolConfig};
use keyless_client::ClientError;
use keyless_protocol::{ErrorCode, Message, Opcode, Ski};

use crate::config::Config;

/// This process's pool, if a signature has been asked for yet.
#[derive(Default)]
pub struct Remote {
    pool: Mutex<Option<Installed>>,
}

struct Installed {
    /// The process that started it.
    pid: u32,
    pool: Arc<KeyServerPool>,
    started: Instant,
}

impl Remote {
    /// One operation with key `ski`; the key server's answer, or the
    /// PKCS#11 code for why there is none (logged once per cause).
    pub fn perform(&self, config: &Config, opcode: Opcode, ski: Ski, payload: Vec<u8>) -> Result<Vec<u8>, CK_RV> {
        let pool = self.pool(config)?;
        let request = Message::request(opcode, Some(ski), payload);
        pool.perform_waiting(request, config.request_timeout)
            .map_err(|e| failed(&e, &ski))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Installed>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This process's pool, started if need be. The lock is held only to
    /// look and to install, never while names resolve, threads start or
    /// links connect: a lock held at a fork stays held in the child.
    fn pool(&self, config: &Config) -> Result<Arc<KeyServerPool>, CK_RV> {
        let pid = std::process::id();
        let found = {
            let mut slot = self.lock();
            match slot.as_ref() {
                Some(i) if i.pid == pid => Some((i.pool.clone(), i.started)),
                Some(_) => {
                    if let Some(inherited) = slot.take() {
                        tracing::info!(
                            "process {pid} is a child of {}: connecting to the key servers anew",
                            inherited.pid
                        );
                        // Its threads did not survive the fork: see the module docs.
                        std::mem::forget(inherited);
                    }
                    None
                }
                None => None,
            }
        };
        let (pool, started) = match found {
            Some(found) => found,
            None => {
                let fresh = self.start(config)?;
                let now = Instant::now();
                let mut slot = self.lock();
                let winner = match slot.as_ref() {
                    // Another thread started one meanwhile: use it; ours is
                    // dropped below, after the lock is released.
                    Some(i) if i.pid == pid => (i.pool.clone(), i.started),
                    _ => {
                        *slot = Some(Installed {
                            pid,
                            pool: fresh.clone(),
                            started: now,
                        });
                        (fresh.clone(), now)
                    }
                };
                drop(slot);
                drop(fresh);
                winner
            }
        };
        // Signatures in the first connect_timeout wait for a link; later
        // ones fail at once when no key server is up.
        let since = started.elapsed();
        if since < config.connect_timeout && pool.healthy() == 0 {
            pool.wait_healthy(config.connect_timeout - since);
        }
        Ok(pool)
    }

    fn start(&self, config: &Config) -> Result<Arc<KeyServerPool>, CK_RV> {
        KeyServerPool::start(PoolConfig {
            servers: config.key_servers.clone(),
            server_name: config.key_server_name.clone(),
            tls: config.tls.clone(),
            connections_per_server: config.connections_per_server,
            request_timeout: config.request_timeout,
            health_interval: config.health_interval,
            connect_timeout: config.connect_timeout,
            threads: config.threads,
        })
        .map_err(|e| {
            crate::log::once("start", format_args!("cannot reach the key servers: {e}"));
            CKR_DEVICE_ERROR
        })
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let slot = self.pool.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(installed) = slot {
            if installed.pid != std::process::id() {
                // The parent's threads are not in this process: see the module docs.
                std::mem::forget(installed);
            }
        }
    }
}

/// The PKCS#11 code for a failed request, logged once per cause.
fn failed(error: &ClientError, ski: &Ski) -> CK_RV {
    let (cause, rv) = match error {
        ClientError::Remote(ErrorCode::KeyNotFound) => (format!("key {}", hex(ski)), CKR_KEY_HANDLE_INVALID),
        ClientError::Remote(ErrorCode::Crypto) => ("crypto".to_string(), CKR_FUNCTION_FAILED),
        ClientError::Remote(code) => (format!("remote {code:?}"), CKR_DEVICE_ERROR),
        ClientError::RemoteUnknown(code) => (format!("remote {code}"), CKR_DEVICE_ERROR),
        ClientError::Protocol(_) => ("protocol".to_string(), CKR_DEVICE_ERROR),
        _ => ("unreachable".to_string(), CKR_DEVICE_ERROR),
    };
    let what = match rv {
        CKR_KEY_HANDLE_INVALID => format!("the key servers do not hold key {} ({error})", hex(ski)),
        _ => format!("key {}: {error}", hex(ski)),
    };
    crate::log::once(&cause, format_args!("{what}"));
    rv
}

fn hex(ski: &Ski) -> String {
    ski.iter().map(|b| format!("{b:02x}")).collect()
}
