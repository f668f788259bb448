//! SentencePiece checkpoints: the `tokenizer.model` pieces and the files
//! around them for ERNIE 4.5, openPangu-Embedded, ERNIE-4.5-MoE, Gemma 3 and
//! Mistral 7B. Gemma's and Mistral's also carry the same pieces as a
//! `tokenizer.json` (one writer, [`spm_tokenizer_json`]: Gemma's layout as
//! google ships it, Mistral's as `transformers` converts a Llama-layout model).

use std::path::Path;

use serde_json::{json, Value as Json};

use super::{experts, shortest, write_json, write_tensors, HfDtype};
use crate::hparams::swa_pattern;
use crate::random::RandomSpec;
use crate::sentencepiece::{
    encode_bpe_model, encode_bpe_model_as, PieceType, SpmLayout, LLAMA_LAYOUT,
};
use crate::{Error, Result};

/// Architectures whose checkpoints carry a SentencePiece `tokenizer.model`
/// (and no `tokenizer.json`; Gemma 3 and Mistral, which ship both, are
/// written apart).
pub(super) fn is_sentencepiece(arch: &str) -> bool {
    matches!(arch, "ernie4_5" | "ernie4_5-moe" | "pangu-embedded")
}

/// ERNIE 4.5 dense and MoE share the tokenizer and the configuration's layout.
fn is_ernie(arch: &str) -> bool {
    matches!(arch, "ernie4_5" | "ernie4_5-moe")
}

/// Pieces the architecture's real tokenizer defines as user-defined pieces
/// and its `tokenizer_config.json` lists as special added tokens.
fn spm_user_pieces(arch: &str) -> &'static [&'static str] {
    match arch {
        "ernie4_5" | "ernie4_5-moe" => {
            &["<|begin_of_sentence|>", "<|end_of_sentence|>", "<mask:1>"]
        }
        _ => &["[unused9]", "[unused10]"],
    }
}

/// Ids below the embedding's rows that the SentencePiece model leaves out:
/// ERNIE puts one token in `added_tokens.json` there and leaves the rest
/// unused, as the real checkpoint's padded embedding does.
fn spm_tail(arch: &str) -> usize {
    match arch {
        "ernie4_5" | "ernie4_5-moe" => 4,
        _ => 0,
    }
}

/// Words whose merges (each prefix one more character) come first, so the
/// recorded texts tokenize into words.
const SPM_WORDS: &[&str] = &[
    "the", "in", "rain", "spain", "stays", "mainly", "plain", "and", "leading", "spaces",
    "newlines", "tabs", "numbers", "caps", "hello", "world", "there", "hi", "user",
];

/// Llama's leading pieces, which ERNIE and openPangu keep.
const LLAMA_HEAD: &[(&str, PieceType)] = &[
    ("<unk>", PieceType::Unknown),
    ("<s>", PieceType::Control),
    ("</s>", PieceType::Control),
];

/// The id of piece `t`, one this writer defined itself.
fn piece_id(pieces: &[(String, f32, PieceType)], t: &str) -> usize {
    pieces
        .iter()
        .position(|p| p.0 == t)
        .expect("a defined piece")
}

