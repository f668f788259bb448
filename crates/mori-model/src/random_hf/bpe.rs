//! The byte-level BPE `tokenizer.json` of Mori's random checkpoints (Llama 3
//! and Qwen layouts).

use serde_json::{json, Value as Json};

use crate::convert::{HF_LLAMA3_RE, HF_QWEN2_RE};
use crate::tokenizer::byte_to_unicode;
use crate::{Error, Result};

/// Special tokens, appended after the byte-level vocabulary: (text, is BOS, is EOS).
pub(super) fn specials(arch: &str) -> &'static [&'static str] {
    match arch {
        "llama" => &["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"],
        _ => &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    }
}
/// A ChatML template, enough for `transformers` and the converters to carry.
pub(super) const CHAT_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// A byte-level BPE `tokenizer.json` of `n_vocab` tokens: the 256 byte
/// characters, merges of common letters (pairs, then pairs with a third), and
/// the architecture's special tokens last.
pub(super) fn tokenizer_json(arch: &str, n_vocab: usize) -> Result<Json> {
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
