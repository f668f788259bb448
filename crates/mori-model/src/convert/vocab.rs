//! Vocabularies of a Hugging Face checkpoint as llama.cpp's converter writes
//! them into GGUF: a byte-level BPE `tokenizer.json`, or a SentencePiece
//! `tokenizer.model` with `SpecialVocab`'s special ids, flags and template.

use std::path::Path;

use mori_formats::safetensors::HfConfig;
use mori_formats::{Array, GgufWriter, Value};

use crate::sentencepiece::{PieceType, SpModel};
use crate::tokenizer::TokenType;
use crate::{Error, Result};

/// Where a converted vocabulary comes from.
pub(super) enum Vocabulary {
    Bpe(HfTokenizer),
    Spm(SpmVocab),
}

/// A byte-level BPE vocabulary read from `tokenizer.json`.
pub(super) struct HfTokenizer {
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

pub(super) fn read_tokenizer(dir: &Path, cfg: &HfConfig) -> Result<HfTokenizer> {
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
    pub(super) fn write(&self, w: &mut GgufWriter, n_vocab: usize) -> Result<()> {
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
        w.add(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(tokens.into())),
        );
        w.add("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
        w.add(
            "tokenizer.ggml.merges",
            Value::Array(Array::String(self.merges.iter().collect())),
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
/// when special or special-looking), both with score -1000; special ids and
/// the add-BOS/EOS/SEP flags come from `tokenizer.json` where there is one
/// (as `SpecialVocab` reads it), then from `config.json` and
/// `tokenizer_config.json`, the chat template from `tokenizer_config.json`.
pub(super) struct SpmVocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    /// `tokenizer.ggml.<key>_token_id` values, in llama.cpp's order.
    ids: Vec<(&'static str, u32)>,
    /// `tokenizer.ggml.add_<key>_token` values.
    add: Vec<(&'static str, bool)>,
    pub(super) add_space_prefix: Option<bool>,
    chat_template: Option<String>,
}

pub(super) fn read_spm_vocab(dir: &Path, cfg: &HfConfig) -> Result<SpmVocab> {
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
    // Special ids and add flags as llama.cpp's SpecialVocab finds them. With a
    // tokenizer.json: tokenizer_config.json's `<key>_token` texts looked up
    // among its added tokens, and its post-processor's template for the add
    // flags; then config.json's integer `<key>_token_id`s (its text_config's
    // where the top level lacks one) for keys still unset, and
    // tokenizer_config.json's `add_<key>_token` for flags still unset.
    let tj = read_json("tokenizer.json")?;
    let keys = [
        ("bos", "bos"),
        ("eos", "eos"),
        ("unk", "unknown"),
        ("sep", "seperator"),
        ("pad", "padding"),
        ("cls", "cls"),
        ("mask", "mask"),
    ];
    let mut ids: Vec<(&'static str, u32)> = Vec::new();
    let set_id = |ids: &mut Vec<(&'static str, u32)>, gguf: &'static str, id: u64| {
        if (id as usize) < n_vocab && !ids.iter().any(|(k, _)| *k == gguf) {
            ids.push((gguf, id as u32));
        }
    };
    let mut add: Vec<(&'static str, bool)> = Vec::new();
    if let (Some(tj), Some(tc)) = (&tj, &tc) {
        let text = |key: &str| match &tc[format!("{key}_token")] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
            _ => None,
        };
        // A tokenizer without a BOS (EOS) text uses its CLS (SEP) text.
        let bos = text("bos").or_else(|| text("cls"));
        let eos = text("eos").or_else(|| text("sep"));
        let rule = SpecialsRule::read(&tj["post_processor"], bos.as_deref(), eos.as_deref());
        for (key, v) in [
            ("bos", rule.add_bos),
            ("eos", rule.add_eos),
            ("sep", rule.add_sep),
        ] {
            if let Some(v) = v {
                add.push((key, v));
            }
        }
        let added = tj["added_tokens"].as_array().cloned().unwrap_or_default();
        for (key, gguf) in keys {
            let want = match key {
                "bos" => bos.clone(),
                "eos" => eos.clone(),
                _ => text(key),
            };
            let Some(want) = want else { continue };
            let id = added
                .iter()
                .find(|t| t["content"].as_str() == Some(want.as_str()))
                .and_then(|t| t["id"].as_u64());
            if let Some(id) = id {
                set_id(&mut ids, gguf, id);
            }
        }
    }
    for (key, gguf) in keys {
        let field = format!("{key}_token_id");
        let v = cfg
            .json
            .get(&field)
            .filter(|v| !v.is_null())
            .or_else(|| cfg.json.get("text_config").and_then(|t| t.get(&field)));
        if let Some(id) = v.and_then(|v| v.as_u64()) {
            set_id(&mut ids, gguf, id);
        }
    }
    let mut chat_template = None;
    let mut add_space_prefix = None;
    if let Some(tc) = &tc {
        for key in ["bos", "eos", "sep"] {
            if let Some(b) = tc[format!("add_{key}_token")].as_bool() {
                if !add.iter().any(|(k, _)| *k == key) {
                    add.push((key, b));
                }
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
    pub(super) fn write(&self, w: &mut GgufWriter, n_vocab: usize) -> Result<()> {
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
            Value::Array(Array::String(self.tokens.iter().collect())),
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