/// The pieces of a SentencePiece BPE model of `n` pieces: `head`, the 256
/// byte pieces, `user` (user-defined pieces), merges (scores -1, -2, ... in
/// merge order) and last the single characters.
fn spm_pieces(
    head: &[(&str, PieceType)],
    user: &[&str],
    n: usize,
) -> Result<Vec<(String, f32, PieceType)>> {
    let mut pieces: Vec<(String, f32, PieceType)> = head
        .iter()
        .map(|(t, ty)| (t.to_string(), 0.0, *ty))
        .collect();
    for b in 0..=255u8 {
        pieces.push((format!("<0x{b:02X}>"), 0.0, PieceType::Byte));
    }
    for p in user {
        pieces.push((p.to_string(), 0.0, PieceType::UserDefined));
    }
    let chars: Vec<String> = "\u{2581}etaoinshrdlcumwfgypbvkjxqz"
        .chars()
        .chain('A'..='Z')
        .chain('0'..='9')
        .chain(".,;:!?'-()\u{6771}\u{7528}\u{6237}\u{ff1a}".chars())
        .map(String::from)
        .collect();
    let fixed = pieces.len() + chars.len();
    if n < fixed + 16 {
        return Err(Error::Invalid(format!(
            "a SentencePiece vocabulary of {n} is too small (at least {})",
            fixed + 16
        )));
    }
    let n_merges = n - fixed;
    let mut seen: std::collections::HashSet<String> = pieces
        .iter()
        .map(|p| p.0.clone())
        .chain(chars.iter().cloned())
        .collect();
    let mut merges: Vec<String> = Vec::new();
    let mut push = |m: String, merges: &mut Vec<String>| {
        if merges.len() < n_merges && seen.insert(m.clone()) {
            merges.push(m);
        }
    };
    for w in SPM_WORDS {
        let word: Vec<char> = std::iter::once('\u{2581}').chain(w.chars()).collect();
        for k in 2..=word.len() {
            push(word[..k].iter().collect(), &mut merges);
        }
    }
    let letters: Vec<&String> = chars.iter().take(23).collect();
    for a in &letters {
        for b in letters.iter().skip(1) {
            push(format!("{a}{b}"), &mut merges);
        }
    }
    if merges.len() < n_merges {
        return Err(Error::Invalid(format!(
            "a random SentencePiece vocabulary holds at most {} pieces",
            fixed + merges.len()
        )));
    }
    for (k, m) in merges.into_iter().enumerate() {
        pieces.push((m, -(k as f32 + 1.0), PieceType::Normal));
    }
    let base = pieces.len();
    for (j, c) in chars.into_iter().enumerate() {
        pieces.push((c, -((base + j) as f32), PieceType::Normal));
    }
    Ok(pieces)
}

