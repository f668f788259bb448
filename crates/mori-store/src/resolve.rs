//! Finding a model by what the user typed: a name, a digest or a prefix of one, or a path;
//! and giving a safetensors set its file names in `snapshots/`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HEX_LEN, MIN_PREFIX_LEN};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{is_recipe_media_type, Layer, Manifest, ModelFormat};
use crate::name::{validate_rel_filename, ModelRef};
use crate::recipe::Recipe;
use crate::store::{
    file_name, is_gguf, link_blob, read_dir_sorted, Store, StoredManifest, BLOBS, SNAPSHOTS, TMP,
};

/// What [`Store::resolve`] found.
#[derive(Clone, Debug)]
pub struct ResolvedModel {
    /// The GGUF file to load, or for [`ModelFormat::Safetensors`] the directory holding the set.
    pub path: PathBuf,
    /// How the weights are stored.
    pub format: ModelFormat,
    /// The model's digest; `None` when the argument was a path outside the store.
    pub digest: Option<Digest>,
    /// The name it was resolved through, if any.
    pub name: Option<ModelRef>,
    /// The manifest, if the model is in the store under a name.
    pub manifest: Option<Manifest>,
    /// The recipe (parameters, system prompt, …) when the name is a recipe.
    pub recipe: Option<Recipe>,
}

impl Store {
    /// Finds a model by what the user typed, in this order:
    ///
    /// 1. `sha256:<hex>` — a digest, or a unique prefix of at least 12 hex digits;
    /// 2. a `name[:tag]` with a manifest in the store;
    /// 3. a path to an existing file (GGUF) or directory (safetensors);
    /// 4. a bare unique hex prefix of at least 12 digits.
    ///
    /// A recipe name also yields its [`Recipe`]; a digest yields the bare model.
    pub fn resolve(&self, arg: &str) -> Result<ResolvedModel> {
        self.resolve_in(arg, None)
    }

