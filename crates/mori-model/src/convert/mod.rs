//! Hugging Face checkpoint → GGUF: `config.json`, safetensors weights and a
//! byte-level BPE `tokenizer.json` (or, for ERNIE 4.5 and openPangu-Embedded,
//! a SentencePiece `tokenizer.model`) become one GGUF file that Mori and
//! llama.cpp run.
//!
//! Supported: the `llama`, `mistral`, `qwen2`, `qwen3`, `ernie4_5` and
//! `PanguEmbedded` model types. What the converter does not understand (another
//! architecture, an unknown tensor, a tokenizer of another kind, an
//! unsupported RoPE scaling) is an error naming it, never skipped.

use std::path::Path;

use mori_formats::safetensors::{Checkpoint, HfConfig, StDtype};
use mori_formats::{Array, GgufWriter, Value};
use mori_kernels::GgmlType;

use crate::hparams::{Gating, HParams, MoeHParams, RopeScaling};
use crate::random::FileType;
use crate::sentencepiece::{PieceType, SpModel};
use crate::tokenizer::TokenType;
use crate::{Error, Result};

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

/// How one Hugging Face architecture converts.
struct ArchSpec {
    /// `general.architecture`.
    gguf: &'static str,
    /// Whether q/k rows are reordered from Hugging Face's rotate-half layout to
    /// the adjacent pairs of GGUF's normal RoPE (llama.cpp's Llama permutation).
    /// ERNIE 4.5 already rotates adjacent pairs and openPangu's GGUF keeps
    /// rotate-half (NeoX) RoPE, so neither is reordered.
    permute_qk: bool,
    /// The vocabulary comes from a SentencePiece `tokenizer.model` (else from
    /// a byte-level BPE `tokenizer.json`).
    sentencepiece: bool,
    /// The output projection carries a bias (`attn_output.bias`).
    o_bias: bool,
    qk_norm: bool,
    /// llama.cpp's converter records `<arch>.vocab_size`.
    vocab_size_key: bool,
}

const fn spec(gguf: &'static str, permute_qk: bool, sentencepiece: bool) -> ArchSpec {
    ArchSpec {
        gguf,
        permute_qk,
        sentencepiece,
        o_bias: false,
        qk_norm: false,
        vocab_size_key: false,
    }
}

/// The conversion of Hugging Face `model_type`, if Mori has one.
fn arch_for(model_type: &str) -> Option<ArchSpec> {
    Some(match model_type {
        "llama" | "mistral" => ArchSpec {
            vocab_size_key: true,
            ..spec("llama", true, false)
        },
        "qwen2" => spec("qwen2", false, false),
        "qwen3" => ArchSpec {
            qk_norm: true,
            ..spec("qwen3", false, false)
        },
        "qwen3_moe" => ArchSpec {
            qk_norm: true,
            ..spec("qwen3moe", false, false)
        },
        "ernie4_5" => spec("ernie4_5", false, true),
        // openPangu's remote-code configuration names itself `PanguEmbedded`.
        "PanguEmbedded" | "pangu_embedded" => ArchSpec {
            o_bias: true,
            vocab_size_key: true,
            ..spec("pangu-embedded", false, true)
        },
        _ => return None,
    })
}

/// The `model_type`s [`convert_hf_dir`] takes.
const SUPPORTED: &str = "llama, mistral, qwen2, qwen3, qwen3_moe, ernie4_5, PanguEmbedded";

/// The GGUF architecture the Hugging Face model in `dir` converts to.
pub fn gguf_architecture(dir: &Path) -> Result<String> {
    let cfg = HfConfig::open(dir.join("config.json"))?;
    let model_type = cfg
        .opt_str("model_type")
        .ok_or_else(|| cfg.error("model_type", "missing"))?;
    let a = arch_for(model_type).ok_or_else(|| {
        cfg.error(
            "model_type",
            format!("'{model_type}' cannot be converted yet (supported: {SUPPORTED})"),
        )
    })?;
    Ok(a.gguf.to_string())
}

