//! The sampling chain: from a model's logits to the next token.
//!
//! Order (llama.cpp's default, so settings mean the same in both tools):
//! logit bias → repetition / presence / frequency penalties over the last
//! `penalty_last_n` accepted tokens → top-k → typical-p → top-p → min-p →
//! temperature → a draw from a seeded ChaCha20 generator. Each truncation
//! renormalises over the tokens still in play; temperature is applied last,
//! so it reshapes the distribution that survived the truncations. A
//! temperature of 0 is greedy: the first token of largest penalised logit.
//!
//! Every step is deterministic and the draw uses only the seed, so the same
//! seed, logits and accepted tokens give the same token, bit for bit.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// A sampling setting out of range, or a distribution nothing can be drawn from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("sampling parameter {name} = {value} is out of range: expected {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("logit bias names token {id}, but the vocabulary has {n_vocab} tokens")]
    BiasToken { id: u32, n_vocab: usize },
    #[error("logits have {got} entries, but the vocabulary has {n_vocab} tokens")]
    LogitCount { got: usize, n_vocab: usize },
    #[error("no token can be sampled: every logit is -inf or NaN after biases and penalties")]
    Empty,
}

/// Settings of the chain. `Default` gives llama.cpp's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the draw; 0 means greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest most-likely set whose probability reaches `top_p`; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 keeps all.
    pub min_p: f32,
    /// Locally typical sampling: keep the tokens whose surprise is closest to
    /// the entropy, up to probability `typical_p`; 1 keeps all.
    pub typical_p: f32,
    /// Divides positive (multiplies negative) logits of tokens seen in the window; 1 is off.
    pub repeat_penalty: f32,
    /// Subtracted once from the logit of every token seen in the window; 0 is off.
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the window; 0 is off.
    pub frequency_penalty: f32,
    /// How many of the last accepted tokens the penalties look at; 0 turns them off.
    pub penalty_last_n: usize,
    /// Added to a token's logit before anything else (`-inf` bans it).
    pub logit_bias: Vec<(u32, f32)>,
    /// Seeds the draw.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    fn validate(&self, n_vocab: usize) -> Result<(), SamplingError> {
        let bad = |name, value: f32, expected| SamplingError::Invalid {
            name,
            value: value.to_string(),
            expected,
        };
        let t = self.temperature;
        if !(t >= 0.0 && t.is_finite()) {
            return Err(bad("temperature", t, "a finite number >= 0"));
        }
        for (name, v) in [("top_p", self.top_p), ("typical_p", self.typical_p)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(bad(name, v, "a number in (0, 1]"));
            }
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return Err(bad("min_p", self.min_p, "a number in [0, 1]"));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(bad(
                "repeat_penalty",
                self.repeat_penalty,
                "a finite number > 0",
            ));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !v.is_finite() {
                return Err(bad(name, v, "a finite number"));
            }
        }
        for &(id, b) in &self.logit_bias {
            if id as usize >= n_vocab {
                return Err(SamplingError::BiasToken { id, n_vocab });
            }
            if b.is_nan() || b == f32::INFINITY {
                return Err(bad("logit_bias", b, "a number or -inf"));
            }
        }
        Ok(())
    }
}

/// One token still in play, with its (penalised) logit and its probability
/// in the final distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
    pub p: f32,
}

/// The chain with its state: the penalty window and the random generator.
pub struct Sampler {
    params: SamplingParams,
    n_vocab: usize,
    rng: ChaCha20Rng,
    window: VecDeque<u32>,
    /// The chain's buffers, kept from token to token.
    work: Work,
}

/// Working memory of the chain: sized for the vocabulary and the penalty
/// window when the sampler is made, so that drawing a token allocates nothing.
#[derive(Default)]
struct Work {
    /// The tokens in play, most likely first once ranked.
    cands: Vec<Candidate>,
    /// The penalty window's tokens, sorted to count them.
    seen: Vec<u32>,
    /// Sort keys of the candidates (see `sort_ranked`).
    keys: Vec<u64>,
    /// Typical sampling's ranking and choice.
    order: Vec<(f64, usize)>,
    keep: Vec<bool>,
}

