//! Hugging Face checkpoint → GGUF: `config.json`, safetensors weights and a
//! byte-level BPE `tokenizer.json` (or a SentencePiece `tokenizer.model`: for
//! ERNIE 4.5 and openPangu-Embedded always, for Llama, Mistral and Gemma 3
//! where the directory has one, as llama.cpp's converter chooses) become one
//! GGUF file that Mori and llama.cpp run.
//!
//! Supported: the `llama`, `mistral`, `qwen2`, `qwen3`, `qwen3_moe`,
//! `ernie4_5`, `ernie4_5_moe`, `PanguEmbedded` and `gemma3_text` model types.
//! What the converter does not understand (another architecture, an unknown
//! tensor, a tokenizer of another kind, an unsupported RoPE scaling) is an
//! error naming it, never skipped.

use std::path::Path;

use mori_formats::safetensors::{Checkpoint, HfConfig, StDtype};
use mori_formats::{GgufWriter, Value};
use mori_kernels::GgmlType;

use crate::hparams::{
    swa_pattern, Gating, HParams, MoeHParams, RopeScaling, SlidingWindow, DEFAULT_SWA_ROPE_BASE,
};
use crate::random::FileType;
use crate::{Error, Result};

mod vocab;

use vocab::{read_spm_vocab, read_tokenizer, Vocabulary};
pub(crate) use vocab::{HF_LLAMA3_RE, HF_QWEN2_RE};

/// What a conversion produced, for the CLI to report.
#[derive(Debug, Clone)]
pub struct Converted {
    pub arch: String,
    pub n_tensors: usize,
    pub n_params: u64,
    pub n_vocab: usize,
    /// Matrices stored in another type than asked because their rows do not
    /// divide into the asked type's blocks.
    pub fallbacks: Vec<(String, GgmlType)>,
}

/// Where an architecture's vocabulary comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VocabSource {
    /// A byte-level BPE `tokenizer.json`.
    Bpe,
    /// A SentencePiece `tokenizer.model`.
    Spm,
    /// `tokenizer.model` where the directory has one (the vocabulary llama.cpp
    /// converts for Llama 2, Mistral and Gemma 3, whose repositories ship
    /// both), else `tokenizer.json` (Llama 3 ships only that).
    SpmIfPresent,
}

/// How a block's norms and feed-forward are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// A norm before attention and one before a SwiGLU feed-forward.
    Llama,
    /// Gemma 3: norms before and after attention and feed-forward, QK-norm, and
    /// every norm weight stored as `1 + w` (Gemma's RMSNorm multiplies by it).
    Gemma3,
}

/// The mixture-of-experts layout, for the architectures that have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Experts {
    None,
    /// Qwen3-MoE: every layer routes (`num_experts`, `num_experts_per_tok`).
    Qwen3,
    /// ERNIE-4.5-MoE: dense leading layers, then routing layers with shared
    /// experts and an expert-selection bias (`moe_*` keys).
    Ernie,
}

/// How one Hugging Face architecture converts.
struct ArchSpec {
    /// `general.architecture`.
    gguf: &'static str,
    /// Whether q/k rows are reordered from Hugging Face's rotate-half layout to
    /// the adjacent pairs of GGUF's normal RoPE (llama.cpp's Llama permutation).
    /// ERNIE 4.5 already rotates adjacent pairs and openPangu's and Gemma's
    /// GGUF keep rotate-half (NeoX) RoPE, so none of them is reordered.
    permute_qk: bool,
    vocab: VocabSource,
    /// The output projection carries a bias (`attn_output.bias`).
    o_bias: bool,
    qk_norm: bool,
    /// llama.cpp's converter records `<arch>.vocab_size`.
    vocab_size_key: bool,
    block: Block,
    experts: Experts,
    /// Tensors llama.cpp's converter leaves out (ERNIE-4.5-MoE's multi-token
    /// prediction layers, which neither llama.cpp nor Mori runs), by prefix.
    skipped: &'static [&'static str],
}

const fn spec(gguf: &'static str, permute_qk: bool, vocab: VocabSource) -> ArchSpec {
    ArchSpec {
        gguf,
        permute_qk,
        vocab,
        o_bias: false,
        qk_norm: false,
        vocab_size_key: false,
        block: Block::Llama,
        experts: Experts::None,
        skipped: &[],
    }
}

