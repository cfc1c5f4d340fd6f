//! The tokio driver: connections and the pool on a tokio runtime (tools,
//! the load generator, the edge's threads mode, the PKCS#11 module).

mod blocking;
pub mod connection;
pub mod pool;
