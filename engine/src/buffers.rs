//! Read buffers lent by the core: a connection takes one while data flows
//! and gives it back when the data stops, so a connection that waits for
//! its next request holds none (it waits with a small buffer of its own;
//! nginx does the same with OpenSSL's `SSL_MODE_RELEASE_BUFFERS`). Each
//! core keeps what was given back for the next one to take.

use std::cell::RefCell;

/// Buffers of one size a core keeps at most; more are freed.
const KEEP: usize = 64;

/// Buffers of one size given back on a core.
type Kept = (usize, Vec<Box<[u8]>>);

thread_local! {
    /// Buffers given back on this core, by size.
    static FREE: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of this core's, given back when dropped.
pub struct Lent(Option<Box<[u8]>>);

/// A zeroed buffer of `len` bytes, from this core's free ones if any.
pub fn lend(len: usize) -> Lent {
    let kept = FREE.with(|free| {
        let mut free = free.borrow_mut();
        free.iter_mut()
            .find(|(size, _)| *size == len)
            .and_then(|(_, list)| list.pop())
    });
    Lent(Some(kept.unwrap_or_else(|| vec![0u8; len].into_boxed_slice())))
}

impl std::ops::Deref for Lent {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl std::ops::DerefMut for Lent {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(buf) = self.0.take() else { return };
        // During thread teardown the pool may be gone: then just free it.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            let len = buf.len();
            match free.iter_mut().find(|(size, _)| *size == len) {
                Some((_, list)) if list.len() < KEEP => list.push(buf),
                Some(_) => {}
                None => free.push((len, vec![buf])),
            }
        });
    }
}

/// Drop `buf`'s allocation if it is empty and grew past `keep` bytes: a
/// connection's input buffer shrinks back once a burst is consumed.
pub fn release_if_empty(buf: &mut Vec<u8>, keep: usize) {
    if buf.is_empty() && buf.capacity() > keep {
        *buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_lent_again_and_sizes_do_not_mix() {
        let first = lend(4096);
        let address = first.as_ptr();
        drop(first);
        let again = lend(4096);
        assert_eq!(again.as_ptr(), address, "the same buffer, not a new one");
        let other = lend(1024);
        assert_eq!(other.len(), 1024);
        assert_ne!(other.as_ptr(), address);
        let mut v = Vec::with_capacity(10_000);
        release_if_empty(&mut v, 4096);
        assert_eq!(v.capacity(), 0);
        let mut busy = vec![1u8; 10];
        release_if_empty(&mut busy, 4);
        assert_eq!(busy.len(), 10, "a buffer with data is kept");
    }
}
