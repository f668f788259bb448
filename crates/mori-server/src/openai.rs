//! OpenAI's API: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use mori_engine::generate::{FinishReason, GenerateOptions};
use mori_engine::sampling::{SamplingParams, TokenLogprob};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::models::Loaded;
use crate::worker::{self, Event, Job, Stats};
use crate::{ApiJson, AppState};

/// A string or a list of strings (`stop`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Sampling fields shared by both endpoints (plus llama.cpp-style extensions).
#[derive(Debug)]
pub struct Sampling {
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    logit_bias: Option<BTreeMap<String, f32>>,
    seed: Option<u64>,
    stop: Option<OneOrMany>,
    n: Option<i64>,
    max_tokens: Option<i64>,
    /// Not an OpenAI field: a recipe's `repeat_last_n`.
    repeat_last_n: Option<usize>,
}

impl Sampling {
    /// Fills what the request left out from a recipe's defaults.
    fn fill_from(&mut self, d: &crate::models::Defaults) {
        self.temperature = self.temperature.or(d.temperature);
        self.top_p = self.top_p.or(d.top_p);
        self.top_k = self.top_k.or(d.top_k);
        self.min_p = self.min_p.or(d.min_p);
        self.repeat_penalty = self.repeat_penalty.or(d.repeat_penalty);
        self.seed = self.seed.or(d.seed);
        self.max_tokens = self.max_tokens.or(d.num_predict.map(|n| n as i64));
        self.repeat_last_n = self.repeat_last_n.or(d.repeat_last_n);
        if self.stop.is_none() && !d.stop.is_empty() {
            self.stop = Some(OneOrMany::Many(d.stop.clone()));
        }
    }
}

/// [`Sampling`] as it arrives. The fields are shared through `#[serde(flatten)]`,
/// which loses the name of a field that fails to parse, so they are read as JSON
/// values and typed one by one, each error naming its field.
#[derive(Debug, Deserialize)]
pub struct RawSampling {
    temperature: Option<Value>,
    top_p: Option<Value>,
    top_k: Option<Value>,
    min_p: Option<Value>,
    repeat_penalty: Option<Value>,
    presence_penalty: Option<Value>,
    frequency_penalty: Option<Value>,
    logit_bias: Option<Value>,
    seed: Option<Value>,
    stop: Option<Value>,
    n: Option<Value>,
    max_tokens: Option<Value>,
}

fn field<T: serde::de::DeserializeOwned>(
    name: &str,
    v: Option<Value>,
) -> Result<Option<T>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ApiError::bad_request(name, format!("invalid {name} {v}: {e}"))),
    }
}

impl RawSampling {
    fn typed(self) -> Result<Sampling, ApiError> {
        Ok(Sampling {
            temperature: field("temperature", self.temperature)?,
            top_p: field("top_p", self.top_p)?,
            top_k: field("top_k", self.top_k)?,
            min_p: field("min_p", self.min_p)?,
            repeat_penalty: field("repeat_penalty", self.repeat_penalty)?,
            presence_penalty: field("presence_penalty", self.presence_penalty)?,
            frequency_penalty: field("frequency_penalty", self.frequency_penalty)?,
            logit_bias: field("logit_bias", self.logit_bias)?,
            seed: field("seed", self.seed)?,
            stop: field("stop", self.stop)?,
            n: field("n", self.n)?,
            max_tokens: field("max_tokens", self.max_tokens)?,
            repeat_last_n: None,
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    model: String,
    messages: Vec<Value>,
    #[serde(flatten)]
    sampling: RawSampling,
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<i64>,
    tools: Option<Value>,
    response_format: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    model: String,
    prompt: Prompt,
    #[serde(flatten)]
    sampling: RawSampling,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    logprobs: Option<i64>,
    #[serde(default)]
    echo: bool,
    suffix: Option<String>,
}

fn check_range(param: &str, v: Option<f32>, lo: f32, hi: f32) -> Result<(), ApiError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err(ApiError::bad_request(
            param,
            format!("{param} must be between {lo} and {hi}, got {x}"),
        )),
        _ => Ok(()),
    }
}

/// Turns the request's sampling fields into engine parameters, with OpenAI's
/// defaults (temperature 1, top-p 1, no top-k or min-p) and its ranges.
fn sampling_params(s: &Sampling, n_vocab: usize) -> Result<SamplingParams, ApiError> {
    check_range("temperature", s.temperature, 0.0, 2.0)?;
    check_range("top_p", s.top_p, 0.0, 1.0)?;
    check_range("min_p", s.min_p, 0.0, 1.0)?;
    check_range("presence_penalty", s.presence_penalty, -2.0, 2.0)?;
    check_range("frequency_penalty", s.frequency_penalty, -2.0, 2.0)?;
    check_range("repeat_penalty", s.repeat_penalty, 0.0, 10.0)?;
    let mut bias = Vec::new();
    for (k, &v) in s.logit_bias.iter().flatten() {
        let id: u32 = k.parse().map_err(|_| {
            ApiError::bad_request(
                "logit_bias",
                format!("logit_bias key {k:?} is not a token id"),
            )
        })?;
        if id as usize >= n_vocab {
            return Err(ApiError::bad_request(
                "logit_bias",
                format!("logit_bias names token {id}, but the vocabulary has {n_vocab} tokens"),
            ));
        }
        if !(-100.0..=100.0).contains(&v) {
            return Err(ApiError::bad_request(
                "logit_bias",
                format!("logit_bias values must be between -100 and 100, got {v}"),
            ));
        }
        // OpenAI's -100 bans a token outright.
        bias.push((id, if v <= -100.0 { f32::NEG_INFINITY } else { v }));
    }
    Ok(SamplingParams {
        temperature: s.temperature.unwrap_or(1.0),
        top_k: s.top_k.unwrap_or(0),
        top_p: match s.top_p {
            Some(p) if p > 0.0 => p,
            Some(_) => f32::MIN_POSITIVE,
            None => 1.0,
        },
        min_p: s.min_p.unwrap_or(0.0),
        typical_p: 1.0,
        repeat_penalty: s.repeat_penalty.unwrap_or(1.0),
        presence_penalty: s.presence_penalty.unwrap_or(0.0),
        frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
        penalty_last_n: s.repeat_last_n.unwrap_or(64),
        logit_bias: bias,
        seed: s.seed.unwrap_or_else(rand_seed),
    })
}

pub(crate) fn rand_seed() -> u64 {
    u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap())
}

