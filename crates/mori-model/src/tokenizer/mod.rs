//! Tokenizers built from GGUF vocabulary metadata.