/// The type the checkpoint in `dir` stores its matrices in (its first matrix's),
/// so a conversion to it loses nothing.
pub fn checkpoint_file_type(dir: &Path) -> Result<FileType> {
    let ckpt = Checkpoint::open_dir(dir)?;
    for name in ckpt.names() {
        let t = ckpt.get(name)?;
        if t.shape.len() == 2 {
            return Ok(FileType::Uniform(match t.dtype {
                StDtype::F32 => GgmlType::F32,
                StDtype::F16 => GgmlType::F16,
                StDtype::BF16 => GgmlType::BF16,
            }));
        }
    }
    Err(Error::Invalid(format!(
        "{}: the checkpoint holds no matrix",
        dir.display()
    )))
}

/// Converts the Hugging Face model in `dir` to a GGUF file at `out`, matrices stored as `ft`.
pub fn convert_hf_dir(dir: &Path, out: &Path, ft: FileType) -> Result<Converted> {
    let cfg = HfConfig::open(dir.join("config.json"))?;
    let model_type = cfg
        .opt_str("model_type")
        .ok_or_else(|| cfg.error("model_type", "missing"))?
        .to_string();
    let a = arch_for(&model_type).ok_or_else(|| {
        cfg.error(
            "model_type",
            format!("'{model_type}' cannot be converted yet (supported: {SUPPORTED})"),
        )
    })?;
    let (arch, permute_qk) = (a.gguf, a.permute_qk);
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
    let rope_scaling = match cfg.json.get("rope_scaling") {
        None | Some(serde_json::Value::Null) => RopeScaling::None,
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
    let moe = match arch {
        "qwen3moe" => {
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
        _ => None,
    };
    let n_expert = moe.as_ref().map_or(0, |m| m.n_expert);
    let n_vocab_cfg = cfg.usize("vocab_size")?;
    let tok = if a.sentencepiece {
        Vocabulary::Spm(read_spm_vocab(dir, &cfg)?)
    } else {
        Vocabulary::Bpe(read_tokenizer(dir, &cfg)?)
    };
    let hp = HParams {
        arch: arch.to_string(),
        n_vocab: n_vocab_cfg,
        n_ctx_train: cfg.opt_usize("max_position_embeddings")?.unwrap_or(2048),
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        head_dim,
        head_dim_v: head_dim,
        n_ff: cfg.usize("intermediate_size")?,
        rms_eps: cfg.opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
        rope_base: cfg.opt_f64("rope_theta")?.unwrap_or(10000.0) as f32,
        n_rot: head_dim,
        rope_scaling,
        swa: None,
        final_logit_softcap: None,
        moe: moe.clone(),
    };

    let ckpt = Checkpoint::open_dir(dir)?;
    let mut w = GgufWriter::new();
    hp.write_gguf(&mut w);
    if a.vocab_size_key {
        // llama.cpp's converter records the vocabulary size for these models.
        w.add(format!("{arch}.vocab_size"), Value::U32(n_vocab_cfg as u32));
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
        done.n_tensors += 1;
        done.n_params += data.len() as u64;
        let short = gguf.split('.').rev().nth(1).unwrap_or(gguf);
        if shape.len() == 1 {
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_tensor(gguf, vec![shape[0] as u64], GgmlType::F32, bytes)?;
            return Ok(());
        }
        if shape.len() != 2 {
            return Err(bad_tensor(
                dir,
                hf,
                format!("shape {shape:?}: expected a matrix"),
            ));
        }
        let (n_rows, n_cols) = (shape[0], shape[1]);
        // Expert routers stay F32, as llama.cpp's converter keeps them: they are
        // small, and a rounded router changes which experts a token reaches.
        let want = match short {
            "ffn_gate_inp" => GgmlType::F32,
            _ => ft.matrix_type(short, layer, n_layer),
        };
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
        let mut dims = vec![n_cols as u64, n_rows as u64];
        dims.extend(n_stack.map(|n| n as u64));
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
        put(
            &mut w,
            &hf("input_layernorm.weight"),
            &gg("attn_norm.weight"),
            i,
            None,
        )?;
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
        put(
            &mut w,
            &hf("self_attn.o_proj.weight"),
            &gg("attn_output.weight"),
            i,
            None,
        )?;
        if a.o_bias {
            put(
                &mut w,
                &hf("self_attn.o_proj.bias"),
                &gg("attn_output.bias"),
                i,
                None,
            )?;
        }
        if a.qk_norm {
            put(
                &mut w,
                &hf("self_attn.q_norm.weight"),
                &gg("attn_q_norm.weight"),
                i,
                None,
            )?;
            put(
                &mut w,
                &hf("self_attn.k_norm.weight"),
                &gg("attn_k_norm.weight"),
                i,
                None,
            )?;
        }
        put(
            &mut w,
            &hf("post_attention_layernorm.weight"),
            &gg("ffn_norm.weight"),
            i,
            None,
        )?;
        if moe.is_some() {
            put(
                &mut w,
                &hf("mlp.gate.weight"),
                &gg("ffn_gate_inp.weight"),
                i,
                None,
            )?;
            for p in ["gate", "up", "down"] {
                put(
                    &mut w,
                    &hf(&format!("mlp.experts.{{e}}.{p}_proj.weight")),
                    &gg(&format!("ffn_{p}_exps.weight")),
                    i,
                    None,
                )?;
            }
            continue;
        }
        put(
            &mut w,
            &hf("mlp.gate_proj.weight"),
            &gg("ffn_gate.weight"),
            i,
            None,
        )?;
        put(
            &mut w,
            &hf("mlp.up_proj.weight"),
            &gg("ffn_up.weight"),
            i,
            None,
        )?;
        put(
            &mut w,
            &hf("mlp.down_proj.weight"),
            &gg("ffn_down.weight"),
            i,
            None,
        )?;
    }
    put(&mut w, "model.norm.weight", "output_norm.weight", 0, None)?;
    if !tied {
        put(&mut w, "lm_head.weight", "output.weight", 0, None)?;
    } else if ckpt.contains("lm_head.weight") {
        used.insert("lm_head.weight".to_string());
    }
    // Nothing is dropped silently: a tensor the mapping above did not take is an
    // error, except RoPE's precomputed frequencies, which GGUF recomputes.
    if let Some(extra) = ckpt
        .names()
        .find(|n| !used.contains(*n) && !n.ends_with("rotary_emb.inv_freq"))
    {
        return Err(bad_tensor(
            dir,
            extra,
            format!("is not part of a {model_type} model as Mori converts it"),
        ));
    }
    w.write(out)?;
    Ok(done)
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

/// Where a converted vocabulary comes from.
enum Vocabulary {
    Bpe(HfTokenizer),
    Spm(SpmVocab),
}

/// A byte-level BPE vocabulary read from `tokenizer.json`.
struct HfTokenizer {
    /// Token text by id (`None` for ids the file does not define).
    tokens: Vec<Option<String>>,
    types: Vec<TokenType>,
    merges: Vec<String>,
    pre: &'static str,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// Whether a separator goes between the two texts of a pair; `None` when
    /// the tokenizer does not say.
    add_sep: Option<bool>,
    chat_template: Option<String>,
}

pub(crate) const HF_LLAMA3_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(crate) const HF_QWEN2_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn read_tokenizer(dir: &Path, cfg: &HfConfig) -> Result<HfTokenizer> {
    let path = dir.join("tokenizer.json");
    let bad = |what: &str, msg: String| {
        Error::Format(mori_formats::Error::Invalid {
            path: path.display().to_string(),
            what: what.to_string(),
            msg,
        })
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Format(mori_formats::Error::Io {
            path: path.display().to_string(),
            source: e,
        })
    })?;
    let j: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad("JSON", e.to_string()))?;
    let model = &j["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(bad(
            "model.type",
            format!(
                "{} (only byte-level BPE tokenizers convert yet)",
                model["type"]
            ),
        ));
    }
    let pre = pre_tokenizer_name(&j["pre_tokenizer"]).ok_or_else(|| {
        bad(
            "pre_tokenizer",
            format!(
                "{} is not a byte-level pre-tokenizer Mori knows (GPT-2, Llama 3, Qwen2)",
                j["pre_tokenizer"]
            ),
        )
    })?;
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab", "missing or not an object".into()))?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut types: Vec<TokenType> = Vec::new();
    let mut set = |id: usize, text: &str, ty: TokenType| {
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
            types.resize(id + 1, TokenType::Unused);
        }
        tokens[id] = Some(text.to_string());
        types[id] = ty;
    };
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad("model.vocab", format!("{text:?} has no integer id")))?;
        set(id as usize, text, TokenType::Normal);
    }
    for t in j["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err(bad("added_tokens", format!("{t} lacks an id or content")));
        };
        let ty = if t["special"].as_bool().unwrap_or(false) {
            TokenType::Control
        } else {
            TokenType::UserDefined
        };
        set(id as usize, content, ty);
    }
    let mut merges = Vec::new();
    for m in model["merges"].as_array().into_iter().flatten() {
        match m {
            serde_json::Value::String(s) => merges.push(s.clone()),
            serde_json::Value::Array(p) if p.len() == 2 => {
                let (Some(a), Some(b)) = (p[0].as_str(), p[1].as_str()) else {
                    return Err(bad("model.merges", format!("{m} is not a pair of strings")));
                };
                merges.push(format!("{a} {b}"));
            }
            _ => return Err(bad("model.merges", format!("{m} is not a merge"))),
        }
    }
    let tc: serde_json::Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let id_of = |key: &str| -> Option<u32> {
        let v = cfg.json.get(format!("{key}_id").as_str());
        let from_cfg = match v {
            Some(serde_json::Value::Array(a)) => a.first().and_then(|x| x.as_u64()),
            Some(v) => v.as_u64(),
            None => None,
        };
        from_cfg.map(|x| x as u32).or_else(|| {
            let text = match &tc[key] {
                serde_json::Value::String(s) => Some(s.as_str()),
                serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()),
                _ => None,
            }?;
            tokens
                .iter()
                .position(|t| t.as_deref() == Some(text))
                .map(|i| i as u32)
        })
    };
    let bos = id_of("bos_token");
    let eos = id_of("eos_token");
    let text_of = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize)?.as_deref());
    let rule = SpecialsRule::read(&j["post_processor"], text_of(bos), text_of(eos));
    let chat_template = match &tc["chat_template"] {
        serde_json::Value::String(s) => Some(s.clone()),
        _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
    };
    Ok(HfTokenizer {
        add_bos: rule
            .add_bos
            .or(tc["add_bos_token"].as_bool())
            .unwrap_or(false),
        add_eos: rule
            .add_eos
            .or(tc["add_eos_token"].as_bool())
            .unwrap_or(false),
        add_sep: rule.add_sep,
        tokens,
        types,
        merges,
        pre,
        bos,
        eos,
        chat_template,
    })
}