/// Writes an ERNIE 4.5 (dense or MoE) or openPangu-Embedded checkpoint:
/// weights, `config.json` as the real models' have it, a SentencePiece
/// `tokenizer.model` and `tokenizer_config.json` (ERNIE also `added_tokens.json`).
pub(super) fn write_random_spm_hf(
    spec: &RandomSpec,
    dtype: HfDtype,
    dir: &Path,
    class: &str,
    model_type: &str,
) -> Result<()> {
    let arch = spec.arch.as_str();
    let n_pieces = spec.n_vocab.saturating_sub(spm_tail(arch));
    let pieces = spm_pieces(LLAMA_HEAD, spm_user_pieces(arch), n_pieces)?;
    write_tensors(spec, dtype, dir)?;
    std::fs::write(dir.join("tokenizer.model"), encode_bpe_model(&pieces))
        .map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))?;
    let id_of = |t: &str| piece_id(&pieces, t);
    let added = |id: usize, content: &str| {
        (
            id.to_string(),
            json!({"content": content, "lstrip": false, "normalized": false, "rstrip": false,
                   "single_word": false, "special": true}),
        )
    };
    let mut decoder: serde_json::Map<String, Json> = ["<unk>", "<s>", "</s>"]
        .iter()
        .chain(spm_user_pieces(arch))
        .map(|t| added(id_of(t), t))
        .collect();
    let mut config = json!({
        "architectures": [class],
        "model_type": model_type,
        "bos_token_id": 1,
        "pad_token_id": 0,
        "hidden_act": "silu",
        "hidden_size": spec.n_embd,
        "intermediate_size": spec.n_ff,
        "max_position_embeddings": spec.n_ctx_train,
        "num_attention_heads": spec.n_head,
        "num_key_value_heads": spec.n_head_kv,
        "num_hidden_layers": spec.n_layer,
        "rms_norm_eps": shortest(spec.rms_eps),
        "rope_theta": shortest(spec.rope_base),
        "tie_word_embeddings": spec.tied_output,
        "torch_dtype": dtype.torch_name(),
        "use_cache": true,
        "vocab_size": spec.n_vocab,
    });
    let mut tok_config = json!({
        "bos_token": "<s>",
        "pad_token": "<unk>",
        "unk_token": "<unk>",
        "clean_up_tokenization_spaces": false,
        "legacy": true,
        "model_max_length": spec.n_ctx_train,
        "spaces_between_special_tokens": false,
    });
    if is_ernie(arch) {
        config["eos_token_id"] = json!(2);
        config["head_dim"] = json!(spec.head_dim);
        config["use_bias"] = json!(false);
        if let Some(m) = experts(spec)? {
            // ERNIE-4.5-21B-A3B's keys: layers from moe_layer_start_index to
            // moe_layer_end_index, every moe_layer_interval-th, route.
            for (k, v) in [
                ("moe_num_experts", json!(m.n_expert)),
                ("moe_k", json!(m.n_expert_used)),
                ("moe_intermediate_size", json!(m.n_ff_exp)),
                ("moe_num_shared_experts", json!(m.n_expert_shared)),
                ("moe_layer_start_index", json!(m.n_layer_dense_lead)),
                ("moe_layer_end_index", json!(spec.n_layer - 1)),
                ("moe_layer_interval", json!(1)),
                ("moe_capacity", json!([m.n_expert, m.n_expert, m.n_expert])),
                ("moe_gate", json!("topk")),
                ("moe_use_aux_free", json!(true)),
            ] {
                config[k] = v;
            }
        }
        let image = "<|IMAGE_PLACEHOLDER|>";
        write_json(dir, "added_tokens.json", &json!({ image: pieces.len() }))?;
        let (k, v) = added(pieces.len(), image);
        decoder.insert(k, v);
        for (k, v) in [
            ("add_bos_token", json!(false)),
            ("add_eos_token", json!(false)),
            ("eos_token", json!("</s>")),
            ("cls_token", json!("<|begin_of_sentence|>")),
            ("sep_token", json!("<|end_of_sentence|>")),
            ("mask_token", json!("<mask:1>")),
            ("tokenizer_class", json!("Ernie4_5_Tokenizer")),
            ("chat_template", json!(ERNIE_TEMPLATE)),
        ] {
            tok_config[k] = v;
        }
    } else {
        // openPangu's config.json has no head_dim: it is hidden_size / heads.
        if spec.head_dim * spec.n_head != spec.n_embd {
            config["head_dim"] = json!(spec.head_dim);
        }
        config["eos_token_id"] = json!(id_of("[unused10]"));
        config["bias"] = json!(true);
        config["attention_dropout"] = json!(0.0);
        for (k, v) in [
            ("add_bos_token", json!(true)),
            ("add_eos_token", json!(false)),
            ("add_prefix_space", json!(true)),
            ("eos_token", json!("[unused10]")),
            ("tokenizer_class", json!("PanguTokenizer")),
            ("chat_template", json!(PANGU_TEMPLATE)),
        ] {
            tok_config[k] = v;
        }
    }
    tok_config["added_tokens_decoder"] = Json::Object(decoder);
    write_json(dir, "config.json", &config)?;
    write_json(dir, "tokenizer_config.json", &tok_config)?;
    Ok(())
}

/// ERNIE 4.5's turn format, enough for the converters to carry.
const ERNIE_TEMPLATE: &str = "<|begin_of_sentence|>{% for m in messages %}{% if m['role'] == 'assistant' %}Assistant: {{ m['content'] }}<|end_of_sentence|>{% else %}User: {{ m['content'] }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}";

/// openPangu-Embedded's turn format, enough for the converters to carry.
const PANGU_TEMPLATE: &str = "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[unused9]用户：' + m['content'] + '[unused10]' }}{% else %}{{ '[unused9]助手：' + m['content'] + '[unused10]' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '[unused9]助手：' }}{% endif %}";

/// Gemma's leading pieces: its specials and the user-defined pieces its
/// `tokenizer_config.json` marks special (a few of the real 99 `<unusedN>`).
const GEMMA_HEAD: &[(&str, PieceType)] = &[
    ("<pad>", PieceType::Control),
    ("<eos>", PieceType::Control),
    ("<bos>", PieceType::Control),
    ("<unk>", PieceType::Unknown),
    ("<mask>", PieceType::UserDefined),
    ("[multimodal]", PieceType::UserDefined),
    ("<unused0>", PieceType::UserDefined),
    ("<unused1>", PieceType::UserDefined),
    ("<start_of_turn>", PieceType::UserDefined),
    ("<end_of_turn>", PieceType::UserDefined),
];

