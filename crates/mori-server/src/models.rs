//! The models a server offers: loaded on first use, unloaded after an idle time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mori_engine::chat::ChatTemplate;
use mori_model::Model;

use crate::error::ApiError;

/// Sampling and length defaults a recipe sets for its model; a request's own
/// values win over them, and they win over the API's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<usize>,
    pub seed: Option<u64>,
    pub num_ctx: Option<usize>,
    pub num_predict: Option<usize>,
    pub stop: Vec<String>,
}

/// What a recipe (a domain model: a base model plus the company's system
/// prompt, example messages, template and parameters) adds to the base model.
#[derive(Clone, Debug, Default)]
pub struct Recipe {
    /// The system prompt, used when a conversation brings none of its own.
    pub system: Option<String>,
    /// A chat template (Jinja, Hugging Face style) replacing the model's own.
    pub template: Option<String>,
    /// (role, content) messages placed before every conversation, after the system prompt.
    pub messages: Vec<(String, String)>,
    pub defaults: Defaults,
    pub license: Option<String>,
}

/// One model a server offers.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// The name clients use.
    pub name: String,
    /// The GGUF file.
    pub path: PathBuf,
    /// The content digest it was resolved to (`sha256:…`), when it comes from the store.
    pub digest: Option<String>,
    pub recipe: Option<Recipe>,
}

impl ModelSpec {
    /// A plain model file served as `name`.
    pub fn file(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        ModelSpec {
            name: name.into(),
            path: path.into(),
            digest: None,
            recipe: None,
        }
    }
}

/// A loaded model with what every request needs from it.
pub struct Loaded {
    pub name: String,
    pub model: Model,
    /// What the recipe adds, when the model is one.
    pub recipe: Option<Recipe>,
    pub digest: Option<String>,
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
        let messages = self.with_recipe_messages(messages);
        let opts = mori_engine::chat::RenderOptions {
            add_generation_prompt: true,
            tools,
            ..Default::default()
        };
        let special = mori_engine::chat::SpecialTokens::from_tokenizer(&self.model.tokenizer);
        let text = self
            .template
            .render(&messages, &special, &opts)
            .map_err(|e| ApiError::bad_request(param, e.to_string()))?;
        Ok(mori_engine::conversation::tokenize_rendered(
            &self.model.tokenizer,
            &text,
        ))
    }

    /// `messages` with the recipe's system prompt in front (unless the
    /// conversation has its own) and its example messages after the system
    /// prompt.
    pub fn with_recipe_messages(&self, messages: &[serde_json::Value]) -> Vec<serde_json::Value> {
        let Some(r) = &self.recipe else {
            return messages.to_vec();
        };
        let is_system =
            |m: &serde_json::Value| m.get("role").and_then(|r| r.as_str()) == Some("system");
        let n_system = messages.iter().take_while(|m| is_system(m)).count();
        let mut out = Vec::with_capacity(messages.len() + r.messages.len() + 1);
        if n_system == 0 {
            if let Some(sys) = &r.system {
                out.push(serde_json::json!({"role": "system", "content": sys}));
            }
        }
        out.extend_from_slice(&messages[..n_system]);
        out.extend(
            r.messages
                .iter()
                .map(|(role, content)| serde_json::json!({"role": role, "content": content})),
        );
        out.extend_from_slice(&messages[n_system..]);
        out
    }

    /// The recipe's defaults (empty for a plain model).
    pub fn defaults(&self) -> Defaults {
        self.recipe
            .as_ref()
            .map(|r| r.defaults.clone())
            .unwrap_or_default()
    }
}

struct Entry {
    spec: ModelSpec,
    /// Loaded model and when it was last handed out.
    slot: Option<(Arc<Loaded>, Instant)>,
}

/// Served models by name.
pub struct Registry {
    entries: Mutex<BTreeMap<String, Entry>>,
    keep_alive: Duration,
}

impl Registry {
    /// `models` are what is offered, by name; `keep_alive` is how long an unused model stays loaded.
    pub fn new(models: Vec<ModelSpec>, keep_alive: Duration) -> Self {
        let entries = models
            .into_iter()
            .map(|spec| (spec.name.clone(), Entry { spec, slot: None }))
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
        self.spec(name).map(|s| s.path)
    }

    /// What `name` is (file, digest, recipe).
    pub fn spec(&self, name: &str) -> Option<ModelSpec> {
        let entries = self.entries.lock().unwrap();
        lookup(&entries, name).map(|n| entries[&n].spec.clone())
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
        let spec = {
            let mut entries = self.entries.lock().unwrap();
            let Some(name) = lookup(&entries, name) else {
                drop(entries);
                return Err(ApiError::model_not_found(name, &self.names()));
            };
            let e = entries.get_mut(&name).expect("just found");
            if let Some((l, used)) = &mut e.slot {
                *used = Instant::now();
                return Ok(l.clone());
            }
            e.spec.clone()
        };
        let name = spec.name.clone();
        let loaded = tokio::task::spawn_blocking(move || load(spec))
            .await
            .map_err(|e| ApiError::internal(format!("loading the model failed: {e}")))??;
        let loaded = Arc::new(loaded);
        let mut entries = self.entries.lock().unwrap();
        let e = entries.get_mut(&name).expect("names never disappear");
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

/// The served name `name` stands for: itself, or `name:latest` when it has no
/// tag (as Ollama clients expect of store names).
fn lookup(entries: &BTreeMap<String, Entry>, name: &str) -> Option<String> {
    if entries.contains_key(name) {
        return Some(name.to_string());
    }
    let tagged = format!("{name}:latest");
    (!name.contains(':') && entries.contains_key(&tagged)).then_some(tagged)
}

fn load(spec: ModelSpec) -> Result<Loaded, ApiError> {
    let ModelSpec {
        name,
        path,
        digest,
        recipe,
    } = spec;
    let t = Instant::now();
    let model = Model::load(&path)
        .map_err(|e| ApiError::internal(format!("model '{name}' could not be loaded: {e}")))?;
    let own = match recipe.as_ref().and_then(|r| r.template.as_deref()) {
        Some(src) => Some(
            ChatTemplate::new(format!("{name} (recipe)"), src)
                .map_err(|e| ApiError::internal(format!("model '{name}': recipe template: {e}")))?,
        ),
        None => ChatTemplate::from_model(&model)
            .map_err(|e| ApiError::internal(format!("model '{name}': {e}")))?,
    };
    let has_own_template = own.is_some();
    let template = match own {
        Some(t) => t,
        None => ChatTemplate::builtin("transcript").expect("built-in template"),
    };
    tracing::info!(model = %name, path = %path.display(), ms = t.elapsed().as_millis() as u64, "model loaded");
    Ok(Loaded {
        name,
        model,
        recipe,
        digest,
        template,
        has_own_template,
        loaded_at: chrono::Utc::now(),
        load_time: t.elapsed(),
    })
}