/// The conversion of Hugging Face `model_type`, if Mori has one.
fn arch_for(model_type: &str) -> Option<ArchSpec> {
    use VocabSource::{Bpe, Spm, SpmIfPresent};
    Some(match model_type {
        // llama.cpp's LlamaModel.set_vocab reads a SentencePiece
        // `tokenizer.model` first (Llama 2, Mistral 7B v0.1-v0.3, TinyLlama ship
        // one beside their tokenizer.json) and only then `tokenizer.json`
        // (Llama 3). Mistral runs as plain Llama: `sliding_window` (null from
        // v0.2, 4096 in v0.1) is not read, as llama.cpp's converter does not.
        "llama" | "mistral" => ArchSpec {
            vocab_size_key: true,
            ..spec("llama", true, SpmIfPresent)
        },
        "qwen2" => spec("qwen2", false, Bpe),
        "qwen3" => ArchSpec {
            qk_norm: true,
            ..spec("qwen3", false, Bpe)
        },
        "qwen3_moe" => ArchSpec {
            qk_norm: true,
            experts: Experts::Qwen3,
            ..spec("qwen3moe", false, Bpe)
        },
        "ernie4_5" => spec("ernie4_5", false, Spm),
        "ernie4_5_moe" => ArchSpec {
            experts: Experts::Ernie,
            skipped: &[
                "model.mtp_block.",
                "model.mtp_emb_norm.",
                "model.mtp_hidden_norm.",
                "model.mtp_linear_proj.",
            ],
            ..spec("ernie4_5-moe", false, Spm)
        },
        // openPangu's remote-code configuration names itself `PanguEmbedded`.
        "PanguEmbedded" | "pangu_embedded" => ArchSpec {
            o_bias: true,
            vocab_size_key: true,
            ..spec("pangu-embedded", false, Spm)
        },
        // Gemma 3's text-only checkpoints (Gemma3ForCausalLM: 270M, 1B).
        "gemma3_text" => ArchSpec {
            qk_norm: true,
            block: Block::Gemma3,
            ..spec("gemma3", false, SpmIfPresent)
        },
        _ => return None,
    })
}

/// The `model_type`s [`convert_hf_dir`] takes.
const SUPPORTED: &str = "llama, mistral, qwen2, qwen3, qwen3_moe, ernie4_5, ernie4_5_moe, \
                         PanguEmbedded, gemma3_text";

/// The architecture's row of [`arch_for`], or an error naming the model type.
fn arch_of(cfg: &HfConfig) -> Result<(String, ArchSpec)> {
    let model_type = cfg
        .opt_str("model_type")
        .ok_or_else(|| cfg.error("model_type", "missing"))?;
    let hint = match model_type {
        "gemma3" => " (a multimodal Gemma 3: only the text-only gemma3_text checkpoints convert)",
        _ => "",
    };
    let a = arch_for(model_type).ok_or_else(|| {
        cfg.error(
            "model_type",
            format!("'{model_type}' cannot be converted yet{hint} (supported: {SUPPORTED})"),
        )
    })?;
    Ok((model_type.to_string(), a))
}

/// The GGUF architecture the Hugging Face model in `dir` converts to.
pub fn gguf_architecture(dir: &Path) -> Result<String> {
    let cfg = HfConfig::open(dir.join("config.json"))?;
    Ok(arch_of(&cfg)?.1.gguf.to_string())
}

/// The type the checkpoint in `dir` stores its matrices in (the type holding
/// most of their elements: routers kept in F32 do not count), so a conversion
/// to it loses nothing.
pub fn checkpoint_file_type(dir: &Path) -> Result<FileType> {
    let ckpt = Checkpoint::open_dir(dir)?;
    let mut n_of = [0usize; 3];
    for name in ckpt.names() {
        let t = ckpt.get(name)?;
        let i = match t.dtype {
            StDtype::F32 => 0,
            StDtype::F16 => 1,
            StDtype::BF16 => 2,
        };
        if t.shape.len() >= 2 {
            n_of[i] += t.n_elements();
        }
    }
    let most = (0..3).max_by_key(|&i| (n_of[i], std::cmp::Reverse(i)));
    match most {
        Some(i) if n_of[i] > 0 => Ok(FileType::Uniform(
            [GgmlType::F32, GgmlType::F16, GgmlType::BF16][i],
        )),
        _ => Err(Error::Invalid(format!(
            "{}: the checkpoint holds no matrix",
            dir.display()
        ))),
    }
}

