//! `mori quantize`: re-encodes a GGUF model's matrices in a smaller type,
//! choosing every tensor's type as llama.cpp's `llama_model_quantize` does.
//!
//! The type rules follow `llama_tensor_get_type` in llama.cpp's
//! `src/llama-quant.cpp` for the file types Mori offers (Q8_0, Q4_0, Q4_K_M,
//! Q5_K_M, Q6_K) on dense models: only 2-D (and larger) `*weight` tensors that
//! are not norms are quantized; the output matrix (and the token embedding
//! when the output reuses it) gets Q6_K in the 4-, 5- and 6-bit mixes; the
//! _M mixes give Q6_K to the value and down projections of the first and last
//! eighth of the layers and every third layer between, counting those
//! tensors in llama.cpp's order (by layer, then by name); rows that do not
//! divide into a type's blocks fall back to a smaller-block type, then F16.
//! Without an importance matrix llama.cpp quantizes with ggml's reference
//! quantizers, which `mori_kernels::quantize_row` reproduces, so Q8_0 and
//! Q4_0 files come out byte for byte the same.
//!
//! The output is laid out as llama.cpp lays it out (tensors sorted by layer,
//! then name; `general.quantization_version` and `general.file_type` moved to
//! the end of the metadata) and streamed to disk one tensor at a time: the
//! source stays in its memory map, each thread converts one f32 row at a
//! time, and only the tensor being written is held in memory (quantized).

use std::path::Path;
use std::time::Instant;

use mori_formats::{GgufFile, GgufWriter, TensorLayout, Value};
use mori_kernels::GgmlType;

use crate::{registry, Error, Result};

/// The file types `mori quantize` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    Q8_0,
    Q4_0,
    /// Q4_K, with Q6_K for the output and some value and down projections.
    Q4KM,
    /// Q5_K, with Q6_K for the output and some value and down projections.
    Q5KM,
    Q6K,
}

impl QuantType {
    pub const ALL: [QuantType; 5] = [
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::Q4KM,
        QuantType::Q5KM,
        QuantType::Q6K,
    ];

    /// Parses `Q8_0`, `Q4_0`, `Q4_K_M`, `Q5_K_M` or `Q6_K` (case-insensitive).
    pub fn parse(s: &str) -> Result<QuantType> {
        QuantType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let valid: Vec<&str> = QuantType::ALL.iter().map(|t| t.name()).collect();
                Error::Invalid(format!(
                    "unknown quantization type '{s}' (valid: {})",
                    valid.join(", ")
                ))
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantType::Q8_0 => "Q8_0",
            QuantType::Q4_0 => "Q4_0",
            QuantType::Q4KM => "Q4_K_M",
            QuantType::Q5KM => "Q5_K_M",
            QuantType::Q6K => "Q6_K",
        }
    }

    /// llama.cpp's `LLAMA_FTYPE_MOSTLY_*` number, written as `general.file_type`.
    pub fn llama_ftype(self) -> u32 {
        match self {
            QuantType::Q8_0 => 7,
            QuantType::Q4_0 => 2,
            QuantType::Q4KM => 15,
            QuantType::Q5KM => 17,
            QuantType::Q6K => 18,
        }
    }

    /// The type most matrices get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        match self {
            QuantType::Q8_0 => GgmlType::Q8_0,
            QuantType::Q4_0 => GgmlType::Q4_0,
            QuantType::Q4KM => GgmlType::Q4K,
            QuantType::Q5KM => GgmlType::Q5K,
            QuantType::Q6K => GgmlType::Q6K,
        }
    }

    fn is_k_mix(self) -> bool {
        matches!(self, QuantType::Q4KM | QuantType::Q5KM)
    }
}

/// What happens to one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorPlan {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    /// The type the mix asked for when rows did not divide into its blocks
    /// and `to` is llama.cpp's fallback.
    pub wanted: Option<GgmlType>,
}

/// One tensor written, for progress output.
#[derive(Debug, Clone)]
pub struct TensorDone<'a> {
    /// 1-based position in the output file, out of `n_tensors`.
    pub idx: usize,
    pub n_tensors: usize,
    pub plan: &'a TensorPlan,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What `quantize` reports as it goes.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// Something the user should know before the work starts (requantizing an
    /// already quantized tensor loses quality).
    Warning(String),
    Tensor(TensorDone<'a>),
}