fn positive(param: &str, v: Option<i64>) -> Result<Option<usize>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if x >= 1 => Ok(Some(x as usize)),
        Some(x) => Err(ApiError::bad_request(
            param,
            format!("{param} must be at least 1, got {x}"),
        )),
    }
}

fn n_choices(s: &Sampling) -> Result<usize, ApiError> {
    match positive("n", s.n)? {
        None => Ok(1),
        Some(n) if n <= 16 => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            "n",
            format!("n must be at most 16, got {n}"),
        )),
    }
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::ContextFull => "length",
        FinishReason::Cancelled => "stop",
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn fingerprint(l: &Loaded) -> String {
    format!(
        "mori-{}-{}",
        env!("CARGO_PKG_VERSION"),
        l.model
            .info
            .tensor_types
            .first()
            .map(|t| t.0.name())
            .unwrap_or("?")
    )
}

/// The text of a message's content: a string, or the text parts of a list.
fn message_text(i: usize, m: &Value) -> Result<Value, ApiError> {
    let param = format!("messages[{i}]");
    let Value::Object(map) = m else {
        return Err(ApiError::bad_request(
            &param,
            format!("{param} must be an object with a role and content"),
        ));
    };
    if !map.get("role").is_some_and(|r| r.is_string()) {
        return Err(ApiError::bad_request(
            &format!("{param}.role"),
            format!("{param}.role must be a string"),
        ));
    }
    let mut map = map.clone();
    match map.get("content") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (
                    p.get("type").and_then(|t| t.as_str()),
                    p.get("text").and_then(|t| t.as_str()),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(kind), _) => {
                        return Err(ApiError::bad_request(
                            &format!("{param}.content[{j}]"),
                            format!("content parts of type {kind:?} are not supported (text only)"),
                        ))
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            &format!("{param}.content[{j}]"),
                            "a content part needs a type",
                        ))
                    }
                }
            }
            map.insert("content".into(), Value::String(text));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                &format!("{param}.content"),
                "content must be a string or a list of parts",
            ))
        }
    }
    Ok(Value::Object(map))
}

