//! Mori's compute kernels: block formats, quantization, dot products and matrix
//! products with SIMD paths chosen at run time, plus the thread pool they run on.
//!
//! Every SIMD path sits beside a scalar reference and is tested against it.
//! Nothing here knows what a model is or does any I/O.

pub mod kquants;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod quants;
pub mod simd;
pub mod types;

pub use matmul::{
    dequantize_row, matmul, quantize_row, vec_dot, vec_dot_type, ActBuf, ActRow, WeightView,
};
pub use pool::ThreadPool;
pub use types::GgmlType;

/// Errors from the kernels: always a caller handing in data of the wrong shape.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "a row of {n} elements is not a whole number of {ty} blocks ({block_size} elements each)"
    )]
    RowLength {
        ty: GgmlType,
        n: usize,
        block_size: usize,
    },
    #[error("{what}: expected {expected}, got {got}")]
    Size {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, Error>;