    /// [`Store::resolve`], with relative paths taken relative to `base` when given.
    pub(crate) fn resolve_in(&self, arg: &str, base: Option<&Path>) -> Result<ResolvedModel> {
        if arg.is_empty() {
            return Err(Error::NotFound {
                what: arg.into(),
                reason: "the model name is empty".into(),
            });
        }
        if let Some(hex) = arg.strip_prefix("sha256:") {
            return self.resolve_digest(arg, hex);
        }
        if let Ok(name) = ModelRef::parse(arg) {
            if self.manifest_path(&name).is_file() {
                return self.resolve_name(&name);
            }
        }
        let path = match base {
            Some(base) => base.join(arg),
            None => PathBuf::from(arg),
        };
        if path.exists() {
            return Ok(ResolvedModel {
                format: if path.is_dir() {
                    ModelFormat::Safetensors
                } else {
                    ModelFormat::Gguf
                },
                path,
                digest: None,
                name: None,
                manifest: None,
                recipe: None,
            });
        }
        if arg.len() >= MIN_PREFIX_LEN
            && arg.len() <= HEX_LEN
            && arg.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return self.resolve_digest(arg, arg);
        }
        Err(Error::NotFound {
            what: arg.into(),
            reason: format!(
                "no such name in the store at {} and no file at {}",
                self.root().display(),
                path.display()
            ),
        })
    }

    /// Resolves a name with a manifest.
    pub(crate) fn resolve_name(&self, name: &ModelRef) -> Result<ResolvedModel> {
        let manifest = self.read_manifest(name)?;
        let recipe = if manifest.is_recipe() {
            Some(self.recipe(&manifest)?)
        } else {
            None
        };
        let (path, format) = match manifest.gguf_layer() {
            Some(layer) => {
                let path = self.blob_path(&layer.digest);
                if !path.is_file() {
                    return Err(Error::MissingBlob {
                        digest: layer.digest.to_string(),
                        name: name.to_string(),
                    });
                }
                (path, ModelFormat::Gguf)
            }
            None => (self.snapshot(&manifest)?, ModelFormat::Safetensors),
        };
        Ok(ResolvedModel {
            path,
            format,
            digest: Some(manifest.model_digest()),
            name: Some(name.clone()),
            manifest: Some(manifest),
            recipe,
        })
    }

    /// Resolves a full digest or a unique prefix of one (`what` is what the user typed).
    fn resolve_digest(&self, what: &str, hex: &str) -> Result<ResolvedModel> {
        if hex.len() < MIN_PREFIX_LEN
            || hex.len() > HEX_LEN
            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Error::InvalidDigest {
                digest: what.into(),
                reason: format!(
                    "expected {MIN_PREFIX_LEN} to {HEX_LEN} hex digits after 'sha256:'"
                ),
            });
        }
        let prefix = hex.to_ascii_lowercase();
        let (manifests, _) = self.manifests()?;
        let mut candidates: BTreeSet<Digest> = read_dir_sorted(&self.dir(BLOBS))?
            .iter()
            .filter_map(|p| Digest::from_blob_file_name(&file_name(p)))
            .filter(|d| d.hex().starts_with(&prefix))
            .collect();
        for s in &manifests {
            let d = s.manifest.model_digest();
            if s.manifest.format() == ModelFormat::Safetensors && d.hex().starts_with(&prefix) {
                candidates.insert(d);
            }
        }
        let digest = match candidates.len() {
            0 => {
                return Err(Error::NotFound {
                    what: what.into(),
                    reason: format!(
                        "no blob in the store at {} has that digest",
                        self.root().display()
                    ),
                })
            }
            1 => candidates.into_iter().next().expect("one candidate"),
            _ => {
                return Err(Error::AmbiguousDigest {
                    prefix: what.into(),
                    candidates: candidates.iter().map(|d| d.to_string()).collect(),
                })
            }
        };
        // Prefer a plain model that has this digest as its model; a recipe adds things a bare
        // digest does not ask for.
        let mut owners: Vec<&StoredManifest> = manifests
            .iter()
            .filter(|s| s.manifest.model_digest() == digest)
            .collect();
        owners.sort_by_key(|s| (s.manifest.is_recipe(), s.name.clone()));
        if let Some(owner) = owners.first() {
            let mut resolved = self.resolve_name(&owner.name)?;
            if owner.manifest.is_recipe() {
                resolved.name = None;
                resolved.manifest = None;
                resolved.recipe = None;
            }
            return Ok(resolved);
        }
        if let Some(s) = manifests
            .iter()
            .find(|s| s.manifest.layers.iter().any(|l| l.digest == digest))
        {
            let layer = s
                .manifest
                .layers
                .iter()
                .find(|l| l.digest == digest)
                .expect("found above");
            return Err(Error::NotAModel {
                what: what.into(),
                reason: format!("it is a {} layer of {}", layer.media_type, s.name),
            });
        }
        let path = self.blob_path(&digest);
        if !is_gguf(&path)? {
            return Err(Error::NotAModel {
                what: what.into(),
                reason: format!("blob {digest} is not a GGUF file and no manifest names it"),
            });
        }
        Ok(ResolvedModel {
            path,
            format: ModelFormat::Gguf,
            digest: Some(digest),
            name: None,
            manifest: None,
            recipe: None,
        })
    }

    /// The directory `snapshots/<model digest>/` in which each file of a safetensors set appears
    /// under its own name (a link to its blob), built atomically on first use.
    pub fn snapshot(&self, manifest: &Manifest) -> Result<PathBuf> {
        let name = manifest.model_ref()?;
        let files: Vec<&Layer> = manifest
            .layers
            .iter()
            .filter(|l| !is_recipe_media_type(&l.media_type) && l.filename.is_some())
            .collect();
        for layer in &files {
            validate_rel_filename(layer.filename.as_deref().expect("filtered"))?;
            if !self.has_blob(&layer.digest) {
                return Err(Error::MissingBlob {
                    digest: layer.digest.to_string(),
                    name: name.to_string(),
                });
            }
        }
        let dir = self.dir(SNAPSHOTS).join(manifest.model_digest().hex());
        let complete = |dir: &Path| {
            files
                .iter()
                .all(|l| dir.join(l.filename.as_deref().expect("filtered")).is_file())
        };
        if dir.is_dir() {
            if complete(&dir) {
                return Ok(dir);
            }
            fs::remove_dir_all(&dir).at(&dir)?;
        }
        // Building writes to tmp/, which garbage collection clears unless a writer is active.
        let _lock = self.writer_lock()?;
        let tmp_dir = self.dir(TMP);
        let tmp = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempdir_in(&tmp_dir)
            .at(&tmp_dir)?;
        for layer in &files {
            let rel = layer.filename.as_deref().expect("filtered");
            let link = tmp.path().join(rel);
            if let Some(parent) = link.parent() {
                fs::create_dir_all(parent).at(parent)?;
            }
            let depth = rel.split('/').count();
            link_blob(&self.blob_path(&layer.digest), &layer.digest, depth, &link)?;
        }
        let built = tmp.keep();
        if let Err(e) = fs::rename(&built, &dir) {
            let _ = fs::remove_dir_all(&built);
            // Another process may have built the same snapshot a moment earlier.
            if !(dir.is_dir() && complete(&dir)) {
                return Err(e).at(&dir);
            }
        }
        Ok(dir)
    }
}
