//! One module per architecture family, and the weight handles they share.

pub mod ffn;
pub mod gemma3;
pub mod llama;
pub mod moe;

use std::sync::Arc;

use mori_formats::{GgufFile, TensorInfo};
use mori_kernels::ops::AttnScratch;
use mori_kernels::{ActBuf, GgmlType, ThreadPool, WeightView};

use crate::kv_cache::KvCache;
use crate::{Error, Result};

/// Which rows of logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's (generation).
    Last,
    /// Every position's (scoring a prompt, conformance tests).
    All,
}

/// A network that can run a forward pass. Each architecture family implements it.
pub trait Network: Send + Sync {
    /// Runs `tokens` at positions `cache.n_used()..`, appends their keys and
    /// values to `cache` and writes logits `[rows][n_vocab]` to `out`
    /// (replacing what it held). Working memory comes from `scratch`, which
    /// a caller keeps between passes: once it and `out` have grown to a
    /// pass's sizes, the pass allocates nothing.
    fn forward_into(
        &self,
        pool: &ThreadPool,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        logits: Logits,
        out: &mut Vec<f32>,
    ) -> Result<()>;

    /// Layers and floats per position that the KV cache must hold.
    fn kv_shape(&self) -> (usize, usize);

    /// A KV cache for `n_ctx` positions. Every layer keeps every position unless
    /// the architecture says otherwise (sliding-window layers keep less).
    fn new_cache(&self, n_ctx: usize) -> KvCache {
        let (n_layer, kv_dim) = self.kv_shape();
        KvCache::new(n_layer, n_ctx, kv_dim)
    }

    /// The record of routing decisions, for networks with experts.
    fn routing_trace(&self) -> Option<&moe::RoutingTrace> {
        None
    }
}

/// The working memory of forward passes, kept between them by whoever runs
/// a sequence (a session), so that generating a token allocates nothing:
/// every buffer grows to the largest pass seen and is then reused.
#[derive(Default)]
pub struct Scratch {
    /// The per-pass activations, carved into named buffers (see [`Scratch::take`]).
    arena: Vec<f32>,
    /// Activations converted for the weights' dot products.
    acts: SharedActs,
    /// The feed-forward's hidden-width buffers.
    ffn: ffn::FfnScratch,
    /// The buffers of a mixture of experts.
    moe: moe::MoeScratch,
    /// Attention's per-thread buffers.
    attn: AttnScratch,
}

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers of the given lengths (contents left from earlier passes: every
    /// user writes a buffer before it reads it), with the other parts of the
    /// scratch beside them.
    fn take<const N: usize>(&mut self, lens: [usize; N]) -> ScratchParts<'_, N> {
        // A pass starts from new input.
        self.acts.invalidate();
        ScratchParts {
            bufs: mori_kernels::scratch::carve(sized(&mut self.arena, lens.iter().sum()), lens),
            acts: &mut self.acts,
            ffn: &mut self.ffn,
            moe: &mut self.moe,
            attn: &mut self.attn,
        }
    }
}

/// The first `n` elements of `v`, grown to hold them (the contents are what
/// the last user left).
pub(crate) fn sized<T: Clone + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// The parts of a [`Scratch`] that one pass borrows at once.
struct ScratchParts<'a, const N: usize> {
    bufs: [&'a mut [f32]; N],
    acts: &'a mut SharedActs,
    ffn: &'a mut ffn::FfnScratch,
    moe: &'a mut moe::MoeScratch,
    attn: &'a mut AttnScratch,
}

/// Runs `tokens` through `batch` in chunks of at most `max_batch` (bounding the
/// scratch memory of long prompts); only the last chunk computes logits unless
/// every position's are wanted. `batch` appends the logits it computes to `out`,
/// which starts empty.
pub fn forward_in_batches(
    tokens: &[u32],
    logits: Logits,
    max_batch: usize,
    out: &mut Vec<f32>,
    mut batch: impl FnMut(&[u32], Option<Logits>, &mut Vec<f32>) -> Result<()>,
) -> Result<()> {
    out.clear();
    if tokens.is_empty() {
        return Err(Error::Invalid(
            "a forward pass needs at least one token".into(),
        ));
    }
    let n_chunks = tokens.len().div_ceil(max_batch);
    for (i, chunk) in tokens.chunks(max_batch).enumerate() {
        let want = (i + 1 == n_chunks || logits == Logits::All).then_some(logits);
        batch(chunk, want, out)?;
    }
    Ok(())
}