/// Gemma's `tokenizer.model`: `<bos>`/`<eos>`/`<pad>`, and no space put in
/// front of the text.
const GEMMA_LAYOUT: SpmLayout<'static> = SpmLayout {
    bos: "<bos>",
    eos: "<eos>",
    pad: Some("<pad>"),
    add_dummy_prefix: false,
};

/// The token Gemma 3's tokenizers define one past the embedding's rows
/// (`added_tokens.json`, `tokenizer.json`): only the vision tower uses it.
const GEMMA_IMAGE_TOKEN: &str = "<image_soft_token>";

/// Writes a Gemma 3 text checkpoint as google/gemma-3-270m and -1b ship it:
/// `config.json` (`gemma3_text`, sliding window, local and global RoPE bases,
/// `query_pre_attn_scalar`), weights, a SentencePiece `tokenizer.model` of
/// exactly the embedding's rows, the same vocabulary as a `tokenizer.json`
/// (BPE with byte fallback, spaces as `▁`, `<bos>` in front), and
/// `tokenizer_config.json` and `added_tokens.json`.
pub(super) fn write_random_gemma3(
    spec: &RandomSpec,
    dtype: HfDtype,
    dir: &Path,
    class: &str,
    model_type: &str,
) -> Result<()> {
    if spec.sliding_window == 0 {
        return Err(Error::Invalid(
            "a gemma3 checkpoint needs a sliding window (--sliding-window)".into(),
        ));
    }
    let pieces = spm_pieces(GEMMA_HEAD, &[], spec.n_vocab)?;
    write_tensors(spec, dtype, dir)?;
    std::fs::write(
        dir.join("tokenizer.model"),
        encode_bpe_model_as(&pieces, GEMMA_LAYOUT),
    )
    .map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))?;
    let id_of = |t: &str| piece_id(&pieces, t);
    let mut specials = head_specials(GEMMA_HEAD, &pieces);
    specials.push(special_token(spec.n_vocab, GEMMA_IMAGE_TOKEN));
    write_json(
        dir,
        "added_tokens.json",
        &json!({ GEMMA_IMAGE_TOKEN: spec.n_vocab }),
    )?;
    let decoder = write_tokenizer_json(dir, &pieces, &specials, SpmJson::Gemma)?;
    let tok_config = json!({
        "add_bos_token": true,
        "add_eos_token": false,
        "added_tokens_decoder": decoder,
        "bos_token": "<bos>",
        "chat_template": GEMMA_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "eos_token": "<eos>",
        "image_token": GEMMA_IMAGE_TOKEN,
        "model_max_length": spec.n_ctx_train,
        "pad_token": "<pad>",
        "padding_side": "left",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": false,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": false,
    });
    // Five sliding-window layers, then one global, as every Gemma 3 size has.
    let layer_types: Vec<&str> = swa_pattern(6, spec.n_layer)
        .into_iter()
        .map(|w| {
            if w {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect();
    let config = json!({
        "_sliding_window_pattern": 6,
        "architectures": [class],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": null,
        "bos_token_id": id_of("<bos>"),
        "eos_token_id": [id_of("<eos>"), id_of("<end_of_turn>")],
        "final_logit_softcapping": null,
        "head_dim": spec.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": spec.n_embd,
        "initializer_range": 0.02,
        "intermediate_size": spec.n_ff,
        "layer_types": layer_types,
        "max_position_embeddings": spec.n_ctx_train,
        "model_type": model_type,
        "num_attention_heads": spec.n_head,
        "num_hidden_layers": spec.n_layer,
        "num_key_value_heads": spec.n_head_kv,
        "pad_token_id": id_of("<pad>"),
        // The queries' scale is 1/sqrt(query_pre_attn_scalar): the head width
        // in the 270M and 1B models, which is what GGUF files imply.
        "query_pre_attn_scalar": spec.head_dim,
        "rms_norm_eps": shortest(spec.rms_eps),
        "rope_local_base_freq": 10000.0,
        "rope_scaling": null,
        "rope_theta": shortest(spec.rope_base),
        "sliding_window": spec.sliding_window,
        "tie_word_embeddings": spec.tied_output,
        "torch_dtype": dtype.torch_name(),
        "use_bidirectional_attention": false,
        "use_cache": true,
        "vocab_size": spec.n_vocab,
    });
    write_json(dir, "config.json", &config)?;
    write_json(dir, "tokenizer_config.json", &tok_config)?;
    Ok(())
}

/// Mistral 7B's leading pieces: Llama's, then (from v0.3) the instruction
/// markers as control pieces. The real v0.3 model has more after them
/// (`[TOOL_CALLS]`, `[AVAILABLE_TOOLS]`, ... and `[control_N]` placeholders up
/// to id 770); two are enough to check they are read as special tokens.
const MISTRAL_HEAD: &[(&str, PieceType)] = &[
    ("<unk>", PieceType::Unknown),
    ("<s>", PieceType::Control),
    ("</s>", PieceType::Control),
    ("[INST]", PieceType::Control),
    ("[/INST]", PieceType::Control),
];

/// Writes a Mistral 7B checkpoint as mistralai/Mistral-7B-Instruct-v0.3
/// ships it: `config.json` (`mistral`, `sliding_window: null`: v0.2 and v0.3
/// attend to the whole context; llama.cpp and Mori run every Mistral 7B as
/// plain Llama, v0.1's 4096-token window included), weights, a SentencePiece
/// `tokenizer.model` (Llama's layout) of exactly the embedding's rows, the
/// same vocabulary as the `tokenizer.json` `transformers` converts it to, and
/// `tokenizer_config.json` with the `[INST]` chat template.
pub(super) fn write_random_mistral(
    spec: &RandomSpec,
    dtype: HfDtype,
    dir: &Path,
    class: &str,
    model_type: &str,
) -> Result<()> {
    let pieces = spm_pieces(MISTRAL_HEAD, &[], spec.n_vocab)?;
    write_tensors(spec, dtype, dir)?;
    std::fs::write(dir.join("tokenizer.model"), encode_bpe_model(&pieces))
        .map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))?;
    let id_of = |t: &str| piece_id(&pieces, t);
    let specials = head_specials(MISTRAL_HEAD, &pieces);
    let decoder = write_tokenizer_json(dir, &pieces, &specials, SpmJson::Llama)?;
    // `legacy: true` says what the tokenizer.json does: a `▁` in front of
    // every stretch of text, as SentencePiece's own encoding has it.
    let tok_config = json!({
        "add_bos_token": true,
        "add_eos_token": false,
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "chat_template": MISTRAL_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "eos_token": "</s>",
        "legacy": true,
        "model_max_length": spec.n_ctx_train,
        "pad_token": null,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": false,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": false,
    });
    let config = json!({
        "architectures": [class],
        "attention_dropout": 0.0,
        "bos_token_id": id_of("<s>"),
        "eos_token_id": id_of("</s>"),
        "head_dim": spec.head_dim,
        "hidden_act": "silu",
        "hidden_size": spec.n_embd,
        "initializer_range": 0.02,
        "intermediate_size": spec.n_ff,
        "max_position_embeddings": spec.n_ctx_train,
        "model_type": model_type,
        "num_attention_heads": spec.n_head,
        "num_hidden_layers": spec.n_layer,
        "num_key_value_heads": spec.n_head_kv,
        "rms_norm_eps": shortest(spec.rms_eps),
        "rope_theta": shortest(spec.rope_base),
        "sliding_window": null,
        "tie_word_embeddings": spec.tied_output,
        "torch_dtype": dtype.torch_name(),
        "use_cache": true,
        "vocab_size": spec.n_vocab,
    });
    write_json(dir, "config.json", &config)?;
    write_json(dir, "tokenizer_config.json", &tok_config)?;
    Ok(())
}

