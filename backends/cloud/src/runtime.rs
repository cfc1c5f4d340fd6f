//! The threads cloud calls run on. The SDKs are tokio clients; the cores are
//! glommio executors that must never wait on the network, so every call is
//! spawned here and its answer crosses back through a one-shot channel.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

/// Two threads: a call is almost all waiting, and TLS and request signing
/// for thousands of calls a second fit in that.
const THREADS: usize = 2;

/// The cloud threads, started on first use.
pub(crate) fn runtime() -> Result<&'static Runtime, String> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(THREADS)
                .thread_name("cloud")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the cloud key store threads: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Run `future` on the cloud threads and wait for it here: for loading and
/// tools, never on a core.
pub(crate) fn wait<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime()?.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().map_err(|_| "the cloud key store task failed".to_string())
}
