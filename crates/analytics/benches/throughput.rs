//! Throughput of the sink against the local services (filled in below).
fn main() {}