/// Mistral's v3 instruction format (`<s>[INST] user[/INST] answer</s>`),
/// enough for the converters to carry.
const MISTRAL_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}[/INST]{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}";

/// The leading pieces of `head` as special added tokens, with their ids in `pieces`.
fn head_specials(
    head: &[(&str, PieceType)],
    pieces: &[(String, f32, PieceType)],
) -> Vec<(usize, String, serde_json::Map<String, Json>)> {
    head.iter()
        .map(|(t, _)| special_token(piece_id(pieces, t), t))
        .collect()
}

/// Writes the `tokenizer.json` of `pieces` in `style` and returns the
/// `added_tokens_decoder` of `specials` for `tokenizer_config.json`.
fn write_tokenizer_json(
    dir: &Path,
    pieces: &[(String, f32, PieceType)],
    specials: &[(usize, String, serde_json::Map<String, Json>)],
    style: SpmJson,
) -> Result<serde_json::Map<String, Json>> {
    write_json(
        dir,
        "tokenizer.json",
        &spm_tokenizer_json(pieces, specials, style),
    )?;
    Ok(specials
        .iter()
        .map(|(id, _, o)| (id.to_string(), Json::Object(o.clone())))
        .collect())
}

/// An added token that is special and matched on the raw text: its id, text
/// and `added_tokens_decoder` entry.
fn special_token(id: usize, content: &str) -> (usize, String, serde_json::Map<String, Json>) {
    let entry = json!({"content": content, "lstrip": false, "normalized": false, "rstrip": false,
                       "single_word": false, "special": true});
    match entry {
        Json::Object(o) => (id, content.to_string(), o),
        _ => unreachable!("a JSON object literal"),
    }
}

