//! SentencePiece-style BPE: start from single characters and repeatedly merge
//! the adjacent pair whose concatenation is the best-scoring token; pieces
//! that are not tokens fall back to their bytes.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Tokenizer;

struct Symbol {
    /// Byte range in the text.
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Highest score first; on a tie the leftmost pair first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Tokenizes `text` (spaces already turned into `▁`) and appends to `out`.
pub(super) fn tokenize(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::new();
    for (i, (start, c)) in text.char_indices().enumerate() {
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: Some(i + 1),
        });
    }
    if let Some(last) = symbols.last_mut() {
        last.next = None;
    }
    let mut heap = BinaryHeap::new();
    let try_add =
        |heap: &mut BinaryHeap<Bigram>, symbols: &[Symbol], l: Option<usize>, r: Option<usize>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            let s = &text[symbols[l].start..symbols[r].start + symbols[r].len];
            if let Some(id) = tok.token_id(s) {
                heap.push(Bigram {
                    left: l,
                    right: r,
                    score: tok.v.scores[id as usize],
                    len: s.len(),
                });
            }
        };
    for i in 1..symbols.len() {
        try_add(&mut heap, &symbols, Some(i - 1), Some(i));
    }
    while let Some(b) = heap.pop() {
        let (l, r) = (b.left, b.right);
        // Skip pairs whose symbols changed since the pair was queued.
        if symbols[l].len == 0 || symbols[r].len == 0 || symbols[l].len + symbols[r].len != b.len {
            continue;
        }
        symbols[l].len += symbols[r].len;
        symbols[r].len = 0;
        symbols[l].next = symbols[r].next;
        if let Some(n) = symbols[r].next {
            symbols[n].prev = Some(l);
        }
        try_add(&mut heap, &symbols, symbols[l].prev, Some(l));
        try_add(&mut heap, &symbols, Some(l), symbols[l].next);
    }
    // Every merge made a token, so a remaining symbol is either a token or a
    // single character the vocabulary lacks, which falls back to its bytes.
    let mut i = if symbols.is_empty() { None } else { Some(0) };
    while let Some(idx) = i {
        let s = &text[symbols[idx].start..symbols[idx].start + symbols[idx].len];
        match tok.token_id(s) {
            Some(id) => out.push(id),
            None => {
                for b in s.bytes() {
                    if let Some(id) = tok.byte_tokens[b as usize].or(tok.v.unk) {
                        out.push(id);
                    }
                }
            }
        }
        i = symbols[idx].next;
    }
}
