//! Hyper-parameters of a decoder-only transformer, read from GGUF metadata.
//!
//! Keys are prefixed with the architecture name (`llama.block_count`,
//! `qwen2.attention.head_count`...), as GGUF writes them.

use mori_formats::{Array, GgufFile, Value};

use crate::{Error, Result};

/// How positions are stretched beyond the training context.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// YaRN with its original training context.
    Yarn {
        factor: f32,
        n_ctx_orig: usize,
        beta_fast: f32,
        beta_slow: f32,
    },
}

/// Sliding-window attention: some layers see only the last `window` positions.
#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindow {
    /// Positions a windowed layer's query sees, its own included.
    pub window: usize,
    /// Per layer: whether it attends to the window (true) or to every position.
    pub layers: Vec<bool>,
    /// RoPE base of the windowed layers (`rope.freq_base_swa`).
    pub rope_base: f32,
}

/// RoPE base of windowed layers when the file gives none (llama.cpp's default).
pub const DEFAULT_SWA_ROPE_BASE: f32 = 10000.0;

/// llama.cpp's default layer pattern per architecture when the file has no
/// `attention.sliding_window_pattern`: in each group of `n` layers all but the
/// last use the window. Architectures without an entry ignore windows.
fn default_swa_pattern(arch: &str) -> Option<usize> {
    match arch {
        "gemma3" => Some(6),
        _ => None,
    }
}

/// What the file says the network is. Runtime choices are not here.
#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    pub arch: String,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Width of one attention head for queries and keys.
    pub head_dim: usize,
    /// Width of one value head (equal to `head_dim` in every family so far).
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Leading dimensions of each head that RoPE rotates.
    pub n_rot: usize,
    pub rope_scaling: RopeScaling,
    /// Sliding-window attention, for architectures that have it.
    pub swa: Option<SlidingWindow>,
    /// Logits are soft-capped to ±this (`final_logit_softcapping`), when set.
    pub final_logit_softcap: Option<f32>,
    /// The mixture-of-experts feed-forward, for files that have one.
    pub moe: Option<MoeHParams>,
}

/// How a token's router scores become expert probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    /// Softmax over all experts (Mixtral, Qwen3-MoE, ERNIE-4.5-MoE).
    Softmax,
}

/// The mixture-of-experts part of a network (`{arch}.expert_*` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct MoeHParams {
    /// Routed experts per MoE layer (`expert_count`).
    pub n_expert: usize,
    /// Experts each token is sent to (`expert_used_count`).
    pub n_expert_used: usize,
    /// Hidden width of one routed expert (`expert_feed_forward_length`).
    pub n_ff_exp: usize,
    /// Hidden width of the shared expert that every token also goes through
    /// (`expert_shared_feed_forward_length`); 0 when there is none.
    pub n_ff_shexp: usize,
    /// Shared experts fused into that width (`expert_shared_count`, informative).
    pub n_expert_shared: usize,
    /// Layers before the first MoE layer, which keep a dense feed-forward
    /// (`leading_dense_block_count`).
    pub n_layer_dense_lead: usize,
    /// After the dense lead, every `layer_step`-th layer is MoE
    /// (`interleave_moe_layer_step`, counted as llama.cpp does: layer `il` is
    /// MoE when `(il + 1) % layer_step == 0`).
    pub layer_step: usize,
    pub gating: Gating,
    /// Divide the chosen experts' probabilities by their sum.
    pub norm_weights: bool,
}

impl MoeHParams {
    /// Whether layer `il` routes through experts rather than a dense FFN.
    pub fn is_moe_layer(&self, il: usize) -> bool {
        il >= self.n_layer_dense_lead && (il + 1).is_multiple_of(self.layer_step)
    }
}