/// The layout of a `tokenizer.json` made from SentencePiece pieces: the
/// same vocabulary as a BPE model with byte fallback, whose merges are every
/// split of a normal piece into two normal pieces, ranked by the merged
/// piece's score (as `transformers` extracts them from a SentencePiece model),
/// so merging by rank is SentencePiece's merging by score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpmJson {
    /// Gemma's, as google ships it: spaces become `▁`, no prefix space, text
    /// split after each space, `<bos>` in front; the splits of one piece
    /// ranked by their parts' ids.
    Gemma,
    /// `transformers`' own conversion of a Llama-layout model (a dummy
    /// prefix; `build_tokenizer_from_spm_proto` with `legacy`), which is what
    /// it saves for Mistral 7B: spaces become `▁` and one more `▁` goes in
    /// front of every stretch of text between added tokens, even one that
    /// starts with a space, as SentencePiece and llama.cpp do; `<s>` in
    /// front; the decoder strips the prefix again; the splits of one piece
    /// ranked by their parts' text.
    Llama,
}

impl SpmJson {
    fn bos(self) -> &'static str {
        match self {
            SpmJson::Gemma => GEMMA_LAYOUT.bos,
            SpmJson::Llama => LLAMA_LAYOUT.bos,
        }
    }
}

/// The `tokenizer.json` of `pieces` and the added tokens `specials`, laid out as `style`.
fn spm_tokenizer_json(
    pieces: &[(String, f32, PieceType)],
    specials: &[(usize, String, serde_json::Map<String, Json>)],
    style: SpmJson,
) -> Json {
    let ids: std::collections::HashMap<&str, usize> = pieces
        .iter()
        .enumerate()
        .filter(|(_, p)| p.2 == PieceType::Normal)
        .map(|(i, p)| (p.0.as_str(), i))
        .collect();
    // (score, merged piece, left part, right part)
    let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, (text, score, ty)) in pieces.iter().enumerate() {
        if *ty != PieceType::Normal {
            continue;
        }
        merges.extend(text.char_indices().skip(1).filter_map(|(at, _)| {
            let (l, r) = text.split_at(at);
            Some((*score, id, *ids.get(l)?, *ids.get(r)?))
        }));
    }
    let text = |i: usize| pieces[i].0.as_str();
    merges.sort_by(|a, b| {
        let parts = match style {
            SpmJson::Gemma => (a.2, a.3).cmp(&(b.2, b.3)),
            SpmJson::Llama => (text(a.2), text(a.3)).cmp(&(text(b.2), text(b.3))),
        };
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(parts)
    });
    let merges: Vec<Json> = merges
        .iter()
        .map(|&(_, _, l, r)| json!([text(l), text(r)]))
        .collect();
    let mut vocab = serde_json::Map::new();
    for (i, p) in pieces.iter().enumerate() {
        vocab.insert(p.0.clone(), json!(i));
    }
    let added: Vec<Json> = specials
        .iter()
        .map(|(id, content, o)| {
            let mut t = serde_json::Map::new();
            t.insert("id".into(), json!(id));
            t.insert("content".into(), json!(content));
            for k in ["single_word", "lstrip", "rstrip", "normalized", "special"] {
                t.insert(k.into(), o[k].clone());
            }
            Json::Object(t)
        })
        .collect();
    let bos_text = style.bos();
    let bos = |type_id: u32| json!({"SpecialToken": {"id": bos_text, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let space = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let unspace = json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "});
    let (normalizer, pre_tokenizer, decoder) = match style {
        SpmJson::Gemma => (
            space,
            json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}),
            json!({"type": "Sequence", "decoders": [unspace, {"type": "ByteFallback"}, {"type": "Fuse"}]}),
        ),
        // Metaspace puts no `▁` in front of text that starts with one;
        // SentencePiece's dummy prefix does: the second rule doubles it.
        SpmJson::Llama => (
            json!({"type": "Sequence", "normalizers": [
                space,
                {"type": "Replace", "pattern": {"Regex": "\\A\u{2581}"}, "content": "\u{2581}\u{2581}"}
            ]}),
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": false}
            ]}),
            json!({"type": "Sequence", "decoders": [
                unspace, {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}
            ]}),
        ),
    };
    let mut bos_ids = serde_json::Map::new();
    bos_ids.insert(
        bos_text.into(),
        json!({"id": bos_text, "ids": [piece_id(pieces, bos_text)], "tokens": [bos_text]}),
    );
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [bos(0), seq("A", 0)],
            "pair": [bos(0), seq("A", 0), bos(1), seq("B", 1)],
            "special_tokens": bos_ids
        },
        "decoder": decoder,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": merges
        }
    })
}