/// Converts the Hugging Face model in `dir` to a GGUF file at `out`, matrices stored as `ft`.
pub fn convert_hf_dir(dir: &Path, out: &Path, ft: FileType) -> Result<Converted> {
    let cfg = HfConfig::open(dir.join("config.json"))?;
    let (model_type, a) = arch_of(&cfg)?;
    let hp = read_hparams(&cfg, &a)?;
    let (arch, permute_qk) = (a.gguf, a.permute_qk);
    let (n_layer, n_head, n_head_kv) = (hp.n_layer, hp.n_head, hp.n_head_kv);
    let moe = hp.moe.clone();
    let n_expert = moe.as_ref().map_or(0, |m| m.n_expert);
    let n_vocab_cfg = hp.n_vocab;
    let spm = match a.vocab {
        VocabSource::Bpe => false,
        VocabSource::Spm => true,
        VocabSource::SpmIfPresent => dir.join("tokenizer.model").is_file(),
    };
    let tok = if spm {
        let mut v = read_spm_vocab(dir, &cfg)?;
        if a.block == Block::Gemma3 {
            // Gemma's SentencePiece model puts no space in front of the text.
            v.add_space_prefix = Some(false);
        }
        Vocabulary::Spm(v)
    } else {
        Vocabulary::Bpe(read_tokenizer(dir, &cfg)?)
    };

    let ckpt = Checkpoint::open_dir(dir)?;
    let mut w = GgufWriter::new();
    hp.write_gguf(&mut w);
    if a.vocab_size_key {
        // llama.cpp's converter records the vocabulary size for these models.
        w.add(format!("{arch}.vocab_size"), Value::U32(n_vocab_cfg as u32));
    }
    if let Some(swa) = &hp.swa {
        // llama.cpp's converter records the windowed layers' base even where
        // it is the default.
        w.add(
            format!("{arch}.rope.freq_base_swa"),
            Value::F32(swa.rope_base),
        );
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| arch.to_string());
    w.add("general.name", Value::String(name));
    w.add("general.file_type", Value::U32(ft.llama_ftype()));
    match &tok {
        Vocabulary::Bpe(t) => t.write(&mut w, n_vocab_cfg)?,
        Vocabulary::Spm(t) => t.write(&mut w, n_vocab_cfg)?,
    }

    let tied =
        cfg.opt_bool("tie_word_embeddings")?.unwrap_or(false) || !ckpt.contains("lm_head.weight");
    let mut done = Converted {
        arch: arch.to_string(),
        n_tensors: 0,
        n_params: 0,
        n_vocab: n_vocab_cfg,
        fallbacks: Vec::new(),
    };
    let mut used = std::collections::BTreeSet::new();
    let gemma = a.block == Block::Gemma3;
    let mut put = |w: &mut GgufWriter,
                   hf: &str,
                   gguf: &str,
                   layer: usize,
                   permute_heads: Option<usize>|
     -> Result<()> {
        // `{e}` in the name stands for every expert: their matrices are stacked
        // into one 3-D tensor, expert by expert.
        let (t, mut data, n_stack) = if hf.contains("{e}") {
            let mut data = Vec::new();
            for e in 0..n_expert {
                let name = hf.replace("{e}", &e.to_string());
                let t = ckpt.get(&name)?;
                if e > 0 && t.shape != ckpt.get(&hf.replace("{e}", "0"))?.shape {
                    return Err(bad_tensor(dir, &name, "experts differ in shape"));
                }
                used.insert(name);
                data.extend(t.to_f32());
            }
            (ckpt.get(&hf.replace("{e}", "0"))?, data, Some(n_expert))
        } else {
            let t = ckpt.get(hf)?;
            used.insert(hf.to_string());
            (t, t.to_f32(), None)
        };
        let shape = t.shape.to_vec();
        if let Some(heads) = permute_heads {
            data = rotate_half_to_interleaved(&data, &shape, heads)
                .map_err(|m| bad_tensor(dir, hf, m))?;
        }
        if gemma && hf.ends_with("norm.weight") {
            // Gemma's norms scale by 1 + w; llama.cpp's converter adds the 1
            // in the tensor's own type (F16 stays F16, BF16 is widened to F32
            // first), and so does Mori, for the same bytes.
            for v in &mut data {
                *v += 1.0;
                if t.dtype == StDtype::F16 {
                    *v = half::f16::from_f32(*v).to_f32();
                }
            }
        }
        done.n_tensors += 1;
        done.n_params += data.len() as u64;
        let short = gguf.split('.').rev().nth(1).unwrap_or(gguf);
        if shape.is_empty() || shape.len() > 2 {
            return Err(bad_tensor(
                dir,
                hf,
                format!("shape {shape:?}: expected a vector or a matrix"),
            ));
        }
        // GGUF dimensions run innermost first.
        let mut dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        dims.extend(n_stack.map(|n| n as u64));
        // Vectors, norms, biases and expert routers stay F32, as llama.cpp's
        // converter keeps them: they are small, and a rounded router changes
        // which experts a token reaches.
        if shape.len() == 1
            || gguf.ends_with("_norm.weight")
            || !gguf.ends_with(".weight")
            || short == "ffn_gate_inp"
        {
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_tensor(gguf, dims, GgmlType::F32, bytes)?;
            return Ok(());
        }
        let n_cols = shape[1];
        let want = ft.matrix_type(short, layer, n_layer);
        let ty = FileType::storable(want, n_cols);
        if ty != want {
            done.fallbacks.push((gguf.to_string(), ty));
        }
        let row = ty.row_size(n_cols)?;
        let all_rows = data.len() / n_cols;
        let mut bytes = vec![0u8; row * all_rows];
        for (src, dst) in data.chunks_exact(n_cols).zip(bytes.chunks_exact_mut(row)) {
            mori_kernels::quantize_row(ty, src, dst)?;
        }
        w.add_tensor(gguf, dims, ty, bytes)?;
        Ok(())
    };

    put(
        &mut w,
        "model.embed_tokens.weight",
        "token_embd.weight",
        0,
        None,
    )?;
    for i in 0..n_layer {
        let hf = |s: &str| format!("model.layers.{i}.{s}");
        let gg = |s: &str| format!("blk.{i}.{s}");
        let mut one = |w: &mut GgufWriter, h: &str, g: &str| put(w, &hf(h), &gg(g), i, None);
        one(&mut w, "input_layernorm.weight", "attn_norm.weight")?;
        for (p, g, heads) in [
            ("q", "attn_q", n_head),
            ("k", "attn_k", n_head_kv),
            ("v", "attn_v", 0),
        ] {
            let perm = (permute_qk && heads > 0).then_some(heads);
            put(
                &mut w,
                &hf(&format!("self_attn.{p}_proj.weight")),
                &gg(&format!("{g}.weight")),
                i,
                perm,
            )?;
            let bias = hf(&format!("self_attn.{p}_proj.bias"));
            if ckpt.contains(&bias) {
                put(&mut w, &bias, &gg(&format!("{g}.bias")), i, perm)?;
            }
        }
        let mut one = |w: &mut GgufWriter, h: &str, g: &str| put(w, &hf(h), &gg(g), i, None);
        one(&mut w, "self_attn.o_proj.weight", "attn_output.weight")?;
        if a.o_bias {
            one(&mut w, "self_attn.o_proj.bias", "attn_output.bias")?;
        }
        if a.qk_norm {
            one(&mut w, "self_attn.q_norm.weight", "attn_q_norm.weight")?;
            one(&mut w, "self_attn.k_norm.weight", "attn_k_norm.weight")?;
        }
        match a.block {
            Block::Llama => one(&mut w, "post_attention_layernorm.weight", "ffn_norm.weight")?,
            Block::Gemma3 => {
                one(
                    &mut w,
                    "post_attention_layernorm.weight",
                    "post_attention_norm.weight",
                )?;
                one(
                    &mut w,
                    "pre_feedforward_layernorm.weight",
                    "ffn_norm.weight",
                )?;
            }
        }
        match moe.as_ref().filter(|m| m.is_moe_layer(i)) {
            Some(m) => {
                one(&mut w, "mlp.gate.weight", "ffn_gate_inp.weight")?;
                let bias = "mlp.moe_statics.e_score_correction_bias";
                if a.experts == Experts::Ernie && ckpt.contains(&hf(bias)) {
                    one(&mut w, bias, "exp_probs_b.bias")?;
                }
                for p in ["gate", "up", "down"] {
                    one(
                        &mut w,
                        &format!("mlp.experts.{{e}}.{p}_proj.weight"),
                        &format!("ffn_{p}_exps.weight"),
                    )?;
                }
                if m.n_ff_shexp > 0 {
                    for p in ["gate", "up", "down"] {
                        one(
                            &mut w,
                            &format!("mlp.shared_experts.{p}_proj.weight"),
                            &format!("ffn_{p}_shexp.weight"),
                        )?;
                    }
                }
            }
            None => {
                for p in ["gate", "up", "down"] {
                    one(
                        &mut w,
                        &format!("mlp.{p}_proj.weight"),
                        &format!("ffn_{p}.weight"),
                    )?;
                }
            }
        }
        if a.block == Block::Gemma3 {
            one(
                &mut w,
                "post_feedforward_layernorm.weight",
                "post_ffw_norm.weight",
            )?;
        }
    }
    put(&mut w, "model.norm.weight", "output_norm.weight", 0, None)?;
    if !tied {
        put(&mut w, "lm_head.weight", "output.weight", 0, None)?;
    } else if ckpt.contains("lm_head.weight") {
        used.insert("lm_head.weight".to_string());
    }
    // Nothing is dropped silently: a tensor the mapping above did not take is an
    // error, except RoPE's precomputed frequencies, which GGUF recomputes, and
    // what the architecture's row says llama.cpp leaves out.
    if let Some(extra) = ckpt.names().find(|n| {
        !used.contains(*n)
            && !n.ends_with("rotary_emb.inv_freq")
            && !a.skipped.iter().any(|p| n.starts_with(p))
    }) {
        return Err(bad_tensor(
            dir,
            extra,
            format!("is not part of a {model_type} model as Mori converts it"),
        ));
    }
    w.write(out)?;
    Ok(done)
}

