//! Mori's compute kernels: block formats, quantization, dot products and matrix
//! products with SIMD paths chosen at run time, plus the thread pool they run on.
//!
//! Every SIMD path sits beside a scalar reference in the same module and is
//! tested against it. Nothing here knows what a model is or does any I/O.

pub mod ops;
pub mod types;

pub use types::GgmlType;

/// Errors from the kernels: always a caller handing in data of the wrong shape.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a row of {n} elements is not a whole number of {ty} blocks ({block_size} elements each)")]
    RowLength { ty: GgmlType, n: usize, block_size: usize },
    #[error("{what}: expected {expected} bytes/elements, got {got}")]
    Size { what: &'static str, expected: usize, got: usize },
    #[error("{0} is not supported here")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, Error>;
