//! The manifest: what one `name:tag` is made of (layers by digest), where it came from, and
//! for a recipe the base model it was built `from`.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::name::{validate_rel_filename, ModelRef};

/// The manifest schema this crate writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Media types of manifest layers.
pub mod media_type {
    /// A GGUF model file: the model layer of a GGUF manifest.
    pub const GGUF: &str = "application/vnd.mori.model.gguf";
    /// One safetensors weight file of a Hugging Face checkpoint.
    pub const SAFETENSORS: &str = "application/vnd.mori.safetensors";
    /// `model.safetensors.index.json`, the shard map of a sharded checkpoint.
    pub const SAFETENSORS_INDEX: &str = "application/vnd.mori.safetensors.index";
    /// `config.json` or `generation_config.json`.
    pub const CONFIG: &str = "application/vnd.mori.config";
    /// `tokenizer.json`, `tokenizer_config.json`, `tokenizer.model` and friends.
    pub const TOKENIZER: &str = "application/vnd.mori.tokenizer";
    /// A LoRA adapter's weights (GGUF or PEFT safetensors).
    pub const ADAPTER: &str = "application/vnd.mori.adapter";
    /// A PEFT `adapter_config.json`; it follows the adapter layer it belongs to.
    pub const ADAPTER_CONFIG: &str = "application/vnd.mori.adapter.config";
    /// License text.
    pub const LICENSE: &str = "application/vnd.mori.license";
    /// Sampling and context parameters (JSON of [`crate::Parameters`]).
    pub const PARAMS: &str = "application/vnd.mori.params";
    /// The system prompt (text).
    pub const SYSTEM: &str = "application/vnd.mori.system";
    /// A chat template (text).
    pub const TEMPLATE: &str = "application/vnd.mori.template";
    /// Example messages (JSON list of [`crate::Message`]).
    pub const MESSAGES: &str = "application/vnd.mori.messages";
    /// Any other file of a pulled or imported checkpoint.
    pub const OTHER: &str = "application/vnd.mori.file";
}

/// One `name:tag` in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`SCHEMA_VERSION`] for manifests this crate writes.
    pub schema_version: u32,
    /// The name without tag, short form (`qwen`, `org/model`).
    pub name: String,
    /// The tag.
    pub tag: String,
    /// When the manifest was written (RFC 3339, UTC).
    pub created: String,
    /// The files that make up the model, each a blob by digest.
    pub layers: Vec<Layer>,
    /// Where a pulled model came from, pinned to a commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// For a recipe: the digest of the base model's GGUF blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Digest>,
}

/// One file of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// What the file is; one of [`media_type`].
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The file's name relative to the model directory (`model.safetensors`), where it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// Where a pulled model came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The hub endpoint (`https://huggingface.co`).
    pub endpoint: String,
    /// The repository id as the hub spells it (`Qwen/Qwen2.5-0.5B-Instruct-GGUF`).
    pub repo: String,
    /// The commit sha the files were downloaded at.
    pub revision: String,
    /// The branch, tag or commit that was asked for (`main`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The files downloaded, as named in the repository.
    pub files: Vec<String>,
}

/// How a model's weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// One GGUF file.
    Gguf,
    /// A Hugging Face directory: `config.json`, tokenizer files and `*.safetensors`.
    Safetensors,
}

impl Manifest {
    /// A fresh manifest for `name` created now.
    pub fn new(name: &ModelRef, layers: Vec<Layer>) -> Manifest {
        Manifest {
            schema_version: SCHEMA_VERSION,
            name: name.name(),
            tag: name.tag().to_string(),
            created: now_rfc3339(),
            layers,
            source: None,
            from: None,
        }
    }

    /// The manifest's `name:tag`, validated.
    pub fn model_ref(&self) -> crate::Result<ModelRef> {
        ModelRef::parse(&format!("{}:{}", self.name, self.tag))
    }

    /// The GGUF model layer, if this is a GGUF model.
    pub fn gguf_layer(&self) -> Option<&Layer> {
        self.layers
            .iter()
            .find(|l| l.media_type == media_type::GGUF)
    }