/// The result of a whole run.
#[derive(Debug, Clone)]
pub struct QuantizeReport {
    pub quant_type: QuantType,
    pub n_tensors: usize,
    /// Tensors re-encoded (the others were copied as they were).
    pub n_quantized: usize,
    /// Tensors stored in a fallback type because of their row length.
    pub n_fallback: usize,
    /// Quantized tensors whose source was already quantized.
    pub n_requantized: usize,
    /// File sizes in bytes.
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub seconds: f64,
}

/// The position of `name` in llama.cpp's order: its layer (`blk.N.`, -1 for
/// none), then the name itself.
fn layer_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else {
        return -1;
    };
    let digits: &str = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
    digits.parse().unwrap_or(-1)
}

/// `ggml_n_dims`: trailing dimensions of 1 do not count.
fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// Whether llama.cpp quantizes tensor `name` at all (`tensor_allows_quantization`):
/// 2-D or larger, a `weight`, not a norm, and none of the small tables it
/// keeps as they are.
fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    const KEEP: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_",
        "attn_rel_b.weight",
        ".position_embd",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
    ];
    n_dims(dims) >= 2
        && name.ends_with("weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !KEEP.iter().any(|k| name.contains(k))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    /// `attn_v`, and fused `attn_qkv` / `attn_kv_b`, which llama.cpp treats alike.
    AttnV,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    match name {
        "output.weight" => Category::Output,
        "token_embd.weight" | "per_layer_token_embd.weight" => Category::TokenEmbd,
        _ if ["attn_qkv.weight", "attn_kv_b.weight", "attn_v.weight"]
            .iter()
            .any(|p| name.contains(p)) =>
        {
            Category::AttnV
        }
        // llama.cpp tests `attn_k`, `attn_q`, `attn_output`, `ffn_up` and
        // `ffn_gate` before `ffn_down`; none of those names contains it.
        _ if name.contains("ffn_down")
            && !["attn_k.weight", "attn_q.weight", "attn_output.weight"]
                .iter()
                .any(|p| name.contains(p))
            && !name.contains("ffn_up")
            && !name.contains("ffn_gate") =>
        {
            Category::FfnDown
        }
        _ => Category::Other,
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and
/// every third layer between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// `ty`, or llama.cpp's fallback when rows of `n_cols` do not divide into its
/// blocks (`tensor_type_fallback`): Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
/// and F16 when even that does not fit.
fn fallback(ty: GgmlType, n_cols: u64) -> GgmlType {
    if n_cols.is_multiple_of(ty.block_size() as u64) {
        return ty;
    }
    let next = match ty {
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        other => other,
    };
    if n_cols.is_multiple_of(next.block_size() as u64) {
        next
    } else {
        GgmlType::F16
    }
}

/// The facts about the model that the type rules read.
struct Model {
    /// `hparams.n_layer_all`: the ffn_down count.
    n_layer: usize,
    /// llama.cpp calls an 80-layer GQA llama or any 80-layer qwen2 `70B` and
    /// gives its Q4_K value projections Q5_K.
    is_70b: bool,
}

/// Every tensor of `file` with its target type, in llama.cpp's output order.
pub fn plan(file: &GgufFile, qt: QuantType) -> Result<Vec<TensorPlan>> {
    let path = file.path().display().to_string();
    let arch = file.require_str("general.architecture")?;
    if registry::lookup(arch).is_none() {
        return Err(Error::UnknownArchitecture {
            path,
            arch: arch.to_string(),
            supported: registry::supported(),
        });
    }
    let u32_key = |k: &str| file.get_u32(&format!("{arch}.{k}"));
    if u32_key("expert_count")?.unwrap_or(0) > 1 {
        return Err(Error::Invalid(format!(
            "{path}: mixture-of-experts models cannot be quantized by Mori yet"
        )));
    }
    let n_layer = file.require_u32(&format!("{arch}.block_count"))? as usize;
    let n_head = u32_key("attention.head_count")?.unwrap_or(0);
    let n_head_kv = u32_key("attention.head_count_kv")?.unwrap_or(n_head);
    let model = Model {
        n_layer,
        is_70b: n_layer == 80
            && match arch {
                "llama" => n_head != n_head_kv,
                "qwen2" => true,
                _ => false,
            },
    };

    let mut order: Vec<&mori_formats::TensorInfo> = file.tensors().iter().collect();
    order.sort_by(|a, b| {
        (layer_of(&a.name), a.name.as_bytes()).cmp(&(layer_of(&b.name), b.name.as_bytes()))
    });
    let n_attn_v = order
        .iter()
        .filter(|t| category(&t.name) == Category::AttnV)
        .count();
    let tied = !order.iter().any(|t| t.name == "output.weight");
    let (mut i_attn_v, mut i_ffn_down) = (0usize, 0usize);

    let mut plans = Vec::with_capacity(order.len());
    for t in order {
        let mut plan = TensorPlan {
            name: t.name.clone(),
            dims: t.dims.clone(),
            from: t.ty,
            to: t.ty,
            wanted: None,
        };
        if allows_quantization(&t.name, &t.dims) {
            let cat = category(&t.name);
            let mut ty = qt.default_type();
            if cat == Category::Output || (tied && cat == Category::TokenEmbd) {
                if !t.dims[0].is_multiple_of(ty.block_size() as u64) {
                    ty = GgmlType::Q8_0;
                } else if ty != GgmlType::Q8_0 {
                    ty = GgmlType::Q6K;
                }
            } else if cat == Category::AttnV {
                if qt.is_k_mix() && use_more_bits(i_attn_v, n_attn_v) {
                    ty = GgmlType::Q6K;
                }
                if model.is_70b && ty == GgmlType::Q4K {
                    ty = GgmlType::Q5K;
                }
                i_attn_v += 1;
            } else if cat == Category::FfnDown {
                if qt.is_k_mix() && use_more_bits(i_ffn_down, model.n_layer) {
                    ty = GgmlType::Q6K;
                }
                i_ffn_down += 1;
            }
            plan.to = fallback(ty, t.dims[0]);
            if plan.to != ty {
                plan.wanted = Some(ty);
            }
        }
        plans.push(plan);
    }
    Ok(plans)
}

/// Whether `a` and `b` name the same file (`b` need not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    let Ok(a) = a.canonicalize() else {
        return false;
    };
    if let Ok(b) = b.canonicalize() {
        return a == b;
    }
    let parent = b
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (parent.canonicalize(), b.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name) == a,
        _ => false,
    }
}

