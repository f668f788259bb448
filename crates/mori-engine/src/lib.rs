//! Sessions and generation: the Rust API every front end uses.
//!
//! A [`Session`] owns a KV cache and a thread pool for one conversation with a
//! model, so consecutive turns reuse what is already computed. The sampling
//! chain, chat templates and stop rules grow here.

pub mod chat;
pub mod conversation;
pub mod generate;
pub mod perplexity;
pub mod sampling;
pub mod scheduler;

use mori_kernels::ThreadPool;
use mori_model::{KvCache, Logits, Model, Scratch};

pub use mori_model::{Error, Result};

/// One conversation with a model: its cache and the threads that run it.
pub struct Session<'m> {
    model: &'m Model,
    cache: KvCache,
    /// Working memory of the forward passes, reused from token to token.
    scratch: Scratch,
    pool: ThreadPool,
    /// The tokens in the cache, in order: `[cache.n_used()]`.
    tokens: Vec<u32>,
    /// Logits after the last token fed, `[n_vocab]`; empty when nothing was fed
    /// or the cache was cut back since.
    last_logits: Vec<f32>,
    /// Where a pass writes its logits before they become `last_logits`, so a
    /// failed pass leaves those intact.
    next_logits: Vec<f32>,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, n_ctx: usize, n_threads: usize) -> Self {
        Session {
            model,
            cache: model.new_cache(n_ctx),
            scratch: Scratch::new(),
            pool: ThreadPool::new(n_threads.max(1)),
            // Room for everything the session can hold: feeding never
            // grows them.
            tokens: Vec::with_capacity(n_ctx),
            last_logits: Vec::with_capacity(model.hparams.n_vocab),
            next_logits: Vec::with_capacity(model.hparams.n_vocab),
        }
    }

    /// The model this session runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// The context length: how many tokens the cache can hold.
    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx()
    }

    /// The tokens the cache holds, oldest first.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets everything fed so far.
    pub fn clear(&mut self) {
        self.cache.clear();
        self.tokens.clear();
        self.last_logits.clear();
    }

    /// Keeps the longest prefix of the cache that `prompt` starts with, and
    /// returns the part of `prompt` that still has to be fed. At least one token is
    /// always left to feed, since generation needs the logits after the last one.
    /// This is how a conversation re-rendered by its chat template each turn is
    /// read only as far as it is new.
    pub fn reuse_prefix<'p>(&mut self, prompt: &'p [u32]) -> &'p [u32] {
        let mut keep = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        if keep == prompt.len() {
            keep = keep.saturating_sub(1);
        }
        if keep < self.tokens.len() {
            self.cache.truncate(keep);
            // A sliding-window cache may have to go back further than asked.
            keep = self.cache.n_used();
            self.tokens.truncate(keep);
            self.last_logits.clear();
        }
        &prompt[keep..]
    }

    /// Positions already in the cache.
    pub fn n_past(&self) -> usize {
        self.cache.n_used()
    }

    /// Feeds `tokens` after what the session holds; returns the logits of the
    /// last one. Once the session has fed a batch of this size, this allocates
    /// nothing: the token loop of generation. On an error the session is as
    /// it was (see [`Session::undo_failed_pass`]).
    pub fn feed(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        let done = self.model.forward_into(
            &self.pool,
            &mut self.cache,
            &mut self.scratch,
            tokens,
            Logits::Last,
            &mut self.next_logits,
        );
        if let Err(e) = done {
            self.undo_failed_pass();
            return Err(e);
        }
        std::mem::swap(&mut self.last_logits, &mut self.next_logits);
        self.tokens.extend_from_slice(tokens);
        Ok(&self.last_logits)
    }

    /// Feeds `tokens` and returns the logits of every one, `[tokens.len()][n_vocab]`.
    /// On an error the session is as it was, as with [`Session::feed`].
    pub fn feed_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut all = Vec::new();
        let done = self.model.forward_into(
            &self.pool,
            &mut self.cache,
            &mut self.scratch,
            tokens,
            Logits::All,
            &mut all,
        );
        if let Err(e) = done {
            self.undo_failed_pass();
            return Err(e);
        }
        self.tokens.extend_from_slice(tokens);
        let n_vocab = self.model.hparams.n_vocab;
        self.last_logits.clear();
        self.last_logits
            .extend_from_slice(&all[all.len() - n_vocab..]);
        Ok(all)
    }

    /// After a failed pass: a long prompt runs in chunks, and the chunks
    /// before the failure are in the cache; cut it back to the tokens the
    /// session holds. A sliding-window cache that cannot go back that far
    /// starts over, and the session with it.
    fn undo_failed_pass(&mut self) {
        if self.cache.n_used() == self.tokens.len() {
            return;
        }
        self.cache.truncate(self.tokens.len());
        let keep = self.cache.n_used();
        if keep < self.tokens.len() {
            self.tokens.truncate(keep);
            self.last_logits.clear();
        }
    }

    /// Greedily generates up to `max_tokens` tokens after what was fed,
    /// stopping early at an end-of-generation token, which is not returned.
    pub fn generate_greedy(&mut self, max_tokens: usize) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for _ in 0..max_tokens {
            let Some(next) = argmax(&self.last_logits) else {
                break;
            };
            if self.model.tokenizer.is_eog(next) {
                break;
            }
            out.push(next);
            self.feed(&[next])?;
        }
        Ok(out)
    }
}

/// Index of the largest value (the first one on ties), or `None` for an empty slice.
pub fn argmax(xs: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in xs.iter().enumerate() {
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn argmax_takes_first_maximum() {
        assert_eq!(super::argmax(&[1.0, 3.0, 3.0, -1.0]), Some(1));
        assert_eq!(super::argmax(&[]), None);
    }
}