/// The hyper-parameters `config.json` gives, as GGUF records them for `a`.
fn read_hparams(cfg: &HfConfig, a: &ArchSpec) -> Result<HParams> {
    let arch = a.gguf;
    let gemma = a.block == Block::Gemma3;
    let n_embd = cfg.usize("hidden_size")?;
    let n_layer = cfg.usize("num_hidden_layers")?;
    let n_head = cfg.usize("num_attention_heads")?;
    let n_head_kv = cfg.opt_usize("num_key_value_heads")?.unwrap_or(n_head);
    if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(cfg
            .error(
                "num_key_value_heads",
                format!("{n_head} heads cannot share {n_head_kv} key/value heads"),
            )
            .into());
    }
    let head_dim = cfg.opt_usize("head_dim")?.unwrap_or(n_embd / n_head);
    // `rope_parameters` is how transformers 5 saves RoPE settings; Gemma's
    // has one entry per attention kind.
    let rope = cfg.json.get("rope_parameters");
    let rope_full = rope.and_then(|r| r.get("full_attention")).or(rope);
    let theta = |v: Option<&serde_json::Value>| v.and_then(|r| r.get("rope_theta")?.as_f64());
    let rope_base = match cfg.opt_f64("rope_theta")? {
        Some(t) => t,
        None => theta(rope_full).unwrap_or(if gemma { 1_000_000.0 } else { 10000.0 }),
    };
    let scaling = match cfg.json.get("rope_scaling") {
        None | Some(serde_json::Value::Null) => rope_full.filter(|r| r.get("factor").is_some()),
        Some(v) => Some(v),
    };
    let rope_scaling = match scaling {
        None => RopeScaling::None,
        Some(v) => {
            let kind = v
                .get("rope_type")
                .or_else(|| v.get("type"))
                .and_then(|t| t.as_str())
                .unwrap_or("");
            let factor = v.get("factor").and_then(|f| f.as_f64());
            match (kind, factor) {
                ("linear", Some(f)) => RopeScaling::Linear { factor: f as f32 },
                ("default", _) => RopeScaling::None,
                _ => {
                    return Err(cfg
                        .error(
                            "rope_scaling",
                            format!("{v} is not supported yet (linear only)"),
                        )
                        .into())
                }
            }
        }
    };
    let n_ff = cfg.usize("intermediate_size")?;
    let moe = match a.experts {
        Experts::None => None,
        Experts::Qwen3 => {
            let sparse_step = cfg.opt_usize("decoder_sparse_step")?.unwrap_or(1);
            let dense_layers = cfg.json.get("mlp_only_layers").and_then(|v| v.as_array());
            if sparse_step != 1 || dense_layers.is_some_and(|l| !l.is_empty()) {
                return Err(cfg
                    .error(
                        "decoder_sparse_step",
                        "dense layers between the expert layers cannot be converted",
                    )
                    .into());
            }
            Some(MoeHParams {
                n_expert: cfg.usize("num_experts")?,
                n_expert_used: cfg.usize("num_experts_per_tok")?,
                n_ff_exp: cfg.usize("moe_intermediate_size")?,
                n_ff_shexp: 0,
                n_expert_shared: 0,
                n_layer_dense_lead: 0,
                layer_step: 1,
                gating: Gating::Softmax,
                norm_weights: cfg.opt_bool("norm_topk_prob")?.unwrap_or(false),
            })
        }
        Experts::Ernie => Some(ernie_moe(cfg, n_layer)?),
    };
    let (swa, final_logit_softcap) = if gemma {
        gemma3_attention(cfg, n_layer, n_embd, n_head, head_dim, rope)?
    } else {
        (None, None)
    };
    Ok(HParams {
        arch: arch.to_string(),
        n_vocab: cfg.usize("vocab_size")?,
        n_ctx_train: cfg.opt_usize("max_position_embeddings")?.unwrap_or(2048),
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        head_dim,
        head_dim_v: head_dim,
        n_ff,
        rms_eps: cfg.opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
        rope_base: rope_base as f32,
        n_rot: head_dim,
        rope_scaling,
        swa,
        final_logit_softcap,
        moe,
    })
}

