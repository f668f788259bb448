//! GGUF reading (mmap, zero-copy) and writing.
