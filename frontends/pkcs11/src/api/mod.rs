//! What each supported entry point does, on checked Rust values (the
//! pointers were turned into them in `ffi`). Each returns `Err(CK_RV)`
//! for the code the standard gives to the failure.

pub mod crypto;
pub mod general;
pub mod objects;