/// ERNIE-4.5-MoE's experts: `moe_num_experts` routed experts of
/// `moe_intermediate_size`, `moe_k` per token, `moe_num_shared_experts`
/// shared ones fused into one SwiGLU, routing layers from
/// `moe_layer_start_index` every `moe_layer_interval`-th layer to the last.
fn ernie_moe(cfg: &HfConfig, n_layer: usize) -> Result<MoeHParams> {
    let n_expert = cfg.usize("moe_num_experts")?;
    let n_expert_used = cfg.usize("moe_k")?;
    if n_expert_used == 0 || n_expert_used > n_expert {
        return Err(cfg
            .error(
                "moe_k",
                format!("{n_expert_used} experts per token out of {n_expert}"),
            )
            .into());
    }
    let n_ff_exp = cfg.usize("moe_intermediate_size")?;
    let n_expert_shared = cfg.opt_usize("moe_num_shared_experts")?.unwrap_or(0);
    let n_layer_dense_lead = cfg.opt_usize("moe_layer_start_index")?.unwrap_or(0);
    let layer_step = cfg.opt_usize("moe_layer_interval")?.unwrap_or(1);
    if layer_step == 0 {
        return Err(cfg.error("moe_layer_interval", "must not be zero").into());
    }
    // GGUF has no last routing layer: routing must run to the end.
    match cfg.json.get("moe_layer_end_index").and_then(|v| v.as_i64()) {
        None | Some(-1) => {}
        Some(end) if end as usize + 1 >= n_layer => {}
        Some(end) => {
            return Err(cfg
                .error(
                    "moe_layer_end_index",
                    format!(
                        "routing layers ending at layer {end} of {n_layer} cannot be \
                         converted (GGUF routes every layer after the dense ones)"
                    ),
                )
                .into())
        }
    }
    Ok(MoeHParams {
        n_expert,
        n_expert_used,
        n_ff_exp,
        // transformers builds the shared experts as one SwiGLU of their
        // summed width. (llama.cpp's converter writes intermediate_size /
        // num_key_value_heads here, which is that width in the published
        // models and in Mori's random ones; Mori writes the width itself.)
        n_ff_shexp: n_expert_shared * n_ff_exp,
        n_expert_shared,
        n_layer_dense_lead,
        layer_step,
        gating: Gating::Softmax,
        norm_weights: true,
    })
}