fn token_text(l: &Loaded, id: u32) -> (String, Vec<u8>) {
    let bytes = l.model.tokenizer.token_to_piece(id, true);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

fn chat_logprob(l: &Loaded, lp: &TokenLogprob) -> Value {
    let (tok, bytes) = token_text(l, lp.id);
    let top: Vec<Value> = lp
        .top
        .iter()
        .map(|&(id, p)| {
            let (t, b) = token_text(l, id);
            json!({"token": t, "logprob": p, "bytes": b})
        })
        .collect();
    json!({"token": tok, "logprob": lp.logprob, "bytes": bytes, "top_logprobs": top})
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

struct Prepared {
    loaded: Arc<Loaded>,
    jobs: Vec<Job>,
    id: String,
    include_usage: bool,
}

/// Collects a whole generation: text, per-token logprobs, prompt logprobs, stats.
#[derive(Default)]
struct Collected {
    text: String,
    tokens: Vec<(u32, String, Option<TokenLogprob>)>,
    prompt_lps: Vec<Option<TokenLogprob>>,
    stats: Option<Stats>,
}

async fn collect(state: &AppState, loaded: &Arc<Loaded>, job: Job) -> Result<Collected, ApiError> {
    let mut rx = worker::start(state, loaded.clone(), job)?;
    let mut c = Collected::default();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::PromptLogprobs(v) => c.prompt_lps = v,
            Event::Piece {
                token,
                text,
                logprob,
            } => {
                c.text.push_str(&text);
                c.tokens.push((token, text, logprob));
            }
            Event::Done(s) => c.stats = Some(s),
            Event::Failed(e) => return Err(e),
        }
    }
    if c.stats.is_none() {
        return Err(ApiError::internal("the generation ended without finishing"));
    }
    Ok(c)
}

fn with_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-completion-id", v);
    }
    resp
}

pub async fn chat_completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let loaded = state.registry.get(&req.model).await?;
    if let Some(rf) = &req.response_format {
        if rf.get("type").and_then(|t| t.as_str()) != Some("text") {
            return Err(ApiError::bad_request(
                "response_format",
                "only response_format {\"type\": \"text\"} is supported yet",
            ));
        }
    }
    if req.messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages",
            "messages must not be empty",
        ));
    }
    let messages = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| message_text(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let prompt = loaded.chat_prompt(&messages, req.tools.clone(), "messages")?;
    let top = match req.top_logprobs {
        None => 0,
        Some(n) if (0..=20).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::bad_request(
                "top_logprobs",
                format!("top_logprobs must be between 0 and 20, got {n}"),
            ))
        }
    };
    let mut sampling = req.sampling.typed()?;
    sampling.fill_from(&loaded.defaults());
    let max_tokens = positive("max_completion_tokens", req.max_completion_tokens)?
        .or(positive("max_tokens", sampling.max_tokens)?);
    let mut stop = loaded.template.stop_strings().to_vec();
    if let Some(s) = sampling.stop.take() {
        let s = s.into_vec();
        if s.len() > 4 {
            return Err(ApiError::bad_request("stop", "at most 4 stop sequences"));
        }
        stop.extend(s.into_iter().filter(|s| !s.is_empty()));
    }
    let prep = prepare(
        &state,
        loaded,
        prompt,
        &sampling,
        max_tokens,
        stop,
        req.logprobs.then_some(top),
        None,
        "openai_chat",
        "chatcmpl",
        req.stream_options.is_some_and(|o| o.include_usage),
    )?;
    let id = prep.id.clone();
    if req.stream {
        return Ok(with_id(
            stream_response(state, prep, true)?.into_response(),
            &id,
        ));
    }
    let mut choices = Vec::new();
    let (mut n_prompt, mut n_gen) = (0, 0);
    for (i, job) in prep.jobs.into_iter().enumerate() {
        let c = collect(&state, &prep.loaded, job).await?;
        let s = c.stats.unwrap();
        n_prompt = s.n_prompt;
        n_gen += s.n_generated;
        let logprobs = req.logprobs.then(|| {
            json!({"content": c.tokens.iter().filter_map(|(_, _, lp)| lp.as_ref().map(|lp| chat_logprob(&prep.loaded, lp))).collect::<Vec<_>>()})
        });
        choices.push(json!({
            "index": i,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": logprobs,
            "finish_reason": finish_reason(s.finish),
        }));
    }
    let body = json!({
        "id": id, "object": "chat.completion", "created": now(), "model": prep.loaded.name,
        "system_fingerprint": fingerprint(&prep.loaded), "choices": choices, "usage": usage(n_prompt, n_gen),
    });
    Ok(with_id(axum::Json(body).into_response(), &id))
}

