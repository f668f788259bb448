//! Ollama's API: `/api/chat`, `/api/generate` (NDJSON streams), `/api/tags`,
//! `/api/show`, `/api/ps`, `/api/version`, with Ollama's option names and defaults.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use mori_engine::generate::{FinishReason, GenerateOptions};
use mori_engine::sampling::SamplingParams;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::models::Loaded;
use crate::openai::rand_seed;
use crate::worker::{self, Event, Job, Stats};
use crate::{ApiJson, AppState};
use mori_model::ModelInfo;

/// The version Mori reports: Ollama clients compare it against the features they need.
const OLLAMA_COMPAT_VERSION: &str = "0.12.0";

/// Ollama's `options` (the ones that mean something to Mori; others are ignored
/// as Ollama ignores options a runner does not use).
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    num_ctx: Option<i64>,
    num_predict: Option<i64>,
    temperature: Option<f32>,
    top_k: Option<i64>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    typical_p: Option<f32>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    seed: Option<i64>,
    stop: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<Value>,
    stream: Option<bool>,
    #[serde(default)]
    options: Options,
    tools: Option<Value>,
    format: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    model: String,
    #[serde(default)]
    prompt: String,
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    stream: Option<bool>,
    #[serde(default)]
    options: Options,
    format: Option<Value>,
    suffix: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ShowRequest {
    model: Option<String>,
    name: Option<String>,
}

fn err(e: ApiError) -> ApiError {
    e.ollama()
}

fn check_format(f: &Option<Value>) -> Result<(), ApiError> {
    match f {
        None => Ok(()),
        Some(Value::String(s)) if s.is_empty() => Ok(()),
        Some(_) => Err(err(ApiError::bad_request(
            "format",
            "structured output (format) is not supported yet",
        ))),
    }
}

impl Options {
    /// Fills what the request left out from a recipe's defaults.
    fn fill_from(&mut self, d: &crate::models::Defaults) {
        self.num_ctx = self.num_ctx.or(d.num_ctx.map(|n| n as i64));
        self.num_predict = self.num_predict.or(d.num_predict.map(|n| n as i64));
        self.temperature = self.temperature.or(d.temperature);
        self.top_k = self.top_k.or(d.top_k.map(|n| n as i64));
        self.top_p = self.top_p.or(d.top_p);
        self.min_p = self.min_p.or(d.min_p);
        self.repeat_penalty = self.repeat_penalty.or(d.repeat_penalty);
        self.repeat_last_n = self.repeat_last_n.or(d.repeat_last_n.map(|n| n as i64));
        self.seed = self.seed.or(d.seed.map(|n| n as i64));
        if self.stop.is_none() && !d.stop.is_empty() {
            self.stop = Some(d.stop.clone());
        }
    }
}

/// Engine parameters from Ollama options, with Ollama's defaults.
fn params(o: &Options, n_vocab: usize) -> Result<(SamplingParams, Option<usize>), ApiError> {
    let _ = n_vocab;
    let nonneg = |name: &str, v: Option<i64>| -> Result<Option<usize>, ApiError> {
        match v {
            Some(x) if x < 0 => Err(err(ApiError::bad_request(
                name,
                format!("{name} must not be negative, got {x}"),
            ))),
            Some(x) => Ok(Some(x as usize)),
            None => Ok(None),
        }
    };
    // num_predict: -1 (or absent) means no limit, -2 fill the context; Mori stops at the context either way.
    let max_tokens = match o.num_predict {
        None | Some(-1) | Some(-2) => None,
        Some(x) if x < -2 => {
            return Err(err(ApiError::bad_request(
                "num_predict",
                format!("num_predict must be -2, -1 or a count, got {x}"),
            )))
        }
        Some(x) => Some(x as usize),
    };
    let p = SamplingParams {
        temperature: o.temperature.unwrap_or(0.8),
        top_k: nonneg("top_k", o.top_k)?.unwrap_or(40),
        top_p: o.top_p.unwrap_or(0.9),
        min_p: o.min_p.unwrap_or(0.0),
        typical_p: o.typical_p.unwrap_or(1.0),
        repeat_penalty: o.repeat_penalty.unwrap_or(1.1),
        presence_penalty: o.presence_penalty.unwrap_or(0.0),
        frequency_penalty: o.frequency_penalty.unwrap_or(0.0),
        penalty_last_n: nonneg("repeat_last_n", o.repeat_last_n)?.unwrap_or(64),
        logit_bias: Vec::new(),
        seed: match o.seed {
            Some(s) if s >= 0 => s as u64,
            _ => rand_seed(),
        },
    };
    // Out-of-range values are refused here, before a slot is taken.
    mori_engine::sampling::Sampler::new(p.clone(), n_vocab)
        .map_err(|e| err(ApiError::bad_request("options", e.to_string())))?;
    Ok((p, max_tokens))
}

