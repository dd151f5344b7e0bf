//! hookflow's benchmarks live in `benches/*.rs` (run with `cargo bench -p hookflow-benches`);
//! this crate has no code of its own.