#[allow(clippy::too_many_arguments)]
fn prepare(
    state: &AppState,
    loaded: Arc<Loaded>,
    prompt: Vec<u32>,
    s: &Sampling,
    max_tokens: Option<usize>,
    stop: Vec<String>,
    logprobs: Option<usize>,
    prompt_logprobs: Option<usize>,
    api: &'static str,
    id_prefix: &str,
    include_usage: bool,
) -> Result<Prepared, ApiError> {
    let n_ctx = state.n_ctx(&loaded.model, loaded.defaults().num_ctx);
    state.check_prompt(prompt.len(), n_ctx)?;
    let n = n_choices(s)?;
    let base = sampling_params(s, loaded.model.hparams.n_vocab)?;
    let id = format!("{id_prefix}-{}", uuid::Uuid::new_v4().simple());
    let jobs = (0..n)
        .map(|i| Job {
            prompt: prompt.clone(),
            params: SamplingParams {
                seed: base.seed.wrapping_add(i as u64),
                ..base.clone()
            },
            opts: GenerateOptions {
                max_tokens,
                stop: stop.clone(),
                stop_tokens: Vec::new(),
                logprobs,
            },
            n_ctx,
            prompt_logprobs,
            api,
            id: id.clone(),
        })
        .collect();
    Ok(Prepared {
        loaded,
        jobs,
        id,
        include_usage,
    })
}

/// Streams the choices one after another as server-sent events, then `[DONE]`.
/// The first choice is admitted before the response starts, so a full queue is a
/// plain 503 rather than an error inside a stream.
fn stream_response(
    state: AppState,
    prep: Prepared,
    chat: bool,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Prepared {
        loaded,
        jobs,
        id,
        include_usage,
    } = prep;
    let mut jobs = jobs.into_iter();
    let first = jobs.next().expect("n >= 1");
    let first_lp = first.opts.logprobs.is_some();
    let mut first_rx = Some(worker::start(&state, loaded.clone(), first)?);
    let created = now();
    let fp = fingerprint(&loaded);
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(64);
    tokio::spawn(async move {
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut v = json!({
                "id": id, "object": if chat { "chat.completion.chunk" } else { "text_completion" },
                "created": created, "model": loaded.name, "system_fingerprint": fp, "choices": choices,
            });
            if include_usage {
                v["usage"] = usage.unwrap_or(Value::Null);
            }
            SseEvent::default().data(v.to_string())
        };
        let (mut n_prompt, mut n_gen) = (0, 0);
        for i in 0.. {
            let (mut rx, want_lp) = match first_rx.take() {
                Some(rx) => (rx, first_lp),
                None => {
                    let Some(job) = jobs.next() else { break };
                    let want_lp = job.opts.logprobs.is_some();
                    match worker::start(&state, loaded.clone(), job) {
                        Ok(rx) => (rx, want_lp),
                        Err(e) => {
                            let _ = tx
                                .send(SseEvent::default().data(e.body().to_string()))
                                .await;
                            return;
                        }
                    }
                }
            };
            if chat {
                let first = json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]);
                if tx.send(chunk(first, None)).await.is_err() {
                    return;
                }
            }
            while let Some(ev) = rx.recv().await {
                let out = match ev {
                    Event::PromptLogprobs(_) => continue,
                    Event::Piece { text, logprob, .. } => {
                        let lp = if want_lp {
                            if chat {
                                json!({"content": logprob.iter().map(|lp| chat_logprob(&loaded, lp)).collect::<Vec<_>>()})
                            } else {
                                legacy_logprobs(
                                    &loaded,
                                    logprob.iter().map(|lp| (lp.id, Some(lp))),
                                    0,
                                )
                            }
                        } else {
                            Value::Null
                        };
                        if text.is_empty() && !want_lp {
                            continue;
                        }
                        if chat {
                            chunk(
                                json!([{"index": i, "delta": {"content": text}, "logprobs": lp, "finish_reason": null}]),
                                None,
                            )
                        } else {
                            chunk(
                                json!([{"index": i, "text": text, "logprobs": lp, "finish_reason": null}]),
                                None,
                            )
                        }
                    }
                    Event::Done(s) => {
                        n_prompt = s.n_prompt;
                        n_gen += s.n_generated;
                        let fr = finish_reason(s.finish);
                        if chat {
                            chunk(
                                json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": fr}]),
                                None,
                            )
                        } else {
                            chunk(
                                json!([{"index": i, "text": "", "logprobs": null, "finish_reason": fr}]),
                                None,
                            )
                        }
                    }
                    Event::Failed(e) => SseEvent::default().data(e.body().to_string()),
                };
                // A send fails when the client has gone; dropping `rx` then stops the generation.
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        }
        if include_usage {
            let _ = tx
                .send(chunk(json!([]), Some(usage(n_prompt, n_gen))))
                .await;
        }
        let _ = tx.send(SseEvent::default().data("[DONE]")).await;
    });
    let s = stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    );
    Ok(Sse::new(s.boxed()).keep_alive(KeepAlive::default()))
}

