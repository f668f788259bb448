//! Hugging Face checkpoints: safetensors files (one, or shards listed by
//! `model.safetensors.index.json`) over mmap, and the `config.json` beside them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorInfo as StInfo};
use safetensors::SafeTensors;

use crate::{Error, Result};

/// The element types Mori converts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StDtype {
    F32,
    F16,
    BF16,
}

/// One tensor of a checkpoint, borrowed from the mapping.
#[derive(Debug, Clone, Copy)]
pub struct StTensor<'a> {
    pub dtype: StDtype,
    /// Row-major shape as PyTorch gives it (`[out, in]` for a linear layer).
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

impl StTensor<'_> {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 (F16 and BF16 widen exactly).
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            StDtype::F32 => self
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            StDtype::F16 => self
                .data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            StDtype::BF16 => self
                .data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }
}

struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Offset of the data section (after the 8-byte length and the JSON header).
    data_start: usize,
    tensors: BTreeMap<String, StInfo>,
}

/// A Hugging Face model directory's weights.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name -> shard index.
    index: BTreeMap<String, usize>,
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

fn invalid(path: &Path, what: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::Invalid {
        path: path.display().to_string(),
        what: what.into(),
        msg: msg.into(),
    }
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, or the shards `dir/model.safetensors.index.json` names.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Checkpoint> {
        let dir = dir.as_ref().to_path_buf();
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| io_err(&index_path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| invalid(&index_path, "JSON", e.to_string()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| invalid(&index_path, "weight_map", "missing or not an object"))?;
            let mut files: Vec<PathBuf> = Vec::new();
            for (name, f) in map {
                let f = f.as_str().ok_or_else(|| {
                    invalid(
                        &index_path,
                        format!("weight_map[{name:?}]"),
                        "not a file name",
                    )
                })?;
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(invalid(
                        &index_path,
                        format!("weight_map[{name:?}]"),
                        format!("{f:?} is not a plain file name"),
                    ));
                }
                let p = dir.join(f);
                if !files.contains(&p) {
                    files.push(p);
                }
            }
            files
        } else if single.exists() {
            vec![single]
        } else {
            return Err(invalid(
                &dir,
                "weights",
                "no model.safetensors or model.safetensors.index.json in this directory",
            ));
        };
        let mut ckpt = Checkpoint {
            dir,
            shards: Vec::new(),
            index: BTreeMap::new(),
        };
        for path in files {
            let file = std::fs::File::open(&path).map_err(|e| io_err(&path, e))?;
            // SAFETY: the mapping is read-only and lives as long as the Checkpoint; a
            // checkpoint changed underneath a running conversion is outside our contract,
            // as for every mmap-based model loader.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| io_err(&path, e))?;
            let (header_len, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| invalid(&path, "safetensors header", e.to_string()))?;
            let data_start = 8 + header_len;
            let data_len = map.len() - data_start;
            let mut tensors = BTreeMap::new();
            for (name, info) in meta.tensors() {
                let (a, b) = info.data_offsets;
                if a > b || b > data_len {
                    return Err(invalid(
                        &path,
                        format!("tensor '{name}'"),
                        format!("data {a}..{b} lies outside the {data_len} data bytes"),
                    ));
                }
                if ckpt.index.insert(name.clone(), ckpt.shards.len()).is_some() {
                    return Err(invalid(
                        &path,
                        format!("tensor '{name}'"),
                        "appears in two shards",
                    ));
                }
                tensors.insert(name, info.clone());
            }
            ckpt.shards.push(Shard {
                path,
                map,
                data_start,
                tensors,
            });
        }
        Ok(ckpt)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// A tensor by name; an error names the file and the tensor when it is missing
    /// or of a type Mori does not read.
    pub fn get(&self, name: &str) -> Result<StTensor<'_>> {
        let shard = self
            .index
            .get(name)
            .map(|&i| &self.shards[i])
            .ok_or_else(|| {
                invalid(
                    &self.dir,
                    format!("tensor '{name}'"),
                    "missing from the checkpoint",
                )
            })?;
        let info = &shard.tensors[name];
        let dtype = match info.dtype {
            Dtype::F32 => StDtype::F32,
            Dtype::F16 => StDtype::F16,
            Dtype::BF16 => StDtype::BF16,
            other => {
                return Err(invalid(
                    &shard.path,
                    format!("tensor '{name}'"),
                    format!("element type {other:?} (supported: F32, F16, BF16)"),
                ))
            }
        };
        let (a, b) = info.data_offsets;
        Ok(StTensor {
            dtype,
            shape: &info.shape,
            data: &shard.map[shard.data_start + a..shard.data_start + b],
        })
    }
}

/// `config.json`: the architecture and its hyper-parameters, with typed getters
/// whose errors name the file and the key.
pub struct HfConfig {
    path: PathBuf,
    pub json: serde_json::Value,
}

impl HfConfig {
    pub fn open(path: impl AsRef<Path>) -> Result<HfConfig> {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        let json =
            serde_json::from_str(&text).map_err(|e| invalid(&path, "JSON", e.to_string()))?;
        Ok(HfConfig { path, json })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| invalid(&self.path, format!("key '{key}'"), "missing"))
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.json.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                invalid(
                    &self.path,
                    format!("key '{key}'"),
                    format!("{v} is not a count"),
                )
            }),
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.json.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                invalid(
                    &self.path,
                    format!("key '{key}'"),
                    format!("{v} is not a number"),
                )
            }),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.json.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| {
                invalid(
                    &self.path,
                    format!("key '{key}'"),
                    format!("{v} is not true or false"),
                )
            }),
        }
    }

    pub fn opt_str(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(|v| v.as_str())
    }

    /// An error about `key` of this file.
    pub fn error(&self, key: &str, msg: impl Into<String>) -> Error {
        invalid(&self.path, format!("key '{key}'"), msg)
    }
}
