//! A loaded model: its file, hyper-parameters, tokenizer and network.

use std::path::Path;
use std::sync::Arc;

use mori_formats::GgufFile;
use mori_kernels::{GgmlType, ThreadPool};

use crate::arch::{Logits, Network};
use crate::hparams::HParams;
use crate::kv_cache::KvCache;
use crate::tokenizer::Tokenizer;
use crate::{registry, Error, Result};

/// What a person wants to know about a model file at a glance.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: String,
    pub arch: String,
    pub name: Option<String>,
    pub n_params: u64,
    pub file_size: u64,
    /// Count of tensors per element type, most common first.
    pub tensor_types: Vec<(GgmlType, usize)>,
}

pub struct Model {
    pub hparams: HParams,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
    file: Arc<GgufFile>,
    net: Box<dyn Network>,
}

impl Model {
    /// Opens a GGUF file and builds its network; every weight is checked
    /// against the hyper-parameters before anything runs.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let file = Arc::new(GgufFile::open(path)?);
        let shown = path.display().to_string();
        let arch = file.require_str("general.architecture")?.to_string();
        let entry = registry::lookup(&arch).ok_or_else(|| Error::UnknownArchitecture {
            path: shown.clone(),
            arch: arch.clone(),
            supported: registry::supported(),
        })?;
        let tokenizer = Tokenizer::from_gguf(&file).map_err(|source| Error::Tokenizer {
            path: shown.clone(),
            source,
        })?;
        let hparams = HParams::from_gguf(&file, &arch, tokenizer.n_vocab())?;
        let net = (entry.load)(file.clone(), hparams.clone())?;
        let info = ModelInfo {
            path: shown,
            arch,
            name: file.get_str("general.name")?.map(str::to_string),
            n_params: file.tensors().iter().map(|t| t.n_elements()).sum(),
            file_size: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            tensor_types: count_types(&file),
        };
        tracing::debug!(arch = %info.arch, n_params = info.n_params, "model loaded");
        Ok(Model {
            hparams,
            tokenizer,
            info,
            file,
            net,
        })
    }

    /// A KV cache able to hold `n_ctx` positions.
    pub fn new_cache(&self, n_ctx: usize) -> KvCache {
        self.net.new_cache(n_ctx)
    }

    /// Runs `tokens` after whatever `cache` already holds and returns their
    /// logits, `[rows][n_vocab]` (one row for [`Logits::Last`]).
    ///
    /// Fails without touching the cache when a token is outside the vocabulary
    /// or the tokens do not fit in the context: a prompt is never cut silently.
    pub fn forward(
        &self,
        pool: &ThreadPool,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<Vec<f32>> {
        let n_vocab = self.hparams.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(Error::TokenOutOfRange { id, n_vocab });
        }
        if cache.n_used() + tokens.len() > cache.n_ctx() {
            return Err(Error::ContextFull {
                needed: tokens.len(),
                used: cache.n_used(),
                n_ctx: cache.n_ctx(),
            });
        }
        let _span = tracing::debug_span!("forward", n_tokens = tokens.len(), pos = cache.n_used())
            .entered();
        self.net.forward(pool, cache, tokens, logits)
    }

    /// The open file, for callers that want more metadata.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

fn count_types(f: &GgufFile) -> Vec<(GgmlType, usize)> {
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for t in f.tensors() {
        match counts.iter_mut().find(|(ty, _)| *ty == t.ty) {
            Some((_, c)) => *c += 1,
            None => counts.push((t.ty, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
}
