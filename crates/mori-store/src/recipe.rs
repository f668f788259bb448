//! Recipes: a base model's digest plus parameters, prompts, example messages, adapters and
//! license text, each stored as a blob. [`Store::create`] builds one from a `Morifile`;
//! [`Store::recipe`] reads one back.

use std::fs;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{is_recipe_media_type, media_type, Layer, Manifest, ModelFormat};
use crate::morifile::{Message, Morifile, Parameters};
use crate::name::ModelRef;
use crate::store::{file_name, is_gguf, Store};

/// A recipe as the CLI and server use it: everything is resolved to files in the store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recipe {
    /// The base model's GGUF digest (`None` only for a manifest with recipe layers but no `from`).
    pub from: Option<Digest>,
    pub parameters: Parameters,
    pub system: Option<String>,
    pub template: Option<String>,
    pub messages: Vec<Message>,
    /// LoRA adapters, pinned as blobs; not applied by the engine yet.
    pub adapters: Vec<Adapter>,
    /// License texts.
    pub licenses: Vec<String>,
}

/// A LoRA adapter stored with a recipe.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    /// GGUF or PEFT safetensors weights.
    pub format: AdapterFormat,
    /// The weights blob.
    pub path: PathBuf,
    pub digest: Digest,
    /// The PEFT `adapter_config.json` blob, when there is one.
    pub config: Option<PathBuf>,
    /// The file name the adapter had.
    pub filename: Option<String>,
}

/// How an adapter's weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterFormat {
    Gguf,
    Safetensors,
}

impl Store {
    /// Reads the recipe layers of a manifest (empty parts for a plain model).
    pub fn recipe(&self, manifest: &Manifest) -> Result<Recipe> {
        let name = format!("{}:{}", manifest.name, manifest.tag);
        let text = |layer: &Layer| -> Result<String> {
            let path = self.blob_path(&layer.digest);
            let bytes = fs::read(&path).at(&path)?;
            String::from_utf8(bytes).map_err(|_| Error::BadManifest {
                path: path.clone(),
                reason: format!("the {} layer of {name} is not UTF-8 text", layer.media_type),
            })
        };
        let json_err = |layer: &Layer, e: serde_json::Error| Error::BadManifest {
            path: self.blob_path(&layer.digest),
            reason: format!(
                "the {} layer of {name} is not valid JSON: {e}",
                layer.media_type
            ),
        };
        let mut recipe = Recipe {
            from: manifest.from.clone(),
            ..Recipe::default()
        };
        for layer in &manifest.layers {
            match layer.media_type.as_str() {
                media_type::PARAMS => {
                    recipe.parameters =
                        serde_json::from_str(&text(layer)?).map_err(|e| json_err(layer, e))?;
                }
                media_type::MESSAGES => {
                    recipe.messages =
                        serde_json::from_str(&text(layer)?).map_err(|e| json_err(layer, e))?;
                }
                media_type::SYSTEM => recipe.system = Some(text(layer)?),
                media_type::TEMPLATE => recipe.template = Some(text(layer)?),
                media_type::LICENSE => recipe.licenses.push(text(layer)?),
                media_type::ADAPTER => {
                    let is_gguf_file = layer
                        .filename
                        .as_deref()
                        .is_some_and(|f| f.ends_with(".gguf"));
                    recipe.adapters.push(Adapter {
                        format: if is_gguf_file {
                            AdapterFormat::Gguf
                        } else {
                            AdapterFormat::Safetensors
                        },
                        path: self.blob_path(&layer.digest),
                        digest: layer.digest.clone(),
                        config: None,
                        filename: layer.filename.clone(),
                    });
                }
                media_type::ADAPTER_CONFIG => {
                    // A config layer belongs to the adapter layer just before it.
                    if let Some(last) = recipe.adapters.last_mut() {
                        last.config = Some(self.blob_path(&layer.digest));
                    }
                }
                _ => {}
            }
        }
        Ok(recipe)
    }