/// The positions of a batch of `n` whose logits `want` asks for.
fn logit_rows(want: Logits, n: usize) -> std::ops::Range<usize> {
    match want {
        Logits::Last => n - 1..n,
        Logits::All => 0..n,
    }
}

/// The output head over the positions of the residual stream `x` (`[n][n_embd]`)
/// that `want` asks for: the final RMSNorm (into `xn`, free by then), then the
/// output matrix, whose logits are appended to `out` and returned.
#[allow(clippy::too_many_arguments)]
fn output_head<'o>(
    pool: &ThreadPool,
    f: &Arc<GgufFile>,
    acts: &mut SharedActs,
    want: Logits,
    x: &[f32],
    norm: &[f32],
    eps: f32,
    output: &Linear,
    xn: &mut [f32],
    out: &'o mut Vec<f32>,
) -> Result<&'o mut [f32]> {
    let d = output.n_cols;
    let rows = logit_rows(want, x.len() / d);
    let n_rows = rows.len();
    for (r, t) in rows.enumerate() {
        let dst = &mut xn[r * d..(r + 1) * d];
        mori_kernels::ops::rms_norm(&x[t * d..(t + 1) * d], norm, eps, dst);
    }
    let start = out.len();
    out.resize(start + n_rows * output.n_rows, 0.0);
    acts.invalidate();
    acts.matmul(
        pool,
        f,
        output,
        &xn[..n_rows * d],
        n_rows,
        &mut out[start..],
    )?;
    Ok(&mut out[start..])
}

/// A 2-D weight: `n_rows` rows of `n_cols` elements, read in place from the
/// file, or repacked once at load for the AVX-512 kernels (Q4_0, Q5_0, Q8_0, Q4_K, Q6_K; see
/// `mori_kernels::packed`), which give the same bits.
#[derive(Debug, Clone)]
pub struct Linear {
    pub info: TensorInfo,
    pub ty: GgmlType,
    pub n_rows: usize,
    pub n_cols: usize,
    packed: Option<Arc<Packed>>,
}

/// A repacked copy of a weight matrix, in anonymous memory that asks for
/// transparent huge pages (fewer page faults while packing, fewer TLB misses
/// while streaming it).
struct Packed(memmap2::MmapMut);

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes)", self.0.len())
    }
}

/// Whether matrices are repacked at load: where the AVX-512 kernels run,
/// unless `MORI_REPACK=0` (to compare, or to keep the load a plain mapping).
fn repack_enabled() -> bool {
    mori_kernels::simd::level() == mori_kernels::simd::Isa::Avx512
        && std::env::var("MORI_REPACK").as_deref() != Ok("0")
}

impl Linear {
    /// The tensor `name`, which must be `[n_cols, n_rows]` in GGUF order, as
    /// the weight of a matrix product: repacked where that pays (the file's
    /// pages of it are then released).
    pub fn load(f: &GgufFile, name: &str, n_cols: usize, n_rows: usize) -> Result<Linear> {
        let mut l = Linear::load_in_place(f, name, n_cols, n_rows)?;
        if repack_enabled() && mori_kernels::packed::packable(l.ty, n_rows, n_cols) {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let size = mori_kernels::packed::packed_size(l.ty, n_rows, n_cols);
            let mut buf = memmap2::MmapMut::map_anon(size).map_err(|e| {
                Error::Invalid(format!(
                    "{}: {size} bytes for a repacked copy: {e}",
                    l.info.name
                ))
            })?;
            // Only advice: without huge pages the copy works the same.
            #[cfg(target_os = "linux")]
            let _ = buf.advise(memmap2::Advice::HugePage);
            mori_kernels::packed::pack_into(
                l.ty,
                f.tensor_data(&l.info),
                n_rows,
                n_cols,
                threads,
                &mut buf,
            )?;
            f.release(&l.info);
            l.packed = Some(Arc::new(Packed(buf)));
        }
        Ok(l)
    }

    /// [`Linear::load`] without repacking: a table read a row at a time
    /// (the token embedding).
    pub fn load_in_place(f: &GgufFile, name: &str, n_cols: usize, n_rows: usize) -> Result<Linear> {
        let (info, _) = f.tensor(name)?;
        check_shape(f, info, &[n_cols as u64, n_rows as u64])?;
        Ok(Linear {
            info: info.clone(),
            ty: info.ty,
            n_rows,
            n_cols,
            packed: None,
        })
    }

