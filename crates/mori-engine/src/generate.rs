//! The generation loop: prompt in, streamed text out, until an end token, a
//! stop sequence, the token limit, the end of the context or the caller says
//! stop.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use mori_model::Detokenizer;

use crate::sampling::{logprob, Sampler, SamplingError, TokenLogprob};
use crate::Session;

/// What can go wrong while generating.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] mori_model::Error),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
}

/// Limits and stop rules of one generation.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// At most this many tokens; `None` runs until another rule stops it.
    pub max_tokens: Option<usize>,
    /// Text that ends the answer; it is not part of the answer.
    pub stop: Vec<String>,
    /// Tokens that end the answer (besides the model's end-of-generation tokens).
    pub stop_tokens: Vec<u32>,
    /// Report each generated token's log-probability with this many alternatives.
    pub logprobs: Option<usize>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token, a stop token or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The context is full.
    ContextFull,
    /// The caller's callback asked to stop (Ctrl-C, a closed connection).
    Cancelled,
}

/// One step of the stream: the text that became final with this token (may be
/// empty while a multi-byte character or a possible stop sequence is pending).
#[derive(Debug)]
pub struct Piece<'a> {
    pub token: u32,
    pub text: &'a str,
    pub logprob: Option<TokenLogprob>,
}

/// The whole result, with the counts and times `--verbose` reports.
#[derive(Debug, Clone)]
pub struct Completion {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub n_prompt: usize,
    pub prompt_time: Duration,
    pub gen_time: Duration,
}

impl Completion {
    pub fn prompt_tokens_per_s(&self) -> f64 {
        self.n_prompt as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }
    /// Generation speed; the first token is sampled from the prompt's logits,
    /// so it counts as generated without a forward pass of its own.
    pub fn gen_tokens_per_s(&self) -> f64 {
        self.tokens.len() as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
}

/// Holds back the end of the text while it could still be the start of a
/// stop sequence, and cuts the text where one appears.
#[derive(Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
}

impl StopStrings {
    pub fn new(stops: &[String]) -> Self {
        StopStrings {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds text; returns what is now safe to show, and whether a stop
    /// sequence was found (the text from it on is dropped).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..pos].to_string();
            self.pending.clear();
            return (out, true);
        }
        // The longest tail of the pending text that begins some stop sequence.
        let hold = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.pending[i..])))
            .unwrap_or(self.pending.len());
        let out = self.pending[..hold].to_string();
        self.pending.drain(..hold);
        (out, false)
    }

    /// The held-back text, at the end of generation.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