    /// Builds the recipe `name` from the Morifile at `morifile`.
    ///
    /// `FROM` is resolved like [`Store::resolve`] with relative paths taken from the Morifile's
    /// directory; a GGUF file is copied into the store. A `FROM` recipe is extended: its
    /// parameters are overlaid by the new ones, and its system prompt, template, messages and
    /// licenses are kept unless the Morifile sets them; its adapters are kept and new ones added.
    pub fn create(&self, name: &str, morifile: &Path) -> Result<Manifest> {
        let name = ModelRef::parse(name)?;
        let label = morifile.display().to_string();
        let text = fs::read_to_string(morifile).at(morifile)?;
        let parsed = Morifile::parse(&text, &label)?;
        let base_dir = morifile.parent().unwrap_or(Path::new("."));
        let recipe_err = |message: String| Error::Recipe {
            file: label.clone(),
            message,
        };

        let _lock = self.writer_lock()?;
        // The base: its model layer, and the recipe layers it already has.
        let resolved = self
            .resolve_in(&parsed.from, Some(base_dir))
            .map_err(|e| recipe_err(format!("FROM {}: {e}", parsed.from)))?;
        if resolved.format != ModelFormat::Gguf {
            return Err(recipe_err(format!(
                "FROM {}: the base must be a GGUF model; this is a safetensors directory",
                parsed.from
            )));
        }
        let (model_layer, base_manifest) = match &resolved.manifest {
            Some(m) => (
                m.gguf_layer()
                    .expect("a GGUF manifest has a GGUF layer")
                    .clone(),
                Some(m.clone()),
            ),
            None => {
                let (digest, size) = match &resolved.digest {
                    Some(d) => (
                        d.clone(),
                        fs::metadata(&resolved.path).at(&resolved.path)?.len(),
                    ),
                    None => {
                        if !is_gguf(&resolved.path)? {
                            return Err(recipe_err(format!(
                                "FROM {}: {}",
                                parsed.from,
                                Error::NotGguf {
                                    path: resolved.path.clone()
                                }
                            )));
                        }
                        self.add_blob_file(&resolved.path)?
                    }
                };
                let filename = resolved
                    .path
                    .file_name()
                    .and_then(|f| f.to_str())
                    .filter(|f| f.ends_with(".gguf"))
                    .map(str::to_string);
                let layer = Layer {
                    media_type: media_type::GGUF.into(),
                    digest,
                    size,
                    filename,
                };
                (layer, None)
            }
        };
        let base_recipe = match &base_manifest {
            Some(m) => self.recipe(m)?,
            None => Recipe::default(),
        };

        let mut layers = vec![model_layer.clone()];
        let mut add_blob = |media: &str, bytes: &[u8]| -> Result<()> {
            let (digest, size) = self.add_blob_bytes(bytes)?;
            layers.push(Layer {
                media_type: media.into(),
                digest,
                size,
                filename: None,
            });
            Ok(())
        };
        let parameters = base_recipe.parameters.overlaid(&parsed.parameters);
        if !parameters.is_empty() {
            let json = serde_json::to_vec(&parameters).expect("parameters serialise");
            add_blob(media_type::PARAMS, &json)?;
        }
        if let Some(system) = parsed.system.as_ref().or(base_recipe.system.as_ref()) {
            add_blob(media_type::SYSTEM, system.as_bytes())?;
        }
        if let Some(template) = parsed.template.as_ref().or(base_recipe.template.as_ref()) {
            add_blob(media_type::TEMPLATE, template.as_bytes())?;
        }
        let messages = if parsed.messages.is_empty() {
            &base_recipe.messages
        } else {
            &parsed.messages
        };
        if !messages.is_empty() {
            let json = serde_json::to_vec(messages).expect("messages serialise");
            add_blob(media_type::MESSAGES, &json)?;
        }
        let licenses = if parsed.licenses.is_empty() {
            &base_recipe.licenses
        } else {
            &parsed.licenses
        };
        for license in licenses {
            add_blob(media_type::LICENSE, license.as_bytes())?;
        }
        // Adapters: the base's (already blobs), then the Morifile's.
        if let Some(m) = &base_manifest {
            layers.extend(
                m.layers
                    .iter()
                    .filter(|l| {
                        matches!(
                            l.media_type.as_str(),
                            media_type::ADAPTER | media_type::ADAPTER_CONFIG
                        )
                    })
                    .cloned(),
            );
        }
        for adapter in &parsed.adapters {
            let path = base_dir.join(adapter);
            let found =
                adapter_files(&path).map_err(|m| recipe_err(format!("ADAPTER {adapter}: {m}")))?;
            for (file, media) in found {
                let (digest, size) = self.add_blob_file(&file)?;
                layers.push(Layer {
                    media_type: media.into(),
                    digest,
                    size,
                    filename: Some(file_name(&file)),
                });
            }
        }
        debug_assert!(layers[1..]
            .iter()
            .all(|l| is_recipe_media_type(&l.media_type)));

        let mut manifest = Manifest::new(&name, layers);
        manifest.from = Some(model_layer.digest);
        manifest.source = base_manifest.and_then(|m| m.source);
        self.write_manifest(&manifest)?;
        Ok(manifest)
    }
}

/// The files of an adapter at `path` with their media types: a GGUF file, a PEFT safetensors
/// file (with `adapter_config.json` beside it when present), or a PEFT directory.
fn adapter_files(path: &Path) -> std::result::Result<Vec<(PathBuf, &'static str)>, String> {
    let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        let weights = path.join("adapter_model.safetensors");
        let config = path.join("adapter_config.json");
        for needed in [&weights, &config] {
            if !needed.is_file() {
                return Err(format!(
                    "the directory {} has no {}; a PEFT adapter directory needs adapter_model.safetensors and adapter_config.json",
                    path.display(),
                    file_name(needed)
                ));
            }
        }
        return Ok(vec![
            (weights, media_type::ADAPTER),
            (config, media_type::ADAPTER_CONFIG),
        ]);
    }
    let name = file_name(path);
    if name.ends_with(".gguf") {
        if !is_gguf(path).map_err(|e| e.to_string())? {
            return Err(format!(
                "{} does not start with the GGUF magic",
                path.display()
            ));
        }
        return Ok(vec![(path.to_path_buf(), media_type::ADAPTER)]);
    }
    if name.ends_with(".safetensors") {
        let mut files = vec![(path.to_path_buf(), media_type::ADAPTER)];
        let config = path.with_file_name("adapter_config.json");
        if config.is_file() {
            files.push((config, media_type::ADAPTER_CONFIG));
        }
        return Ok(files);
    }
    Err(format!(
        "{} is neither a .gguf nor a .safetensors file nor a PEFT adapter directory",
        path.display()
    ))
}
