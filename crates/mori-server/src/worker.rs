//! Runs one generation on a blocking thread inside a scheduler slot and streams
//! its events to the request's handler over a bounded channel.
//!
//! The channel is the only link between the HTTP side and the model: when the
//! client goes away its receiver is dropped, the next send fails, and the
//! generation stops and frees its slot. A slow reader only slows its own slot,
//! since a full channel blocks only the thread that writes to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mori_engine::generate::{FinishReason, GenerateOptions};
use mori_engine::sampling::{Sampler, SamplingParams, TokenLogprob};
use mori_engine::Session;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::models::Loaded;
use crate::AppState;

/// One generation request, already tokenized.
#[derive(Debug, Clone)]
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub opts: GenerateOptions,
    pub n_ctx: usize,
    /// Report the prompt tokens' log-probabilities with this many alternatives.
    pub prompt_logprobs: Option<usize>,
    /// Which API asked, for the metrics.
    pub api: &'static str,
    /// The completion id returned to the client (feedback attaches to it).
    pub id: String,
}

#[derive(Debug)]
pub enum Event {
    /// Log-probabilities of the prompt tokens (the first has none).
    PromptLogprobs(Vec<Option<TokenLogprob>>),
    Piece {
        token: u32,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    Done(Stats),
    Failed(ApiError),
}

#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub finish: FinishReason,
    pub n_prompt: usize,
    pub n_generated: usize,
    pub prompt_time: Duration,
    pub gen_time: Duration,
    pub total_time: Duration,
}

/// Admits `job` (or refuses it when the queue is full) and starts it; events arrive on the receiver.
pub fn start(
    state: &AppState,
    loaded: Arc<Loaded>,
    job: Job,
) -> Result<mpsc::Receiver<Event>, ApiError> {
    if job.prompt.len() > job.n_ctx {
        return Err(ApiError::context_exceeded(job.prompt.len(), job.n_ctx));
    }
    let ticket = state.scheduler.try_enqueue().map_err(|b| {
        state.metrics.rejected(job.api);
        ApiError::busy(b.to_string(), 1)
    })?;
    let (tx, rx) = mpsc::channel(64);
    let threads = state.config.threads_per_slot();
    let metrics = state.metrics.clone();
    let registry = state.registry.clone();
    state.metrics.queue_changed(&state.scheduler);
    let sched = state.scheduler.clone();
    tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let _slot = ticket.wait();
        metrics.queue_changed(&sched);
        if tx.is_closed() {
            return;
        }
        let result = run(&loaded, &job, threads, &tx, &metrics, t0);
        if let Err(e) = result {
            let _ = tx.blocking_send(Event::Failed(e));
        }
        registry.touch(&loaded.name);
        drop(_slot);
        metrics.queue_changed(&sched);
    });
    Ok(rx)
}

fn run(
    loaded: &Loaded,
    job: &Job,
    threads: usize,
    tx: &mpsc::Sender<Event>,
    metrics: &crate::metrics::Metrics,
    t0: Instant,
) -> Result<(), ApiError> {
    let model = &loaded.model;
    let mut sampler = Sampler::new(job.params.clone(), model.hparams.n_vocab)
        .map_err(|e| ApiError::bad_request("", e.to_string()))?;
    let mut session = Session::new(model, job.n_ctx, threads);
    let mut prompt: &[u32] = &job.prompt;
    let t_prompt = Instant::now();
    if let Some(n) = job.prompt_logprobs {
        let lps = session
            .score(prompt, n)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        prompt.iter().for_each(|&t| sampler.accept(t));
        prompt = &[];
        if tx.blocking_send(Event::PromptLogprobs(lps)).is_err() {
            return Ok(());
        }
    }
    let scored_time = t_prompt.elapsed();
    let mut first = true;
    let done = session
        .generate(prompt, &mut sampler, &job.opts, |p| {
            if first {
                metrics.first_token(job.api, t0.elapsed());
                first = false;
            }
            let ev = Event::Piece {
                token: p.token,
                text: p.text.to_string(),
                logprob: p.logprob,
            };
            if tx.blocking_send(ev).is_err() {
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        })
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let stats = Stats {
        finish: done.finish,
        n_prompt: job.prompt.len(),
        n_generated: done.tokens.len(),
        prompt_time: done.prompt_time + scored_time,
        gen_time: done.gen_time,
        total_time: t0.elapsed(),
    };
    metrics.finished(job.api, &stats);
    tracing::info!(
        completion_id = %job.id,
        model = %loaded.name,
        prompt_tokens = stats.n_prompt,
        generated_tokens = stats.n_generated,
        finish = ?stats.finish,
        ms = stats.total_time.as_millis() as u64,
        "completion finished"
    );
    let _ = tx.blocking_send(Event::Done(stats));
    Ok(())
}