/// Re-encodes `data` (`n_rows` rows of `n_cols` values of `from`) as `to`,
/// splitting the rows over `threads` threads.
fn convert_rows(
    data: &[u8],
    from: GgmlType,
    to: GgmlType,
    n_cols: usize,
    threads: usize,
) -> std::result::Result<Vec<u8>, mori_kernels::Error> {
    let (src_row, dst_row) = (from.row_size(n_cols)?, to.row_size(n_cols)?);
    let n_rows = data.len() / src_row;
    let mut out = vec![0u8; n_rows * dst_row];
    if n_rows == 0 {
        return Ok(out);
    }
    let rows_per_thread = n_rows.div_ceil(threads.max(1));
    let work = |src: &[u8], dst: &mut [u8]| -> std::result::Result<(), mori_kernels::Error> {
        let mut row = vec![0f32; n_cols];
        for (s, d) in src.chunks_exact(src_row).zip(dst.chunks_exact_mut(dst_row)) {
            mori_kernels::dequantize_row(from, s, &mut row)?;
            mori_kernels::quantize_row(to, &row, d)?;
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = data
            .chunks(rows_per_thread * src_row)
            .zip(out.chunks_mut(rows_per_thread * dst_row))
            .map(|(src, dst)| scope.spawn(move || work(src, dst)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("a quantizer thread panicked"))
    })?;
    Ok(out)
}

/// Quantizes the model at `input` to `qt`, writing `output`, on `threads`
/// threads. `progress` sees warnings first, then each tensor as it is written.
pub fn quantize(
    input: &Path,
    output: &Path,
    qt: QuantType,
    threads: usize,
    mut progress: impl FnMut(Event<'_>),
) -> Result<QuantizeReport> {
    let start = Instant::now();
    if same_file(input, output) {
        return Err(Error::Invalid(format!(
            "{}: the output would overwrite the input; choose another output path",
            output.display()
        )));
    }
    let file = GgufFile::open(input)?;
    let plans = plan(&file, qt)?;

    let requantized: Vec<&TensorPlan> = plans
        .iter()
        .filter(|p| p.from != p.to && p.from.is_quantized())
        .collect();
    if let Some(first) = requantized.first() {
        progress(Event::Warning(format!(
            "{}: {} tensors are already quantized (e.g. {} is {}); quantizing them again to {} \
             loses more quality than quantizing the F32/F16/BF16 original",
            input.display(),
            requantized.len(),
            first.name,
            first.from,
            qt.name()
        )));
    }

    let mut meta = GgufWriter::new();
    for (k, v) in file.metadata() {
        meta.add(k.clone(), v.clone());
    }
    for k in [
        "split.no",
        "split.count",
        "split.tensors.count",
        "general.quantization_version",
        "general.file_type",
    ] {
        meta.remove(k);
    }
    meta.add("general.quantization_version", Value::U32(2));
    meta.add("general.file_type", Value::U32(qt.llama_ftype()));

    let layout = plans
        .iter()
        .map(|p| TensorLayout {
            name: p.name.clone(),
            dims: p.dims.clone(),
            ty: p.to,
        })
        .collect();
    let mut stream = meta.stream(output, layout)?;
    let n_tensors = plans.len();
    let mut n_quantized = 0;
    for (i, p) in plans.iter().enumerate() {
        let (info, data) = file.tensor(&p.name)?;
        let bytes_out = if p.from == p.to {
            stream.write_tensor(data)?;
            data.len()
        } else {
            let out =
                convert_rows(data, p.from, p.to, info.dims[0] as usize, threads).map_err(|e| {
                    Error::Invalid(format!("{}: tensor '{}': {e}", input.display(), p.name))
                })?;
            stream.write_tensor(&out)?;
            n_quantized += 1;
            out.len()
        };
        progress(Event::Tensor(TensorDone {
            idx: i + 1,
            n_tensors,
            plan: p,
            bytes_in: data.len() as u64,
            bytes_out: bytes_out as u64,
        }));
    }
    stream.finish()?;

    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|source| Error::Io {
                path: p.display().to_string(),
                source,
            })
    };
    Ok(QuantizeReport {
        quant_type: qt,
        n_tensors,
        n_quantized,
        n_fallback: plans.iter().filter(|p| p.wanted.is_some()).count(),
        n_requantized: requantized.len(),
        input_bytes: size(input)?,
        output_bytes: size(output)?,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_layers_match_llama_cpp() {
        let more: Vec<usize> = (0..8).filter(|&i| use_more_bits(i, 8)).collect();
        assert_eq!(more, [0, 3, 6, 7]);
        let more: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            more,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn fallbacks_follow_llama_cpp() {
        assert_eq!(fallback(GgmlType::Q4K, 4096), GgmlType::Q4K);
        assert_eq!(fallback(GgmlType::Q4K, 96), GgmlType::Q5_0);
        assert_eq!(fallback(GgmlType::Q5K, 96), GgmlType::Q5_1);
        assert_eq!(fallback(GgmlType::Q6K, 96), GgmlType::Q8_0);
        assert_eq!(fallback(GgmlType::Q6K, 200), GgmlType::F16);
        assert_eq!(fallback(GgmlType::Q4_0, 200), GgmlType::F16);
        assert_eq!(fallback(GgmlType::Q8_0, 64), GgmlType::Q8_0);
    }

    #[test]
    fn names_sort_and_classify_like_llama_cpp() {
        assert_eq!(layer_of("blk.12.attn_v.weight"), 12);
        assert_eq!(layer_of("output.weight"), -1);
        assert_eq!(category("blk.3.attn_v.weight"), Category::AttnV);
        assert_eq!(category("blk.3.attn_qkv.weight"), Category::AttnV);
        assert_eq!(category("blk.3.ffn_down.weight"), Category::FfnDown);
        assert_eq!(category("blk.3.attn_v.bias"), Category::Other);
        assert!(allows_quantization("blk.0.attn_q.weight", &[256, 256]));
        assert!(!allows_quantization("blk.0.attn_q.bias", &[256]));
        assert!(!allows_quantization("blk.0.attn_norm.weight", &[256]));
        assert!(!allows_quantization("blk.0.x.weight", &[256, 1]));
    }

    #[test]
    fn unknown_types_name_the_valid_ones() {
        assert_eq!(QuantType::parse("q4_k_m").unwrap(), QuantType::Q4KM);
        let e = QuantType::parse("Q3_K_S").unwrap_err().to_string();
        assert!(
            e.contains("Q3_K_S") && e.contains("Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K"),
            "{e}"
        );
    }
}