/// Gemma 3's attention settings: the sliding window and which layers use it
/// (`layer_types`, else every `sliding_window_pattern`-th layer is global,
/// six by default), the windowed layers' RoPE base (`rope_local_base_freq`),
/// and the final logit soft-cap. Settings GGUF cannot carry are errors: an
/// attention soft-cap, bidirectional attention, and a query scale
/// (`query_pre_attn_scalar`) other than the one llama.cpp derives.
fn gemma3_attention(
    cfg: &HfConfig,
    n_layer: usize,
    n_embd: usize,
    n_head: usize,
    head_dim: usize,
    rope: Option<&serde_json::Value>,
) -> Result<(Option<SlidingWindow>, Option<f32>)> {
    if cfg.opt_f64("attn_logit_softcapping")?.is_some() {
        return Err(cfg
            .error(
                "attn_logit_softcapping",
                "Gemma 3 has no attention soft-cap; GGUF cannot carry one",
            )
            .into());
    }
    if cfg.opt_bool("use_bidirectional_attention")? == Some(true) {
        return Err(cfg
            .error(
                "use_bidirectional_attention",
                "bidirectional attention (EmbeddingGemma) is not a causal model Mori runs",
            )
            .into());
    }
    // llama.cpp scales queries by n_embd / n_head for the 27B model (62
    // layers) and by the head width otherwise; GGUF records no scale.
    let implied = if n_layer == 62 {
        n_embd / n_head
    } else {
        head_dim
    };
    if let Some(s) = cfg.opt_f64("query_pre_attn_scalar")? {
        if s != implied as f64 {
            return Err(cfg
                .error(
                    "query_pre_attn_scalar",
                    format!(
                        "{s}: a GGUF file of this shape scales queries by 1/sqrt({implied}) \
                         and cannot record another scale"
                    ),
                )
                .into());
        }
    }
    let softcap = cfg
        .opt_f64("final_logit_softcapping")?
        .filter(|c| *c > 0.0)
        .map(|c| c as f32);
    let window = cfg.opt_usize("sliding_window")?.unwrap_or(0);
    let layers: Vec<bool> = match cfg.json.get("layer_types") {
        Some(serde_json::Value::Array(types)) => {
            if types.len() != n_layer {
                return Err(cfg
                    .error(
                        "layer_types",
                        format!("{} entries for {n_layer} layers", types.len()),
                    )
                    .into());
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    _ => Err(cfg.error("layer_types", format!("{t} is not an attention kind"))),
                })
                .collect::<std::result::Result<_, _>>()?
        }
        _ => {
            let n = match cfg.opt_usize("sliding_window_pattern")? {
                Some(n) => Some(n),
                None => cfg.opt_usize("_sliding_window_pattern")?,
            };
            // A pattern of n: every n-th layer (counting from 1) is global.
            swa_pattern(n.unwrap_or(6), n_layer)
        }
    };
    if window == 0 || !layers.contains(&true) {
        return Ok((None, softcap));
    }
    let local = cfg
        .opt_f64("rope_local_base_freq")?
        .or_else(|| rope.and_then(|r| r.get("sliding_attention")?.get("rope_theta")?.as_f64()))
        .unwrap_or(DEFAULT_SWA_ROPE_BASE as f64);
    Ok((
        Some(SlidingWindow {
            window,
            layers,
            rope_base: local as f32,
        }),
        softcap,
    ))
}

