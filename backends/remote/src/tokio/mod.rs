//! The tokio driver: connections and the pool on a tokio runtime (tools,
//! the load generator, and the edge's threads mode).

pub mod connection;
pub mod pool;