/// Which special tokens the `tokenizer.json` post-processor adds around a
/// text. A fast tokenizer follows it rather than `tokenizer_config.json`'s
/// `add_bos_token`, so where it decides, it wins; `None` where it does not say.
#[derive(Debug, Default, PartialEq)]
struct SpecialsRule {
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    add_sep: Option<bool>,
}

impl SpecialsRule {
    fn read(p: &serde_json::Value, bos: Option<&str>, eos: Option<&str>) -> SpecialsRule {
        let steps: Vec<&serde_json::Value> = match p["type"].as_str() {
            Some("Sequence") => p["processors"].as_array().into_iter().flatten().collect(),
            Some(_) => vec![p],
            None => Vec::new(),
        };
        let special = |t: &serde_json::Value| t["SpecialToken"]["id"].as_str().map(str::to_string);
        let mut rule = SpecialsRule::default();
        for step in steps {
            match step["type"].as_str() {
                Some("ByteLevel") => {
                    rule.add_bos = rule.add_bos.or(Some(false));
                    rule.add_eos = rule.add_eos.or(Some(false));
                }
                Some("TemplateProcessing") => {
                    let single = step["single"].as_array().cloned().unwrap_or_default();
                    let (first, last) = match single.as_slice() {
                        [] | [_] => (None, None),
                        [f, .., l] => (special(f), special(l)),
                    };
                    if first.is_some() {
                        rule.add_bos = Some(first.as_deref() == bos);
                    }
                    if last.is_some() {
                        rule.add_eos = Some(last.as_deref() == eos);
                    }
                    // The pair template without the single's own ends: A [middle] B.
                    let mut pair = step["pair"].as_array().cloned().unwrap_or_default();
                    if first.is_some() && pair.first().and_then(special) == first {
                        pair.remove(0);
                    }
                    if last.is_some() && pair.last().and_then(special) == last {
                        pair.pop();
                    }
                    let seq = |t: Option<&serde_json::Value>| {
                        t.and_then(|t| t["Sequence"]["id"].as_str().map(str::to_string))
                    };
                    if pair.len() > 2
                        && seq(pair.first()).as_deref() == Some("A")
                        && seq(pair.last()).as_deref() == Some("B")
                    {
                        let middle = &pair[1..pair.len() - 1];
                        let is_sep = |t: &serde_json::Value| special(t).as_deref() == eos;
                        rule.add_sep = Some(
                            (is_sep(&middle[0]) && last.is_none())
                                || middle.get(1).is_some_and(is_sep),
                        );
                    }
                }
                _ => {}
            }
        }
        rule
    }
}

