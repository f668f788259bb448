//! Perplexity of a text: how well a model predicts it, the end-to-end check that
//! trained weights run right.

use crate::generate::GenerateError;
use crate::Session;

/// The result of [`perplexity`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// `exp(nll / n_scored)`.
    pub perplexity: f64,
    /// Sum of the negative log-likelihoods, in nats.
    pub nll: f64,
    pub n_scored: usize,
    pub n_windows: usize,
}

/// Cuts `tokens` into consecutive windows of `window` tokens (the last may be
/// shorter) and scores every token of a window but its first, given the tokens
/// before it in that window, each window in a fresh context. This is the
/// definition `scripts/train_default_model.py` uses for its own figure.
pub fn perplexity(
    session: &mut Session<'_>,
    tokens: &[u32],
    window: usize,
) -> Result<Perplexity, GenerateError> {
    if window < 2 {
        return Err(mori_model::Error::Invalid(format!(
            "a perplexity window of {window} tokens scores nothing (at least 2)"
        ))
        .into());
    }
    if window > session.n_ctx() {
        return Err(mori_model::Error::Invalid(format!(
            "a perplexity window of {window} tokens does not fit the context of {}",
            session.n_ctx()
        ))
        .into());
    }
    let (mut nll, mut n_scored, mut n_windows) = (0.0f64, 0usize, 0usize);
    for w in tokens.chunks(window).filter(|w| w.len() >= 2) {
        session.clear();
        for lp in session.score(w, 0)?.into_iter().flatten() {
            nll -= lp.logprob as f64;
            n_scored += 1;
        }
        n_windows += 1;
    }
    if n_scored == 0 {
        return Err(
            mori_model::Error::Invalid("the text has fewer than 2 tokens to score".into()).into(),
        );
    }
    Ok(Perplexity {
        perplexity: (nll / n_scored as f64).exp(),
        nll,
        n_scored,
        n_windows,
    })
}
