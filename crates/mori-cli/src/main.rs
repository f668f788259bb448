//! The `mori` command line.
fn main() {}
