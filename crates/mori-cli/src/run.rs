//! `mori run MODEL PROMPT`: generate once from a prompt and stream the text.

use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use mori_engine::generate::{FinishReason, GenerateOptions};
use mori_engine::sampling::{Sampler, SamplingParams};
use mori_engine::Session;
use mori_model::Model;

#[derive(Args)]
pub struct RunArgs {
    /// Path to a .gguf file.
    model: PathBuf,
    /// The prompt; read from standard input when left out and input is piped.
    prompt: Option<String>,
    /// Randomness of the draw; 0 is greedy.
    #[arg(
        long,
        alias = "temp",
        default_value_t = 0.8,
        allow_negative_numbers = true
    )]
    temperature: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the most likely tokens up to this probability (1: all).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the best one (0: none).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Locally typical sampling mass (1: off).
    #[arg(long, default_value_t = 1.0)]
    typical_p: f32,
    /// Penalty on tokens seen in the last --repeat-last-n tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Subtracted once from the logit of every token seen in the window.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// Subtracted from a token's logit per time it was seen in the window.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// How many recent tokens the penalties look at (0: penalties off).
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Add BIAS to token ID's logit, as ID=BIAS (repeatable; BIAS may be -inf).
    #[arg(long, value_parser = parse_bias)]
    logit_bias: Vec<(u32, f32)>,
    /// Seed of the draw: the same seed and prompt give the same text (default: random, printed with --verbose).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many tokens.
    #[arg(short = 'n', long)]
    max_tokens: Option<usize>,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Context length in tokens (default: the model's, at most 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Print the seed and prompt/generation speed to standard error at the end.
    #[arg(short, long)]
    verbose: bool,
}

fn parse_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, b) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=BIAS, e.g. 42=-inf"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {id:?} is not a token id"))?;
    let b = match b.trim() {
        "-inf" => f32::NEG_INFINITY,
        x => x
            .parse()
            .map_err(|_| format!("{s:?}: {x:?} is not a number"))?,
    };
    Ok((id, b))
}

pub fn run(a: RunArgs) -> Result<()> {
    let prompt = match a.prompt {
        Some(p) => p,
        None if !std::io::stdin().is_terminal() => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the prompt from standard input")?;
            s
        }
        None => bail!(
            "give a prompt: `mori run MODEL \"...\"` or pipe one in (interactive chat is not built yet)"
        ),
    };
    let model = Model::load(&a.model)?;
    let n_ctx = a.ctx.unwrap_or(model.hparams.n_ctx_train.min(4096));
    if n_ctx == 0 {
        bail!("--ctx must be at least 1");
    }
    let seed = a.seed.unwrap_or_else(rand::random);
    let params = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        typical_p: a.typical_p,
        repeat_penalty: a.repeat_penalty,
        presence_penalty: a.presence_penalty,
        frequency_penalty: a.frequency_penalty,
        penalty_last_n: a.repeat_last_n,
        logit_bias: a.logit_bias,
        seed,
    };
    let mut sampler = Sampler::new(params, model.hparams.n_vocab)?;
    let tokens = model.tokenizer.encode(&prompt, true, true);
    if tokens.len() > n_ctx {
        bail!(
            "the prompt is {} tokens long but the context holds {n_ctx}; pass a larger --ctx (the model was trained with {})",
            tokens.len(),
            model.hparams.n_ctx_train
        );
    }
    let threads = a
        .threads
        .unwrap_or_else(crate::commands::default_threads)
        .max(1);
    let mut session = Session::new(&model, n_ctx, threads);
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        stop: a.stop,
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    let mut write_err = None;
    let done = session.generate(&tokens, &mut sampler, &opts, |piece| {
        if let Err(e) = out
            .write_all(piece.text.as_bytes())
            .and_then(|_| out.flush())
        {
            write_err = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing to standard output");
        }
    }
    writeln!(out)?;
    if a.verbose {
        let why = match done.finish {
            FinishReason::Stop => "stop",
            FinishReason::Length => "max tokens",
            FinishReason::ContextFull => "context full",
            FinishReason::Cancelled => "cancelled",
        };
        eprintln!(
            "seed {seed} | prompt {} tokens, {:.1} tokens/s | generated {} tokens, {:.1} tokens/s | ended by {why}",
            done.n_prompt,
            done.prompt_tokens_per_s(),
            done.tokens.len(),
            done.gen_tokens_per_s()
        );
    }
    Ok(())
}