    /// Like [`Linear::load`], but `None` when the file has no such tensor.
    pub fn load_opt(
        f: &GgufFile,
        name: &str,
        n_cols: usize,
        n_rows: usize,
    ) -> Result<Option<Linear>> {
        match f.tensor_info(name) {
            Some(_) => Linear::load(f, name, n_cols, n_rows).map(Some),
            None => Ok(None),
        }
    }

    pub fn view<'a>(&'a self, f: &'a GgufFile) -> Result<WeightView<'a>> {
        if let Some(p) = &self.packed {
            return Ok(WeightView::packed(self.ty, &p.0, self.n_rows, self.n_cols)?);
        }
        Ok(WeightView::new(
            self.ty,
            f.tensor_data(&self.info),
            self.n_rows,
            self.n_cols,
        )?)
    }

    /// Whether this matrix was repacked at load.
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Row `idx` as f32 (embedding lookup).
    pub fn row(&self, f: &GgufFile, idx: usize, out: &mut [f32]) -> Result<()> {
        let row_bytes = self.ty.row_size(self.n_cols)?;
        let data = f.tensor_data(&self.info);
        mori_kernels::dequantize_row(self.ty, &data[idx * row_bytes..(idx + 1) * row_bytes], out)?;
        Ok(())
    }
}

/// Advises the kernel that the token embedding is only looked up a row at a
/// time, when the output matrix is a repacked copy or another tensor: each
/// lookup then maps the page it reads, not the 64 KiB around it.
pub fn advise_lookups_only(f: &GgufFile, tok_embd: &Linear, output: &Linear) {
    if output.is_packed() || output.info.name != tok_embd.info.name {
        f.read_randomly(&tok_embd.info);
    }
}

/// Checks that `info` has exactly `dims` (GGUF order) and names the tensor otherwise.
pub fn check_shape(f: &GgufFile, info: &TensorInfo, dims: &[u64]) -> Result<()> {
    if info.dims != dims {
        return Err(Error::Shape {
            path: f.path().display().to_string(),
            tensor: info.name.clone(),
            got: info.dims.clone(),
            expected: dims.to_vec(),
        });
    }
    Ok(())
}

/// A 1-D tensor (norm weight, bias) converted to f32 at load time: they are
/// small and read on every token.
pub fn load_vector(f: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let (info, data) = f.tensor(name)?;
    // Trailing dimensions of 1 change nothing in ggml's layout: llama.cpp's
    // converter keeps ERNIE-4.5-MoE's `[1, experts]` selection bias as
    // `[experts, 1]`.
    let dims = match info.dims.iter().rposition(|&d| d != 1) {
        Some(last) if info.dims.len() > 1 => &info.dims[..=last],
        _ => &info.dims[..info.dims.len().min(1)],
    };
    if dims != [n as u64] {
        check_shape(f, info, &[n as u64])?;
    }
    let mut out = vec![0.0f32; n];
    mori_kernels::dequantize_row(info.ty, data, &mut out)?;
    f.release(info);
    Ok(out)
}

pub fn load_vector_opt(f: &GgufFile, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
    match f.tensor_info(name) {
        Some(_) => load_vector(f, name, n).map(Some),
        None => Ok(None),
    }
}

/// Activations converted once for the weight types that read them: several
/// projections of the same input (q, k, v; gate, up) share the conversion when
/// their weights use the same activation format.
pub struct SharedActs {
    buf: ActBuf,
    prepared: Option<GgmlType>,
}

impl SharedActs {
    pub fn new() -> Self {
        SharedActs {
            buf: ActBuf::new(),
            prepared: None,
        }
    }

    /// Marks the input as changed; the next product converts it again.
    pub fn invalidate(&mut self) {
        self.prepared = None;
    }

    /// `y[t][r] = w[r] · x[t]` for the `n_tokens` rows of `x`.
    pub fn matmul(
        &mut self,
        pool: &ThreadPool,
        f: &Arc<GgufFile>,
        w: &Linear,
        x: &[f32],
        n_tokens: usize,
        y: &mut [f32],
    ) -> Result<()> {
        let want = mori_kernels::vec_dot_type(w.ty);
        if self.prepared != Some(want) {
            self.buf
                .prepare_on(Some(pool), w.ty, x, n_tokens, w.n_cols)?;
            self.prepared = Some(want);
        }
        mori_kernels::matmul(pool, &w.view(f)?, &self.buf, &mut y[..n_tokens * w.n_rows])?;
        Ok(())
    }
}

impl Default for SharedActs {
    fn default() -> Self {
        Self::new()
    }
}
