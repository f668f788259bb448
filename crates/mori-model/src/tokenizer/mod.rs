//! Tokenizers built from GGUF vocabulary metadata, behaving as llama.cpp's:
//! `llama` (SentencePiece-style BPE over scores, byte fallback) and `gpt2`
//! (byte-level BPE over merge ranks, with the pre-tokenizer named by
//! `tokenizer.ggml.pre`). Special and control tokens are split out of the text
//! first; detokenization never emits half a UTF-8 character.

mod bpe;
mod spm;

use std::collections::HashMap;

use std::hash::BuildHasher;

use mori_formats::{Array, GgufFile, StrArray};

pub(crate) use bpe::byte_to_unicode;
pub use bpe::PreTokenizer;

/// What is wrong with a vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("key '{0}' is missing")]
    MissingKey(&'static str),
    #[error("key '{key}': {msg}")]
    BadKey { key: &'static str, msg: String },
    #[error("unsupported tokenizer model '{0}' (supported: llama, gpt2)")]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer '{0}' (supported: {1})")]
    UnsupportedPre(String, &'static str),
    #[error(transparent)]
    Format(#[from] mori_formats::Error),
    #[error("tokenizer.json: {0}")]
    HfJson(String),
}

type Result<T> = std::result::Result<T, TokenizerError>;

/// Token types as GGUF stores them in `tokenizer.ggml.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    /// The number GGUF stores for this type in `tokenizer.ggml.token_type`.
    pub fn to_gguf(self) -> i32 {
        match self {
            TokenType::Normal => 1,
            TokenType::Unknown => 2,
            TokenType::Control => 3,
            TokenType::UserDefined => 4,
            TokenType::Unused => 5,
            TokenType::Byte => 6,
        }
    }

    fn from_i32(v: i32) -> TokenType {
        match v {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }
}

/// The algorithm that turns text pieces into tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// SentencePiece-style: merges by token score, `▁` for spaces, byte fallback.
    Spm,
    /// Byte-level BPE: merges by rank after a regex pre-tokenizer.
    Bpe(PreTokenizer),
}

/// A vocabulary as plain data, constructible in tests.
#[derive(Debug, Clone)]
pub struct Vocab {
    pub kind: Kind,
    pub tokens: StrArray,
    pub scores: Vec<f32>,
    pub types: Vec<TokenType>,
    /// `"left right"` pairs, best first (BPE only).
    pub merges: StrArray,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
}

pub struct Tokenizer {
    v: Vocab,
    token_ids: TokenIndex,
    /// Rank of each merge (BPE), by the ids of its two parts.
    merge_rank: HashMap<(u32, u32), u32>,
    /// Rank of the merges whose parts are not both tokens, by their texts
    /// (none in the vocabularies seen so far).
    merge_rank_text: HashMap<(String, String), u32>,
    /// Control, user-defined and unknown tokens, longest text first.
    special: Vec<u32>,
    /// Token of each byte value (byte fallback), where the vocabulary has one.
    byte_tokens: [Option<u32>; 256],
    eog: Vec<u32>,
    pre: Option<bpe::Splitter>,
    /// A Hugging Face directory's own `tokenizer.json`, which then does the
    /// encoding (decoding reads the vocabulary, token by token).
    hf: Option<HfEncoder>,
}

/// Token ids by text. The table holds only ids and hashes them through the
/// vocabulary's own strings, so the 150,000 texts of a large vocabulary are
/// not copied a second time.
struct TokenIndex {
    table: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl TokenIndex {
    fn new(tokens: &StrArray) -> TokenIndex {
        let hasher = std::hash::RandomState::new();
        let mut table = hashbrown::HashTable::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let h = hasher.hash_one(t);
            // The first id wins for duplicated texts, as in llama.cpp.
            if table.find(h, |&j: &u32| &tokens[j as usize] == t).is_none() {
                table.insert_unique(h, i as u32, |&j: &u32| hasher.hash_one(&tokens[j as usize]));
            }
        }
        TokenIndex { table, hasher }
    }

    fn get(&self, tokens: &StrArray, text: &str) -> Option<u32> {
        self.table
            .find(self.hasher.hash_one(text), |&j| &tokens[j as usize] == text)
            .copied()
    }
}

/// `tokenizer.json` through the `tokenizers` crate, twice: once splitting out
/// special tokens, once reading their text as plain text.
struct HfEncoder {
    parse_special: tokenizers::Tokenizer,
    plain: tokenizers::Tokenizer,
}

/// Texts that end a turn in the chat formats of the supported families.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<｜end▁of▁sentence｜>",
];

impl Tokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer> {
        let model = f
            .get_str("tokenizer.ggml.model")?
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?;
        let tokens = match f.get_array("tokenizer.ggml.tokens")? {
            Some(Array::String(v)) => v.clone(),
            Some(a) => {
                return Err(TokenizerError::BadKey {
                    key: "tokenizer.ggml.tokens",
                    msg: format!("expected an array of strings, found {}", a.elem_type_name()),
                })
            }
            None => return Err(TokenizerError::MissingKey("tokenizer.ggml.tokens")),
        };
        let n = tokens.len();
        let scores = match f.get_array("tokenizer.ggml.scores")? {
            Some(Array::F32(v)) if v.len() == n => v.clone(),
            Some(_) => return Err(bad_len("tokenizer.ggml.scores", n)),
            None => vec![0.0; n],
        };
        let types = match f.get_array("tokenizer.ggml.token_type")? {
            Some(a) if a.len() == n => match a.to_i64_vec() {
                Some(v) => v
                    .into_iter()
                    .map(|t| TokenType::from_i32(t as i32))
                    .collect(),
                None => return Err(bad_len("tokenizer.ggml.token_type", n)),
            },
            Some(_) => return Err(bad_len("tokenizer.ggml.token_type", n)),
            None => vec![TokenType::Normal; n],
        };
        let merges = match f.get_array("tokenizer.ggml.merges")? {
            Some(Array::String(v)) => v.clone(),
            Some(_) => {
                return Err(TokenizerError::BadKey {
                    key: "tokenizer.ggml.merges",
                    msg: "expected strings".into(),
                })
            }
            None => StrArray::new(),
        };
        let id = |key: &'static str| -> Result<Option<u32>> {
            match f.get_u32(key)? {
                Some(v) if (v as usize) < n => Ok(Some(v)),
                Some(v) => Err(TokenizerError::BadKey {
                    key,
                    msg: format!("id {v} is outside the {n} tokens"),
                }),
                None => Ok(None),
            }
        };
        let (kind, mut add_bos, mut add_space_prefix) = match model {
            "llama" => (Kind::Spm, true, true),
            "gpt2" => {
                let pre_name = f.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
                let pre = PreTokenizer::from_name(pre_name).ok_or_else(|| {
                    TokenizerError::UnsupportedPre(pre_name.to_string(), PreTokenizer::SUPPORTED)
                })?;
                if merges.is_empty() {
                    return Err(TokenizerError::MissingKey("tokenizer.ggml.merges"));
                }
                let add_bos = pre == PreTokenizer::Llama3;
                (Kind::Bpe(pre), add_bos, false)
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        if let Some(v) = f.get_bool("tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = f.get_bool("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }
        let vocab = Vocab {
            kind,
            tokens,
            scores,
            types,
            merges,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            eot: id("tokenizer.ggml.eot_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            add_bos,
            add_eos: f.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            add_space_prefix,
        };
        Tokenizer::from_vocab(vocab)
    }

    pub fn from_vocab(v: Vocab) -> Result<Tokenizer> {
        let n = v.tokens.len();
        if v.scores.len() != n || v.types.len() != n {
            return Err(TokenizerError::BadKey {
                key: "tokenizer.ggml.tokens",
                msg: "scores and types must match tokens".into(),
            });
        }
        let token_ids = TokenIndex::new(&v.tokens);
        let token_id = |t: &str| token_ids.get(&v.tokens, t);
        let mut merge_rank = HashMap::with_capacity(v.merges.len());
        let mut merge_rank_text = HashMap::new();
        for (rank, m) in v.merges.iter().enumerate() {
            let (a, b) = m.split_once(' ').ok_or_else(|| TokenizerError::BadKey {
                key: "tokenizer.ggml.merges",
                msg: format!("merge {rank} ('{m}') is not two tokens separated by a space"),
            })?;
            // The first rank wins for a pair listed twice.
            match (token_id(a), token_id(b)) {
                (Some(ia), Some(ib)) => {
                    merge_rank.entry((ia, ib)).or_insert(rank as u32);
                }
                _ => {
                    merge_rank_text
                        .entry((a.to_string(), b.to_string()))
                        .or_insert(rank as u32);
                }
            }
        }
        let mut special: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                matches!(
                    v.types[i as usize],
                    TokenType::Control | TokenType::UserDefined | TokenType::Unknown
                ) && !v.tokens[i as usize].is_empty()
            })
            .collect();
        // Longest first; the sort is stable so equal lengths keep id order.
        special.sort_by(|&a, &b| v.tokens[b as usize].len().cmp(&v.tokens[a as usize].len()));
        let mut byte_tokens = [None; 256];
        for b in 0..=255u8 {
            byte_tokens[b as usize] = match &v.kind {
                Kind::Spm => token_id(&format!("<0x{b:02X}>")),
                Kind::Bpe(_) => token_id(&bpe::byte_to_unicode(b).to_string()),
            };
        }
        let mut eog: Vec<u32> = [v.eos, v.eot].into_iter().flatten().collect();
        for t in EOG_TEXTS {
            if let Some(id) = token_id(t) {
                if !eog.contains(&id) && v.types[id as usize] != TokenType::Normal {
                    eog.push(id);
                }
            }
        }
        let pre = match &v.kind {
            Kind::Bpe(p) => Some(bpe::Splitter::new(p)),
            Kind::Spm => None,
        };
        Ok(Tokenizer {
            v,
            token_ids,
            merge_rank,
            merge_rank_text,
            special,
            byte_tokens,
            eog,
            pre,
            hf: None,
        })
    }

    /// Encodes with the Hugging Face tokenizer in `path` (a `tokenizer.json`)
    /// from now on, as `transformers` would; the vocabulary stays this one's.
    pub fn with_hf_json(mut self, path: &std::path::Path) -> Result<Tokenizer> {
        let bad = |e: String| TokenizerError::HfJson(format!("{}: {e}", path.display()));
        let parse_special =
            tokenizers::Tokenizer::from_file(path).map_err(|e| bad(e.to_string()))?;
        // The model's own vocabulary must fit the embedding. Added tokens may
        // lie past it: Gemma 3's tokenizers define `<image_soft_token>` one past
        // the text model's rows (only its vision tower uses it); text naming
        // such a token encodes to an id the forward pass refuses, as
        // `transformers`' embedding would.
        let n = parse_special.get_vocab_size(false);
        if n > self.n_vocab() {
            return Err(bad(format!(
                "defines {n} tokens, more than the model's {}",
                self.n_vocab()
            )));
        }
        let mut plain = parse_special.clone();
        plain.set_encode_special_tokens(true);
        self.hf = Some(HfEncoder {
            parse_special,
            plain,
        });
        Ok(self)
    }

    /// True when encoding goes through a Hugging Face `tokenizer.json`.
    pub fn is_hf(&self) -> bool {
        self.hf.is_some()
    }

    pub fn n_vocab(&self) -> usize {
        self.v.tokens.len()
    }

    pub fn vocab(&self) -> &Vocab {
        &self.v
    }

    pub fn bos(&self) -> Option<u32> {
        self.v.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.v.eos
    }

    pub fn eot(&self) -> Option<u32> {
        self.v.eot
    }

    pub fn add_bos(&self) -> bool {
        self.v.add_bos
    }

    /// True for tokens that end a generation (end of sequence, end of turn).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The rank of the merge of `a` and `b` (BPE), if the vocabulary has it.
    pub(crate) fn merge_rank(&self, a: &str, b: &str) -> Option<u32> {
        match (self.token_id(a), self.token_id(b)) {
            (Some(ia), Some(ib)) => self.merge_rank.get(&(ia, ib)).copied(),
            _ if self.merge_rank_text.is_empty() => None,
            _ => self
                .merge_rank_text
                .get(&(a.to_string(), b.to_string()))
                .copied(),
        }
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_ids.get(&self.v.tokens, text)
    }

    /// Token ids of `text`. `add_special` adds BOS/EOS where the vocabulary
    /// asks for them; `parse_special` turns the text of control tokens such as
    /// `<|im_start|>` into those tokens (user-defined tokens always are).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        if let Some(hf) = &self.hf {
            let t = if parse_special {
                &hf.parse_special
            } else {
                &hf.plain
            };
            match t.encode(text, add_special) {
                Ok(enc) => return enc.get_ids().to_vec(),
                // Only a misconfigured pipeline fails; the vocabulary's own
                // tokenizer still gives an answer, and the log says why.
                Err(e) => {
                    tracing::error!(error = %e, "tokenizer.json failed to encode; using the GGUF vocabulary")
                }
            }
        }
        let mut out = Vec::new();
        if add_special && self.v.add_bos {
            if let Some(b) = self.v.bos {
                out.push(b);
            }
        }
        let mut prev_special = true;
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(s) => {
                    match &self.v.kind {
                        Kind::Spm => {
                            let mut t = String::with_capacity(s.len() + 3);
                            if self.v.add_space_prefix && prev_special {
                                t.push(' ');
                            }
                            t.push_str(s);
                            let escaped = t.replace(' ', "\u{2581}");
                            spm::tokenize(self, &escaped, &mut out);
                        }
                        Kind::Bpe(_) => bpe::tokenize(self, s, &mut out),
                    }
                    prev_special = false;
                }
            }
        }
        if add_special && self.v.add_eos {
            if let Some(e) = self.v.eos {
                out.push(e);
            }
        }
        out
    }

    /// Splits `text` on special tokens, longest first, as llama.cpp does.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        // Empty text has no fragment at all (so SentencePiece adds no space).
        let mut frags = if text.is_empty() {
            Vec::new()
        } else {
            vec![Fragment::Text(text)]
        };
        for &id in &self.special {
            let ty = self.v.types[id as usize];
            if !parse_special && matches!(ty, TokenType::Control | TokenType::Unknown) {
                continue;
            }
            let pat = &self.v.tokens[id as usize];
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                match f {
                    Fragment::Text(s) if s.contains(pat) => {
                        let mut rest = s;
                        while let Some(pos) = rest.find(pat) {
                            if pos > 0 {
                                next.push(Fragment::Text(&rest[..pos]));
                            }
                            next.push(Fragment::Token(id));
                            rest = &rest[pos + pat.len()..];
                        }
                        if !rest.is_empty() {
                            next.push(Fragment::Text(rest));
                        }
                    }
                    other => next.push(other),
                }
            }
            frags = next;
        }
        frags
    }

    /// The bytes token `id` stands for. Control tokens are empty unless
    /// `render_special`; an id outside the vocabulary is empty.
    pub fn token_to_piece(&self, id: u32, render_special: bool) -> Vec<u8> {
        let Some(text) = self.v.tokens.get(id as usize) else {
            return Vec::new();
        };
        match self.v.types[id as usize] {
            TokenType::Control | TokenType::Unused => {
                if render_special {
                    text.as_bytes().to_vec()
                } else {
                    Vec::new()
                }
            }
            TokenType::UserDefined => text.as_bytes().to_vec(),
            TokenType::Unknown => {
                if render_special {
                    text.as_bytes().to_vec()
                } else {
                    "\u{2585}".as_bytes().to_vec()
                }
            }
            TokenType::Byte => match &self.v.kind {
                Kind::Spm => parse_byte_token(text).map(|b| vec![b]).unwrap_or_default(),
                Kind::Bpe(_) => bpe::decode_bytes(text),
            },
            TokenType::Normal => match &self.v.kind {
                Kind::Spm => text.replace('\u{2581}', " ").into_bytes(),
                Kind::Bpe(_) => bpe::decode_bytes(text),
            },
        }
    }

    /// Text of `ids`; invalid UTF-8 (a sequence cut by the caller) is replaced.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.token_to_piece(id, render_special);
            let skip = i == 0 && self.strips_leading_space() && piece.first() == Some(&b' ');
            bytes.extend_from_slice(if skip { &piece[1..] } else { &piece });
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// SentencePiece adds a space before the text; decoding takes it away again.
    fn strips_leading_space(&self) -> bool {
        self.v.kind == Kind::Spm && self.v.add_space_prefix
    }
}

