//! The keyless client with no runtime in it: what every driver (tokio,
//! glommio) and every tool shares. No sockets, no clock, no tasks — the
//! drivers feed bytes in, write the bytes it gives them, and sleep as long
//! as it says.
//!
//! - [`AnswerReader`]: cut complete answer frames out of a byte stream.
//! - [`Pipeline`]: one connection's requests in flight — request IDs that
//!   skip those still in use, answers matched by ID in any order, every
//!   waiter failed at once when the connection goes.
//! - [`ServerState`]: one key server's health and counters, shared by every
//!   connection and every core that talks to it.
//! - [`Names`]: the `HOST:PORT` entries and what their names resolve to
//!   now, kept through DNS failures.
//! - [`Retry`] and [`Backoff`]: which server a request tries (healthy ones
//!   in turn, once more elsewhere if its connection fails, never again for
//!   the server's own answer) and how long a reconnect waits.

mod answers;
mod names;
mod pipeline;
mod policy;
mod servers;

pub use answers::{expect_pong, expect_response, AnswerReader};
pub use names::Names;
pub use pipeline::answered;
pub use pipeline::{Answer, Pipeline};
pub use policy::{Backoff, Retry, Supervision};
pub use servers::{resolve, ServerState};