/// The GGUF `tokenizer.ggml.pre` name of a `tokenizer.json` pre-tokenizer.
fn pre_tokenizer_name(p: &serde_json::Value) -> Option<&'static str> {
    match p["type"].as_str()? {
        "ByteLevel" if p["use_regex"].as_bool().unwrap_or(true) => Some("gpt-2"),
        "Sequence" => {
            let steps = p["pretokenizers"].as_array()?;
            let [split, byte_level] = steps.as_slice() else {
                return None;
            };
            if byte_level["type"] != "ByteLevel" || byte_level["use_regex"].as_bool() != Some(false)
            {
                return None;
            }
            if split["type"] != "Split"
                || split["behavior"] != "Isolated"
                || split["invert"] != false
            {
                return None;
            }
            match split["pattern"]["Regex"].as_str()? {
                HF_LLAMA3_RE => Some("llama-bpe"),
                HF_QWEN2_RE => Some("qwen2"),
                _ => None,
            }
        }
        _ => None,
    }
}

impl HfTokenizer {
    /// Writes the vocabulary, padded with unused tokens to the embedding's row count.
    fn write(&self, w: &mut GgufWriter, n_vocab: usize) -> Result<()> {
        if self.tokens.len() > n_vocab {
            return Err(Error::Invalid(format!(
                "the tokenizer defines {} tokens but the model embeds only {n_vocab}",
                self.tokens.len()
            )));
        }
        let mut tokens = Vec::with_capacity(n_vocab);
        let mut types = Vec::with_capacity(n_vocab);
        for id in 0..n_vocab {
            match self.tokens.get(id).cloned().flatten() {
                Some(t) => {
                    tokens.push(t);
                    types.push(self.types[id].to_gguf());
                }
                None => {
                    tokens.push(format!("[PAD{id}]"));
                    types.push(TokenType::Unused.to_gguf());
                }
            }
        }
        w.add("tokenizer.ggml.model", Value::String("gpt2".into()));
        w.add("tokenizer.ggml.pre", Value::String(self.pre.into()));
        w.add("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
        w.add("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
        w.add(
            "tokenizer.ggml.merges",
            Value::Array(Array::String(self.merges.clone())),
        );
        if let Some(b) = self.bos {
            w.add("tokenizer.ggml.bos_token_id", Value::U32(b));
        }
        if let Some(e) = self.eos {
            w.add("tokenizer.ggml.eos_token_id", Value::U32(e));
        }
        w.add("tokenizer.ggml.add_bos_token", Value::Bool(self.add_bos));
        w.add("tokenizer.ggml.add_eos_token", Value::Bool(self.add_eos));
        if let Some(sep) = self.add_sep {
            w.add("tokenizer.ggml.add_sep_token", Value::Bool(sep));
        }
        if let Some(t) = &self.chat_template {
            w.add("tokenizer.chat_template", Value::String(t.clone()));
        }
        Ok(())
    }
}

/// A SentencePiece vocabulary read from `tokenizer.model`, as llama.cpp's
/// `_set_vocab_sentencepiece` and `SpecialVocab` make it: every id below the
/// embedding's row count gets a token (`[PAD{id}]`, unused, score -10000 where
/// nothing defines one); `added_tokens.json` adds user-defined tokens and
/// `tokenizer_config.json`'s `added_tokens_decoder` overrides ids (control
/// when special or special-looking), both with score -1000; special ids come
/// from `config.json`, the add-BOS/EOS/SEP flags and chat template from
/// `tokenizer_config.json`.
struct SpmVocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    /// `tokenizer.ggml.<key>_token_id` values, in llama.cpp's order.
    ids: Vec<(&'static str, u32)>,
    /// `tokenizer.ggml.add_<key>_token` values.
    add: Vec<(&'static str, bool)>,
    add_space_prefix: Option<bool>,
    chat_template: Option<String>,
}

fn read_spm_vocab(dir: &Path, cfg: &HfConfig) -> Result<SpmVocab> {
    let path = dir.join("tokenizer.model");
    let bad = |path: &Path, what: &str, msg: String| {
        Error::Format(mori_formats::Error::Invalid {
            path: path.display().to_string(),
            what: what.to_string(),
            msg,
        })
    };
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::Format(mori_formats::Error::Io {
            path: path.display().to_string(),
            source: e,
        })
    })?;
    let sp = SpModel::decode(&bytes).map_err(|m| bad(&path, "SentencePiece model", m))?;
    let n_vocab = match cfg.opt_usize("vocab_size")? {
        Some(n) if n > 0 => n,
        _ => sp.pieces.len(),
    };
    let mut tokens: Vec<String> = (0..n_vocab).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; n_vocab];
    let mut types = vec![TokenType::Unused; n_vocab];
    for (id, p) in sp.pieces.iter().enumerate().take(n_vocab) {
        tokens[id] = p.text.clone();
        scores[id] = p.score;
        types[id] = match p.ty {
            PieceType::Unknown => TokenType::Unknown,
            PieceType::Control => TokenType::Control,
            PieceType::Unused => TokenType::Unused,
            PieceType::Byte => TokenType::Byte,
            // SentencePiece's user-defined pieces stay normal, as llama.cpp reads them.
            PieceType::Normal | PieceType::UserDefined => TokenType::Normal,
        };
    }
    let read_json = |name: &str| -> Result<Option<serde_json::Value>> {
        let p = dir.join(name);
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| bad(&p, "JSON", e.to_string())),
            Err(_) => Ok(None),
        }
    };
    if let Some(added) = read_json("added_tokens.json")? {
        let obj = added.as_object().ok_or_else(|| {
            bad(
                &dir.join("added_tokens.json"),
                "JSON",
                "not an object".into(),
            )
        })?;
        for (text, id) in obj {
            let id = id.as_u64().ok_or_else(|| {
                bad(
                    &dir.join("added_tokens.json"),
                    text,
                    format!("{id} is not a token id"),
                )
            })? as usize;
            if id < n_vocab {
                tokens[id] = text.clone();
                scores[id] = -1000.0;
                types[id] = TokenType::UserDefined;
            }
        }
    }
    let tc = read_json("tokenizer_config.json")?;
    let tc_path = dir.join("tokenizer_config.json");
    if let Some(dec) = tc.as_ref().and_then(|t| t.get("added_tokens_decoder")) {
        let obj = dec
            .as_object()
            .ok_or_else(|| bad(&tc_path, "added_tokens_decoder", "not an object".into()))?;
        for (id, data) in obj {
            let (Ok(id), Some(content)) = (id.parse::<usize>(), data["content"].as_str()) else {
                return Err(bad(
                    &tc_path,
                    "added_tokens_decoder",
                    format!("entry {id} lacks an integer id or content"),
                ));
            };
            if id >= n_vocab {
                continue;
            }
            let special = data["special"].as_bool().unwrap_or(false);
            if special || looks_special(content) {
                tokens[id] = content.to_string();
                types[id] = TokenType::Control;
            } else {
                tokens[id] = content.replace('\u{2581}', " ");
                types[id] = TokenType::UserDefined;
            }
            scores[id] = -1000.0;
        }
    }
    // Special ids: config.json's integer `<key>_token_id`s (its text_config's
    // where the top level lacks one) inside the vocabulary.
    let mut ids = Vec::new();
    for (key, gguf) in [
        ("bos", "bos"),
        ("eos", "eos"),
        ("unk", "unknown"),
        ("sep", "seperator"),
        ("pad", "padding"),
        ("mask", "mask"),
    ] {
        let field = format!("{key}_token_id");
        let v = cfg
            .json
            .get(&field)
            .filter(|v| !v.is_null())
            .or_else(|| cfg.json.get("text_config").and_then(|t| t.get(&field)));
        if let Some(id) = v.and_then(|v| v.as_u64()) {
            if (id as usize) < n_vocab {
                ids.push((gguf, id as u32));
            }
        }
    }
    let mut add = Vec::new();
    let mut chat_template = None;
    let mut add_space_prefix = None;
    if let Some(tc) = &tc {
        for key in ["bos", "eos", "sep"] {
            if let Some(b) = tc[format!("add_{key}_token")].as_bool() {
                add.push((key, b));
            }
        }
        chat_template = match tc.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Null) => None,
            Some(other) => {
                return Err(bad(
                    &tc_path,
                    "chat_template",
                    format!(
                        "{} is not a template Mori converts (a string)",
                        kind_of(other)
                    ),
                ))
            }
            None => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        add_space_prefix = match tc.get("add_prefix_space") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_bool().ok_or_else(|| {
                bad(
                    &tc_path,
                    "add_prefix_space",
                    format!("{v} is not a boolean"),
                )
            })?),
        };
    }
    Ok(SpmVocab {
        tokens,
        scores,
        types,
        ids,
        add,
        add_space_prefix,
        chat_template,
    })
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
        _ => "a scalar",
    }
}