impl HParams {
    /// Writes these hyper-parameters under `{arch}.*` as llama.cpp names them
    /// (the vocabulary is written with the tokenizer, not here).
    pub fn write_gguf(&self, w: &mut mori_formats::GgufWriter) {
        let k = |s: &str| format!("{}.{s}", self.arch);
        w.add("general.architecture", Value::String(self.arch.clone()));
        w.add(k("context_length"), Value::U32(self.n_ctx_train as u32));
        w.add(k("embedding_length"), Value::U32(self.n_embd as u32));
        w.add(k("block_count"), Value::U32(self.n_layer as u32));
        w.add(k("feed_forward_length"), Value::U32(self.n_ff as u32));
        w.add(k("attention.head_count"), Value::U32(self.n_head as u32));
        w.add(
            k("attention.head_count_kv"),
            Value::U32(self.n_head_kv as u32),
        );
        w.add(k("attention.key_length"), Value::U32(self.head_dim as u32));
        w.add(
            k("attention.value_length"),
            Value::U32(self.head_dim_v as u32),
        );
        w.add(
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(self.rms_eps),
        );
        w.add(k("rope.freq_base"), Value::F32(self.rope_base));
        w.add(k("rope.dimension_count"), Value::U32(self.n_rot as u32));
        if let Some(swa) = &self.swa {
            w.add(k("attention.sliding_window"), Value::U32(swa.window as u32));
            // Files of the usual pattern leave it out, as llama.cpp's converter does.
            let pattern = default_swa_pattern(&self.arch).map(|n| swa_pattern(n, self.n_layer));
            if pattern.as_ref() != Some(&swa.layers) {
                w.add(
                    k("attention.sliding_window_pattern"),
                    Value::Array(Array::Bool(swa.layers.clone())),
                );
            }
            if swa.rope_base != DEFAULT_SWA_ROPE_BASE {
                w.add(k("rope.freq_base_swa"), Value::F32(swa.rope_base));
            }
        }
        if let Some(cap) = self.final_logit_softcap {
            w.add(k("final_logit_softcapping"), Value::F32(cap));
        }
        match self.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                w.add(k("rope.scaling.type"), Value::String("linear".into()));
                w.add(k("rope.scaling.factor"), Value::F32(factor));
            }
            RopeScaling::Yarn {
                factor,
                n_ctx_orig,
                beta_fast,
                beta_slow,
            } => {
                w.add(k("rope.scaling.type"), Value::String("yarn".into()));
                w.add(k("rope.scaling.factor"), Value::F32(factor));
                w.add(
                    k("rope.scaling.original_context_length"),
                    Value::U32(n_ctx_orig as u32),
                );
                w.add(k("rope.scaling.yarn_beta_fast"), Value::F32(beta_fast));
                w.add(k("rope.scaling.yarn_beta_slow"), Value::F32(beta_slow));
            }
        }
        if let Some(m) = &self.moe {
            w.add(k("expert_count"), Value::U32(m.n_expert as u32));
            w.add(k("expert_used_count"), Value::U32(m.n_expert_used as u32));
            w.add(
                k("expert_feed_forward_length"),
                Value::U32(m.n_ff_exp as u32),
            );
            w.add(
                k("leading_dense_block_count"),
                Value::U32(m.n_layer_dense_lead as u32),
            );
            w.add(
                k("interleave_moe_layer_step"),
                Value::U32(m.layer_step as u32),
            );
            if m.n_ff_shexp > 0 {
                w.add(
                    k("expert_shared_count"),
                    Value::U32(m.n_expert_shared as u32),
                );
                w.add(
                    k("expert_shared_feed_forward_length"),
                    Value::U32(m.n_ff_shexp as u32),
                );
            }
        }
    }

    /// Reads the hyper-parameters of architecture `arch` from `f`; `n_vocab`
    /// comes from the tokenizer, which every runnable file carries.
    pub fn from_gguf(f: &GgufFile, arch: &str, n_vocab: usize) -> Result<HParams> {
        let key = |k: &str| format!("{arch}.{k}");
        let n_embd = req_usize(f, &key("embedding_length"))?;
        let n_layer = req_usize(f, &key("block_count"))?;
        let n_head = per_layer_usize(f, &key("attention.head_count"), n_layer)?
            .ok_or_else(|| missing(f, &key("attention.head_count")))?;
        let n_head_kv =
            per_layer_usize(f, &key("attention.head_count_kv"), n_layer)?.unwrap_or(n_head);
        let n_ff = per_layer_usize(f, &key("feed_forward_length"), n_layer)?
            .ok_or_else(|| missing(f, &key("feed_forward_length")))?;
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(bad(
                f,
                &key("attention.head_count_kv"),
                format!(
                    "{n_head} query heads cannot be shared evenly by {n_head_kv} key/value heads"
                ),
            ));
        }
        let head_dim = opt_usize(f, &key("attention.key_length"))?.unwrap_or(n_embd / n_head);
        let head_dim_v = opt_usize(f, &key("attention.value_length"))?.unwrap_or(head_dim);
        if head_dim == 0 || head_dim_v != head_dim {
            return Err(bad(
                f,
                &key("attention.value_length"),
                format!(
                    "key width {head_dim} and value width {head_dim_v} must be equal and non-zero"
                ),
            ));
        }
        let n_rot = opt_usize(f, &key("rope.dimension_count"))?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(bad(
                f,
                &key("rope.dimension_count"),
                format!("{n_rot} rotated dimensions do not fit a head of {head_dim}"),
            ));
        }
        let rms_eps = f
            .get_f32(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        let rope_base = f.get_f32(&key("rope.freq_base"))?.unwrap_or(10000.0);
        let n_ctx_train = opt_usize(f, &key("context_length"))?.unwrap_or(2048);
        let rope_scaling = rope_scaling(f, arch, n_ctx_train)?;
        if let Some(v) = opt_usize(f, &key("vocab_size"))? {
            if v != n_vocab {
                return Err(bad(
                    f,
                    &key("vocab_size"),
                    format!("says {v} tokens but the tokenizer has {n_vocab}"),
                ));
            }
        }
        let swa = sliding_window(f, arch, n_layer)?;
        let final_logit_softcap = match f.get_f32(&key("final_logit_softcapping"))? {
            None => None,
            Some(0.0) => None,
            Some(c) if c > 0.0 && c.is_finite() => Some(c),
            Some(c) => {
                return Err(bad(
                    f,
                    &key("final_logit_softcapping"),
                    format!("{c} is not a positive number"),
                ))
            }
        };
        let moe = moe_hparams(f, arch, n_layer, n_ff)?;
        Ok(HParams {
            arch: arch.to_string(),
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff,
            rms_eps,
            rope_base,
            n_rot,
            rope_scaling,
            swa,
            final_logit_softcap,
            moe,
        })
    }

    /// Number of query heads sharing one key/value head.
    pub fn n_gqa(&self) -> usize {
        self.n_head / self.n_head_kv
    }
}

