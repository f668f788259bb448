//! Deterministic random-weight Hugging Face checkpoints: `config.json`,
//! `model.safetensors`, a byte-level BPE `tokenizer.json` or a SentencePiece
//! `tokenizer.model` (Gemma 3 and Mistral: both, the same pieces) and
//! `tokenizer_config.json`, in the layout `transformers` and llama.cpp's
//! converter read. Tests convert them with `mori convert` and compare with
//! the outside tools' own conversion and forward pass (recorded as fixtures by
//! `scripts/record_convert.py`); the same flags always give the same bytes.

use std::collections::HashMap;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value as Json};

use crate::random::{normal, MoeSpec, RandomSpec};
use crate::{Error, Result};

mod bpe;
mod spm;

use bpe::{specials, tokenizer_json, CHAT_TEMPLATE};

/// The element type of the checkpoint's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfDtype {
    F32,
    F16,
    BF16,
}

impl HfDtype {
    pub fn parse(s: &str) -> Option<HfDtype> {
        match s.to_ascii_uppercase().as_str() {
            "F32" | "FLOAT32" => Some(HfDtype::F32),
            "F16" | "FLOAT16" => Some(HfDtype::F16),
            "BF16" | "BFLOAT16" => Some(HfDtype::BF16),
            _ => None,
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            HfDtype::F32 => "float32",
            HfDtype::F16 => "float16",
            HfDtype::BF16 => "bfloat16",
        }
    }

    fn st(self) -> Dtype {
        match self {
            HfDtype::F32 => Dtype::F32,
            HfDtype::F16 => Dtype::F16,
            HfDtype::BF16 => Dtype::BF16,
        }
    }

    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            HfDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            HfDtype::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            HfDtype::BF16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        }
    }
}

/// The Hugging Face names of an architecture Mori writes checkpoints for:
/// `(model_type, class name)`.
fn hf_arch(arch: &str) -> Option<(&'static str, &'static str)> {
    match arch {
        "llama" => Some(("llama", "LlamaForCausalLM")),
        // Mistral 7B (v0.1-v0.3): Llama's tensors, a SentencePiece tokenizer.
        "mistral" => Some(("mistral", "MistralForCausalLM")),
        "qwen2" => Some(("qwen2", "Qwen2ForCausalLM")),
        "qwen3" => Some(("qwen3", "Qwen3ForCausalLM")),
        "qwen3moe" => Some(("qwen3_moe", "Qwen3MoeForCausalLM")),
        "ernie4_5" => Some(("ernie4_5", "Ernie4_5ForCausalLM")),
        "ernie4_5-moe" => Some(("ernie4_5_moe", "Ernie4_5_MoeForCausalLM")),
        "pangu-embedded" => Some(("PanguEmbedded", "PanguEmbeddedForCausalLM")),
        // The text-only checkpoints (270M, 1B) of Gemma 3.
        "gemma3" => Some(("gemma3_text", "Gemma3ForCausalLM")),
        _ => None,
    }
}

