//! GGUF reading (mmap, zero-copy) and writing; Hugging Face safetensors and config.json reading.
//!
//! A GGUF file is a header (magic, version, counts), a list of typed
//! metadata key/values, a list of tensor descriptions, then the tensor data,
//! each tensor at an aligned offset. [`GgufFile`] validates all of it at open
//! time, so later accesses are infallible slices of the mapping;
//! [`GgufWriter`] produces files that llama.cpp reads.

mod reader;
pub mod safetensors;
mod value;
mod writer;

pub use reader::{GgufFile, TensorInfo};
pub use value::{Array, StrArray, Value};
pub use writer::{GgufStream, GgufWriter, TensorLayout};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Everything that can be wrong with a GGUF file. Every variant names the
/// file, and the key or tensor at fault where there is one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a GGUF file (magic {found:?}, expected \"GGUF\")")]
    BadMagic { path: String, found: [u8; 4] },
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3){hint}")]
    BadVersion {
        path: String,
        version: u32,
        hint: &'static str,
    },
    #[error(
        "{path}: truncated: {what} needs {needed} bytes at offset {offset}, but the file has {len}"
    )]
    Truncated {
        path: String,
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    #[error("{path}: {what}: {msg}")]
    Invalid {
        path: String,
        what: String,
        msg: String,
    },
    #[error("{path}: tensor '{tensor}' has unknown type id {id}")]
    UnknownTensorType {
        path: String,
        tensor: String,
        id: u32,
    },
    #[error("{path}: key '{key}' is missing")]
    MissingKey { path: String, key: String },
    #[error("{path}: key '{key}' has type {found}, expected {expected}")]
    WrongType {
        path: String,
        key: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{path}: tensor '{name}' is missing")]
    MissingTensor { path: String, name: String },
    #[error("{path}: {msg}")]
    Other { path: String, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;