fn bad_len(key: &'static str, n: usize) -> TokenizerError {
    TokenizerError::BadKey {
        key,
        msg: format!("must have one entry per token ({n}) of the right type"),
    }
}

fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// Turns a stream of token ids into text, holding back bytes until they form
/// whole UTF-8 characters.
pub struct Detokenizer<'a> {
    tok: &'a Tokenizer,
    pending: Vec<u8>,
    first: bool,
    render_special: bool,
}

impl<'a> Detokenizer<'a> {
    pub fn new(tok: &'a Tokenizer) -> Self {
        Detokenizer {
            tok,
            pending: Vec::new(),
            first: true,
            render_special: false,
        }
    }

    /// Also show control tokens such as `<|im_end|>`.
    pub fn render_special(mut self, yes: bool) -> Self {
        self.render_special = yes;
        self
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let piece = self.tok.token_to_piece(id, self.render_special);
        let skip = self.first && self.tok.strips_leading_space() && piece.first() == Some(&b' ');
        self.first = false;
        self.pending
            .extend_from_slice(if skip { &piece[1..] } else { &piece });
        self.take_complete()
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("checked valid"),
                    );
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never form a character.
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is still held back, with replacement characters for an
    /// incomplete sequence.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpe(tokens: &[&str], merges: &[&str]) -> Tokenizer {
        let n = tokens.len();
        Tokenizer::from_vocab(Vocab {
            kind: Kind::Bpe(PreTokenizer::Gpt2),
            tokens: tokens.iter().collect(),
            scores: vec![0.0; n],
            types: vec![TokenType::Normal; n],
            merges: merges.iter().collect(),
            bos: None,
            eos: None,
            eot: None,
            unk: None,
            pad: None,
            add_bos: false,
            add_eos: false,
            add_space_prefix: false,
        })
        .unwrap()
    }

    #[test]
    fn merges_apply_by_rank_whether_or_not_their_parts_are_tokens() {
        // "a b" and "ab c" join tokens; "x y" joins two texts that are not
        // tokens themselves, into one that is.
        let tok = bpe(&["a", "b", "c", "ab", "abc", "xy"], &["a b", "ab c", "x y"]);
        assert_eq!(tok.encode("abc", false, false), vec![4]);
        assert_eq!(tok.encode("xy", false, false), vec![5]);
        assert_eq!(tok.encode("ba", false, false), vec![1, 0]);
        assert_eq!(tok.merge_rank("ab", "c"), Some(1));
        assert_eq!(tok.merge_rank("x", "y"), Some(2));
        assert_eq!(tok.merge_rank("b", "a"), None);
    }

    #[test]
    fn a_duplicated_text_keeps_its_first_id() {
        let tok = bpe(&["a", "b", "a"], &[]);
        assert_eq!(tok.token_id("a"), Some(0));
        assert_eq!(tok.token_id("b"), Some(1));
        assert_eq!(tok.token_id("c"), None);
        assert_eq!(tok.n_vocab(), 3);
    }
}