/// Writes the checkpoint described by `spec` (its `file_type` is ignored;
/// tensors are stored as `dtype`) into the directory `dir`, creating it.
pub fn write_random_hf(spec: &RandomSpec, dtype: HfDtype, dir: &Path) -> Result<()> {
    let (model_type, class) = hf_arch(&spec.arch).ok_or_else(|| {
        Error::Invalid(format!(
            "cannot write a random Hugging Face '{}' checkpoint (supported: llama, mistral, \
             qwen2, qwen3, qwen3moe, ernie4_5, ernie4_5-moe, pangu-embedded, gemma3)",
            spec.arch
        ))
    })?;
    if spec.n_head == 0 || spec.n_head_kv == 0 || !spec.n_head.is_multiple_of(spec.n_head_kv) {
        return Err(Error::Invalid(format!(
            "{} heads cannot share {} key/value heads",
            spec.n_head, spec.n_head_kv
        )));
    }
    if spec.sliding_window > 0 && spec.arch != "gemma3" {
        return Err(Error::Invalid(format!(
            "a random '{}' checkpoint cannot have a sliding window (only gemma3)",
            spec.arch
        )));
    }
    let io = |e: std::io::Error| Error::Invalid(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    if spec.arch == "gemma3" {
        return spm::write_random_gemma3(spec, dtype, dir, class, model_type);
    }
    if spec.arch == "mistral" {
        return spm::write_random_mistral(spec, dtype, dir, class, model_type);
    }
    if spm::is_sentencepiece(&spec.arch) {
        return spm::write_random_spm_hf(spec, dtype, dir, class, model_type);
    }
    let tok = tokenizer_json(&spec.arch, spec.n_vocab)?;
    let sp = specials(&spec.arch);
    let first_special = spec.n_vocab - sp.len();
    let (bos, eos) = match spec.arch.as_str() {
        "llama" => (Some(first_special), first_special + 1),
        _ => (None, first_special),
    };

    write_tensors(spec, dtype, dir)?;

    let mut config = json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": spec.n_vocab,
        "hidden_size": spec.n_embd,
        "intermediate_size": spec.n_ff,
        "num_hidden_layers": spec.n_layer,
        "num_attention_heads": spec.n_head,
        "num_key_value_heads": spec.n_head_kv,
        "head_dim": spec.head_dim,
        "max_position_embeddings": spec.n_ctx_train,
        "rms_norm_eps": shortest(spec.rms_eps),
        "rope_theta": shortest(spec.rope_base),
        "hidden_act": "silu",
        "tie_word_embeddings": spec.tied_output,
        "torch_dtype": dtype.torch_name(),
        "eos_token_id": eos,
        "use_cache": true,
    });
    if let Some(b) = bos {
        config["bos_token_id"] = json!(b);
    }
    if let Some(m) = experts(spec)? {
        config["num_experts"] = json!(m.n_expert);
        config["num_experts_per_tok"] = json!(m.n_expert_used);
        config["moe_intermediate_size"] = json!(m.n_ff_exp);
        config["decoder_sparse_step"] = json!(1);
        config["mlp_only_layers"] = json!([]);
        config["norm_topk_prob"] = json!(true);
        config["output_router_logits"] = json!(false);
        config["router_aux_loss_coef"] = json!(0.001);
    }
    if spec.arch == "llama" {
        config["attention_bias"] = json!(false);
        config["mlp_bias"] = json!(false);
    }
    let tok_config = json!({
        "add_bos_token": bos.is_some(),
        "add_eos_token": false,
        "bos_token": bos.map(|b| sp[b - first_special]),
        "eos_token": sp[eos - first_special],
        "pad_token": Json::Null,
        "model_max_length": spec.n_ctx_train,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": false,
        "chat_template": CHAT_TEMPLATE,
    });
    write_json(dir, "config.json", &config)?;
    write_json(dir, "tokenizer.json", &tok)?;
    write_json(dir, "tokenizer_config.json", &tok_config)?;
    Ok(())
}

fn write_json(dir: &Path, name: &str, v: &Json) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialize");
    std::fs::write(dir.join(name), text + "\n")
        .map_err(|e| Error::Invalid(format!("{}: {e}", dir.join(name).display())))
}

/// The experts of a Qwen3-MoE or ERNIE-4.5-MoE checkpoint (`None` for dense
/// architectures), checked against what the family's checkpoints can hold.
fn experts(spec: &RandomSpec) -> Result<Option<MoeSpec>> {
    let arch = spec.arch.as_str();
    if arch != "qwen3moe" && arch != "ernie4_5-moe" {
        return Ok(None);
    }
    let m = spec
        .moe
        .ok_or_else(|| Error::Invalid(format!("a {arch} checkpoint needs experts")))?;
    if arch == "qwen3moe" && (m.n_expert_shared > 0 || m.n_layer_dense_lead > 0) {
        return Err(Error::Invalid(
            "Qwen3-MoE has no shared experts and no dense leading layers".into(),
        ));
    }
    if m.n_expert_used == 0 || m.n_expert_used > m.n_expert || m.n_ff_exp == 0 {
        return Err(Error::Invalid(format!(
            "{} experts per token out of {}, each {} wide",
            m.n_expert_used, m.n_expert, m.n_ff_exp
        )));
    }
    if m.n_layer_dense_lead >= spec.n_layer {
        return Err(Error::Invalid(format!(
            "{} leading dense layers leave no expert layer in a network of {}",
            m.n_layer_dense_lead, spec.n_layer
        )));
    }
    Ok(Some(m))
}