/// Windowed layers of `n_layer` when all but the last of every `n` use the window
/// (`n == 0`: all of them), as llama.cpp's `set_swa_pattern` lays them out.
pub fn swa_pattern(n: usize, n_layer: usize) -> Vec<bool> {
    (0..n_layer).map(|il| n == 0 || il % n < n - 1).collect()
}

/// The sliding window of an architecture that has one: none when the file
/// gives no window (or 0), as in llama.cpp.
fn sliding_window(f: &GgufFile, arch: &str, n_layer: usize) -> Result<Option<SlidingWindow>> {
    let key = |k: &str| format!("{arch}.{k}");
    let Some(default_pattern) = default_swa_pattern(arch) else {
        return Ok(None);
    };
    let window = match opt_usize(f, &key("attention.sliding_window"))? {
        None | Some(0) => return Ok(None),
        Some(w) => w,
    };
    let pattern_key = key("attention.sliding_window_pattern");
    let layers = match f.get(&pattern_key) {
        None => swa_pattern(default_pattern, n_layer),
        Some(Value::Array(Array::Bool(v))) if v.len() == n_layer => v.clone(),
        Some(Value::Array(_)) => {
            return Err(bad(
                f,
                &pattern_key,
                format!("expected {n_layer} booleans, one per layer"),
            ))
        }
        Some(_) => match f.get_u64(&pattern_key)? {
            Some(n) => swa_pattern(n as usize, n_layer),
            None => {
                return Err(bad(
                    f,
                    &pattern_key,
                    "expected a layer count or booleans".into(),
                ))
            }
        },
    };
    let rope_base = f
        .get_f32(&key("rope.freq_base_swa"))?
        .unwrap_or(DEFAULT_SWA_ROPE_BASE);
    Ok(Some(SlidingWindow {
        window,
        layers,
        rope_base,
    }))
}

/// The `{arch}.expert_*` keys, when `expert_count` says there are experts.
/// Routing defaults to a softmax with the chosen weights renormalised; the
/// architecture's loader states what its family uses.
fn moe_hparams(
    f: &GgufFile,
    arch: &str,
    n_layer: usize,
    n_ff: usize,
) -> Result<Option<MoeHParams>> {
    let key = |k: &str| format!("{arch}.{k}");
    let n_expert = match opt_usize(f, &key("expert_count"))? {
        None | Some(0) => return Ok(None),
        Some(n) => n,
    };
    let n_expert_used = per_layer_usize(f, &key("expert_used_count"), n_layer)?
        .ok_or_else(|| missing(f, &key("expert_used_count")))?;
    if n_expert_used == 0 || n_expert_used > n_expert {
        return Err(bad(
            f,
            &key("expert_used_count"),
            format!("{n_expert_used} experts per token out of {n_expert}"),
        ));
    }
    // Files without the key give each expert an equal share of the dense width.
    let n_ff_exp = per_layer_usize(f, &key("expert_feed_forward_length"), n_layer)?
        .unwrap_or(n_ff / n_expert_used);
    if n_ff_exp == 0 {
        return Err(bad(
            f,
            &key("expert_feed_forward_length"),
            "must not be zero".into(),
        ));
    }
    let layer_step = opt_usize(f, &key("interleave_moe_layer_step"))?.unwrap_or(1);
    if layer_step == 0 {
        return Err(bad(
            f,
            &key("interleave_moe_layer_step"),
            "must not be zero".into(),
        ));
    }
    let n_layer_dense_lead = opt_usize(f, &key("leading_dense_block_count"))?.unwrap_or(0);
    if n_layer_dense_lead > n_layer {
        return Err(bad(
            f,
            &key("leading_dense_block_count"),
            format!("{n_layer_dense_lead} dense layers in a network of {n_layer}"),
        ));
    }
    Ok(Some(MoeHParams {
        n_expert,
        n_expert_used,
        n_ff_exp,
        n_ff_shexp: opt_usize(f, &key("expert_shared_feed_forward_length"))?.unwrap_or(0),
        n_expert_shared: opt_usize(f, &key("expert_shared_count"))?.unwrap_or(0),
        n_layer_dense_lead,
        layer_step,
        gating: Gating::Softmax,
        norm_weights: true,
    }))
}

