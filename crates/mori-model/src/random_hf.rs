//! Deterministic random-weight Hugging Face checkpoints: `config.json`,
//! `model.safetensors`, a byte-level BPE `tokenizer.json` and
//! `tokenizer_config.json`, in the layout `transformers` and llama.cpp's
//! converter read. Tests convert them with `mori convert` and compare with the
//! outside tools' own conversion and forward pass (recorded as fixtures by
//! `scripts/record_convert.py`); the same flags always give the same bytes.

use std::collections::HashMap;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value as Json};

use crate::convert::{HF_LLAMA3_RE, HF_QWEN2_RE};
use crate::random::{normal, RandomSpec};
use crate::tokenizer::byte_to_unicode;
use crate::{Error, Result};

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
        "qwen2" => Some(("qwen2", "Qwen2ForCausalLM")),
        "qwen3" => Some(("qwen3", "Qwen3ForCausalLM")),
        "qwen3moe" => Some(("qwen3_moe", "Qwen3MoeForCausalLM")),
        _ => None,
    }
}

/// Special tokens, appended after the byte-level vocabulary: (text, is BOS, is EOS).
fn specials(arch: &str) -> &'static [&'static str] {
    match arch {
        "llama" => &["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"],
        _ => &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    }
}

/// Writes the checkpoint described by `spec` (its `file_type` is ignored;
/// tensors are stored as `dtype`) into the directory `dir`, creating it.
pub fn write_random_hf(spec: &RandomSpec, dtype: HfDtype, dir: &Path) -> Result<()> {
    let (model_type, class) = hf_arch(&spec.arch).ok_or_else(|| {
        Error::Invalid(format!(
            "cannot write a random Hugging Face '{}' checkpoint (supported: llama, qwen2, qwen3, qwen3moe)",
            spec.arch
        ))
    })?;
    if spec.n_head == 0 || spec.n_head_kv == 0 || !spec.n_head.is_multiple_of(spec.n_head_kv) {
        return Err(Error::Invalid(format!(
            "{} heads cannot share {} key/value heads",
            spec.n_head, spec.n_head_kv
        )));
    }
    let io = |e: std::io::Error| Error::Invalid(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tok = tokenizer_json(&spec.arch, spec.n_vocab)?;
    let sp = specials(&spec.arch);
    let first_special = spec.n_vocab - sp.len();
    let (bos, eos) = match spec.arch.as_str() {
        "llama" => (Some(first_special), first_special + 1),
        _ => (None, first_special),
    };

    // Tensors in the order `transformers` saves them, drawn from one stream.
    let (d, hd, ff) = (spec.n_embd, spec.head_dim, spec.n_ff);
    let (q_dim, kv_dim) = (spec.n_head * hd, spec.n_head_kv * hd);
    let moe = match spec.arch.as_str() {
        "qwen3moe" => {
            let m = spec
                .moe
                .ok_or_else(|| Error::Invalid("a qwen3moe checkpoint needs experts".into()))?;
            if m.n_expert_shared > 0 || m.n_layer_dense_lead > 0 {
                return Err(Error::Invalid(
                    "Qwen3-MoE has no shared experts and no dense leading layers".into(),
                ));
            }
            Some(m)
        }
        _ => None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut mat = |rng: &mut ChaCha8Rng, name: String, rows: usize, cols: usize, scale: f32| {
        let v = (0..rows * cols).map(|_| normal(rng) * scale).collect();
        tensors.push((name, vec![rows, cols], v));
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
    let mut vecs: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut vector = |rng: &mut ChaCha8Rng, name: String, n: usize, mean: f32, std: f32| {
        let v = (0..n).map(|_| mean + std * normal(rng)).collect();
        vecs.push((name, vec![n], v));
    };
    let (sd, sq, sf) = (
        1.0 / (d as f32).sqrt(),
        1.0 / (q_dim as f32).sqrt(),
        1.0 / (ff as f32).sqrt(),
    );
    for i in 0..spec.n_layer {
        let n = |s: &str| format!("model.layers.{i}.{s}");
        vector(&mut rng, n("input_layernorm.weight"), d, 1.0, 0.1);
        mat(&mut rng, n("self_attn.q_proj.weight"), q_dim, d, sd);
        mat(&mut rng, n("self_attn.k_proj.weight"), kv_dim, d, sd);
        mat(&mut rng, n("self_attn.v_proj.weight"), kv_dim, d, sd);
        mat(&mut rng, n("self_attn.o_proj.weight"), d, q_dim, sq);
        if spec.arch == "qwen2" {
            vector(&mut rng, n("self_attn.q_proj.bias"), q_dim, 0.0, 0.3);
            vector(&mut rng, n("self_attn.k_proj.bias"), kv_dim, 0.0, 0.3);
            vector(&mut rng, n("self_attn.v_proj.bias"), kv_dim, 0.0, 0.3);
        }
        if spec.arch == "qwen3" || spec.arch == "qwen3moe" {
            vector(&mut rng, n("self_attn.q_norm.weight"), hd, 1.0, 0.1);
            vector(&mut rng, n("self_attn.k_norm.weight"), hd, 1.0, 0.1);
        }
        vector(&mut rng, n("post_attention_layernorm.weight"), d, 1.0, 0.1);
        match &moe {
            // Every layer routes: a router and each expert's own SwiGLU, named
            // per expert as the published checkpoints are.
            Some(m) => {
                // Router logits spread wide enough that top-k choices are clear.
                mat(&mut rng, n("mlp.gate.weight"), m.n_expert, d, 4.0 * sd);
                let fe = m.n_ff_exp;
                for e in 0..m.n_expert {
                    let x = |w: &str| n(&format!("mlp.experts.{e}.{w}"));
                    mat(&mut rng, x("gate_proj.weight"), fe, d, sd);
                    mat(&mut rng, x("up_proj.weight"), fe, d, sd);
                    mat(
                        &mut rng,
                        x("down_proj.weight"),
                        d,
                        fe,
                        1.0 / (fe as f32).sqrt(),
                    );
                }
            }
            None => {
                mat(&mut rng, n("mlp.gate_proj.weight"), ff, d, sd);
                mat(&mut rng, n("mlp.up_proj.weight"), ff, d, sd);
                mat(&mut rng, n("mlp.down_proj.weight"), d, ff, sf);
            }
        }
    }
    vector(&mut rng, "model.norm.weight".into(), d, 1.0, 0.1);
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

    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, dtype.encode(&v)))
        .collect();
    let views = encoded
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(dtype.st(), s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Invalid(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(views, Some(meta), &dir.join("model.safetensors"))
        .map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))?;

    let mut config = json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": spec.n_vocab,
        "hidden_size": d,
        "intermediate_size": ff,
        "num_hidden_layers": spec.n_layer,
        "num_attention_heads": spec.n_head,
        "num_key_value_heads": spec.n_head_kv,
        "head_dim": hd,
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
    if let Some(m) = &moe {
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
    let write_json = |name: &str, v: &Json| -> Result<()> {
        let text = serde_json::to_string_pretty(v).expect("JSON values serialize");
        std::fs::write(dir.join(name), text + "\n").map_err(io)
    };
    write_json("config.json", &config)?;
    write_json("tokenizer.json", &tok)?;
    write_json("tokenizer_config.json", &tok_config)?;
    Ok(())
}

/// `x` as the f64 with the shortest decimal form that rounds to it (1e-5, not 9.99999974e-6).
fn shortest(x: f32) -> f64 {
    x.to_string()
        .parse()
        .expect("a float's decimal form parses")
}

/// A ChatML template, enough for `transformers` and the converters to carry.
const CHAT_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// A byte-level BPE `tokenizer.json` of `n_vocab` tokens: the 256 byte
/// characters, merges of common letters (pairs, then pairs with a third), and
/// the architecture's special tokens last.
fn tokenizer_json(arch: &str, n_vocab: usize) -> Result<Json> {
    let sp = specials(arch);
    if n_vocab < 256 + sp.len() + 8 {
        return Err(Error::Invalid(format!(
            "a byte-level vocabulary of {n_vocab} is too small (at least {})",
            256 + sp.len() + 8
        )));
    }
    let bytes: Vec<char> = (0..=255u8).map(byte_to_unicode).collect();
    let mut vocab: Vec<String> = bytes.iter().map(|c| c.to_string()).collect();
    let letters: Vec<String> = " etaoinshrdlcumwfgypbvk"
        .bytes()
        .map(|b| bytes[b as usize].to_string())
        .collect();
    let n_merges = n_vocab - 256 - sp.len();
    let mut merges: Vec<(String, String)> = Vec::new();
    let push = |a: &str, b: &str, vocab: &mut Vec<String>, merges: &mut Vec<(String, String)>| {
        let joined = format!("{a}{b}");
        if merges.len() < n_merges && !vocab.contains(&joined) {
            vocab.push(joined);
            merges.push((a.to_string(), b.to_string()));
        }
    };
    for a in &letters {
        for b in letters.iter().skip(1) {
            push(a, b, &mut vocab, &mut merges);
        }
    }
    let pairs: Vec<String> = vocab[256..].to_vec();
    'triples: for p in &pairs {
        for c in letters.iter().skip(1) {
            if merges.len() >= n_merges {
                break 'triples;
            }
            push(p, c, &mut vocab, &mut merges);
        }
    }
    if merges.len() < n_merges {
        return Err(Error::Invalid(format!(
            "a random byte-level vocabulary holds at most {} tokens",
            vocab.len() + sp.len()
        )));
    }
    let regex = match arch {
        "llama" => HF_LLAMA3_RE,
        _ => HF_QWEN2_RE,
    };
    let mut vocab_obj = serde_json::Map::new();
    for (i, t) in vocab.iter().enumerate() {
        vocab_obj.insert(t.clone(), json!(i));
    }
    let added: Vec<Json> = sp
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": vocab.len() + i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let merges: Vec<Json> = merges.iter().map(|(a, b)| json!([a, b])).collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    // Llama 3 puts its BOS in front of every sequence through the post-processor.
    let post_processor = match arch {
        "llama" => {
            let bos = sp[0];
            let id = vocab.len();
            json!({"type": "Sequence", "processors": [byte_level, {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [id], "tokens": [bos]}}
            }]})
        }
        _ => byte_level,
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]
        },
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab_obj, "merges": merges
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_has_the_asked_size_and_unique_tokens() {
        let j = tokenizer_json("qwen2", 384).unwrap();
        let n = j["model"]["vocab"].as_object().unwrap().len();
        assert_eq!(n + j["added_tokens"].as_array().unwrap().len(), 384);
        assert_eq!(
            j["model"]["merges"].as_array().unwrap().len(),
            384 - 256 - 3
        );
        assert!(tokenizer_json("qwen2", 200).is_err());
    }
}
