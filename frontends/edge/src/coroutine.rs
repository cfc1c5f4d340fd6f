//! Handshakes as stackful coroutines on the core: the technique OpenSSL's
//! ASYNC_JOB uses, with corosensei.
//!
//! rustls signs synchronously, in the middle of `into_connection`. Run
//! inside a coroutine, our signer suspends the coroutine with its request
//! instead of blocking; the core sends the request to a key server, goes on
//! serving other connections, and resumes the coroutine with the answer.
//! No thread waits and no handshake state crosses threads; a resumed
//! handshake (no signature) runs to completion in one go. Stacks are reused
//! per core. Dropping a suspended coroutine (a handshake timeout) unwinds
//! its stack, so nothing leaks.

use std::cell::{Cell, RefCell};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use keyless_protocol::Message;

use keyless_client::glommio::KeyClient;

/// What a suspended signer gets back: the signature, or why there is none.
pub type SignAnswer = Result<Vec<u8>, String>;

thread_local! {
    /// The running coroutine's yielder; null outside a coroutine.
    static YIELDER: Cell<*const Yielder<SignAnswer, Message>> = const { Cell::new(std::ptr::null()) };
}

/// Whether this code runs inside a handshake coroutine.
pub fn active() -> bool {
    !YIELDER.with(|c| c.get()).is_null()
}

/// Inside a coroutine: suspend it until the core has the key server's
/// answer to `request`. Outside one: `None` (check [`active`] first).
pub fn suspend_for(request: Message) -> Option<SignAnswer> {
    let y = YIELDER.with(|c| c.get());
    if y.is_null() {
        return None;
    }
    // SAFETY: YIELDER is non-null only while a coroutine started by
    // `run` executes on this thread (the driver clears it after every
    // resume returns, and the coroutine sets it again when it runs). The
    // Yielder lives on that coroutine's stack for its whole body, and we
    // are on that stack now (signing happens inside `into_connection`,
    // inside the body), so the pointer is valid and used by this thread only.
    let yielder = unsafe { &*y };
    let answer = yielder.suspend(request);
    YIELDER.with(|c| c.set(y));
    Some(answer)
}

/// Coroutine stacks kept for reuse on one core.
#[derive(Default)]
pub struct Stacks(RefCell<Vec<DefaultStack>>);

const STACK_SIZE: usize = 256 * 1024;
const KEEP_STACKS: usize = 256;

impl Stacks {
    fn take(&self) -> Result<DefaultStack, String> {
        match self.0.borrow_mut().pop() {
            Some(s) => Ok(s),
            None => DefaultStack::new(STACK_SIZE).map_err(|e| format!("cannot allocate a coroutine stack: {e}")),
        }
    }

    fn put(&self, stack: DefaultStack) {
        let mut stacks = self.0.borrow_mut();
        if stacks.len() < KEEP_STACKS {
            stacks.push(stack);
        }
    }
}

/// Run `step` (a handshake step that may sign) as a coroutine on this
/// core, serving its signature requests through this core's `client`.
pub async fn run<R: 'static>(
    stacks: &Stacks,
    client: &KeyClient,
    step: impl FnOnce() -> R + 'static,
) -> Result<R, String> {
    // Values crossing the coroutine boundary must be small: the step (it
    // holds the ClientHello) and its result (a whole rustls connection)
    // travel boxed.
    let step = Box::new(step);
    let mut coroutine: Coroutine<SignAnswer, Message, Box<R>, DefaultStack> =
        Coroutine::with_stack(stacks.take()?, move |yielder: &Yielder<SignAnswer, Message>, _start| {
            YIELDER.with(|c| c.set(yielder as *const _));
            Box::new(step())
        });
    let mut input: SignAnswer = Ok(Vec::new());
    loop {
        let result = coroutine.resume(input);
        YIELDER.with(|c| c.set(std::ptr::null()));
        match result {
            CoroutineResult::Yield(request) => {
                input = client.perform(request).await.map_err(|e| e.to_string());
            }
            CoroutineResult::Return(out) => {
                stacks.put(coroutine.into_stack());
                return Ok(*out);
            }
        }
    }
}