/// Added tokens llama.cpp makes control tokens although not marked special.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

impl SpmVocab {
    fn write(&self, w: &mut GgufWriter, n_vocab: usize) -> Result<()> {
        if self.tokens.len() != n_vocab {
            return Err(Error::Invalid(format!(
                "the tokenizer defines {} tokens but the model embeds {n_vocab}",
                self.tokens.len()
            )));
        }
        w.add("tokenizer.ggml.model", Value::String("llama".into()));
        w.add("tokenizer.ggml.pre", Value::String("default".into()));
        w.add(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(self.tokens.clone())),
        );
        w.add(
            "tokenizer.ggml.scores",
            Value::Array(Array::F32(self.scores.clone())),
        );
        w.add(
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(self.types.iter().map(|t| t.to_gguf()).collect())),
        );
        for (key, id) in &self.ids {
            w.add(format!("tokenizer.ggml.{key}_token_id"), Value::U32(*id));
        }
        for (key, b) in &self.add {
            w.add(format!("tokenizer.ggml.add_{key}_token"), Value::Bool(*b));
        }
        if let Some(t) = &self.chat_template {
            w.add("tokenizer.chat_template", Value::String(t.clone()));
        }
        if let Some(b) = self.add_space_prefix {
            w.add("tokenizer.ggml.add_space_prefix", Value::Bool(b));
        }
        Ok(())
    }
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
}
