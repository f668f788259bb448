//! Byte-level BPE (GPT-2 style): a regex pre-tokenizer splits the text into
//! words, each word's bytes are mapped to printable characters, and adjacent
//! pieces are merged by merge rank, lowest first.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use fancy_regex::Regex;

use super::Tokenizer;

/// The pre-tokenizers Mori knows, by their `tokenizer.ggml.pre` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2's own (`default`, `gpt-2`, and files without the key).
    Gpt2,
    /// Llama 3 (`llama-bpe`, `llama3`, `llama-v3`): digits in groups of three.
    Llama3,
    /// Qwen2/2.5/3 (`qwen2`): single digits.
    Qwen2,
    /// DeepSeek LLM (`deepseek-llm`): a sequence of script-aware splits.
    DeepseekLlm,
}

const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// DeepSeek LLM's splits, applied one after another to every piece.
/// Character classes are written as escapes: they are ranges of code points,
/// which Unicode normalisation of the source text would silently break.
const DEEPSEEK_LLM_RES: &[&str] = &[
    "[\r\n]",
    "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+",
    "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+",
    "\\s+$",
    "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
    "\\p{N}+",
];

impl PreTokenizer {
    pub const SUPPORTED: &'static str =
        "default, gpt-2, llama-bpe, llama3, llama-v3, qwen2, deepseek-llm";

    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        match name {
            "default" | "gpt-2" | "gpt2" => Some(PreTokenizer::Gpt2),
            "llama-bpe" | "llama3" | "llama-v3" => Some(PreTokenizer::Llama3),
            "qwen2" => Some(PreTokenizer::Qwen2),
            "deepseek-llm" => Some(PreTokenizer::DeepseekLlm),
            _ => None,
        }
    }
}

/// Compiled regexes of one pre-tokenizer.
pub(super) struct Splitter {
    regexes: Vec<Regex>,
    /// A word that is itself a token is kept whole, skipping merges (Llama 3).
    ignore_merges: bool,
}

impl Splitter {
    pub(super) fn new(p: &PreTokenizer) -> Splitter {
        let sources: Vec<&str> = match p {
            PreTokenizer::Gpt2 => vec![GPT2_RE],
            PreTokenizer::Llama3 => vec![LLAMA3_RE],
            PreTokenizer::Qwen2 => vec![QWEN2_RE],
            PreTokenizer::DeepseekLlm => DEEPSEEK_LLM_RES.to_vec(),
        };
        Splitter {
            regexes: sources
                .iter()
                .map(|s| Regex::new(s).expect("built-in pre-tokenizer regex compiles"))
                .collect(),
            ignore_merges: *p == PreTokenizer::Llama3,
        }
    }

    /// Splits `text` into words: each regex splits every current piece into
    /// its matches and the text between them.
    fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = vec![text];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for p in pieces {
                let mut last = 0;
                for m in re.find_iter(p) {
                    // A regex error (backtrack limit) leaves the rest unsplit.
                    let Ok(m) = m else { break };
                    if m.start() > last {
                        next.push(&p[last..m.start()]);
                    }
                    if m.end() > m.start() {
                        next.push(m.as_str());
                    }
                    last = m.end();
                }
                if last < p.len() {
                    next.push(&p[last..]);
                }
            }
            pieces = next;
        }
        pieces
    }
}

/// GPT-2's reversible map from bytes to printable characters: printable
/// Latin-1 bytes map to themselves, the rest to code points from U+0100 on.
pub(crate) fn byte_to_unicode(b: u8) -> char {
    let printable = |b: u8| {
        (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("valid code point")
}

fn unicode_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 256 {
        let b = cp as u8;
        return (byte_to_unicode(b) == c).then_some(b);
    }
    (0..=255u8).find(|&b| byte_to_unicode(b) == c)
}

/// The bytes a byte-level token text stands for.
pub(super) fn decode_bytes(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match unicode_to_byte(c) {
            Some(b) => out.push(b),
            // Not a byte-level character (an added token): keep its UTF-8.
            None => out.extend_from_slice(c.to_string().as_bytes()),
        }
    }
    out
}

struct Piece {
    start: usize,
    end: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Pair {
    rank: u32,
    left: usize,
    right: usize,
    /// Byte length of the pair when queued, to detect stale entries.
    len: usize,
}

impl PartialEq for Pair {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pair {
    /// BinaryHeap pops the maximum: lowest rank first, then leftmost.
    fn cmp(&self, o: &Self) -> Ordering {
        o.rank.cmp(&self.rank).then_with(|| o.left.cmp(&self.left))
    }
}

pub(super) fn tokenize(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) {
    let splitter = tok.pre.as_ref().expect("BPE tokenizer has a pre-tokenizer");
    for word in splitter.split(text) {
        let mapped: String = word.bytes().map(byte_to_unicode).collect();
        if splitter.ignore_merges {
            if let Some(id) = tok.token_id(&mapped) {
                out.push(id);
                continue;
            }
        }
        merge_word(tok, &mapped, out);
    }
}

fn merge_word(tok: &Tokenizer, w: &str, out: &mut Vec<u32>) {
    let mut pieces: Vec<Piece> = Vec::new();
    for (i, (start, c)) in w.char_indices().enumerate() {
        pieces.push(Piece {
            start,
            end: start + c.len_utf8(),
            prev: i.checked_sub(1),
            next: Some(i + 1),
        });
    }
    let Some(last) = pieces.last_mut() else {
        return;
    };
    last.next = None;
    let mut heap = BinaryHeap::new();
    let rank_of = |pieces: &[Piece], l: usize, r: usize| -> Option<u32> {
        let a = &w[pieces[l].start..pieces[l].end];
        let b = &w[pieces[r].start..pieces[r].end];
        tok.merge_rank(a, b)
    };
    let push =
        |heap: &mut BinaryHeap<Pair>, pieces: &[Piece], l: Option<usize>, r: Option<usize>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            if let Some(rank) = rank_of(pieces, l, r) {
                heap.push(Pair {
                    rank,
                    left: l,
                    right: r,
                    len: pieces[r].end - pieces[l].start,
                });
            }
        };
    for i in 1..pieces.len() {
        push(&mut heap, &pieces, Some(i - 1), Some(i));
    }
    while let Some(p) = heap.pop() {
        let (l, r) = (p.left, p.right);
        let live = pieces[l].end > pieces[l].start && pieces[r].end > pieces[r].start;
        if !live || pieces[l].next != Some(r) || pieces[r].end - pieces[l].start != p.len {
            continue;
        }
        pieces[l].end = pieces[r].end;
        pieces[r].end = pieces[r].start;
        pieces[l].next = pieces[r].next;
        if let Some(n) = pieces[r].next {
            pieces[n].prev = Some(l);
        }
        push(&mut heap, &pieces, pieces[l].prev, Some(l));
        push(&mut heap, &pieces, Some(l), pieces[l].next);
    }
    let mut i = Some(0);
    while let Some(idx) = i {
        let s = &w[pieces[idx].start..pieces[idx].end];
        match tok.token_id(s) {
            Some(id) => out.push(id),
            None => {
                // A piece with no token of its own: fall back to its bytes.
                for c in s.chars() {
                    if let Some(id) = tok.token_id(&c.to_string()).or(tok.v.unk) {
                        out.push(id);
                    }
                }
            }
        }
        i = pieces[idx].next;
    }
}
