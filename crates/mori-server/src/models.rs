//! The models a server offers: loaded on first use, unloaded after an idle time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mori_engine::chat::ChatTemplate;
use mori_model::Model;

use crate::error::ApiError;

/// A loaded model with what every request needs from it.
pub struct Loaded {
    pub name: String,
    pub model: Model,
    /// The model's own chat template, or the plain transcript for a base model.
    pub template: ChatTemplate,
    pub has_own_template: bool,
    pub loaded_at: chrono::DateTime<chrono::Utc>,
    pub load_time: Duration,
}

impl Loaded {
    /// The prompt tokens for `messages` rendered through the model's chat template,
    /// ending where the assistant answers; a template error is the client's fault
    /// (a conversation shape the model refuses) and names `param`.
    pub fn chat_prompt(
        &self,
        messages: &[serde_json::Value],
        tools: Option<serde_json::Value>,
        param: &str,
    ) -> Result<Vec<u32>, ApiError> {
        let opts = mori_engine::chat::RenderOptions {
            add_generation_prompt: true,
            tools,
            ..Default::default()
        };
        let special = mori_engine::chat::SpecialTokens::from_tokenizer(&self.model.tokenizer);
        let text = self
            .template
            .render(messages, &special, &opts)
            .map_err(|e| ApiError::bad_request(param, e.to_string()))?;
        Ok(mori_engine::conversation::tokenize_rendered(
            &self.model.tokenizer,
            &text,
        ))
    }
}

struct Entry {
    path: PathBuf,
    /// Loaded model and when it was last handed out.
    slot: Option<(Arc<Loaded>, Instant)>,
}

/// Served models by name.
pub struct Registry {
    entries: Mutex<BTreeMap<String, Entry>>,
    keep_alive: Duration,
}

impl Registry {
    /// `models` are (name, path) pairs; `keep_alive` is how long an unused model stays loaded.
    pub fn new(models: Vec<(String, PathBuf)>, keep_alive: Duration) -> Self {
        let entries = models
            .into_iter()
            .map(|(n, path)| (n, Entry { path, slot: None }))
            .collect();
        Registry {
            entries: Mutex::new(entries),
            keep_alive,
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.entries.lock().unwrap().keys().cloned().collect()
    }

    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.entries
            .lock()
            .unwrap()
            .get(name)
            .map(|e| e.path.clone())
    }

    /// Currently loaded models.
    pub fn loaded(&self) -> Vec<Arc<Loaded>> {
        self.entries
            .lock()
            .unwrap()
            .values()
            .filter_map(|e| e.slot.as_ref().map(|(l, _)| l.clone()))
            .collect()
    }

    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// The model called `name`, loading it (on a blocking thread) if needed.
    pub async fn get(self: &Arc<Self>, name: &str) -> Result<Arc<Loaded>, ApiError> {
        let path = {
            let mut entries = self.entries.lock().unwrap();
            let Some(e) = entries.get_mut(name) else {
                drop(entries);
                return Err(ApiError::model_not_found(name, &self.names()));
            };
            if let Some((l, used)) = &mut e.slot {
                *used = Instant::now();
                return Ok(l.clone());
            }
            e.path.clone()
        };
        let n = name.to_string();
        let loaded = tokio::task::spawn_blocking(move || load(n, path))
            .await
            .map_err(|e| ApiError::internal(format!("loading the model failed: {e}")))??;
        let loaded = Arc::new(loaded);
        let mut entries = self.entries.lock().unwrap();
        let e = entries.get_mut(name).expect("names never disappear");
        // Two requests may load at once; the first to finish wins and the other copy is dropped.
        let l = e
            .slot
            .get_or_insert_with(|| (loaded, Instant::now()))
            .0
            .clone();
        Ok(l)
    }

    /// Unloads models unused for longer than the keep-alive time. A request that
    /// still holds one keeps it alive until it finishes (it is an `Arc`).
    pub fn unload_idle(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, e) in self.entries.lock().unwrap().iter_mut() {
            if let Some((_, used)) = &e.slot {
                if used.elapsed() >= self.keep_alive {
                    e.slot = None;
                    out.push(name.clone());
                }
            }
        }
        out
    }

    /// Marks `name` as used now (a generation that just ended).
    pub fn touch(&self, name: &str) {
        if let Some(Entry {
            slot: Some((_, used)),
            ..
        }) = self.entries.lock().unwrap().get_mut(name)
        {
            *used = Instant::now();
        }
    }
}

fn load(name: String, path: PathBuf) -> Result<Loaded, ApiError> {
    let t = Instant::now();
    let model = Model::load(&path)
        .map_err(|e| ApiError::internal(format!("model '{name}' could not be loaded: {e}")))?;
    let own = ChatTemplate::from_model(&model)
        .map_err(|e| ApiError::internal(format!("model '{name}': {e}")))?;
    let has_own_template = own.is_some();
    let template = match own {
        Some(t) => t,
        None => ChatTemplate::builtin("transcript").expect("built-in template"),
    };
    tracing::info!(model = %name, path = %path.display(), ms = t.elapsed().as_millis() as u64, "model loaded");
    Ok(Loaded {
        name,
        model,
        template,
        has_own_template,
        loaded_at: chrono::Utc::now(),
        load_time: t.elapsed(),
    })
}