fn num_ctx(state: &AppState, l: &Loaded, o: &Options) -> Result<usize, ApiError> {
    match o.num_ctx {
        Some(x) if x < 1 => Err(err(ApiError::bad_request(
            "num_ctx",
            format!("num_ctx must be at least 1, got {x}"),
        ))),
        Some(x) => Ok(state.n_ctx(&l.model, Some(x as usize))),
        None => Ok(state.n_ctx(&l.model, None)),
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn done_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length | FinishReason::ContextFull => "length",
    }
}

fn final_fields(v: &mut Value, s: &Stats, l: &Loaded, id: &str) {
    let ns = |d: std::time::Duration| d.as_nanos() as u64;
    v["done"] = json!(true);
    v["done_reason"] = json!(done_reason(s.finish));
    v["total_duration"] = json!(ns(s.total_time));
    v["load_duration"] = json!(ns(l.load_time));
    v["prompt_eval_count"] = json!(s.n_prompt);
    v["prompt_eval_duration"] = json!(ns(s.prompt_time));
    v["eval_count"] = json!(s.n_generated);
    v["eval_duration"] = json!(ns(s.gen_time));
    v["id"] = json!(id);
}

/// Runs `job` and answers with one JSON object, or an NDJSON stream of them.
async fn respond(
    state: AppState,
    loaded: Arc<Loaded>,
    job: Job,
    stream: bool,
    chat: bool,
) -> Result<Response, ApiError> {
    let id = job.id.clone();
    let mut rx = worker::start(&state, loaded.clone(), job).map_err(err)?;
    let piece = move |text: &str, l: &Loaded| -> Value {
        if chat {
            json!({"model": l.name, "created_at": now_rfc3339(), "message": {"role": "assistant", "content": text}, "done": false})
        } else {
            json!({"model": l.name, "created_at": now_rfc3339(), "response": text, "done": false})
        }
    };
    if !stream {
        let mut text = String::new();
        let mut stats = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Piece { text: t, .. } => text.push_str(&t),
                Event::Done(s) => stats = Some(s),
                Event::PromptLogprobs(_) => {}
                Event::Failed(e) => return Err(err(e)),
            }
        }
        let s = stats
            .ok_or_else(|| err(ApiError::internal("the generation ended without finishing")))?;
        let mut v = piece(&text, &loaded);
        final_fields(&mut v, &s, &loaded, &id);
        let mut resp = axum::Json(v).into_response();
        resp.headers_mut()
            .insert("x-completion-id", HeaderValue::from_str(&id).unwrap());
        return Ok(resp);
    }
    let id2 = id.clone();
    let lines = stream::unfold((rx, loaded, false), move |(mut rx, loaded, finished)| {
        let id = id2.clone();
        async move {
            if finished {
                return None;
            }
            loop {
                let ev = rx.recv().await?;
                let (v, end) = match ev {
                    Event::Piece { text, .. } if text.is_empty() => continue,
                    Event::Piece { text, .. } => (piece(&text, &loaded), false),
                    Event::Done(s) => {
                        let mut v = piece("", &loaded);
                        final_fields(&mut v, &s, &loaded, &id);
                        (v, true)
                    }
                    Event::PromptLogprobs(_) => continue,
                    Event::Failed(e) => (err(e).body(), true),
                };
                let mut line = v.to_string();
                line.push('\n');
                return Some((Ok::<_, Infallible>(line), (rx, loaded, end)));
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(lines.boxed()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp.headers_mut()
        .insert("x-completion-id", HeaderValue::from_str(&id).unwrap());
    Ok(resp)
}

fn job(
    prompt: Vec<u32>,
    p: SamplingParams,
    max_tokens: Option<usize>,
    stop: Vec<String>,
    n_ctx: usize,
    api: &'static str,
) -> Job {
    Job {
        prompt,
        params: p,
        opts: GenerateOptions {
            max_tokens,
            stop,
            stop_tokens: Vec::new(),
            logprobs: None,
        },
        n_ctx,
        prompt_logprobs: None,
        api,
        id: format!("ollama-{}", uuid::Uuid::new_v4().simple()),
    }
}

pub async fn chat(
    State(state): State<AppState>,
    ApiJson(mut req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let loaded = state.registry.get(&req.model).await.map_err(err)?;
    check_format(&req.format)?;
    if req.messages.is_empty() {
        // Ollama answers an empty chat by loading the model.
        return Ok(axum::Json(json!({"model": loaded.name, "created_at": now_rfc3339(), "message": {"role": "assistant", "content": ""}, "done_reason": "load", "done": true})).into_response());
    }
    for (i, m) in req.messages.iter().enumerate() {
        if !m.get("role").is_some_and(|r| r.is_string())
            || !m
                .get("content")
                .is_none_or(|c| c.is_string() || c.is_null())
        {
            return Err(err(ApiError::bad_request(
                &format!("messages[{i}]"),
                "each message needs a string role and string content",
            )));
        }
        if m.get("images")
            .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(err(ApiError::bad_request(
                &format!("messages[{i}].images"),
                "images are not supported by this model",
            )));
        }
    }
    let prompt = loaded
        .chat_prompt(&req.messages, req.tools.clone(), "messages")
        .map_err(err)?;
    req.options.fill_from(&loaded.defaults());
    let n_ctx = num_ctx(&state, &loaded, &req.options)?;
    state.check_prompt(prompt.len(), n_ctx).map_err(err)?;
    let (p, max_tokens) = params(&req.options, loaded.model.hparams.n_vocab)?;
    let mut stop = loaded.template.stop_strings().to_vec();
    stop.extend(req.options.stop.clone().unwrap_or_default());
    let j = job(prompt, p, max_tokens, stop, n_ctx, "ollama_chat");
    respond(state, loaded, j, req.stream.unwrap_or(true), true).await
}

pub async fn generate(
    State(state): State<AppState>,
    ApiJson(mut req): ApiJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    let loaded = state.registry.get(&req.model).await.map_err(err)?;
    check_format(&req.format)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(err(ApiError::bad_request(
            "suffix",
            "suffix (fill-in-the-middle) is not supported",
        )));
    }
    if req.prompt.is_empty() {
        return Ok(axum::Json(json!({"model": loaded.name, "created_at": now_rfc3339(), "response": "", "done_reason": "load", "done": true})).into_response());
    }
    // A model without a template of its own continues the prompt as text, as
    // `mori run` does; `raw` asks for that explicitly.
    req.options.fill_from(&loaded.defaults());
    let prompt = if req.raw || !loaded.has_own_template {
        let mut text = String::new();
        let recipe_system = loaded.recipe.as_ref().and_then(|r| r.system.as_deref());
        if let Some(s) = req.system.as_deref().or(recipe_system).filter(|_| !req.raw) {
            text.push_str(s);
            text.push_str("\n\n");
        }
        text.push_str(&req.prompt);
        loaded.model.tokenizer.encode(&text, true, true)
    } else {
        let mut messages = Vec::new();
        if let Some(s) = &req.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": req.prompt}));
        loaded.chat_prompt(&messages, None, "prompt").map_err(err)?
    };
    let n_ctx = num_ctx(&state, &loaded, &req.options)?;
    state.check_prompt(prompt.len(), n_ctx).map_err(err)?;
    let (p, max_tokens) = params(&req.options, loaded.model.hparams.n_vocab)?;
    let stop = req.options.stop.clone().unwrap_or_default();
    let j = job(prompt, p, max_tokens, stop, n_ctx, "ollama_generate");
    respond(state, loaded, j, req.stream.unwrap_or(true), false).await
}

fn details(info: &ModelInfo) -> Value {
    json!({
        "format": "gguf",
        "family": info.arch,
        "families": [info.arch],
        "parameter_size": human_params(info.n_params),
        "quantization_level": info.tensor_types.first().map(|t| t.0.name()).unwrap_or("unknown"),
    })
}

fn human_params(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n => format!("{n}"),
    }
}

pub async fn tags(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut models = Vec::new();
    for name in state.registry.names() {
        let path = state.registry.path(&name).unwrap_or_default();
        let meta = std::fs::metadata(&path).ok();
        let modified = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339())
            .unwrap_or_default();
        // The header is enough: listing must not load every model.
        let header = path.clone();
        let info = tokio::task::spawn_blocking(move || ModelInfo::read(header))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let details = match info {
            Ok(info) => details(&info),
            Err(e) => {
                tracing::warn!(model = %name, error = %e, "cannot read the model's header");
                json!({"format": "gguf", "error": e.to_string()})
            }
        };
        models.push(json!({
            "name": name, "model": name, "modified_at": modified,
            "size": meta.map(|m| m.len()).unwrap_or(0),
            "digest": digest_of(&state, &name, &path),
            "details": details,
        }));
    }
    Ok(axum::Json(json!({"models": models})).into_response())
}

/// The model's content digest (hex) when it comes from the store; for a file
/// served by path, a cheap stable identity of the file instead.
fn digest_of(state: &AppState, name: &str, path: &std::path::Path) -> String {
    match state.registry.spec(name).and_then(|s| s.digest) {
        Some(d) => d.trim_start_matches("sha256:").to_string(),
        None => format!("{:x}", fingerprint_of(path)),
    }
}

/// A cheap stable identity for a file outside the store.
fn fingerprint_of(path: &std::path::Path) -> u128 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    if let Ok(m) = std::fs::metadata(path) {
        m.len().hash(&mut h);
        m.modified().ok().hash(&mut h);
    }
    h.finish() as u128
}

