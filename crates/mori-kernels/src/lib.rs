//! Mori's compute kernels: block formats, quantization, dot products and matrix
//! products with SIMD paths chosen at run time, plus the thread pool they run on.
//!
//! Every SIMD path sits beside a scalar reference and is tested against it.
//! Nothing here knows what a model is or does any I/O.

/// Defines `pub fn $name` whose body is compiled twice: for the baseline CPU
/// and with AVX2 + FMA enabled, picked at run time. For plain Rust code on
/// the hot path (attention dots, exponentials, activation rounding): without
/// it, `f32::mul_add` is a call into a software `fmaf` and rounding a call to
/// `rintf`, since the baseline x86-64 target has neither instruction. Same
/// results either way: `mul_add` is fused and rounding exact in both builds.
macro_rules! fma_dispatch {
    ($(#[$doc:meta])* pub fn $name:ident($($a:ident: $t:ty),*) $(-> $r:ty)? $body:block) => {
        $(#[$doc])*
        pub fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn generic($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($a: $t),*) $(-> $r)? {
                    generic($($a),*)
                }
                if crate::simd::has_avx2() {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { fast($($a),*) };
                }
            }
            generic($($a),*)
        }
    };
}

pub mod alloc_count;
pub mod kquants;
pub mod matmul;
pub mod ops;
pub mod packed;
pub mod pool;
pub mod quants;
pub mod scratch;
pub mod simd;
pub mod types;

pub use matmul::{
    dequantize_row, matmul, matmul_at, quantize_row, vec_dot, vec_dot_at, vec_dot_type, ActBuf,
    ActRow, WeightView,
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