/// Errors naming `key` of `f`, for the architecture loaders' own checks.
pub(crate) fn missing_key(f: &GgufFile, key: &str) -> Error {
    missing(f, key)
}

fn rope_scaling(f: &GgufFile, arch: &str, n_ctx_train: usize) -> Result<RopeScaling> {
    let key = |k: &str| format!("{arch}.{k}");
    let kind = f.get_str(&key("rope.scaling.type"))?.unwrap_or("none");
    let factor = f.get_f32(&key("rope.scaling.factor"))?;
    // Older files give only a linear scale under this key.
    let factor = match (factor, f.get_f32(&key("rope.scale_linear"))?) {
        (Some(v), _) => Some(v),
        (None, Some(v)) => Some(v),
        (None, None) => None,
    };
    let factor = factor.unwrap_or(1.0);
    if !(factor > 0.0 && factor.is_finite()) {
        return Err(bad(
            f,
            &key("rope.scaling.factor"),
            format!("{factor} is not a positive number"),
        ));
    }
    match kind {
        "none" | "" => Ok(if factor != 1.0 {
            RopeScaling::Linear { factor }
        } else {
            RopeScaling::None
        }),
        "linear" => Ok(RopeScaling::Linear { factor }),
        "yarn" => Ok(RopeScaling::Yarn {
            factor,
            n_ctx_orig: opt_usize(f, &key("rope.scaling.original_context_length"))?
                .unwrap_or(n_ctx_train),
            beta_fast: f
                .get_f32(&key("rope.scaling.yarn_beta_fast"))?
                .unwrap_or(32.0),
            beta_slow: f
                .get_f32(&key("rope.scaling.yarn_beta_slow"))?
                .unwrap_or(1.0),
        }),
        other => Err(bad(
            f,
            &key("rope.scaling.type"),
            format!("unsupported rope scaling '{other}' (supported: none, linear, yarn)"),
        )),
    }
}

fn missing(f: &GgufFile, key: &str) -> Error {
    Error::BadHParam {
        path: f.path().display().to_string(),
        key: key.to_string(),
        msg: "missing".into(),
    }
}

fn bad(f: &GgufFile, key: &str, msg: String) -> Error {
    Error::BadHParam {
        path: f.path().display().to_string(),
        key: key.to_string(),
        msg,
    }
}

fn opt_usize(f: &GgufFile, key: &str) -> Result<Option<usize>> {
    Ok(f.get_u64(key)?.map(|v| v as usize))
}

fn req_usize(f: &GgufFile, key: &str) -> Result<usize> {
    match opt_usize(f, key)? {
        Some(0) => Err(bad(f, key, "must not be zero".into())),
        Some(v) => Ok(v),
        None => Err(missing(f, key)),
    }
}

/// Reads a count that files may give either once or once per layer. Mori's
/// decoders need it to be the same for every layer, so a varying array is an
/// error rather than being silently collapsed.
fn per_layer_usize(f: &GgufFile, key: &str, n_layer: usize) -> Result<Option<usize>> {
    let values: Vec<u64> = match f.get(key) {
        None => return Ok(None),
        Some(Value::Array(arr)) => match arr {
            Array::U32(v) => v.iter().map(|&x| x as u64).collect(),
            Array::I32(v) => v.iter().map(|&x| x.max(0) as u64).collect(),
            Array::U64(v) => v.clone(),
            Array::I64(v) => v.iter().map(|&x| x.max(0) as u64).collect(),
            _ => {
                return Err(bad(
                    f,
                    key,
                    "expected an integer or an array of integers".into(),
                ))
            }
        },
        Some(_) => return Ok(f.get_u64(key)?.map(|v| v as usize)),
    };
    if values.len() != n_layer {
        return Err(bad(
            f,
            key,
            format!("has {} entries for {n_layer} layers", values.len()),
        ));
    }
    match values.first() {
        Some(&first) if values.iter().all(|&v| v == first) => Ok(Some(first as usize)),
        _ => Err(bad(
            f,
            key,
            "differs between layers, which this architecture does not support".into(),
        )),
    }
}