/// One tensor of a checkpoint: name, shape, values, and whether it is stored
/// as F32 whatever the checkpoint's type (ERNIE-4.5-MoE's router and
/// selection bias, which `transformers` keeps in float32).
type Drawn = (String, Vec<usize>, Vec<f32>, bool);

/// Writes `model.safetensors`: every tensor drawn from one stream, in the
/// order `transformers` builds the modules.
fn write_tensors(spec: &RandomSpec, dtype: HfDtype, dir: &Path) -> Result<()> {
    let (d, hd, ff) = (spec.n_embd, spec.head_dim, spec.n_ff);
    let (q_dim, kv_dim) = (spec.n_head * hd, spec.n_head_kv * hd);
    let arch = spec.arch.as_str();
    let gemma = arch == "gemma3";
    let moe = experts(spec)?;
    // Gemma's norms scale by 1 + w: stored weights centre on 0, not 1.
    let norm_mean = if gemma { 0.0 } else { 1.0 };
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut tensors: Vec<Drawn> = Vec::new();
    let mut mat = |rng: &mut ChaCha8Rng, name: String, rows: usize, cols: usize, scale: f32| {
        let v = (0..rows * cols).map(|_| normal(rng) * scale).collect();
        tensors.push((name, vec![rows, cols], v, false));
    };
    let out_scale = 2.5 / (d as f32).sqrt();
    let embd_scale = if spec.tied_output { out_scale } else { 1.0 };
    mat(
        &mut rng,
        "model.embed_tokens.weight".into(),
        spec.n_vocab,
        d,
        embd_scale,
    );
    let mut vecs: Vec<Drawn> = Vec::new();
    let mut vector = |rng: &mut ChaCha8Rng, name: String, n: usize, mean: f32, std: f32| {
        let v = (0..n).map(|_| mean + std * normal(rng)).collect();
        vecs.push((name, vec![n], v, false));
    };
    let (sd, sq, sf) = (
        1.0 / (d as f32).sqrt(),
        1.0 / (q_dim as f32).sqrt(),
        1.0 / (ff as f32).sqrt(),
    );
    let mut f32s: Vec<Drawn> = Vec::new();
    for i in 0..spec.n_layer {
        let n = |s: &str| format!("model.layers.{i}.{s}");
        vector(&mut rng, n("input_layernorm.weight"), d, norm_mean, 0.1);
        mat(&mut rng, n("self_attn.q_proj.weight"), q_dim, d, sd);
        mat(&mut rng, n("self_attn.k_proj.weight"), kv_dim, d, sd);
        mat(&mut rng, n("self_attn.v_proj.weight"), kv_dim, d, sd);
        mat(&mut rng, n("self_attn.o_proj.weight"), d, q_dim, sq);
        if arch == "qwen2" || arch == "pangu-embedded" {
            vector(&mut rng, n("self_attn.q_proj.bias"), q_dim, 0.0, 0.3);
            vector(&mut rng, n("self_attn.k_proj.bias"), kv_dim, 0.0, 0.3);
            vector(&mut rng, n("self_attn.v_proj.bias"), kv_dim, 0.0, 0.3);
        }
        if arch == "pangu-embedded" {
            vector(&mut rng, n("self_attn.o_proj.bias"), d, 0.0, 0.3);
        }
        if arch == "qwen3" || arch == "qwen3moe" || gemma {
            vector(&mut rng, n("self_attn.q_norm.weight"), hd, norm_mean, 0.1);
            vector(&mut rng, n("self_attn.k_norm.weight"), hd, norm_mean, 0.1);
        }
        vector(
            &mut rng,
            n("post_attention_layernorm.weight"),
            d,
            norm_mean,
            0.1,
        );
        if gemma {
            vector(
                &mut rng,
                n("pre_feedforward_layernorm.weight"),
                d,
                norm_mean,
                0.1,
            );
        }
        match moe.as_ref().filter(|m| i >= m.n_layer_dense_lead) {
            // An expert layer: a router and each expert's own SwiGLU, named
            // per expert as the published checkpoints are.
            Some(m) if arch == "qwen3moe" => {
                // Router logits spread wide enough that top-k choices are clear.
                mat(&mut rng, n("mlp.gate.weight"), m.n_expert, d, 4.0 * sd);
                expert_mats(&mut rng, &mut mat, &n, m, d);
            }
            // ERNIE's router and expert-selection bias are float32, the bias
            // a [1, experts] row; its shared experts are one SwiGLU of their
            // summed width.
            Some(m) => {
                let (ne, dd) = (m.n_expert, d);
                let v = (0..ne * dd).map(|_| normal(&mut rng) * 4.0 * sd).collect();
                f32s.push((n("mlp.gate.weight"), vec![ne, dd], v, true));
                let v = (0..ne).map(|_| 0.02 * normal(&mut rng)).collect();
                f32s.push((
                    n("mlp.moe_statics.e_score_correction_bias"),
                    vec![1, ne],
                    v,
                    true,
                ));
                expert_mats(&mut rng, &mut mat, &n, m, d);
                let sh = m.n_expert_shared * m.n_ff_exp;
                if sh > 0 {
                    let x = |w: &str| n(&format!("mlp.shared_experts.{w}"));
                    mat(&mut rng, x("gate_proj.weight"), sh, d, sd);
                    mat(&mut rng, x("up_proj.weight"), sh, d, sd);
                    let s = 1.0 / (sh as f32).sqrt();
                    mat(&mut rng, x("down_proj.weight"), d, sh, s);
                }
            }
            None => {
                mat(&mut rng, n("mlp.gate_proj.weight"), ff, d, sd);
                mat(&mut rng, n("mlp.up_proj.weight"), ff, d, sd);
                mat(&mut rng, n("mlp.down_proj.weight"), d, ff, sf);
            }
        }
        if gemma {
            vector(
                &mut rng,
                n("post_feedforward_layernorm.weight"),
                d,
                norm_mean,
                0.1,
            );
        }
    }
    vector(&mut rng, "model.norm.weight".into(), d, norm_mean, 0.1);
    if !spec.tied_output {
        mat(
            &mut rng,
            "lm_head.weight".into(),
            spec.n_vocab,
            d,
            out_scale,
        );
    }
    tensors.extend(vecs);
    tensors.extend(f32s);

    let encoded: Vec<(String, Vec<usize>, Vec<u8>, HfDtype)> = tensors
        .into_iter()
        .map(|(n, s, v, f32_always)| {
            let ty = if f32_always { HfDtype::F32 } else { dtype };
            (n, s, ty.encode(&v), ty)
        })
        .collect();
    let views = encoded
        .iter()
        .map(|(n, s, b, ty)| {
            TensorView::new(ty.st(), s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Invalid(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(views, Some(meta), &dir.join("model.safetensors"))
        .map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))
}

/// The routed experts of one layer: gate, up and down of each, in expert order.
fn expert_mats(
    rng: &mut ChaCha8Rng,
    mat: &mut impl FnMut(&mut ChaCha8Rng, String, usize, usize, f32),
    n: &impl Fn(&str) -> String,
    m: &MoeSpec,
    d: usize,
) {
    let (fe, sd) = (m.n_ff_exp, 1.0 / (d as f32).sqrt());
    for e in 0..m.n_expert {
        let x = |w: &str| n(&format!("mlp.experts.{e}.{w}"));
        mat(rng, x("gate_proj.weight"), fe, d, sd);
        mat(rng, x("up_proj.weight"), fe, d, sd);
        mat(rng, x("down_proj.weight"), d, fe, 1.0 / (fe as f32).sqrt());
    }
}

/// `x` as the f64 with the shortest decimal form that rounds to it (1e-5, not 9.99999974e-6).
fn shortest(x: f32) -> f64 {
    x.to_string()
        .parse()
        .expect("a float's decimal form parses")
}
