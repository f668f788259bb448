//! The one table from GGUF architecture name to loader. Adding an architecture
//! means adding a row here and, for a new family, a module under `arch/`.

use std::sync::Arc;

use mori_formats::GgufFile;
use mori_kernels::ops::RopeLayout;

use crate::arch::{gemma3, llama, Network};
use crate::hparams::{missing_key, Gating, HParams, MoeHParams};
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
        name: "ernie4_5",
        covers: "ERNIE 4.5 dense (0.3B)",
        load: load_ernie4_5,
    },
    ArchEntry {
        name: "pangu-embedded",
        covers: "openPangu-Embedded 1B, 7B",
        load: load_pangu_embedded,
    },
    ArchEntry {
        name: "qwen3moe",
        covers: "Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B)",
        load: load_qwen3moe,
    },
    ArchEntry {
        name: "ernie4_5-moe",
        covers: "ERNIE-4.5-MoE (ERNIE-4.5-21B-A3B)",
        load: load_ernie4_5_moe,
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
        o_bias: false,
    };
    Ok(Box::new(llama::Llama::load(f, hp, v)?))
}

fn load_qwen2(f: Arc<GgufFile>, hp: HParams) -> Result<Box<dyn Network>> {
    let v = llama::Variant {
        rope: RopeLayout::Neox,
        qkv_bias: true,
        qk_norm: false,
        o_bias: false,
    };
    Ok(Box::new(llama::Llama::load(f, hp, v)?))
}

fn load_qwen3(f: Arc<GgufFile>, hp: HParams) -> Result<Box<dyn Network>> {
    let v = llama::Variant {
        rope: RopeLayout::Neox,
        qkv_bias: false,
        qk_norm: true,
        o_bias: false,
    };
    Ok(Box::new(llama::Llama::load(f, hp, v)?))
}

/// ERNIE 4.5 dense: Llama's block with RoPE on adjacent pairs (Hugging Face's
/// interleaved rotation, which GGUF keeps as is). Its projections have biases
/// when the checkpoint was trained with `use_bias`; they are optional here.
/// llama.cpp applies the q/k/v biases but drops `attn_output.bias` (its graph
/// passes no bias to the output projection); Mori applies it, as Hugging Face
/// does.
fn load_ernie4_5(f: Arc<GgufFile>, hp: HParams) -> Result<Box<dyn Network>> {
    let v = llama::Variant {
        rope: RopeLayout::Normal,
        qkv_bias: false,
        qk_norm: false,
        o_bias: false,
    };
    Ok(Box::new(llama::Llama::load(f, hp, v)?))
}

/// openPangu-Embedded: Llama's block with rotate-half RoPE, a bias on the
/// output projection (required, as llama.cpp requires it) and on q, k and v
/// (optional, as in llama.cpp, though the released checkpoints have them).
fn load_pangu_embedded(f: Arc<GgufFile>, hp: HParams) -> Result<Box<dyn Network>> {
    let v = llama::Variant {
        rope: RopeLayout::Neox,
        qkv_bias: false,
        qk_norm: false,
        o_bias: true,
    };
    Ok(Box::new(llama::Llama::load(f, hp, v)?))
}

/// The expert hyper-parameters an MoE architecture cannot run without.
fn require_moe<'a>(f: &GgufFile, hp: &'a mut HParams) -> Result<&'a mut MoeHParams> {
    let key = format!("{}.expert_count", hp.arch);
    hp.moe.as_mut().ok_or_else(|| missing_key(f, &key))
}

fn load_qwen3moe(f: Arc<GgufFile>, mut hp: HParams) -> Result<Box<dyn Network>> {
    // Every layer routes; llama.cpp reads no dense-lead or interleave keys for
    // this family. Softmax gating with the top-k weights renormalised.
    let moe = require_moe(&f, &mut hp)?;
    moe.n_layer_dense_lead = 0;
    moe.layer_step = 1;
    moe.gating = Gating::Softmax;
    moe.norm_weights = true;
    let v = llama::Variant {
        rope: RopeLayout::Neox,
        qkv_bias: false,
        qk_norm: true,
        o_bias: false,
    };
    Ok(Box::new(llama::Llama::load(f, hp, v)?))
}

fn load_ernie4_5_moe(f: Arc<GgufFile>, mut hp: HParams) -> Result<Box<dyn Network>> {
    // Dense leading layers, then experts (softmax, renormalised, with the
    // optional selection bias) plus a shared expert; adjacent-pair RoPE.
    for k in ["expert_feed_forward_length", "interleave_moe_layer_step"] {
        let key = format!("{}.{k}", hp.arch);
        if f.get(&key).is_none() {
            return Err(missing_key(&f, &key));
        }
    }
    let moe = require_moe(&f, &mut hp)?;
    moe.gating = Gating::Softmax;
    moe.norm_weights = true;
    let v = llama::Variant {
        rope: RopeLayout::Normal,
        qkv_bias: false,
        qk_norm: false,
        o_bias: false,
    };
    Ok(Box::new(llama::Llama::load(f, hp, v)?))
}

fn load_gemma3(f: Arc<GgufFile>, hp: HParams) -> Result<Box<dyn Network>> {
    Ok(Box::new(gemma3::Gemma3::load(f, hp)?))
}