impl Session<'_> {
    /// Feeds `prompt` after what the session holds, then samples tokens,
    /// calling `on_piece` with each one's final text. The prompt's tokens and
    /// the generated ones enter the sampler's penalty window and stay in the
    /// cache, so the next turn continues the conversation without re-reading it.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        sampler: &mut Sampler,
        opts: &GenerateOptions,
        mut on_piece: impl FnMut(Piece<'_>) -> ControlFlow<()>,
    ) -> Result<Completion, GenerateError> {
        let model = self.model;
        if prompt.is_empty() && self.last_logits.is_empty() {
            return Err(mori_model::Error::Invalid(
                "nothing to generate from: the prompt is empty and the session holds no text"
                    .into(),
            )
            .into());
        }
        let t0 = Instant::now();
        if !prompt.is_empty() {
            self.feed(prompt)?;
        }
        prompt.iter().for_each(|&t| sampler.accept(t));
        let prompt_time = t0.elapsed();

        let t1 = Instant::now();
        let mut detok = Detokenizer::new(&model.tokenizer);
        let mut stops = StopStrings::new(&opts.stop);
        let (mut tokens, mut text) = (Vec::new(), String::new());
        let mut cut = false;
        let finish = loop {
            if opts.max_tokens.is_some_and(|m| tokens.len() >= m) {
                break FinishReason::Length;
            }
            let logits = &self.last_logits;
            let next = sampler.sample(logits)?;
            let lp = opts.logprobs.map(|n| logprob(logits, next, n));
            if model.tokenizer.is_eog(next) || opts.stop_tokens.contains(&next) {
                break FinishReason::Stop;
            }
            sampler.accept(next);
            tokens.push(next);
            let (shown, hit) = stops.push(&detok.push(next));
            text.push_str(&shown);
            let flow = on_piece(Piece {
                token: next,
                text: &shown,
                logprob: lp,
            });
            if hit {
                cut = true;
                break FinishReason::Stop;
            }
            if flow.is_break() {
                break FinishReason::Cancelled;
            }
            if self.n_past() >= self.cache.n_ctx() {
                break FinishReason::ContextFull;
            }
            // Every kept token enters the cache, so the cache always holds
            // exactly the text so far and the next turn can continue it.
            self.feed(&[next])?;
        };
        if !cut {
            // Bytes the detokenizer held (an unfinished character), then what
            // the stop matcher held back: both are text after all.
            let (tail, hit) = stops.push(&detok.finish());
            let rest = if hit { tail } else { tail + &stops.flush() };
            if !rest.is_empty() {
                text.push_str(&rest);
                let _ = on_piece(Piece {
                    token: tokens.last().copied().unwrap_or(0),
                    text: &rest,
                    logprob: None,
                });
            }
        }
        Ok(Completion {
            tokens,
            text,
            finish,
            n_prompt: prompt.len(),
            prompt_time,
            gen_time: t1.elapsed(),
        })
    }

    /// Log-probabilities of `tokens` as a continuation of what the session
    /// holds (the evaluation of a given answer). Entry i is the probability of
    /// `tokens[i]` given everything before it; the first entry is `None` when
    /// the session holds nothing to condition it on.
    pub fn score(
        &mut self,
        tokens: &[u32],
        top_n: usize,
    ) -> Result<Vec<Option<TokenLogprob>>, GenerateError> {
        let n_vocab = self.model.hparams.n_vocab;
        let before = self.last_logits.clone();
        let all = self.feed_all(tokens)?;
        let mut out = Vec::with_capacity(tokens.len());
        for (i, &t) in tokens.iter().enumerate() {
            let ctx = if i == 0 {
                (!before.is_empty()).then_some(before.as_slice())
            } else {
                Some(&all[(i - 1) * n_vocab..i * n_vocab])
            };
            out.push(ctx.map(|l| logprob(l, t, top_n)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopStrings::new(&stops);
        let mut shown = Vec::new();
        for p in pieces {
            let (s, hit) = m.push(p);
            shown.push(s);
            if hit {
                return (shown, true, m.flush());
            }
        }
        (shown, false, m.flush())
    }

    #[test]
    fn stop_sequence_across_pieces_is_cut_and_held_back() {
        let (shown, hit, rest) = run(&["</s>"], &["Hello", " <", "/", "s> tail"]);
        assert!(hit);
        assert_eq!(shown, vec!["Hello", " ", "", ""]);
        assert_eq!(rest, "");
        // A false start is released once it cannot be a stop any more.
        let (shown, hit, rest) = run(&["</s>"], &["a <", "b"]);
        assert!(!hit);
        assert_eq!(shown, vec!["a ", "<b"]);
        assert_eq!(rest, "");
        // Text that ends while a stop could still begin is given at the end.
        let (shown, hit, rest) = run(&["STOP"], &["x ST"]);
        assert!(!hit);
        assert_eq!((shown, rest), (vec!["x ".to_string()], "ST".to_string()));
    }

    #[test]
    fn earliest_of_several_stops_wins_and_multibyte_is_safe() {
        let (shown, hit, _) = run(&["。", "\n\n"], &["答え", "は42", "。次"]);
        assert!(hit);
        assert_eq!(shown.concat(), "答えは42");
        let (shown, hit, _) = run(&["🙂x"], &["a🙂", "y"]);
        assert!(!hit);
        assert_eq!(shown.concat(), "a🙂y");
    }
}
