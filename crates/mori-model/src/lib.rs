//! Architectures, tokenizers, KV cache and the forward pass.
//!
//! A model file is opened once ([`Model::load`]); its weights stay in the
//! memory map and are read in place by the kernels. Hyper-parameters (what the
//! file says the network is) live in [`HParams`]; runtime choices (context
//! length, threads) are passed separately and never written back.

pub mod arch;
pub mod convert;
pub mod hparams;
pub mod kv_cache;
pub mod model;
pub mod quantize;
pub mod random;
pub mod random_hf;
pub mod registry;
pub mod sentencepiece;
pub mod tokenizer;

pub use arch::{Logits, Scratch};
pub use hparams::HParams;
pub use kv_cache::KvCache;
pub use model::{Model, ModelInfo};
pub use tokenizer::{Detokenizer, Tokenizer};

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Format(#[from] mori_formats::Error),
    #[error(transparent)]
    Kernel(#[from] mori_kernels::Error),
    #[error("{path}: tokenizer: {source}")]
    Tokenizer {
        path: String,
        #[source]
        source: tokenizer::TokenizerError,
    },
    #[error("{path}: unknown architecture '{arch}' (supported: {supported})")]
    UnknownArchitecture {
        path: String,
        arch: String,
        supported: String,
    },
    #[error("{path}: tensor '{tensor}' has shape {got:?}, but the metadata implies {expected:?}")]
    Shape {
        path: String,
        tensor: String,
        got: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("{path}: {key}: {msg}")]
    BadHParam {
        path: String,
        key: String,
        msg: String,
    },
    #[error("token id {id} is outside the vocabulary of {n_vocab} tokens")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error(
        "the prompt needs {needed} positions but the context holds {n_ctx} (already used: {used})"
    )]
    ContextFull {
        needed: usize,
        used: usize,
        n_ctx: usize,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
