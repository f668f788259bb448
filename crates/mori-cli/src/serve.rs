//! `mori serve`: the OpenAI- and Ollama-compatible HTTP server.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use mori_server::models::ModelSpec;
use mori_server::ServerConfig;

#[derive(Args)]
pub struct ServeArgs {
    /// A model to serve (repeatable): a .gguf PATH, a store name[:tag] or digest, or
    /// NAME=MODEL to serve it as NAME; a file's name defaults to its name without
    /// .gguf. Without any, every GGUF model of the store is served.
    #[arg(long = "model", short = 'm')]
    models: Vec<String>,
    /// Address to listen on; loopback unless you say otherwise.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port; Ollama's, so Ollama clients find Mori without changes.
    #[arg(long, default_value_t = 11434)]
    port: u16,
    /// Require this API key as 'Authorization: Bearer KEY' (repeatable).
    #[arg(long = "api-key")]
    api_keys: Vec<String>,
    /// A file of API keys, one per line ('#' starts a comment).
    #[arg(long)]
    api_keys_file: Option<PathBuf>,
    /// Generations that run at once.
    #[arg(long, default_value_t = 2)]
    parallel: usize,
    /// Generations that may wait for a slot; more get 503 with Retry-After.
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// CPU threads in all (default: all cores), shared by the slots.
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Context per request in tokens (default: the model's, at most 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body: usize,
    /// Longest prompt in tokens.
    #[arg(long, default_value_t = 32768)]
    max_prompt_tokens: usize,
    /// Allow browser requests from this origin (repeatable; CORS is off without it).
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Seconds an unused model stays loaded.
    #[arg(long, default_value_t = 300)]
    keep_alive: u64,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let mut models: Vec<ModelSpec> = Vec::new();
    for m in &a.models {
        let (alias, target) = match m.split_once('=') {
            Some((n, t)) if !n.is_empty() && !n.contains('/') => (Some(n.to_string()), t),
            _ => (None, m.as_str()),
        };
        let path = PathBuf::from(target);
        let spec = if path.is_file() {
            let name = match alias {
                Some(n) => n,
                None => path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .with_context(|| format!("--model {m:?} has no file name"))?,
            };
            ModelSpec::file(name, path)
        } else {
            let store = mori_store::Store::from_env()?;
            let mut spec = crate::store::server_model(&store, target).with_context(|| {
                format!("--model {m:?} is neither a file nor a model in the store")
            })?;
            if let Some(n) = alias {
                spec.name = n;
            }
            spec
        };
        if models.iter().any(|s| s.name == spec.name) {
            bail!(
                "two models are called {:?}; name them with NAME=MODEL",
                spec.name
            );
        }
        models.push(spec);
    }
    if a.models.is_empty() {
        models = crate::store::all_server_models()?;
        if models.is_empty() {
            bail!("no models to serve: pass --model PATH or put models in the store (mori pull, mori import, mori create)");
        }
    }
    let mut api_keys = a.api_keys.clone();
    if let Some(f) = &a.api_keys_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        api_keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
        if api_keys.is_empty() {
            bail!("{} holds no keys", f.display());
        }
    }
    if a.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let config = ServerConfig {
        models,
        addr: SocketAddr::new(a.host, a.port),
        api_keys,
        parallel: a.parallel,
        queue: a.queue,
        threads: a
            .threads
            .unwrap_or_else(crate::commands::default_threads)
            .max(1),
        ctx: a.ctx,
        max_body_bytes: a.max_body,
        max_prompt_tokens: a.max_prompt_tokens,
        cors_origins: a.cors_origins.clone(),
        keep_alive: Duration::from_secs(a.keep_alive),
    };
    if !a.host.is_loopback() && config.api_keys.is_empty() {
        eprintln!("warning: serving on {} without an API key: anyone who can reach this address can use the models", a.host);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(mori_server::serve(config))
        .with_context(|| format!("serving on {}:{}", a.host, a.port))
}
