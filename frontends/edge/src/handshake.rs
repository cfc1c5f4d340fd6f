//! Handshake threads: the `threads` handshake mode (the default is
//! `coroutine`, [`crate::coroutine`]).
//!
//! rustls signs synchronously inside `Accepted::into_connection`, and a
//! remote signature takes a round trip to a key server. In this mode a core
//! hands that step to this bounded pool and goes on serving; a thread
//! blocks for the signature, so the pool's size is how many signatures can
//! be in flight at once (across all cores). It costs a hand-off to another
//! thread per full handshake, which the coroutines avoid; it needs no stack
//! switching, which is why it stays as the fallback.

use std::sync::Arc;

use futures_channel::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads taking jobs from one bounded queue.
pub struct HandshakePool {
    jobs: async_channel::Sender<Job>,
}

impl HandshakePool {
    pub fn start(threads: usize, queue: usize) -> Result<Arc<HandshakePool>, String> {
        let (tx, rx) = async_channel::bounded::<Job>(queue.max(1));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("keyless-hs-{i}"))
                .stack_size(512 * 1024)
                .spawn(move || {
                    while let Ok(job) = rx.recv_blocking() {
                        job();
                    }
                })
                .map_err(|e| format!("cannot start handshake thread: {e}"))?;
        }
        Ok(Arc::new(HandshakePool { jobs: tx }))
    }

    /// Run `f` on a handshake thread; `None` if the pool has stopped.
    /// Waits (without blocking the core) while the queue is full.
    pub async fn run<F, R>(&self, f: F) -> Option<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.send(job).await.ok()?;
        rx.await.ok()
    }
}