pub async fn show(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ShowRequest>,
) -> Result<Response, ApiError> {
    let name = req
        .model
        .or(req.name)
        .ok_or_else(|| err(ApiError::bad_request("model", "missing the model name")))?;
    let l = state.registry.get(&name).await.map_err(err)?;
    let hp = &l.model.hparams;
    let arch = &hp.arch;
    let model_info = json!({
        "general.architecture": arch,
        "general.parameter_count": l.model.info.n_params,
        format!("{arch}.context_length"): hp.n_ctx_train,
        format!("{arch}.embedding_length"): hp.n_embd,
        format!("{arch}.block_count"): hp.n_layer,
        format!("{arch}.attention.head_count"): hp.n_head,
        format!("{arch}.attention.head_count_kv"): hp.n_head_kv,
        format!("{arch}.feed_forward_length"): hp.n_ff,
        "tokenizer.ggml.vocab_size": hp.n_vocab,
    });
    let from = match &l.digest {
        Some(d) => d.clone(),
        None => state
            .registry
            .path(&name)
            .unwrap_or_default()
            .display()
            .to_string(),
    };
    let parameters = parameter_lines(&l.defaults());
    let mut modelfile = format!("FROM {from}\n");
    for line in parameters.lines() {
        modelfile.push_str(&format!("PARAMETER {line}\n"));
    }
    let recipe = l.recipe.clone().unwrap_or_default();
    if let Some(sys) = &recipe.system {
        modelfile.push_str(&format!("SYSTEM \"\"\"{sys}\"\"\"\n"));
    }
    for (role, content) in &recipe.messages {
        modelfile.push_str(&format!("MESSAGE {role} \"\"\"{content}\"\"\"\n"));
    }
    Ok(axum::Json(json!({
        "modelfile": modelfile,
        "parameters": parameters,
        "system": recipe.system,
        "license": recipe.license,
        "messages": recipe.messages.iter().map(|(r, c)| json!({"role": r, "content": c})).collect::<Vec<_>>(),
        "template": l.template.source(),
        "details": details(&l.model.info),
        "model_info": model_info,
        "capabilities": ["completion"],
        "modified_at": l.loaded_at.to_rfc3339(),
    }))
    .into_response())
}