/// Gemma's turn format, enough for the converters to carry.
const GEMMA_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every merge of a `tokenizer.json` joins two normal pieces into a
    /// normal piece, merges are ranked by the merged piece's score, and the
    /// vocabulary is the SentencePiece model's; the splits of one piece come
    /// in the style's order (Mistral's: `transformers`', by the parts' text).
    #[test]
    fn merges_follow_the_scores() {
        for (head, style) in [(GEMMA_HEAD, SpmJson::Gemma), (MISTRAL_HEAD, SpmJson::Llama)] {
            let pieces = spm_pieces(head, &[], 512).unwrap();
            let j = spm_tokenizer_json(&pieces, &[], style);
            assert_eq!(j["model"]["vocab"].as_object().unwrap().len(), 512);
            let normal = |t: &str| {
                pieces
                    .iter()
                    .position(|p| p.0 == t && p.2 == PieceType::Normal)
            };
            let mut last = (f32::INFINITY, 0, String::new());
            for m in j["model"]["merges"].as_array().unwrap() {
                let (a, b) = (m[0].as_str().unwrap(), m[1].as_str().unwrap());
                assert!(normal(a).is_some() && normal(b).is_some(), "{m}");
                let id = normal(&format!("{a}{b}")).expect("a merge makes a piece");
                let s = pieces[id].1;
                assert!(s <= last.0, "{m} out of score order");
                if id == last.1 && style == SpmJson::Llama {
                    assert!(a > last.2.as_str(), "{m} out of transformers' order");
                }
                last = (s, id, a.to_string());
            }
            let bos = style.bos();
            assert_eq!(j["post_processor"]["single"][0]["SpecialToken"]["id"], bos);
        }
        // `▁an` splits as `▁` + `an` before `▁a` + `n`, as transformers ranks them.
        let pieces = spm_pieces(MISTRAL_HEAD, &[], 512).unwrap();
        let j = spm_tokenizer_json(&pieces, &[], SpmJson::Llama);
        let merges: Vec<String> = j["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap()))
            .collect();
        let at = |m: &str| merges.iter().position(|x| x == m).unwrap();
        assert_eq!(at("\u{2581}a n"), at("\u{2581} an") + 1);
    }
}
