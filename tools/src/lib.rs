//! Operator tools behind `keyless-tool`.
//!
//! [`conformance`] checks any key server (ours or gokeyless) over the real
//! protocol, verifying every signature against the public keys it is given.

pub mod bench;
pub mod conformance;
pub mod flame;
pub mod keystore;
