//! The tokio driver: connections and the pool on a tokio runtime (tools,
//! the load generator, the edge's threads mode, the PKCS#11 module), and
//! the DNS thread that keeps the edge's key servers current.

mod blocking;
pub mod connection;
pub mod dns;
pub mod pool;
