//! Waiting for a future on a thread that is not the runtime's (a PKCS#11
//! caller's), without handing the work to another thread: the future is
//! polled here, and whoever completes it (the connection's reader task)
//! unparks this thread directly. One hop fewer than spawning a task and
//! waiting on a channel, which is most of a signature's client-side cost.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Instant;

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Poll `future` on this thread until it is ready (`Some`) or `deadline`
/// passes (`None`, the future dropped).
pub fn block_until<F: Future>(future: F, deadline: Instant) -> Option<F::Output> {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return Some(out);
        }
        // A spurious or early unpark only polls again.
        let left = deadline.checked_duration_since(Instant::now())?;
        std::thread::park_timeout(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ready_futures_return_and_pending_ones_time_out() {
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(block_until(async { 7 }, soon), Some(7));
        let start = Instant::now();
        assert_eq!(
            block_until(std::future::pending::<()>(), start + Duration::from_millis(30)),
            None
        );
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn another_thread_completes_the_wait() {
        let (tx, rx) = futures_channel::oneshot::channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(42).unwrap();
        });
        let got = block_until(rx, Instant::now() + Duration::from_secs(5));
        assert_eq!(got, Some(Ok(42)));
        sender.join().unwrap();
    }
}
