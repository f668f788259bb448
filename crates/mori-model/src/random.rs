//! Writes random-weight models of the supported architectures.
//!
//! No model weights can be downloaded in Mori's test environment, so the
//! conformance tests run models whose weights are drawn from a seeded
//! generator, with real shapes and real tensor types. The same spec always
//! gives the same file, byte for byte, so a fixture recorded once (by running
//! llama.cpp on the file) stays valid as long as the file's digest matches.
//!
//! Scales are chosen so the network neither explodes nor collapses and the
//! logits spread with a standard deviation of about 2.5: a comparison of two
//! implementations then means something.

use std::path::Path;

use mori_formats::{Array, GgufWriter, Value};
use mori_kernels::GgmlType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::hparams::{
    swa_pattern, Gating, HParams, MoeHParams, RopeScaling, SlidingWindow, DEFAULT_SWA_ROPE_BASE,
};
use crate::{registry, Error, Result};

/// How the weights of a random model are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// Every matrix in one type (norms and biases stay F32).
    Uniform(GgmlType),
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the output and for the
    /// value and down projections of some layers.
    Q4KM,
    /// The same mix with Q5_K as the base type.
    Q5KM,
}

impl FileType {
    /// Parses `F16`, `Q8_0`, `Q4_K_M`, ... (case-insensitive).
    pub fn parse(s: &str) -> Option<FileType> {
        match s.to_ascii_uppercase().as_str() {
            "Q4_K_M" => Some(FileType::Q4KM),
            "Q5_K_M" => Some(FileType::Q5KM),
            other => GgmlType::from_name(other)
                .filter(|t| *t != GgmlType::Q8_1 && *t != GgmlType::Q8K)
                .map(FileType::Uniform),
        }
    }

    pub fn name(self) -> String {
        match self {
            FileType::Uniform(t) => t.name().to_string(),
            FileType::Q4KM => "Q4_K_M".into(),
            FileType::Q5KM => "Q5_K_M".into(),
        }
    }

    /// The type of matrix `tensor` (a GGUF short name: `attn_v`, `ffn_down`,
    /// `output`, ...) of layer `layer` of `n_layer`. llama.cpp's *_M mixes give
    /// Q6_K to the output and to the value and down projections of the first and
    /// last eighth of the layers and every third layer between.
    pub fn matrix_type(self, tensor: &str, layer: usize, n_layer: usize) -> GgmlType {
        let base = self.base();
        if !self.is_k_mix() {
            return base;
        }
        let more_bits =
            layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
        match tensor {
            "output" => GgmlType::Q6K,
            "attn_v" | "ffn_down" if more_bits => GgmlType::Q6K,
            _ => base,
        }
    }

    /// `ty`, or what llama.cpp stores instead when rows of `n_cols` do not divide
    /// into its blocks (K-quants need multiples of 256): Q4_K -> Q5_0, Q5_K -> Q5_1,
    /// Q6_K -> Q8_0, then F16 for anything still left.
    pub fn storable(ty: GgmlType, n_cols: usize) -> GgmlType {
        let fallback = match ty {
            GgmlType::Q4K => GgmlType::Q5_0,
            GgmlType::Q5K => GgmlType::Q5_1,
            GgmlType::Q6K => GgmlType::Q8_0,
            other => other,
        };
        [ty, fallback, GgmlType::F16]
            .into_iter()
            .find(|t| t.row_size(n_cols).is_ok())
            .unwrap_or(GgmlType::F32)
    }

    /// The `general.file_type` number llama.cpp gives this mix.
    pub fn llama_ftype(self) -> u32 {
        match self {
            FileType::Uniform(t) => match t {
                GgmlType::F32 => 0,
                GgmlType::F16 => 1,
                GgmlType::Q4_0 => 2,
                GgmlType::Q4_1 => 3,
                GgmlType::Q8_0 => 7,
                GgmlType::Q5_0 => 8,
                GgmlType::Q5_1 => 9,
                GgmlType::Q4K => 14,
                GgmlType::Q5K => 16,
                GgmlType::Q6K => 18,
                GgmlType::BF16 => 32,
                _ => 0,
            },
            FileType::Q4KM => 15,
            FileType::Q5KM => 17,
        }
    }

