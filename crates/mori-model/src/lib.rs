//! Architectures, tokenizers, KV cache and the forward pass.

pub mod tokenizer;