/// The legacy completions `logprobs` object for `(token, logprob)` pairs; `offset`
/// is the character offset of the first token in the returned text.
fn legacy_logprobs<'a>(
    l: &Loaded,
    items: impl Iterator<Item = (u32, Option<&'a TokenLogprob>)>,
    mut offset: usize,
) -> Value {
    let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for (id, lp) in items {
        let (t, _) = token_text(l, id);
        offsets.push(offset);
        offset += t.chars().count();
        tokens.push(t);
        lps.push(lp.map(|x| x.logprob));
        tops.push(lp.map(|x| {
            let m: serde_json::Map<String, Value> = x
                .top
                .iter()
                .map(|&(id, p)| (token_text(l, id).0, json!(p)))
                .collect();
            Value::Object(m)
        }));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

pub async fn completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let loaded = state.registry.get(&req.model).await?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "suffix",
            "suffix (fill-in-the-middle) is not supported",
        ));
    }
    let (prompt_text, prompt) = match req.prompt {
        Prompt::Text(t) => (t.clone(), loaded.model.tokenizer.encode(&t, true, true)),
        Prompt::Texts(v) if v.len() == 1 => (
            v[0].clone(),
            loaded.model.tokenizer.encode(&v[0], true, true),
        ),
        Prompt::Texts(_) => {
            return Err(ApiError::bad_request(
                "prompt",
                "one prompt per request (send a string)",
            ))
        }
        Prompt::Tokens(t) => {
            let n_vocab = loaded.model.hparams.n_vocab;
            if let Some(bad) = t.iter().find(|&&id| id as usize >= n_vocab) {
                return Err(ApiError::bad_request(
                    "prompt",
                    format!("token {bad} is not in the vocabulary of {n_vocab}"),
                ));
            }
            (loaded.model.tokenizer.decode(&t, true), t)
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request("prompt", "the prompt is empty"));
    }
    let lp = match req.logprobs {
        None => None,
        Some(n) if (0..=5).contains(&n) => Some(n as usize),
        Some(n) => {
            return Err(ApiError::bad_request(
                "logprobs",
                format!("logprobs must be between 0 and 5, got {n}"),
            ))
        }
    };
    let mut sampling = req.sampling.typed()?;
    sampling.fill_from(&loaded.defaults());
    let max_tokens = positive("max_tokens", sampling.max_tokens)?.or(Some(16));
    let stop = sampling
        .stop
        .take()
        .map(|s| s.into_vec())
        .unwrap_or_default();
    let prompt_lp = if req.echo { lp } else { None };
    let prep = prepare(
        &state,
        loaded,
        prompt,
        &sampling,
        max_tokens,
        stop,
        lp,
        prompt_lp,
        "openai_completions",
        "cmpl",
        req.stream_options.is_some_and(|o| o.include_usage),
    )?;
    if req.stream {
        let id = prep.id.clone();
        return Ok(with_id(
            stream_response(state, prep, false)?.into_response(),
            &id,
        ));
    }
    let id = prep.id.clone();
    let prompt_ids = prep.jobs[0].prompt.clone();
    let mut choices = Vec::new();
    let (mut n_prompt, mut n_gen) = (0, 0);
    for (i, job) in prep.jobs.into_iter().enumerate() {
        let c = collect(&state, &prep.loaded, job).await?;
        let s = c.stats.unwrap();
        n_prompt = s.n_prompt;
        n_gen += s.n_generated;
        let mut text = String::new();
        if req.echo {
            text.push_str(&prompt_text);
        }
        text.push_str(&c.text);
        let logprobs = lp.map(|_| {
            let gen = c.tokens.iter().map(|(id, _, lp)| (*id, lp.as_ref()));
            if req.echo {
                let p = prompt_ids
                    .iter()
                    .zip(c.prompt_lps.iter())
                    .map(|(id, lp)| (*id, lp.as_ref()));
                legacy_logprobs(&prep.loaded, p.chain(gen), 0)
            } else {
                legacy_logprobs(&prep.loaded, gen, 0)
            }
        });
        choices.push(json!({"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish_reason(s.finish)}));
    }
    let body = json!({
        "id": id, "object": "text_completion", "created": now(), "model": prep.loaded.name,
        "system_fingerprint": fingerprint(&prep.loaded), "choices": choices, "usage": usage(n_prompt, n_gen),
    });
    Ok(with_id(axum::Json(body).into_response(), &id))
}

pub async fn list_models(State(state): State<AppState>) -> impl IntoResponse {
    let data: Vec<Value> = state
        .registry
        .names()
        .into_iter()
        .map(|n| json!({"id": n, "object": "model", "created": 0, "owned_by": "mori"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data}))
}