    fn base(self) -> GgmlType {
        match self {
            FileType::Uniform(t) => t,
            FileType::Q4KM => GgmlType::Q4K,
            FileType::Q5KM => GgmlType::Q5K,
        }
    }

    fn is_k_mix(self) -> bool {
        matches!(self, FileType::Q4KM | FileType::Q5KM)
    }
}

/// The shape and storage of a random model.
#[derive(Debug, Clone)]
pub struct RandomSpec {
    pub arch: String,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// Reuse the token embedding as the output matrix.
    pub tied_output: bool,
    /// Positions a sliding-window layer sees (Gemma 3: five layers in six);
    /// 0 for none.
    pub sliding_window: usize,
    pub file_type: FileType,
    pub seed: u64,
    /// The experts, for the mixture-of-experts architectures (and only them).
    pub moe: Option<MoeSpec>,
}

/// The experts of a random mixture-of-experts model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeSpec {
    pub n_expert: usize,
    pub n_expert_used: usize,
    /// Hidden width of one routed expert.
    pub n_ff_exp: usize,
    /// Shared experts (ERNIE), stored fused as one SwiGLU of
    /// `n_expert_shared * n_ff_exp`, as the GGUF converter writes them; 0: none.
    pub n_expert_shared: usize,
    /// Leading layers with a dense feed-forward of `n_ff` (ERNIE).
    pub n_layer_dense_lead: usize,
}

impl MoeSpec {
    /// A small set of experts in the layout of `arch`'s real models (None for
    /// architectures without experts): 8 experts, 2 per token, and for ERNIE
    /// one dense first layer and one shared expert.
    pub fn default_for(arch: &str) -> Option<MoeSpec> {
        let (n_expert_shared, n_layer_dense_lead) = match arch {
            "qwen3moe" => (0, 0),
            "ernie4_5-moe" => (1, 1),
            _ => return None,
        };
        Some(MoeSpec {
            n_expert: 8,
            n_expert_used: 2,
            n_ff_exp: 256,
            n_expert_shared,
            n_layer_dense_lead,
        })
    }
}

/// Architectures whose random models have experts.
fn is_moe_arch(arch: &str) -> bool {
    matches!(arch, "qwen3moe" | "ernie4_5-moe")
}

impl RandomSpec {
    /// A small model of `arch` that every tensor type can store (all row
    /// lengths are multiples of 256), quick to run in tests.
    pub fn tiny(arch: &str, file_type: FileType) -> RandomSpec {
        RandomSpec {
            arch: arch.to_string(),
            n_vocab: 384,
            n_embd: 256,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 64,
            n_ff: 512,
            n_ctx_train: 2048,
            rope_base: 10000.0,
            rms_eps: 1e-5,
            tied_output: false,
            sliding_window: 0,
            file_type,
            seed: 42,
            moe: MoeSpec::default_for(arch),
        }
    }
}

/// Writes the model described by `spec` to `path`.
pub fn write_random_model(spec: &RandomSpec, path: &Path) -> Result<()> {
    let w = build(spec)?;
    w.write(path)?;
    Ok(())
}

