//! Benchmarks of trace and replay.
fn main() {}