fn bad_tensor(dir: &Path, name: &str, msg: impl Into<String>) -> Error {
    Error::Format(mori_formats::Error::Invalid {
        path: dir.display().to_string(),
        what: format!("tensor '{name}'"),
        msg: msg.into(),
    })
}

/// Reorders the rows of a q or k projection (`[heads * head_dim, in]`, or a bias of
/// `[heads * head_dim]`) from Hugging Face's rotate-half pairing (dimension i with
/// i + head_dim/2) to the adjacent pairs (2i, 2i+1) of GGUF's normal RoPE.
fn rotate_half_to_interleaved(
    data: &[f32],
    shape: &[usize],
    heads: usize,
) -> std::result::Result<Vec<f32>, String> {
    let n_rows = shape[0];
    let row_len = data.len() / n_rows.max(1);
    if heads == 0 || !n_rows.is_multiple_of(heads) || !(n_rows / heads).is_multiple_of(2) {
        return Err(format!(
            "{n_rows} rows cannot be split into {heads} heads of even width"
        ));
    }
    let hd = n_rows / heads;
    let mut out = vec![0.0f32; data.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let dst = h * hd + 2 * i + j;
                let src = h * hd + j * (hd / 2) + i;
                out[dst * row_len..(dst + 1) * row_len]
                    .copy_from_slice(&data[src * row_len..(src + 1) * row_len]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rotate_half_rows_become_adjacent_pairs() {
        // One head of width 4, rows [a0 a1 | b0 b1] (pairs (a0,b0), (a1,b1)) -> a0 b0 a1 b1.
        let data: Vec<f32> = vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0, 30.0, 31.0];
        let out = super::rotate_half_to_interleaved(&data, &[4, 2], 1).unwrap();
        assert_eq!(out, vec![0.0, 1.0, 20.0, 21.0, 10.0, 11.0, 30.0, 31.0]);
        assert!(super::rotate_half_to_interleaved(&data, &[4, 2], 3).is_err());
    }

    /// A SentencePiece checkpoint without a usable `tokenizer.model` is an
    /// error naming the file and what is wrong with it.
    #[test]
    fn sentencepiece_tokenizer_errors_name_the_file() {
        use crate::random::{FileType, RandomSpec};
        use crate::random_hf::{write_random_hf, HfDtype};
        use mori_kernels::GgmlType;
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = RandomSpec::tiny("ernie4_5", FileType::Uniform(GgmlType::F32));
        spec.n_vocab = 512;
        let dir = tmp.path().join("ernie");
        write_random_hf(&spec, HfDtype::F32, &dir).unwrap();
        let out = tmp.path().join("out.gguf");
        let ft = FileType::Uniform(GgmlType::F32);
        super::convert_hf_dir(&dir, &out, ft).unwrap();

        let model = dir.join("tokenizer.model");
        let bytes = std::fs::read(&model).unwrap();
        std::fs::write(&model, &bytes[..bytes.len() / 3]).unwrap();
        let err = super::convert_hf_dir(&dir, &out, ft)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer.model") && err.contains("SentencePiece"),
            "{err}"
        );
        std::fs::remove_file(&model).unwrap();
        let err = super::convert_hf_dir(&dir, &out, ft)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.model"), "{err}");
    }

    /// Rewrites keys of the `config.json` in `dir`.
    fn edit_config(dir: &std::path::Path, edits: &[(&str, serde_json::Value)]) {
        let path = dir.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (k, v) in edits {
            cfg[*k] = v.clone();
        }
        std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    }

    /// Gemma 3 settings GGUF cannot carry are errors naming the key; a layer
    /// pattern other than llama.cpp's default is kept in the file, so the
    /// converted model windows the layers the checkpoint does.
    #[test]
    fn gemma3_settings_convert_or_are_named() {
        use crate::random::{FileType, RandomSpec};
        use crate::random_hf::{write_random_hf, HfDtype};
        use mori_kernels::GgmlType;
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = RandomSpec::tiny("gemma3", FileType::Uniform(GgmlType::F32));
        spec.n_vocab = 512;
        spec.sliding_window = 8;
        let dir = tmp.path().join("gemma");
        write_random_hf(&spec, HfDtype::F32, &dir).unwrap();
        let out = tmp.path().join("out.gguf");
        let ft = FileType::Uniform(GgmlType::F32);
        super::convert_hf_dir(&dir, &out, ft).unwrap();
        let model = crate::Model::load(&out).unwrap();
        let swa = model.hparams.swa.as_ref().unwrap();
        assert_eq!((swa.window, &swa.layers[..]), (8, &[true, true][..]));

        edit_config(
            &dir,
            &[(
                "layer_types",
                serde_json::json!(["full_attention", "sliding_attention"]),
            )],
        );
        super::convert_hf_dir(&dir, &out, ft).unwrap();
        let model = crate::Model::load(&out).unwrap();
        assert_eq!(model.hparams.swa.as_ref().unwrap().layers, [false, true]);

        for (key, value) in [
            ("query_pre_attn_scalar", serde_json::json!(99)),
            ("attn_logit_softcapping", serde_json::json!(50.0)),
            ("use_bidirectional_attention", serde_json::json!(true)),
        ] {
            let copy = tmp.path().join(key);
            std::fs::create_dir_all(&copy).unwrap();
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
            }
            edit_config(&copy, &[(key, value)]);
            let err = super::convert_hf_dir(&copy, &out, ft)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    /// A Mistral directory converts its SentencePiece `tokenizer.model`, as
    /// llama.cpp's converter does, and its `tokenizer.json` encodes text the
    /// same; v0.1's sliding window is not carried (llama.cpp runs every
    /// Mistral 7B without one); without `tokenizer.model`, the Llama-layout
    /// `tokenizer.json` is an error naming it, not another vocabulary.
    #[test]
    fn mistral_reads_tokenizer_model_first() {
        use crate::random::{FileType, RandomSpec};
        use crate::random_hf::{write_random_hf, HfDtype};
        use mori_kernels::GgmlType;
        let tmp = tempfile::tempdir().unwrap();
        let ft = FileType::Uniform(GgmlType::F32);
        let mut spec = RandomSpec::tiny("mistral", ft);
        spec.n_vocab = 512;
        let dir = tmp.path().join("mistral");
        write_random_hf(&spec, HfDtype::F32, &dir).unwrap();
        let out = tmp.path().join("out.gguf");
        let done = super::convert_hf_dir(&dir, &out, ft).unwrap();
        assert_eq!(done.arch, "llama");
        let f = mori_formats::GgufFile::open(&out).unwrap();
        assert_eq!(f.require_str("tokenizer.ggml.model").unwrap(), "llama");
        let gguf = crate::Model::load(&out).unwrap();
        let hf = crate::Model::load(&dir).unwrap();
        assert!(hf.tokenizer.is_hf() && !gguf.tokenizer.is_hf());
        for text in [
            "the rain in spain",
            "  leading spaces,\n\nand tabs\t ",
            "[INST] hi there [/INST] hello</s>[INST]hi[/INST]",
            "<s>[INST]  the world[/INST]",
            "",
        ] {
            let want = hf.tokenizer.encode(text, true, true);
            assert_eq!(gguf.tokenizer.encode(text, true, true), want, "{text:?}");
        }
        assert_eq!(hf.tokenizer.encode("[INST]", true, true), [1, 3]);

        edit_config(&dir, &[("sliding_window", serde_json::json!(4096))]);
        super::convert_hf_dir(&dir, &out, ft).unwrap();
        assert!(crate::Model::load(&out).unwrap().hparams.swa.is_none());

        std::fs::remove_file(dir.join("tokenizer.model")).unwrap();
        let err = super::convert_hf_dir(&dir, &out, ft)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }

    /// ERNIE-4.5-MoE routing layers that stop before the last layer cannot be
    /// written to GGUF: an error names the key.
    #[test]
    fn ernie_moe_routing_must_run_to_the_last_layer() {
        use crate::random::{FileType, RandomSpec};
        use crate::random_hf::{write_random_hf, HfDtype};
        use mori_kernels::GgmlType;
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = RandomSpec::tiny("ernie4_5-moe", FileType::Uniform(GgmlType::F32));
        spec.n_vocab = 512;
        spec.n_layer = 3;
        let dir = tmp.path().join("ernie");
        write_random_hf(&spec, HfDtype::F32, &dir).unwrap();
        let out = tmp.path().join("out.gguf");
        let ft = FileType::Uniform(GgmlType::F32);
        let done = super::convert_hf_dir(&dir, &out, ft).unwrap();
        assert_eq!(done.arch, "ernie4_5-moe");
        edit_config(&dir, &[("moe_layer_end_index", serde_json::json!(1))]);
        let err = super::convert_hf_dir(&dir, &out, ft)
            .unwrap_err()
            .to_string();
        assert!(err.contains("moe_layer_end_index"), "{err}");
    }
}