impl Work {
    fn new(params: &SamplingParams, n_vocab: usize) -> Self {
        // A window past this is allowed; it grows when it fills.
        let window = params.penalty_last_n.min(1 << 16);
        Work {
            cands: Vec::with_capacity(n_vocab),
            keys: Vec::with_capacity(n_vocab),
            seen: Vec::with_capacity(window),
            order: Vec::with_capacity(if params.typical_p < 1.0 { n_vocab } else { 0 }),
            keep: Vec::with_capacity(if params.typical_p < 1.0 { n_vocab } else { 0 }),
        }
    }
}

impl Sampler {
    pub fn new(params: SamplingParams, n_vocab: usize) -> Result<Self, SamplingError> {
        params.validate(n_vocab)?;
        Ok(Sampler {
            rng: ChaCha20Rng::seed_from_u64(params.seed),
            window: VecDeque::with_capacity(params.penalty_last_n.min(1 << 16) + 1),
            work: Work::new(&params, n_vocab),
            params,
            n_vocab,
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records a token as part of the text (prompt or generated), for the penalties.
    pub fn accept(&mut self, id: u32) {
        if self.params.penalty_last_n == 0 {
            return;
        }
        self.window.push_back(id);
        while self.window.len() > self.params.penalty_last_n {
            self.window.pop_front();
        }
    }

    /// Forgets the penalty window (a new conversation); the generator is not reseeded.
    pub fn reset(&mut self) {
        self.window.clear();
    }

    /// The distribution the next token is drawn from: the surviving tokens,
    /// most likely first, with probabilities summing to 1.
    pub fn candidates(&self, logits: &[f32]) -> Result<Vec<Candidate>, SamplingError> {
        let mut work = Work::default();
        self.chain(&mut work, logits, true)?;
        Ok(work.cands)
    }

    /// Runs the chain over `logits`, leaving the distribution in `w.cands`:
    /// most likely first if `ranked` or if a step truncates by rank, in id
    /// order otherwise (ranking a whole vocabulary costs more than the rest
    /// of the chain together).
    fn chain(&self, w: &mut Work, logits: &[f32], ranked: bool) -> Result<(), SamplingError> {
        if logits.len() != self.n_vocab {
            return Err(SamplingError::LogitCount {
                got: logits.len(),
                n_vocab: self.n_vocab,
            });
        }
        let p = &self.params;
        // Every token, indexed by id until the filter below.
        let c = &mut w.cands;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| Candidate {
            id: i as u32,
            logit: l,
            p: 0.0,
        }));
        for &(id, b) in &p.logit_bias {
            c[id as usize].logit += b;
        }
        self.apply_penalties(&mut w.seen, c);
        c.retain(|x| !x.logit.is_nan() && x.logit != f32::NEG_INFINITY);
        if c.is_empty() {
            return Err(SamplingError::Empty);
        }
        if p.temperature == 0.0 {
            let best = *c.iter().min_by(|a, b| rank(a, b)).expect("not empty");
            c.clear();
            c.push(Candidate { p: 1.0, ..best });
            return Ok(());
        }
        let top_k = p.top_k > 0 && p.top_k < c.len();
        if !ranked && !top_k && p.typical_p == 1.0 && p.top_p == 1.0 && p.min_p == 0.0 {
            // No step truncates by rank: draw in id order.
            softmax(c, p.temperature);
            return Ok(());
        }
        if top_k {
            c.select_nth_unstable_by(p.top_k - 1, rank);
            c.truncate(p.top_k);
        }
        if p.typical_p < 1.0 {
            // Typical sampling keeps a set that is not a prefix of the ranking.
            sort_ranked(c, &mut w.keys);
            typical(c, p.typical_p, &mut w.order, &mut w.keep);
            top_p_cut(c, p.top_p);
            min_p_cut(c, p.min_p);
        } else {
            rank_prefix_cuts(c, p.top_p, p.min_p, &mut w.keys);
        }
        softmax(c, p.temperature);
        Ok(())
    }

    /// Draws the next token. Does not `accept` it: the caller does, once it
    /// keeps the token. Allocates nothing (the buffers are the sampler's).
    /// The draw walks the distribution in ranked order, or in id order when
    /// no step truncates (the same distribution, without ranking 100,000+
    /// tokens).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        let mut work = std::mem::take(&mut self.work);
        let drawn = self.chain(&mut work, logits, false).map(|()| {
            let c = &work.cands;
            if c.len() == 1 {
                return c[0].id;
            }
            let r: f64 = self.rng.gen();
            let mut cum = 0.0f64;
            for x in c {
                cum += x.p as f64;
                if r < cum {
                    return x.id;
                }
            }
            // Rounding left the total a hair under r: the last token takes the rest.
            c[c.len() - 1].id
        });
        self.work = work;
        drawn
    }