    /// GGUF when there is a GGUF layer, else safetensors.
    pub fn format(&self) -> ModelFormat {
        if self.gguf_layer().is_some() {
            ModelFormat::Gguf
        } else {
            ModelFormat::Safetensors
        }
    }

    /// Whether the manifest carries recipe layers (parameters, system prompt, …) or a `from`.
    pub fn is_recipe(&self) -> bool {
        self.from.is_some()
            || self
                .layers
                .iter()
                .any(|l| is_recipe_media_type(&l.media_type))
    }

    /// The digest that names the model's weights: the GGUF blob's digest, or for a safetensors
    /// set the digest of its file list (each `filename digest` line, sorted), which also names
    /// its directory under `snapshots/`.
    pub fn model_digest(&self) -> Digest {
        if let Some(layer) = self.gguf_layer() {
            return layer.digest.clone();
        }
        let mut lines: Vec<String> = self
            .layers
            .iter()
            .filter(|l| !is_recipe_media_type(&l.media_type))
            .map(|l| format!("{} {}\n", l.filename.as_deref().unwrap_or(""), l.digest))
            .collect();
        lines.sort();
        let mut hasher = Sha256::new();
        for line in lines {
            hasher.update(line.as_bytes());
        }
        Digest::from_hasher(hasher)
    }

    /// The sum of all layer sizes.
    pub fn total_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Checks what serde cannot: the schema version, the name and every layer's file name.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "schema version {} is not supported (expected {SCHEMA_VERSION})",
                self.schema_version
            ));
        }
        self.model_ref().map_err(|e| e.to_string())?;
        for layer in &self.layers {
            if let Some(f) = &layer.filename {
                validate_rel_filename(f).map_err(|e| e.to_string())?;
            }
        }
        if self.layers.is_empty() {
            return Err("it has no layers".into());
        }
        Ok(())
    }
}

/// Whether layers of this media type belong to a recipe rather than to the model's weights.
pub(crate) fn is_recipe_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        media_type::ADAPTER
            | media_type::ADAPTER_CONFIG
            | media_type::LICENSE
            | media_type::PARAMS
            | media_type::SYSTEM
            | media_type::TEMPLATE
            | media_type::MESSAGES
    )
}

/// The media type a checkpoint file gets by its name.
pub(crate) fn media_type_for_file(filename: &str) -> &'static str {
    let base = filename.rsplit('/').next().unwrap_or(filename);
    match base {
        "config.json" | "generation_config.json" => media_type::CONFIG,
        "model.safetensors.index.json" => media_type::SAFETENSORS_INDEX,
        "tokenizer.json"
        | "tokenizer_config.json"
        | "tokenizer.model"
        | "special_tokens_map.json"
        | "vocab.json"
        | "merges.txt" => media_type::TOKENIZER,
        _ if base.ends_with(".safetensors") => media_type::SAFETENSORS,
        _ if base.ends_with(".gguf") => media_type::GGUF,
        _ if base.eq_ignore_ascii_case("license")
            || base.to_ascii_lowercase().starts_with("license.") =>
        {
            media_type::LICENSE
        }
        _ => media_type::OTHER,
    }
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_validates() {
        let d = Digest::of_bytes(b"x");
        let mut m = Manifest::new(
            &ModelRef::parse("org/m:q4").unwrap(),
            vec![Layer {
                media_type: media_type::GGUF.into(),
                digest: d.clone(),
                size: 1,
                filename: Some("m.gguf".into()),
            }],
        );
        m.source = Some(Source {
            endpoint: "http://h".into(),
            repo: "Org/M".into(),
            revision: "abc".into(),
            reference: Some("main".into()),
            files: vec!["m.gguf".into()],
        });
        let json = serde_json::to_string_pretty(&m).unwrap();
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert!(back.validate().is_ok());
        assert_eq!(back.model_digest(), d);
        assert!(!back.is_recipe());
        m.layers[0].filename = Some("../../etc/passwd".into());
        assert!(m.validate().is_err());
        m.layers[0].filename = None;
        m.schema_version = 7;
        assert!(m.validate().unwrap_err().contains("schema version 7"));
    }
}
