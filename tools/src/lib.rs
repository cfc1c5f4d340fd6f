//! Tools that talk to any keyless key server (ours or gokeyless): the
//! conformance suite, the load generator behind `keyless-bench`, and flame
//! graphs. They depend on no frontend, so the frontends' tests use them.
//!
//! [`conformance`] checks any key server (ours or gokeyless) over the real
//! protocol, verifying every signature against the public keys it is given.

pub mod bench;
pub mod conformance;
pub mod flame;
pub mod process;
