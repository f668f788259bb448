//! Sessions and generation: the Rust API every front end uses.