    /// The penalties, on candidates still indexed by id; `seen` is working memory.
    fn apply_penalties(&self, seen: &mut Vec<u32>, c: &mut [Candidate]) {
        let p = &self.params;
        let off =
            p.repeat_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0;
        if off || self.window.is_empty() {
            return;
        }
        seen.clear();
        seen.extend(&self.window);
        seen.sort_unstable();
        for run in seen.chunk_by(|a, b| a == b) {
            let (id, n) = (run[0], run.len());
            let Some(x) = c.get_mut(id as usize) else {
                continue;
            };
            let l = &mut x.logit;
            if *l > 0.0 {
                *l /= p.repeat_penalty;
            } else {
                *l *= p.repeat_penalty;
            }
            *l -= n as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
}

/// The chain's ranking: most likely first, ties to the lower id. A total
/// order, so every sort by it gives the same sequence.
fn rank(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Top-p over ranked candidates: keeps the shortest prefix whose
/// probabilities (over all of them) reach `top_p`.
fn top_p_cut(c: &mut Vec<Candidate>, top_p: f32) {
    if top_p < 1.0 {
        softmax(c, 1.0);
        let mut cum = 0.0f64;
        let keep = c.iter().position(|x| {
            cum += x.p as f64;
            cum >= top_p as f64
        });
        c.truncate(keep.map_or(c.len(), |i| i + 1));
    }
}

/// Min-p over ranked candidates: drops those less likely than `min_p`
/// times the first.
fn min_p_cut(c: &mut Vec<Candidate>, min_p: f32) {
    if min_p > 0.0 {
        // p_i >= min_p * p_max  <=>  logit_i >= logit_max + ln(min_p).
        let floor = c[0].logit + min_p.ln();
        let keep = c.iter().take_while(|x| x.logit >= floor).count().max(1);
        c.truncate(keep);
    }
}

/// Sorts candidates in [`rank`]'s order through one integer
/// key per candidate (sorting plain integers is several times faster than
/// sorting by a comparator, and a whole vocabulary is sorted when no top-k
/// comes first). `keys` is working memory. Probabilities are reset to 0.
fn sort_ranked(c: &mut [Candidate], keys: &mut Vec<u64>) {
    // `total_cmp`'s order as unsigned integers: flip every bit of negative
    // values, only the sign bit of the others.
    let ordered = |l: f32| {
        let b = l.to_bits();
        if b >> 31 == 1 {
            !b
        } else {
            b | 1 << 31
        }
    };
    let logit_of = |o: u32| f32::from_bits(if o >> 31 == 1 { o & !(1 << 31) } else { !o });
    keys.clear();
    // Higher logits first: the complement of the ordered bits, then the id.
    keys.extend(
        c.iter()
            .map(|x| (u64::from(!ordered(x.logit)) << 32) | u64::from(x.id)),
    );
    keys.sort_unstable();
    for (x, &k) in c.iter_mut().zip(keys.iter()) {
        *x = Candidate {
            id: k as u32,
            logit: logit_of(!((k >> 32) as u32)),
            p: 0.0,
        };
    }
}

/// Top-p and then min-p, both of which keep a prefix of the ranking: ranks
/// `c` (most likely first, ties by id) only as far as the cuts need. The
/// min-p cut is a logit floor, so it filters before anything is ranked; the
/// top-p cut takes probabilities over all of `c` and ranks a growing prefix
/// until they reach `top_p`. The same set and order as ranking everything,
/// then cutting, but for the rounding of the probabilities' denominator,
/// summed here in id order.
fn rank_prefix_cuts(c: &mut Vec<Candidate>, top_p: f32, min_p: f32, keys: &mut Vec<u64>) {
    let max = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max);
    // The softmax denominator over every candidate, as `softmax` computes it.
    let sum: f64 = if top_p < 1.0 {
        c.iter().map(|x| ((x.logit - max) as f64).exp()).sum()
    } else {
        1.0
    };
    if min_p > 0.0 {
        // p_i >= min_p * p_max  <=>  logit_i >= logit_max + ln(min_p); the
        // best token always passes.
        let floor = max + min_p.ln();
        c.retain(|x| x.logit >= floor);
    }
    if top_p >= 1.0 {
        sort_ranked(c, keys);
        return;
    }
    let prob = |x: &Candidate| (((x.logit - max) as f64).exp() as f32 as f64 / sum) as f32;
    let (mut done, mut cum) = (0, 0.0f64);
    let mut k = c.len().min(64);
    loop {
        if k < c.len() {
            c[done..].select_nth_unstable_by(k - done - 1, rank);
        }
        sort_ranked(&mut c[done..k], keys);
        for (i, x) in c[done..k].iter().enumerate() {
            cum += prob(x) as f64;
            if cum >= top_p as f64 {
                c.truncate(done + i + 1);
                return;
            }
        }
        if k == c.len() {
            return;
        }
        (done, k) = (k, (k * 4).min(c.len()));
    }
}

/// Softmax over the candidates' logits divided by `temperature`, into `p`.
fn softmax(c: &mut [Candidate], temperature: f32) {
    let max = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for x in c.iter_mut() {
        let e = (((x.logit - max) / temperature) as f64).exp();
        x.p = e as f32;
        sum += e;
    }
    for x in c.iter_mut() {
        x.p = (x.p as f64 / sum) as f32;
    }
}

/// Locally typical sampling (Meister et al. 2022): keep the tokens whose
/// surprise `-ln p` is closest to the entropy, until their probability
/// reaches `mass`; the survivors stay sorted by logit. `order` and `keep` are
/// working memory.
fn typical(c: &mut Vec<Candidate>, mass: f32, order: &mut Vec<(f64, usize)>, keep: &mut Vec<bool>) {
    softmax(c, 1.0);
    let entropy: f64 = c
        .iter()
        .filter(|x| x.p > 0.0)
        .map(|x| -(x.p as f64) * (x.p as f64).ln())
        .sum();
    order.clear();
    order.extend(
        c.iter()
            .enumerate()
            .map(|(i, x)| ((-(x.p as f64).ln() - entropy).abs(), i)),
    );
    // A total order (index last), so an unstable sort ranks as a stable one.
    order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut cum = 0.0f64;
    keep.clear();
    keep.resize(c.len(), false);
    for &(_, i) in order.iter() {
        keep[i] = true;
        cum += c[i].p as f64;
        if cum >= mass as f64 {
            break;
        }
    }
    let mut i = 0;
    c.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

/// The log-probability of one token under the model's distribution (the raw
/// logits, before any sampling setting), with the `top_n` most likely tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Log-softmax of `logits` read at `id`, plus the `top_n` best alternatives
/// (most likely first, lower id first on ties).
pub fn logprob(logits: &[f32], id: u32, top_n: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    let lp = |l: f32| (l as f64 - lse) as f32;
    // The `top_n` best as (id, logit), most likely first and lower id first
    // on ties: one pass that inserts into a short sorted list, instead of
    // ranking the whole vocabulary.
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(top_n.min(logits.len()));
    if top_n > 0 {
        for (i, &l) in logits.iter().enumerate() {
            let beaten = |&(_, t): &(u32, f32)| t.total_cmp(&l).is_ge();
            if top.len() == top_n && top.last().is_some_and(beaten) {
                continue;
            }
            // After every kept logit at least as large (they have lower ids).
            let at = top.partition_point(beaten);
            if top.len() == top_n {
                top.pop();
            }
            top.insert(at, (i as u32, l));
        }
        top.iter_mut().for_each(|(_, l)| *l = lp(*l));
    }
    TokenLogprob {
        id,
        logprob: lp(logits[id as usize]),
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        // Everything off, temperature 1: each test turns on what it checks.
        let mut p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 1,
        };
        f(&mut p);
        p
    }

    /// (id, probability) of the final distribution, probabilities rounded to 1e-4.
    fn dist(p: SamplingParams, history: &[u32], logits: &[f32]) -> Vec<(u32, f32)> {
        let mut s = Sampler::new(p, logits.len()).unwrap();
        history.iter().for_each(|&t| s.accept(t));
        s.candidates(logits)
            .unwrap()
            .into_iter()
            .map(|c| (c.id, (c.p * 1e4).round() / 1e4))
            .collect()
    }

    /// ln of each probability: logits whose softmax is exactly `probs`.
    fn logits_of(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    #[test]
    fn table_of_chains() {
        let l = logits_of(&[0.5, 0.25, 0.15, 0.07, 0.03]);
        type Case = (&'static str, SamplingParams, Vec<u32>, Vec<(u32, f32)>);
        let cases: Vec<Case> = vec![
            (
                "plain softmax",
                params(|_| {}),
                vec![],
                vec![(0, 0.5), (1, 0.25), (2, 0.15), (3, 0.07), (4, 0.03)],
            ),
            (
                "greedy",
                params(|p| p.temperature = 0.0),
                vec![],
                vec![(0, 1.0)],
            ),
            (
                "top-k 2",
                params(|p| p.top_k = 2),
                vec![],
                vec![(0, 0.6667), (1, 0.3333)],
            ),
            (
                "top-p 0.8 keeps 0.5+0.25+0.15",
                params(|p| p.top_p = 0.8),
                vec![],
                vec![(0, 0.5556), (1, 0.2778), (2, 0.1667)],
            ),
            (
                "top-p 0.75 stops where the sum reaches it",
                params(|p| p.top_p = 0.75),
                vec![],
                vec![(0, 0.6667), (1, 0.3333)],
            ),
            (
                "min-p 0.2 drops p < 0.1",
                params(|p| p.min_p = 0.2),
                vec![],
                vec![(0, 0.5556), (1, 0.2778), (2, 0.1667)],
            ),
            (
                "temperature 2 flattens: p ~ sqrt(p)",
                params(|p| p.temperature = 2.0),
                vec![],
                vec![
                    (0, 0.348),
                    (1, 0.246),
                    (2, 0.1906),
                    (3, 0.1302),
                    (4, 0.0852),
                ],
            ),
            (
                "temperature 0.5 sharpens: p ~ p^2",
                params(|p| p.temperature = 0.5),
                vec![],
                vec![
                    (0, 0.7336),
                    (1, 0.1834),
                    (2, 0.066),
                    (3, 0.0144),
                    (4, 0.0026),
                ],
            ),
            (
                "truncation before temperature",
                params(|p| {
                    p.top_k = 2;
                    p.temperature = 0.5;
                }),
                vec![],
                vec![(0, 0.8), (1, 0.2)],
            ),
            (
                "logit bias bans the best token",
                params(|p| {
                    p.temperature = 0.0;
                    p.logit_bias = vec![(0, f32::NEG_INFINITY)];
                }),
                vec![],
                vec![(1, 1.0)],
            ),
            (
                "logit bias +ln 2 doubles a token's odds",
                params(|p| p.logit_bias = vec![(4, 2f32.ln())]),
                vec![],
                vec![
                    (0, 0.4854),
                    (1, 0.2427),
                    (2, 0.1456),
                    (3, 0.068),
                    (4, 0.0583),
                ],
            ),
            (
                // Token 0 seen: its negative logit ln 0.5 is multiplied by 2 -> p 0.25 unnormalised.
                "repetition penalty 2 on a seen token",
                params(|p| p.repeat_penalty = 2.0),
                vec![0],
                vec![(1, 0.3333), (0, 0.3333), (2, 0.2), (3, 0.0933), (4, 0.04)],
            ),
            (
                // Token 1 seen twice: logit - 2 * ln 2 -> weight 0.25 / 4.
                "frequency penalty counts occurrences",
                params(|p| p.frequency_penalty = 2f32.ln()),
                vec![1, 1],
                vec![
                    (0, 0.6154),
                    (1, 0.0769),
                    (2, 0.1846),
                    (3, 0.0862),
                    (4, 0.0369),
                ],
            ),
            (
                // Token 1 seen twice: presence counts once -> weight 0.25 / 2.
                "presence penalty counts once",
                params(|p| p.presence_penalty = 2f32.ln()),
                vec![1, 1],
                vec![
                    (0, 0.5714),
                    (1, 0.1429),
                    (2, 0.1714),
                    (3, 0.08),
                    (4, 0.0343),
                ],
            ),
        ];
        for (name, p, history, mut want) in cases {
            let got = dist(p, &history, &l);
            // Compare as sets ordered by id; the order by probability is checked elsewhere.
            let mut got_sorted = got.clone();
            got_sorted.sort_by_key(|x| x.0);
            want.sort_by_key(|x| x.0);
            assert_eq!(got_sorted, want, "{name}: got {got:?}");
            let total: f32 = got.iter().map(|x| x.1).sum();
            assert!((total - 1.0).abs() < 1e-3, "{name}: sums to {total}");
            for w in got.windows(2) {
                assert!(w[0].1 >= w[1].1, "{name}: not most likely first: {got:?}");
            }
        }
    }

    #[test]
    fn top_logprobs_are_the_best_in_order_ties_to_the_lower_id() {
        let logits: Vec<f32> = (0..300u32)
            .map(|i| ((i * 7919) % 61) as f32 * 0.25 - 3.0)
            .chain([f32::NEG_INFINITY, 11.75, 11.75])
            .collect();
        for top_n in [0, 1, 5, 20, 400] {
            let got = logprob(&logits, 3, top_n);
            let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
            idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            let want: Vec<(u32, f32)> = idx
                .iter()
                .take(top_n)
                .map(|&i| (i, logprob(&logits, i, 0).logprob))
                .collect();
            assert_eq!(got.top, want, "top {top_n}");
        }
    }

    #[test]
    fn prefix_cuts_keep_what_ranking_everything_keeps() {
        // Ranks all, then cuts: the chain's steps as first written.
        fn reference(mut c: Vec<Candidate>, top_p: f32, min_p: f32) -> Vec<Candidate> {
            c.sort_by(rank);
            top_p_cut(&mut c, top_p);
            min_p_cut(&mut c, min_p);
            c
        }
        let mut s = 12345u32;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32
        };
        // Logit of candidate i from a uniform draw r in [0, 1].
        type Shape = fn(f32, usize) -> f32;
        let shapes: [(&str, Shape); 3] = [
            ("flat", |r, _| r * 20.0 - 10.0),
            ("peaked", |r, i| -(i as f32).sqrt() * 0.7 + r * 2.0),
            ("ties", |r, _| (r * 6.0).floor()),
        ];
        for (name, shape) in &shapes {
            let c: Vec<Candidate> = (0..5000)
                .map(|i| Candidate {
                    id: (i * 7919 % 5000) as u32,
                    logit: shape(next(), i),
                    p: 0.0,
                })
                .collect();
            for (top_p, min_p) in [
                (0.95, 0.0),
                (0.5, 0.0),
                (0.999, 0.05),
                (1.0, 0.05),
                (0.9, 0.3),
            ] {
                let mut got = c.clone();
                rank_prefix_cuts(&mut got, top_p, min_p, &mut Vec::new());
                let want = reference(c.clone(), top_p, min_p);
                let ids = |v: &[Candidate]| v.iter().map(|x| x.id).collect::<Vec<_>>();
                assert_eq!(
                    ids(&got),
                    ids(&want),
                    "{name}, top-p {top_p}, min-p {min_p}"
                );
            }
        }
    }

    #[test]
    fn integer_keys_rank_as_the_comparator() {
        let mut c: Vec<Candidate> = [
            0.5f32,
            -0.0,
            0.0,
            f32::INFINITY,
            -3.25,
            0.5,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e30,
            0.5,
            f32::MAX,
            -0.0,
        ]
        .iter()
        .enumerate()
        .map(|(i, &logit)| Candidate {
            id: (i * 7 % 13) as u32,
            logit,
            p: 0.0,
        })
        .collect();
        let mut want = c.clone();
        want.sort_by(rank);
        sort_ranked(&mut c, &mut Vec::new());
        let bits = |v: &[Candidate]| -> Vec<(u32, u32)> {
            v.iter().map(|x| (x.id, x.logit.to_bits())).collect()
        };
        assert_eq!(bits(&c), bits(&want));
    }

    #[test]
    fn penalty_window_forgets_old_tokens() {
        let l = logits_of(&[0.5, 0.25, 0.15, 0.07, 0.03]);
        let p = params(|p| {
            p.temperature = 0.0;
            p.presence_penalty = 10.0;
            p.penalty_last_n = 2;
        });
        // Token 0 left the 2-token window: it is the best again.
        assert_eq!(dist(p.clone(), &[0, 3, 4], &l), vec![(0, 1.0)]);
        // Token 0 inside the window: penalised, token 1 wins.
        assert_eq!(dist(p.clone(), &[3, 0], &l), vec![(1, 1.0)]);
        // A zero window turns penalties off.
        let off = SamplingParams {
            penalty_last_n: 0,
            ..p
        };
        assert_eq!(dist(off, &[0, 0], &l), vec![(0, 1.0)]);
    }

    #[test]
    fn typical_keeps_tokens_near_the_entropy() {
        // Entropy of [0.5, 0.25, 0.15, 0.07, 0.03] is 1.2691 nats; surprises are
        // 0.69, 1.39, 1.90, 2.66, 3.51: token 1 is closest, then 0, then 2.
        let l = logits_of(&[0.5, 0.25, 0.15, 0.07, 0.03]);
        let got = dist(params(|p| p.typical_p = 0.7), &[], &l);
        assert_eq!(got, vec![(0, 0.6667), (1, 0.3333)]);
        let got = dist(params(|p| p.typical_p = 0.2), &[], &l);
        assert_eq!(got, vec![(1, 1.0)]);
    }

    #[test]
    fn same_seed_same_draws_and_draws_follow_the_distribution() {
        let l = logits_of(&[0.5, 0.25, 0.15, 0.07, 0.03]);
        let draw = |seed: u64| -> Vec<u32> {
            let mut s = Sampler::new(params(|p| p.seed = seed), 5).unwrap();
            (0..4000).map(|_| s.sample(&l).unwrap()).collect()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "same seed, same tokens");
        assert_ne!(a, draw(8), "another seed, other tokens");
        let mut counts = [0usize; 5];
        a.iter().for_each(|&t| counts[t as usize] += 1);
        for (i, want) in [0.5, 0.25, 0.15, 0.07, 0.03].iter().enumerate() {
            let got = counts[i] as f64 / a.len() as f64;
            // 4000 draws: a binomial standard error is at most 0.008.
            assert!((got - want).abs() < 0.03, "token {i}: {got} vs {want}");
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let cases: Vec<(SamplingParams, &str)> = vec![
            (params(|p| p.temperature = -1.0), "temperature"),
            (params(|p| p.top_p = 0.0), "top_p"),
            (params(|p| p.top_p = 1.5), "top_p"),
            (params(|p| p.min_p = 2.0), "min_p"),
            (params(|p| p.typical_p = f32::NAN), "typical_p"),
            (params(|p| p.repeat_penalty = 0.0), "repeat_penalty"),
            (params(|p| p.logit_bias = vec![(9, 1.0)]), "token 9"),
        ];
        for (p, name) in cases {
            let e = Sampler::new(p, 5).err().expect(name).to_string();
            assert!(e.contains(name), "{e}");
        }
        let s = Sampler::new(params(|p| p.logit_bias = vec![(0, f32::NEG_INFINITY)]), 1).unwrap();
        assert_eq!(s.candidates(&[0.0]), Err(SamplingError::Empty));
        assert!(matches!(
            s.candidates(&[0.0, 1.0]),
            Err(SamplingError::LogitCount { .. })
        ));
    }

    #[test]
    fn logprobs_of_the_raw_distribution() {
        let l = logits_of(&[0.5, 0.25, 0.15, 0.07, 0.03]);
        let lp = logprob(&l, 2, 2);
        assert!((lp.logprob - 0.15f32.ln()).abs() < 1e-6);
        assert_eq!(lp.top.len(), 2);
        assert_eq!((lp.top[0].0, lp.top[1].0), (0, 1));
        assert!((lp.top[0].1 - 0.5f32.ln()).abs() < 1e-6);
        // Shifting every logit changes nothing.
        let shifted: Vec<f32> = l.iter().map(|x| x + 100.0).collect();
        assert!((logprob(&shifted, 2, 0).logprob - lp.logprob).abs() < 1e-5);
    }
}