/// A recipe's defaults as Ollama prints them: one `key value` line each.
fn parameter_lines(d: &crate::models::Defaults) -> String {
    let mut out = String::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push_str(&format!("{k} {v}\n"));
        }
    };
    put("temperature", d.temperature.map(|v| v.to_string()));
    put("top_k", d.top_k.map(|v| v.to_string()));
    put("top_p", d.top_p.map(|v| v.to_string()));
    put("min_p", d.min_p.map(|v| v.to_string()));
    put("repeat_penalty", d.repeat_penalty.map(|v| v.to_string()));
    put("repeat_last_n", d.repeat_last_n.map(|v| v.to_string()));
    put("seed", d.seed.map(|v| v.to_string()));
    put("num_ctx", d.num_ctx.map(|v| v.to_string()));
    put("num_predict", d.num_predict.map(|v| v.to_string()));
    for s in &d.stop {
        put("stop", Some(format!("{s:?}")));
    }
    out
}

pub async fn ps(State(state): State<AppState>) -> impl IntoResponse {
    let keep = state.registry.keep_alive();
    let models: Vec<Value> = state
        .registry
        .loaded()
        .iter()
        .map(|l| {
            let path = state.registry.path(&l.name).unwrap_or_default();
            json!({
                "name": l.name, "model": l.name, "size": l.model.info.file_size,
                "digest": digest_of(&state, &l.name, &path),
                "details": details(&l.model.info),
                "expires_at": (chrono::Utc::now() + chrono::Duration::from_std(keep).unwrap_or_default()).to_rfc3339(),
                "size_vram": 0,
            })
        })
        .collect();
    axum::Json(json!({"models": models}))
}

pub async fn version() -> impl IntoResponse {
    axum::Json(json!({"version": OLLAMA_COMPAT_VERSION, "mori": env!("CARGO_PKG_VERSION")}))
}
