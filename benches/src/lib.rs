//! criterion micro-benchmarks live in `benches/`: `cargo bench -p keyless-benches`.
//! Under `cargo test` each runs once as a smoke test.
