//! Mori's HTTP server: OpenAI- and Ollama-compatible APIs over `mori-engine`.
//!
//! Only this crate knows HTTP and the wire types. A request is parsed and checked
//! here (limits, API key), turned into an engine [`worker::Job`], admitted by the
//! engine's scheduler (slots plus a bounded queue; a full queue is a 503 with
//! `Retry-After`), run on a blocking thread, and streamed back as SSE (OpenAI) or
//! NDJSON (Ollama). A client that disconnects stops its generation.

pub mod error;
pub mod metrics;
pub mod models;
mod ollama;
mod openai;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use mori_engine::scheduler::Scheduler;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::models::Registry;

/// Everything `mori serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The served models.
    pub models: Vec<models::ModelSpec>,
    pub addr: SocketAddr,
    /// Accepted API keys; empty means no key is required.
    pub api_keys: Vec<String>,
    /// Generations running at once.
    pub parallel: usize,
    /// Generations allowed to wait for a slot before requests are refused.
    pub queue: usize,
    /// CPU threads in all; each slot gets an equal share.
    pub threads: usize,
    /// Context per request (default: the model's, at most 4096).
    pub ctx: Option<usize>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Longest prompt in tokens (besides the context limit).
    pub max_prompt_tokens: usize,
    /// Origins allowed by CORS; empty means CORS is off.
    pub cors_origins: Vec<String>,
    /// How long an unused model stays loaded.
    pub keep_alive: Duration,
}

impl ServerConfig {
    pub fn threads_per_slot(&self) -> usize {
        (self.threads / self.parallel.max(1)).max(1)
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub registry: Arc<Registry>,
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    /// sha256 of each accepted key, compared in constant time.
    key_hashes: Arc<Vec<[u8; 32]>>,
}

impl AppState {
    pub fn new(config: ServerConfig) -> Self {
        let registry = Arc::new(Registry::new(config.models.clone(), config.keep_alive));
        let scheduler = Scheduler::new(config.parallel, config.queue);
        let key_hashes = config
            .api_keys
            .iter()
            .map(|k| sha256(k.as_bytes()))
            .collect();
        AppState {
            config: Arc::new(config),
            registry,
            scheduler,
            metrics: Arc::new(Metrics::new()),
            key_hashes: Arc::new(key_hashes),
        }
    }

    /// Context for a request: asked for (Ollama's `num_ctx`), else the server's,
    /// else the model's own up to 4096; never more than the model was trained for.
    pub fn n_ctx(&self, model: &mori_model::Model, asked: Option<usize>) -> usize {
        let train = model.hparams.n_ctx_train.max(1);
        asked
            .or(self.config.ctx)
            .unwrap_or(train.min(4096))
            .clamp(1, train)
    }
}

impl AppState {
    /// Refuses a prompt over the server's limit or one that leaves no room in the context.
    pub fn check_prompt(&self, n_prompt: usize, n_ctx: usize) -> Result<(), ApiError> {
        if n_prompt > self.config.max_prompt_tokens {
            return Err(ApiError::bad_request(
                "prompt",
                format!(
                    "the prompt is {n_prompt} tokens long; this server accepts at most {}",
                    self.config.max_prompt_tokens
                ),
            ));
        }
        if n_prompt >= n_ctx {
            return Err(ApiError::context_exceeded(n_prompt, n_ctx));
        }
        Ok(())
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/models", get(openai::list_models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(state.clone(), require_key));
    let open = Router::new()
        .route("/health", get(health))
        .route("/api/version", get(ollama::version))
        .route("/", get(|| async { "Mori is running" }));
    let mut app = api
        .merge(open)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ));
    if !state.config.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = state
            .config
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any),
        );
    }
    let request_id = header::HeaderName::from_static("x-request-id");
    app.layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
                })
                .on_response(
                    tower_http::trace::DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Millis),
                ),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Binds and serves until the process ends; unloads idle models in the background.
pub async fn serve(config: ServerConfig) -> std::io::Result<()> {
    let state = AppState::new(config);
    let listener = tokio::net::TcpListener::bind(state.config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, models = ?state.registry.names(), "serving");
    println!(
        "Mori is serving {} on http://{}",
        state.registry.names().join(", "),
        listener.local_addr()?
    );
    spawn_unloader(state.clone());
    axum::serve(listener, router(state)).await
}

/// Serves on an already bound listener (tests bind port 0 and read the port first).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
) -> std::io::Result<()> {
    let state = AppState::new(config);
    spawn_unloader(state.clone());
    axum::serve(listener, router(state)).await
}

fn spawn_unloader(state: AppState) {
    let every = (state.registry.keep_alive() / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(30));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            for name in state.registry.unload_idle() {
                tracing::info!(model = %name, "unloaded after the keep-alive time");
            }
        }
    });
}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let (running, waiting) = state.scheduler.load();
    axum::Json(serde_json::json!({
        "status": "ok",
        "slots": state.scheduler.n_slots(),
        "running": running,
        "waiting": waiting,
        "models": state.registry.names(),
    }))
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.queue_changed(&state.scheduler);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.key_hashes.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| sha256(k.trim().as_bytes()));
    let ok = given.is_some_and(|g| {
        // Every key is compared, so the time does not tell which one nearly matched.
        state
            .key_hashes
            .iter()
            .fold(subtle::Choice::from(0u8), |acc, k| acc | k.ct_eq(&g))
            .into()
    });
    if !ok {
        let e = ApiError::unauthorized();
        let e = if req.uri().path().starts_with("/api/") {
            e.ollama()
        } else {
            e
        };
        return e.into_response();
    }
    next.run(req).await
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    state.metrics.request(&route, resp.status().as_u16());
    resp
}

/// A JSON body whose errors are API errors naming the field at fault
/// (axum's own extractor answers in plain text).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ollama = req.uri().path().starts_with("/api/");
        let wrap = |e: ApiError| if ollama { e.ollama() } else { e };
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                wrap(ApiError::too_large(
                    "the request body is larger than the server accepts (--max-body)",
                ))
            } else {
                wrap(ApiError::bad_request(
                    "",
                    format!("could not read the request body: {r}"),
                ))
            }
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            wrap(ApiError::bad_request(
                "",
                format!("the request body is not UTF-8: {e}"),
            ))
        })?;
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let param = if path == "." || path == "?" {
                    String::new()
                } else {
                    path
                };
                let msg = if param.is_empty() {
                    format!("invalid request: {}", e.inner())
                } else {
                    format!("invalid request field {param}: {}", e.inner())
                };
                wrap(ApiError::bad_request(&param, msg))
            })
    }
}