/// Builds the model described by `spec` in memory.
pub fn build(spec: &RandomSpec) -> Result<GgufWriter> {
    if registry::lookup(&spec.arch).is_none() {
        return Err(Error::Invalid(format!(
            "cannot write a random '{}' model (supported: {})",
            spec.arch,
            registry::supported()
        )));
    }
    if spec.n_head == 0 || spec.n_head_kv == 0 || !spec.n_head.is_multiple_of(spec.n_head_kv) {
        return Err(Error::Invalid(format!(
            "{} heads cannot share {} key/value heads",
            spec.n_head, spec.n_head_kv
        )));
    }
    let moe = check_moe(spec)?;
    // Specials, bytes, then 67 characters, their pairs and their triples.
    const MAX_VOCAB: usize = 259 + 67 + 67 * 66 + 67 * 66 * 66;
    if spec.n_vocab > MAX_VOCAB {
        return Err(Error::Invalid(format!(
            "a random vocabulary of {} is too large (at most {MAX_VOCAB})",
            spec.n_vocab
        )));
    }
    if spec.n_vocab < 259 + 8 {
        return Err(Error::Invalid(format!(
            "a vocabulary of {} is too small (at least 267)",
            spec.n_vocab
        )));
    }
    let arch = spec.arch.as_str();
    let gemma = arch == "gemma3";
    if spec.sliding_window > 0 && !gemma {
        return Err(Error::Invalid(format!(
            "a random '{arch}' model cannot have a sliding window (only gemma3)"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String(arch.into()));
    w.add(
        "general.name",
        Value::String(format!("mori-random-{arch}-{}", spec.file_type.name())),
    );
    w.add(
        "general.file_type",
        Value::U32(spec.file_type.llama_ftype()),
    );
    HParams {
        arch: arch.to_string(),
        n_vocab: spec.n_vocab,
        n_ctx_train: spec.n_ctx_train,
        n_embd: spec.n_embd,
        n_layer: spec.n_layer,
        n_head: spec.n_head,
        n_head_kv: spec.n_head_kv,
        head_dim: spec.head_dim,
        head_dim_v: spec.head_dim,
        n_ff: spec.n_ff,
        rms_eps: spec.rms_eps,
        rope_base: spec.rope_base,
        n_rot: spec.head_dim,
        rope_scaling: RopeScaling::None,
        swa: (spec.sliding_window > 0).then(|| SlidingWindow {
            window: spec.sliding_window,
            layers: swa_pattern(6, spec.n_layer),
            rope_base: DEFAULT_SWA_ROPE_BASE,
        }),
        final_logit_softcap: None,
        moe: moe.clone(),
    }
    .write_gguf(&mut w);
    add_vocab(&mut w, spec.n_vocab);

    let (d, hd, ff) = (spec.n_embd, spec.head_dim, spec.n_ff);
    let (q_dim, kv_dim) = (spec.n_head * hd, spec.n_head_kv * hd);
    let ft = spec.file_type;
    let base = ft.base();
    let out_scale = 2.5 / (d as f32).sqrt();

    let embd_scale = if spec.tied_output { out_scale } else { 1.0 };
    matrix(
        &mut w,
        &mut rng,
        "token_embd.weight",
        d,
        spec.n_vocab,
        base,
        embd_scale,
    )?;
    for i in 0..spec.n_layer {
        let n = |t: &str| format!("blk.{i}.{t}");
        let vd_ty = ft.matrix_type("attn_v", i, spec.n_layer);
        vector(&mut w, &mut rng, &n("attn_norm.weight"), d, 1.0, 0.1)?;
        matrix(
            &mut w,
            &mut rng,
            &n("attn_q.weight"),
            d,
            q_dim,
            base,
            1.0 / (d as f32).sqrt(),
        )?;
        matrix(
            &mut w,
            &mut rng,
            &n("attn_k.weight"),
            d,
            kv_dim,
            base,
            1.0 / (d as f32).sqrt(),
        )?;
        matrix(
            &mut w,
            &mut rng,
            &n("attn_v.weight"),
            d,
            kv_dim,
            vd_ty,
            1.0 / (d as f32).sqrt(),
        )?;
        matrix(
            &mut w,
            &mut rng,
            &n("attn_output.weight"),
            q_dim,
            d,
            base,
            1.0 / (q_dim as f32).sqrt(),
        )?;
        if arch == "qwen2" {
            vector(&mut w, &mut rng, &n("attn_q.bias"), q_dim, 0.0, 0.3)?;
            vector(&mut w, &mut rng, &n("attn_k.bias"), kv_dim, 0.0, 0.3)?;
            vector(&mut w, &mut rng, &n("attn_v.bias"), kv_dim, 0.0, 0.3)?;
        }
        // ERNIE 4.5 (trained with `use_bias`) and openPangu-Embedded carry
        // q/k/v biases; openPangu also biases the output projection. Random,
        // non-zero values, so a conformance test fails if one is skipped.
        if arch == "ernie4_5" || arch == "pangu-embedded" {
            vector(&mut w, &mut rng, &n("attn_q.bias"), q_dim, 0.0, 0.3)?;
            vector(&mut w, &mut rng, &n("attn_k.bias"), kv_dim, 0.0, 0.3)?;
            vector(&mut w, &mut rng, &n("attn_v.bias"), kv_dim, 0.0, 0.3)?;
        }
        if arch == "pangu-embedded" {
            vector(&mut w, &mut rng, &n("attn_output.bias"), d, 0.0, 0.3)?;
        }
        if arch == "qwen3" || arch == "qwen3moe" || gemma {
            vector(&mut w, &mut rng, &n("attn_q_norm.weight"), hd, 1.0, 0.1)?;
            vector(&mut w, &mut rng, &n("attn_k_norm.weight"), hd, 1.0, 0.1)?;
        }
        if gemma {
            // Gemma's norms multiply by (1 + w); GGUF files store 1 + w.
            vector(
                &mut w,
                &mut rng,
                &n("post_attention_norm.weight"),
                d,
                1.0,
                0.1,
            )?;
        }
        vector(&mut w, &mut rng, &n("ffn_norm.weight"), d, 1.0, 0.1)?;
        if let Some(m) = moe.as_ref().filter(|m| m.is_moe_layer(i)) {
            moe_layer(&mut w, &mut rng, spec, m, i, base, vd_ty)?;
            continue;
        }
        matrix(
            &mut w,
            &mut rng,
            &n("ffn_gate.weight"),
            d,
            ff,
            base,
            1.0 / (d as f32).sqrt(),
        )?;
        matrix(
            &mut w,
            &mut rng,
            &n("ffn_up.weight"),
            d,
            ff,
            base,
            1.0 / (d as f32).sqrt(),
        )?;
        matrix(
            &mut w,
            &mut rng,
            &n("ffn_down.weight"),
            ff,
            d,
            vd_ty,
            1.0 / (ff as f32).sqrt(),
        )?;
        if gemma {
            vector(&mut w, &mut rng, &n("post_ffw_norm.weight"), d, 1.0, 0.1)?;
        }
    }
    vector(&mut w, &mut rng, "output_norm.weight", d, 1.0, 0.1)?;
    if !spec.tied_output {
        matrix(
            &mut w,
            &mut rng,
            "output.weight",
            d,
            spec.n_vocab,
            ft.matrix_type("output", 0, spec.n_layer),
            out_scale,
        )?;
    }
    Ok(w)
}

/// The expert hyper-parameters of `spec`, checked against its architecture.
fn check_moe(spec: &RandomSpec) -> Result<Option<MoeHParams>> {
    let arch = spec.arch.as_str();
    let m = match (spec.moe, is_moe_arch(arch)) {
        (None, false) => return Ok(None),
        (Some(_), false) => {
            return Err(Error::Invalid(format!(
                "a random '{arch}' model has no experts (experts: qwen3moe, ernie4_5-moe)"
            )))
        }
        (None, true) => {
            return Err(Error::Invalid(format!(
                "a random '{arch}' model needs experts (expert count, experts used, expert width)"
            )))
        }
        (Some(m), true) => m,
    };
    if m.n_expert == 0 || m.n_expert_used == 0 || m.n_expert_used > m.n_expert {
        return Err(Error::Invalid(format!(
            "{} experts per token out of {} experts",
            m.n_expert_used, m.n_expert
        )));
    }
    if m.n_ff_exp == 0 {
        return Err(Error::Invalid("experts need a non-zero width".into()));
    }
    if m.n_layer_dense_lead > spec.n_layer {
        return Err(Error::Invalid(format!(
            "{} leading dense layers in a network of {}",
            m.n_layer_dense_lead, spec.n_layer
        )));
    }
    if arch == "qwen3moe" && (m.n_expert_shared > 0 || m.n_layer_dense_lead > 0) {
        return Err(Error::Invalid(
            "qwen3moe has neither shared experts nor leading dense layers".into(),
        ));
    }
    Ok(Some(MoeHParams {
        n_expert: m.n_expert,
        n_expert_used: m.n_expert_used,
        n_ff_exp: m.n_ff_exp,
        n_ff_shexp: m.n_expert_shared * m.n_ff_exp,
        n_expert_shared: m.n_expert_shared,
        n_layer_dense_lead: m.n_layer_dense_lead,
        layer_step: 1,
        gating: Gating::Softmax,
        norm_weights: true,
    }))
}

/// The feed-forward tensors of MoE layer `i`: the F32 router (llama.cpp never
/// quantizes it), ERNIE's selection bias, the 3-D expert tensors and the
/// shared expert.
fn moe_layer(
    w: &mut GgufWriter,
    rng: &mut ChaCha8Rng,
    spec: &RandomSpec,
    m: &MoeHParams,
    i: usize,
    base: GgmlType,
    down_ty: GgmlType,
) -> Result<()> {
    let n = |t: &str| format!("blk.{i}.{t}");
    let (d, ff, ne) = (spec.n_embd, m.n_ff_exp, m.n_expert);
    // Router logits with a standard deviation of about 1: the probabilities
    // differ clearly between experts, so near-ties are rare.
    let r_scale = 1.0 / (d as f32).sqrt();
    matrix(
        w,
        rng,
        &n("ffn_gate_inp.weight"),
        d,
        ne,
        GgmlType::F32,
        r_scale,
    )?;
    if spec.arch == "ernie4_5-moe" {
        vector(w, rng, &n("exp_probs_b.bias"), ne, 0.0, 0.02)?;
    }
    let (in_scale, out_scale) = (1.0 / (d as f32).sqrt(), 1.0 / (ff as f32).sqrt());
    experts(
        w,
        rng,
        &n("ffn_gate_exps.weight"),
        d,
        ff,
        ne,
        base,
        in_scale,
    )?;
    experts(w, rng, &n("ffn_up_exps.weight"), d, ff, ne, base, in_scale)?;
    experts(
        w,
        rng,
        &n("ffn_down_exps.weight"),
        ff,
        d,
        ne,
        down_ty,
        out_scale,
    )?;
    if m.n_ff_shexp > 0 {
        let sh = m.n_ff_shexp;
        let sh_scale = 1.0 / (sh as f32).sqrt();
        matrix(w, rng, &n("ffn_gate_shexp.weight"), d, sh, base, in_scale)?;
        matrix(w, rng, &n("ffn_up_shexp.weight"), d, sh, base, in_scale)?;
        matrix(
            w,
            rng,
            &n("ffn_down_shexp.weight"),
            sh,
            d,
            down_ty,
            sh_scale,
        )?;
    }
    Ok(())
}

/// `n_expert` matrices of `[n_rows][n_cols]` N(0, scale²) values stored as `ty`,
/// one after the other in a 3-D tensor `[n_cols, n_rows, n_expert]`.
#[allow(clippy::too_many_arguments)]
fn experts(
    w: &mut GgufWriter,
    rng: &mut ChaCha8Rng,
    name: &str,
    n_cols: usize,
    n_rows: usize,
    n_expert: usize,
    ty: GgmlType,
    scale: f32,
) -> Result<()> {
    let ty = FileType::storable(ty, n_cols);
    let row_bytes = ty.row_size(n_cols).map_err(|_| {
        Error::Invalid(format!(
            "tensor {name}: rows of {n_cols} cannot be stored as {ty} (blocks of {})",
            ty.block_size()
        ))
    })?;
    let mut data = vec![0u8; row_bytes * n_rows * n_expert];
    let mut row = vec![0.0f32; n_cols];
    for dst in data.chunks_exact_mut(row_bytes) {
        row.iter_mut().for_each(|v| *v = normal(rng) * scale);
        mori_kernels::quantize_row(ty, &row, dst)?;
    }
    let dims = vec![n_cols as u64, n_rows as u64, n_expert as u64];
    w.add_tensor(name, dims, ty, data)?;
    Ok(())
}

/// A standard normal sample by Box–Muller, computed in f64 so the result is
/// the same on every machine.
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.gen::<f64>().max(1e-300);
    let u2: f64 = rng.gen::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A `[n_rows][n_cols]` matrix of N(0, scale²) values stored as `ty`.
fn matrix(
    w: &mut GgufWriter,
    rng: &mut ChaCha8Rng,
    name: &str,
    n_cols: usize,
    n_rows: usize,
    ty: GgmlType,
    scale: f32,
) -> Result<()> {
    let ty = FileType::storable(ty, n_cols);
    let row_bytes = ty.row_size(n_cols).map_err(|_| {
        Error::Invalid(format!(
            "tensor {name}: rows of {n_cols} cannot be stored as {ty} (blocks of {})",
            ty.block_size()
        ))
    })?;
    let mut data = vec![0u8; row_bytes * n_rows];
    let mut row = vec![0.0f32; n_cols];
    for r in 0..n_rows {
        row.iter_mut().for_each(|v| *v = normal(rng) * scale);
        mori_kernels::quantize_row(ty, &row, &mut data[r * row_bytes..(r + 1) * row_bytes])?;
    }
    w.add_tensor(name, vec![n_cols as u64, n_rows as u64], ty, data)?;
    Ok(())
}

/// An F32 vector of N(mean, std²) values.
fn vector(
    w: &mut GgufWriter,
    rng: &mut ChaCha8Rng,
    name: &str,
    n: usize,
    mean: f32,
    std: f32,
) -> Result<()> {
    let data: Vec<u8> = (0..n)
        .flat_map(|_| (mean + std * normal(rng)).to_le_bytes())
        .collect();
    w.add_tensor(name, vec![n as u64], GgmlType::F32, data)?;
    Ok(())
}

/// A SentencePiece-style vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte
/// tokens, then single characters and pairs of them, so any text can be
/// tokenized and common pairs merge.
fn add_vocab(w: &mut GgufWriter, n_vocab: usize) {
    let chars: Vec<char> = "▁etaoinshrdlcumwfgypbvkjxqz.,!?'ETAOINSHRDLCUMWFGYPBVKJXQZ0123456789"
        .chars()
        .collect();
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types: Vec<i32> = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let mut pieces: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    'pairs: for a in &chars {
        for b in &chars {
            if *b == '▁' {
                continue;
            }
            pieces.push(format!("{a}{b}"));
            if tokens.len() + pieces.len() >= n_vocab {
                break 'pairs;
            }
        }
    }
    // Real vocabularies (128k and more) need more pieces than pairs give: triples.
    'triples: for a in &chars {
        for b in &chars {
            for c in &chars {
                if tokens.len() + pieces.len() >= n_vocab {
                    break 'triples;
                }
                if *b == '▁' || *c == '▁' {
                    continue;
                }
                pieces.push(format!("{a}{b}{c}"));
            }
        }
    }
    pieces.truncate(n_vocab - tokens.len());
    let n_special = tokens.len();
    let mut scores: Vec<f32> = vec![0.0; n_special];
    for (i, p) in pieces.into_iter().enumerate() {
        tokens.push(p);
        types.push(1);
        scores.push(-(i as f32));
    }
    w.add("tokenizer.ggml.model", Value::String("llama".into()));
    w.add(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(tokens.into())),
    );
    w.add("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    w.add("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    w.add("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.add("tokenizer.ggml.eos_token_id", Value::U32(2));
    w.add("tokenizer.ggml.unknown_token_id", Value::U32(0));
    w.add("tokenizer.ggml.add_bos_token", Value::Bool(true));
    w.add("tokenizer.ggml.add_eos_token", Value::Bool(false));
}
