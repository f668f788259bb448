//! The one table from GGUF architecture name to loader. Adding an architecture
//! means adding a row here and, for a new family, a module under `arch/`.

use std::sync::Arc;

use mori_formats::GgufFile;
use mori_kernels::ops::RopeLayout;

use crate::arch::{gemma3, llama, Network};
use crate::hparams::HParams;
use crate::Result;

/// Builds the network of one architecture from an open file.
pub type Loader = fn(Arc<GgufFile>, HParams) -> Result<Box<dyn Network>>;

/// One supported architecture.
pub struct ArchEntry {
    /// The value of `general.architecture`.
    pub name: &'static str,
    /// The models it covers, for `--help` and error messages.
    pub covers: &'static str,
    pub load: Loader,
}

/// Every architecture Mori runs.
pub static ARCHITECTURES: &[ArchEntry] = &[
    ArchEntry {
        name: "llama",
        covers: "Llama 2/3, Mistral, TinyLlama",
        load: load_llama,
    },
    ArchEntry {
        name: "qwen2",
        covers: "Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen",
        load: load_qwen2,
    },
    ArchEntry {
        name: "qwen3",
        covers: "Qwen3",
        load: load_qwen3,
    },
    ArchEntry {
        name: "gemma3",
        covers: "Gemma 3 (text)",
        load: load_gemma3,
    },
];

/// The entry for `name`, if Mori supports it.
pub fn lookup(name: &str) -> Option<&'static ArchEntry> {
    ARCHITECTURES.iter().find(|a| a.name == name)
}

/// Comma-separated names of every supported architecture.
pub fn supported() -> String {
    ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn load_llama(f: Arc<GgufFile>, hp: HParams) -> Result<Box<dyn Network>> {
    let v = llama::Variant {
        rope: RopeLayout::Normal,
        qkv_bias: false,
        qk_norm: false,
    };
    Ok(Box::new(llama::Llama::load(f, hp, v)?))
}

fn load_qwen2(f: Arc<GgufFile>, hp: HParams) -> Result<Box<dyn Network>> {
    let v = llama::Variant {
        rope: RopeLayout::Neox,
        qkv_bias: true,
        qk_norm: false,
    };
    Ok(Box::new(llama::Llama::load(f, hp, v)?))
}

fn load_qwen3(f: Arc<GgufFile>, hp: HParams) -> Result<Box<dyn Network>> {
    let v = llama::Variant {
        rope: RopeLayout::Neox,
        qkv_bias: false,
        qk_norm: true,
    };
    Ok(Box::new(llama::Llama::load(f, hp, v)?))
}

fn load_gemma3(f: Arc<GgufFile>, hp: HParams) -> Result<Box<dyn Network>> {
    Ok(Box::new(gemma3::Gemma3::load(f, hp)?))
}
