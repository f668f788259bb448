//! A loaded model: its file, hyper-parameters, tokenizer and network.

use std::path::Path;
use std::sync::Arc;

use mori_formats::GgufFile;
use mori_kernels::{GgmlType, ThreadPool};

use crate::arch::{Logits, Network, Scratch};
use crate::hparams::HParams;
use crate::kv_cache::KvCache;
use crate::tokenizer::Tokenizer;
use crate::{convert, registry, Error, Result};

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

impl ModelInfo {
    /// Reads what [`ModelInfo`] shows from a GGUF file's header alone, without
    /// building the network (listing many models stays cheap).
    pub fn read(path: impl AsRef<Path>) -> Result<ModelInfo> {
        let path = path.as_ref();
        if path.is_dir() {
            return ModelInfo::of_hf_dir(path);
        }
        ModelInfo::of(&GgufFile::open(path)?, path)
    }

    /// A Hugging Face directory's info from `config.json` and the safetensors
    /// headers: the GGUF architecture it converts to, its parameters and types.
    fn of_hf_dir(dir: &Path) -> Result<ModelInfo> {
        use mori_formats::safetensors::{Checkpoint, StDtype};
        let arch = convert::gguf_architecture(dir)?;
        let ckpt = Checkpoint::open_dir(dir)?;
        let (mut n_params, mut types) = (0u64, Vec::<(GgmlType, usize)>::new());
        for name in ckpt.names() {
            let t = ckpt.get(name)?;
            n_params += t.n_elements() as u64;
            let ty = match t.dtype {
                StDtype::F32 => GgmlType::F32,
                StDtype::F16 => GgmlType::F16,
                StDtype::BF16 => GgmlType::BF16,
            };
            match types.iter_mut().find(|(t, _)| *t == ty) {
                Some((_, c)) => *c += 1,
                None => types.push((ty, 1)),
            }
        }
        types.sort_by_key(|c| std::cmp::Reverse(c.1));
        let file_size = std::fs::read_dir(dir)
            .map_err(|source| Error::Io {
                path: dir.display().to_string(),
                source,
            })?
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        Ok(ModelInfo {
            path: dir.display().to_string(),
            arch,
            name: dir.file_name().map(|n| n.to_string_lossy().into_owned()),
            n_params,
            file_size,
            tensor_types: types,
        })
    }

    fn of(file: &GgufFile, path: &Path) -> Result<ModelInfo> {
        Ok(ModelInfo {
            path: path.display().to_string(),
            arch: file.require_str("general.architecture")?.to_string(),
            name: file.get_str("general.name")?.map(str::to_string),
            n_params: file.tensors().iter().map(|t| t.n_elements()).sum(),
            file_size: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            tensor_types: count_types(file),
        })
    }
}

pub struct Model {
    pub hparams: HParams,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
    file: Arc<GgufFile>,
    net: Box<dyn Network>,
}

impl Model {
    /// Opens a GGUF file, or a Hugging Face directory (see
    /// [`Model::load_hf_dir`]), and builds its network; every weight is checked
    /// against the hyper-parameters before anything runs.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        if path.is_dir() {
            return Model::load_hf_dir(path);
        }
        let file = Arc::new(GgufFile::open(path)?);
        let info = ModelInfo::of(&file, path)?;
        let entry = arch_entry(&info)?;
        let tokenizer = Tokenizer::from_gguf(&file).map_err(|source| Error::Tokenizer {
            path: path.display().to_string(),
            source,
        })?;
        Model::build(file, entry, tokenizer, info)
    }

    /// Loads a Hugging Face directory (`config.json`, safetensors weights,
    /// `tokenizer.json` or a SentencePiece `tokenizer.model`): the weights are
    /// converted once, in the checkpoint's own type, into an unlinked temporary
    /// GGUF file that is then mapped like any other. Text is encoded by the
    /// directory's `tokenizer.json` through the `tokenizers` crate where there
    /// is one; a directory with only `tokenizer.model` (ERNIE 4.5,
    /// openPangu-Embedded) encodes with the converted vocabulary's own
    /// SentencePiece tokenizer, which is llama.cpp's (for a BPE model, also
    /// SentencePiece's encodings).
    pub fn load_hf_dir(dir: &Path) -> Result<Model> {
        let io = |source| Error::Io {
            path: dir.display().to_string(),
            source,
        };
        let ft = convert::checkpoint_file_type(dir)?;
        let tmp = tempfile::Builder::new()
            .prefix("mori-hf-")
            .suffix(".gguf")
            .tempfile()
            .map_err(io)?;
        convert::convert_hf_dir(dir, tmp.path(), ft)?;
        let file = Arc::new(GgufFile::open(tmp.path())?);
        // The mapping keeps the data; the name can go now.
        drop(tmp);
        let mut info = ModelInfo::of(&file, dir)?;
        let entry = arch_entry(&info)?;
        let hf_json = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_gguf(&file)
            .and_then(|t| {
                if hf_json.is_file() {
                    t.with_hf_json(&hf_json)
                } else {
                    Ok(t)
                }
            })
            .map_err(|source| Error::Tokenizer {
                path: dir.display().to_string(),
                source,
            })?;
        info.file_size = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        Model::build(file, entry, tokenizer, info)
    }

    fn build(
        file: Arc<GgufFile>,
        entry: &registry::ArchEntry,
        tokenizer: Tokenizer,
        info: ModelInfo,
    ) -> Result<Model> {
        let hparams = HParams::from_gguf(&file, &info.arch, tokenizer.n_vocab())?;
        let net = (entry.load)(file.clone(), hparams.clone())?;
        // Loading read the header and every weight; let go of the pages whose
        // contents now live elsewhere.
        file.trim();
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
    ///
    /// Each call allocates its working memory; a token loop calls
    /// [`Model::forward_into`] instead.
    pub fn forward(
        &self,
        pool: &ThreadPool,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.forward_into(pool, cache, &mut Scratch::new(), tokens, logits, &mut out)?;
        Ok(out)
    }

    /// [`Model::forward`] with the working memory in `scratch` and the logits
    /// written to `out` (replacing its contents), both kept by the caller
    /// between calls: once they have grown to a pass's sizes, generating a
    /// token allocates nothing. Tokens refused before the pass leave `out`
    /// as it was; an error during the pass leaves it empty.
    pub fn forward_into(
        &self,
        pool: &ThreadPool,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        logits: Logits,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let n_vocab = self.hparams.n_vocab;
        if tokens.is_empty() {
            return Err(Error::Invalid(
                "a forward pass needs at least one token".into(),
            ));
        }
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
        let done = self
            .net
            .forward_into(pool, cache, scratch, tokens, logits, out);
        if done.is_err() {
            out.clear();
        }
        done
    }

    /// The record of expert routing decisions, for models with experts: call
    /// `enable()` on it, run forward passes, then `take()` the records.
    pub fn routing_trace(&self) -> Option<&crate::arch::moe::RoutingTrace> {
        self.net.routing_trace()
    }

    /// The open file, for callers that want more metadata.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

/// The registry entry of the model's architecture, or an error naming the
/// supported ones.
fn arch_entry(info: &ModelInfo) -> Result<&'static registry::ArchEntry> {
    registry::lookup(&info.arch).ok_or_else(|| Error::UnknownArchitecture {
        path: info.path.clone(),
        arch: info.arch.clone(),
        supported: registry::supported(),
    })
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
