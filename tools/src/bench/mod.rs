//! `keyless-bench`: load generation against any keyless key server.
//!
//! [`load`] drives N connections with M requests in flight each (closed
//! loop, optionally pausing) or at a fixed rate (open loop, latency measured
//! from the intended send time so a slow server cannot hide its queueing);
//! [`ceiling`] measures raw signing of the same key in-process on one core,
//! so every report can state server/ceiling as a ratio from the same run;
//! [`sweep`] runs the load across concurrency levels for capacity tests;
//! [`handshake`] drives TLS handshakes (full or resumed) against an edge;
//! [`hold`] holds many idle connections (memory per connection).

pub mod ceiling;
pub mod cli;
pub mod handshake;
pub mod hold;
pub mod load;
pub mod op;
pub mod report;
pub mod sweep;
