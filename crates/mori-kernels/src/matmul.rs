//! Quantize/dequantize dispatch by type, activation preparation, and the
//! multi-threaded matrix product every projection of a forward pass uses.

use crate::simd;
use crate::{kquants, quants, Error, GgmlType, Result, ThreadPool};

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(Error::Size {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

/// Encodes one row of `src.len()` floats as `ty` into `dst`.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    check_len("quantized row bytes", ty.row_size(src.len())?, dst.len())?;
    match ty {
        GgmlType::F32 => {
            for (v, b) in src.iter().zip(dst.chunks_exact_mut(4)) {
                b.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => quants::quantize_f16(src, dst),
        GgmlType::BF16 => quants::quantize_bf16(src, dst),
        GgmlType::Q4_0 => quants::quantize_q4_0(src, dst),
        GgmlType::Q4_1 => quants::quantize_q4_1(src, dst),
        GgmlType::Q5_0 => quants::quantize_q5_0(src, dst),
        GgmlType::Q5_1 => quants::quantize_q5_1(src, dst),
        GgmlType::Q8_0 => quants::quantize_q8_0(src, dst),
        GgmlType::Q8_1 => quants::quantize_q8_1(src, dst),
        GgmlType::Q4K => kquants::quantize_row_q4_k(src, dst)?,
        GgmlType::Q5K => kquants::quantize_row_q5_k(src, dst)?,
        GgmlType::Q6K => kquants::quantize_row_q6_k(src, dst)?,
        GgmlType::Q8K => kquants::quantize_row_q8_k(src, dst)?,
    }
    Ok(())
}

/// Decodes one row of `ty` into `dst.len()` floats.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    check_len("quantized row bytes", ty.row_size(dst.len())?, src.len())?;
    match ty {
        GgmlType::F32 => {
            for (b, v) in src.chunks_exact(4).zip(dst.iter_mut()) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => quants::dequantize_f16(src, dst),
        GgmlType::BF16 => quants::dequantize_bf16(src, dst),
        GgmlType::Q4_0 => quants::dequantize_q4_0(src, dst),
        GgmlType::Q4_1 => quants::dequantize_q4_1(src, dst),
        GgmlType::Q5_0 => quants::dequantize_q5_0(src, dst),
        GgmlType::Q5_1 => quants::dequantize_q5_1(src, dst),
        GgmlType::Q8_0 => quants::dequantize_q8_0(src, dst),
        GgmlType::Q8_1 => quants::dequantize_q8_1(src, dst),
        GgmlType::Q4K => kquants::dequantize_row_q4_k(src, dst)?,
        GgmlType::Q5K => kquants::dequantize_row_q5_k(src, dst)?,
        GgmlType::Q6K => kquants::dequantize_row_q6_k(src, dst)?,
        GgmlType::Q8K => kquants::dequantize_row_q8_k(src, dst)?,
    }
    Ok(())
}

/// Converts one activation row to `ty` the way llama.cpp's x86 build does
/// (see `quants::quantize_q8_0_act`); Q8_K uses the reference rounding, as
/// llama.cpp does.
fn quantize_act_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    match ty {
        GgmlType::Q8_0 => quants::quantize_q8_0_act(src, dst),
        GgmlType::Q8_1 => quants::quantize_q8_1_act(src, dst),
        _ => quantize_row(ty, src, dst)?,
    }
    Ok(())
}

/// The format activations are converted to before a dot product with weights
/// of type `w`: 8-bit blocks for the quantized types (integer dot products),
/// f32 for the float types (the weight is widened on the fly).
pub fn vec_dot_type(w: GgmlType) -> GgmlType {
    match w {
        // llama.cpp rounds activations to the weights' own 16-bit type.
        GgmlType::F32 => GgmlType::F32,
        GgmlType::F16 => GgmlType::F16,
        GgmlType::BF16 => GgmlType::BF16,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => GgmlType::Q8K,
        // Activation formats are never weights; pair them with themselves.
        GgmlType::Q8_1 => GgmlType::Q8_1,
        GgmlType::Q8K => GgmlType::Q8K,
    }
}

/// Dot product of one weight row (`n` elements of `ty`) with one activation
/// row already in `vec_dot_type(ty)`.
#[inline]
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], x: ActRow<'_>) -> f32 {
    vec_dot_at(simd::level(), ty, n, w, x)
}

/// [`vec_dot`] in a chosen kernel tier (one of [`simd::Isa::available`]).
pub fn vec_dot_at(isa: simd::Isa, ty: GgmlType, n: usize, w: &[u8], x: ActRow<'_>) -> f32 {
    match (ty, x) {
        (GgmlType::F32, ActRow::F32(x)) => simd::dot_f32_at(isa, w, &x[..n]),
        (GgmlType::F16, ActRow::F32(x)) => simd::dot_f16_at(isa, w, &x[..n]),
        (GgmlType::BF16, ActRow::F32(x)) => simd::dot_bf16_at(isa, w, &x[..n]),
        (GgmlType::Q4_0, ActRow::Q(x)) => simd::dot_q4_0_q8_0_at(isa, w, x),
        (GgmlType::Q4_1, ActRow::Q(x)) => simd::dot_q4_1_q8_1_at(isa, w, x),
        (GgmlType::Q5_0, ActRow::Q(x)) => simd::dot_q5_0_q8_0_at(isa, w, x),
        (GgmlType::Q5_1, ActRow::Q(x)) => simd::dot_q5_1_q8_1_at(isa, w, x),
        (GgmlType::Q8_0, ActRow::Q(x)) => simd::dot_q8_0_q8_0_at(isa, w, x),
        (GgmlType::Q4K, ActRow::Q(x)) => simd::dot_q4_k_q8_k_at(isa, n, w, x),
        (GgmlType::Q5K, ActRow::Q(x)) => simd::dot_q5_k_q8_k_at(isa, n, w, x),
        (GgmlType::Q6K, ActRow::Q(x)) => simd::dot_q6_k_q8_k_at(isa, n, w, x),
        _ => {
            panic!("vec_dot: {ty} weights with mismatched activations (callers check vec_dot_type)")
        }
    }
}

/// One activation row in the format a weight type's dot product wants.
#[derive(Clone, Copy)]
pub enum ActRow<'a> {
    F32(&'a [f32]),
    Q(&'a [u8]),
}

/// A weight matrix: `n_rows` rows of `n_cols` elements of `ty`, read in place
/// from the file, or repacked in groups of 16 rows ([`crate::packed`]).
#[derive(Clone, Copy)]
pub struct WeightView<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub n_rows: usize,
    pub n_cols: usize,
    /// `data` is in the x16 layout of [`crate::packed`].
    pub packed: bool,
}

impl<'a> WeightView<'a> {
    pub fn new(ty: GgmlType, data: &'a [u8], n_rows: usize, n_cols: usize) -> Result<Self> {
        check_len(
            "weight matrix bytes",
            ty.row_size(n_cols)? * n_rows,
            data.len(),
        )?;
        Ok(WeightView {
            ty,
            data,
            n_rows,
            n_cols,
            packed: false,
        })
    }

    /// A matrix repacked by [`crate::packed::pack`].
    pub fn packed(ty: GgmlType, data: &'a [u8], n_rows: usize, n_cols: usize) -> Result<Self> {
        if !crate::packed::packable(ty, n_rows, n_cols) {
            return Err(Error::Unsupported(format!(
                "{ty} weights of {n_rows} × {n_cols} have no repacked layout"
            )));
        }
        check_len(
            "repacked weight bytes",
            crate::packed::packed_size(ty, n_rows, n_cols),
            data.len(),
        )?;
        Ok(WeightView {
            ty,
            data,
            n_rows,
            n_cols,
            packed: true,
        })
    }

    fn row(&self, r: usize, row_bytes: usize) -> &'a [u8] {
        &self.data[r * row_bytes..(r + 1) * row_bytes]
    }
}

/// Activations `[n_tokens][n_cols]` converted once to the format that weights
/// of one activation type multiply with; reused across calls to avoid
/// allocating in the token loop.
#[derive(Default)]
pub struct ActBuf {
    ty: Option<GgmlType>,
    n_tokens: usize,
    n_cols: usize,
    row_bytes: usize,
    f32s: Vec<f32>,
    bytes: Vec<u8>,
    /// Q8_0 activations, for repacked weights: each block's scale as f32, and
    /// its 16 lane corrections (`-8·Σ`, then `-128·Σ`, of each lane's 4 values).
    dx: Vec<f32>,
    corr: Vec<i32>,
    /// Q8_K activations, for repacked Q4_K weights: per block, 4 dwords of the
    /// sub-block sum pairs `(Σ sub 2k, Σ sub 2k+1)` as i16 (see `packed`).
    ksub: Vec<i32>,
    /// Q8_K activations, for repacked Q6_K weights: per block, 8 dwords
    /// `(-16·Σ group 2k, -16·Σ group 2k+1)` as i16 (see `packed`).
    q6c: Vec<i32>,
}

impl ActBuf {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for `n_tokens` rows of `n_cols` for weights of type
    /// `w_ty`, so that preparing up to that many allocates nothing.
    pub fn reserve(&mut self, w_ty: GgmlType, n_tokens: usize, n_cols: usize) -> Result<()> {
        fn room<T>(v: &mut Vec<T>, n: usize) {
            v.reserve(n.saturating_sub(v.len()));
        }
        let ty = vec_dot_type(w_ty);
        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            room(&mut self.f32s, n_tokens * n_cols);
            return Ok(());
        }
        let bytes = ty.row_size(n_cols)? * n_tokens;
        room(&mut self.bytes, bytes);
        let n_blocks = n_tokens * (n_cols / ty.block_size());
        match ty {
            GgmlType::Q8_0 => {
                room(&mut self.dx, n_blocks);
                room(&mut self.corr, n_blocks * 16);
            }
            GgmlType::Q8K => {
                room(&mut self.ksub, n_blocks * 4);
                room(&mut self.q6c, n_blocks * 8);
            }
            _ => {}
        }
        Ok(())
    }

    /// Converts `x` (`n_tokens` rows of `n_cols`) for products with weights of type `w_ty`.
    pub fn prepare(
        &mut self,
        w_ty: GgmlType,
        x: &[f32],
        n_tokens: usize,
        n_cols: usize,
    ) -> Result<()> {
        self.prepare_on(None, w_ty, x, n_tokens, n_cols)
    }

    /// [`ActBuf::prepare`], the rows converted on `pool`'s threads.
    pub fn prepare_on(
        &mut self,
        pool: Option<&ThreadPool>,
        w_ty: GgmlType,
        x: &[f32],
        n_tokens: usize,
        n_cols: usize,
    ) -> Result<()> {
        check_len("activation floats", n_tokens * n_cols, x.len())?;
        let ty = vec_dot_type(w_ty);
        self.n_tokens = n_tokens;
        self.n_cols = n_cols;
        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            // 16-bit activations are kept as the f32 values they round to.
            self.f32s.clear();
            match ty {
                GgmlType::F16 => self
                    .f32s
                    .extend(x.iter().map(|&v| half::f16::from_f32(v).to_f32())),
                GgmlType::BF16 => self
                    .f32s
                    .extend(x.iter().map(|&v| half::bf16::from_f32(v).to_f32())),
                _ => self.f32s.extend_from_slice(x),
            }
            self.row_bytes = n_cols * 4;
        } else {
            self.row_bytes = ty.row_size(n_cols)?;
            self.bytes.resize(self.row_bytes * n_tokens, 0);
            match pool {
                Some(pool) if n_tokens > 1 => {
                    // Rows are whole blocks (row_size checked it), so no row
                    // can fail; an error would still be kept, not dropped.
                    let failed = std::sync::Mutex::new(None);
                    pool.for_chunks_mut(&mut self.bytes, self.row_bytes, |t, dst| {
                        if let Err(e) = quantize_act_row(ty, &x[t * n_cols..(t + 1) * n_cols], dst)
                        {
                            *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                        }
                    });
                    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
                        return Err(e);
                    }
                }
                _ => {
                    for (src, dst) in x
                        .chunks_exact(n_cols)
                        .zip(self.bytes.chunks_exact_mut(self.row_bytes))
                    {
                        quantize_act_row(ty, src, dst)?;
                    }
                }
            }
            if ty == GgmlType::Q8_0 {
                self.prepare_lanes();
            }
            if ty == GgmlType::Q8K {
                self.prepare_k_sums();
            }
        }
        self.ty = Some(ty);
        Ok(())
    }

    /// The scales and lane corrections of Q8_0 activations (see the fields).
    fn prepare_lanes(&mut self) {
        let n_blocks = self.bytes.len() / 34;
        self.dx.resize(n_blocks, 0.0);
        self.corr.resize(n_blocks * 16, 0);
        for ((xb, dx), corr) in self
            .bytes
            .chunks_exact(34)
            .zip(&mut self.dx)
            .zip(self.corr.chunks_exact_mut(16))
        {
            *dx = quants::f16_at(xb, 0);
            for k in 0..8 {
                let s: i32 = xb[2 + 4 * k..6 + 4 * k]
                    .iter()
                    .map(|&v| v as i8 as i32)
                    .sum();
                corr[k] = -8 * s;
                corr[8 + k] = -128 * s;
            }
        }
    }

    /// The group-sum pairs of Q8_K activations (see the fields).
    fn prepare_k_sums(&mut self) {
        self.ksub.clear();
        self.q6c.clear();
        let halves =
            |a: i32, b: i32| (a as i16 as u16 as u32 | ((b as i16 as u16 as u32) << 16)) as i32;
        for xb in self.bytes.chunks_exact(292) {
            let bsum = |g: usize| i16::from_le_bytes([xb[260 + 2 * g], xb[261 + 2 * g]]) as i32;
            // Values are at most 127 in magnitude, so a sub-block's 32 sum to
            // an i16, and 16 times a group's 16 too.
            let sub = |j: usize| bsum(2 * j) + bsum(2 * j + 1);
            self.ksub
                .extend((0..4).map(|k| halves(sub(2 * k), sub(2 * k + 1))));
            self.q6c
                .extend((0..8).map(|k| halves(-16 * bsum(2 * k), -16 * bsum(2 * k + 1))));
        }
    }

    fn row(&self, t: usize) -> ActRow<'_> {
        match self.ty {
            Some(GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) => {
                ActRow::F32(&self.f32s[t * self.n_cols..(t + 1) * self.n_cols])
            }
            _ => ActRow::Q(&self.bytes[t * self.row_bytes..(t + 1) * self.row_bytes]),
        }
    }
}

/// The output of a product, shared by its threads: each writes the elements
/// of its own weight rows.
type OutPtr = crate::scratch::SyncPtr<f32>;

/// Rows handed to a thread at a time: small enough to balance, large enough
/// that the bookkeeping is negligible.
const ROW_CHUNK: usize = 16;

/// `y[t * w.n_rows + r] = w[r] · x[t]` for every token row `t` of `acts`.
pub fn matmul(pool: &ThreadPool, w: &WeightView, acts: &ActBuf, y: &mut [f32]) -> Result<()> {
    matmul_at(simd::level(), pool, w, acts, y)
}

/// [`matmul`] in a chosen kernel tier (one of [`simd::Isa::available`]);
/// every tier gives the same bits.
pub fn matmul_at(
    isa: simd::Isa,
    pool: &ThreadPool,
    w: &WeightView,
    acts: &ActBuf,
    y: &mut [f32],
) -> Result<()> {
    let Some(act_ty) = acts.ty else {
        return Err(Error::Unsupported(
            "matmul with activations that were never prepared".into(),
        ));
    };
    if act_ty != vec_dot_type(w.ty) {
        return Err(Error::Unsupported(format!(
            "{} weights need {} activations, but they were prepared as {act_ty}",
            w.ty,
            vec_dot_type(w.ty)
        )));
    }
    check_len("activation columns", w.n_cols, acts.n_cols)?;
    check_len("matmul output", acts.n_tokens * w.n_rows, y.len())?;
    if w.packed {
        return matmul_packed(isa, pool, w, acts, y);
    }
    let row_bytes = w.ty.row_size(w.n_cols)?;
    let n_rows = w.n_rows;
    let out = OutPtr::new(y);
    let n_chunks = n_rows.div_ceil(ROW_CHUNK);
    let n_threads = pool.n_threads();
    pool.run(|tid| {
        // Capture the whole `OutPtr` (which is Sync), not its raw-pointer field.
        #[allow(clippy::redundant_locals)]
        let out = out;
        // Contiguous chunk ranges per thread keep each thread's weights streaming.
        let per = n_chunks.div_ceil(n_threads);
        let (c0, c1) = (tid * per, ((tid + 1) * per).min(n_chunks));
        let (r0, r1) = ((c0 * ROW_CHUNK).min(n_rows), (c1 * ROW_CHUNK).min(n_rows));
        let job = Rows {
            isa,
            w,
            acts,
            row_bytes,
            out,
        };
        // The tile's shape: 4 × 4 accumulators need AVX-512's 32 registers;
        // AVX2's 16 hold 2 × 4. A K-type block unpacks into eight or more
        // registers of its own, so one row at a time for those.
        let k_type = matches!(w.ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K);
        let t_tiled = match isa {
            _ if w.ty == GgmlType::F16 => job.tiled_f16::<4, 3>(r0, r1),
            _ if k_type => job.tiled::<1, 4>(r0, r1),
            simd::Isa::Avx512 => job.tiled::<4, 4>(r0, r1),
            _ => job.tiled::<2, 4>(r0, r1),
        };
        job.rest(r0, r1, t_tiled);
    });
    Ok(())
}

/// [`matmul_at`] for weights in the x16 layout: the threads claim runs of
/// whole groups (each a share of what is left) and sweep every
/// token past each group (see [`packed_groups`]). Tiers below AVX-512 take a
/// fixed share of groups, turn each row back into the file's layout and use
/// the plain kernels, which give the same bits.
fn matmul_packed(
    isa: simd::Isa,
    pool: &ThreadPool,
    w: &WeightView,
    acts: &ActBuf,
    y: &mut [f32],
) -> Result<()> {
    use crate::packed::{unpack_row, GROUP};
    let row_bytes = w.ty.row_size(w.n_cols)?;
    let group_bytes = crate::packed::group_bytes(w.ty, w.n_cols);
    let n_groups = w.n_rows / GROUP;
    let (n_rows, n_cols, n_tokens) = (w.n_rows, w.n_cols, acts.n_tokens);
    let out = OutPtr::new(y);
    let n_threads = pool.n_threads();
    let fast = isa.min(simd::detect_cached()) == simd::Isa::Avx512;
    let next = std::sync::atomic::AtomicUsize::new(0);
    pool.run(|tid| {
        #[allow(clippy::redundant_locals)]
        let out = out;
        let per = n_groups.div_ceil(n_threads);
        let (g0, g1) = ((tid * per).min(n_groups), ((tid + 1) * per).min(n_groups));
        // SAFETY (both stores): `t * n_rows + r` < y.len() (checked by
        // `matmul_at`), and the rows of groups g0..g1 belong to this thread.
        let store = |r: usize, t: usize, v: f32| unsafe { *out.add(t * n_rows + r) = v };
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: as `store`, for the 16 rows `r0 ..` of one group,
            // which only the thread that claimed the group writes.
            let store16 = |r0: usize, t: usize, v: &[f32; GROUP]| unsafe {
                std::ptr::copy_nonoverlapping(v.as_ptr(), out.add(t * n_rows + r0), GROUP)
            };
            // Runs of groups claimed as the threads get to them: the cores
            // do not stream weights at exactly the same rate, and a fixed
            // split left each waiting for the other 5-10% of the time. Each
            // run is a share of what is left (guided scheduling): long runs
            // while much remains, single groups at the end, so the threads
            // finish within about one group of each other.
            use std::sync::atomic::Ordering::Relaxed;
            loop {
                let a = next.load(Relaxed);
                if a >= n_groups {
                    return;
                }
                let b = (a + ((n_groups - a) / (2 * n_threads)).max(1)).min(n_groups);
                if next.compare_exchange_weak(a, b, Relaxed, Relaxed).is_err() {
                    continue;
                }
                let groups = &w.data[a * group_bytes..b * group_bytes];
                packed_groups(w.ty, groups, group_bytes, a, n_cols, acts, &store16);
            }
        }
        let _ = fast;
        let mut row = vec![0u8; row_bytes];
        for r in g0 * GROUP..g1 * GROUP {
            unpack_row(w.ty, w.data, n_cols, r, &mut row);
            for t in 0..n_tokens {
                store(r, t, vec_dot_at(isa, w.ty, n_cols, &row, acts.row(t)));
            }
        }
    });
    Ok(())
}

/// The AVX-512 sweep over the groups in `groups` (the first is group `g0`):
/// K-type weights eight tokens at a time, then every type two at a time,
/// then the odd one.
#[cfg(target_arch = "x86_64")]
fn packed_groups(
    ty: GgmlType,
    groups: &[u8],
    group_bytes: usize,
    g0: usize,
    n_cols: usize,
    acts: &ActBuf,
    store16: &impl Fn(usize, usize, &[f32; 16]),
) {
    use crate::packed::{avx512, GROUP};
    let n_tokens = acts.n_tokens;
    let nb32 = n_cols / 32;
    let nb256 = n_cols / 256;
    let x = |t: usize| acts.bytes[t * acts.row_bytes..].as_ptr();
    let dx = |t: usize| acts.dx[t * nb32..].as_ptr();
    let corr = |t: usize| acts.corr[t * nb32 * 16..].as_ptr();
    let ksub = |t: usize| acts.ksub[t * nb256 * 4..].as_ptr();
    let q6c = |t: usize| acts.q6c[t * nb256 * 8..].as_ptr();
    // SAFETY (every call): AVX-512 with VNNI is present (the caller checked);
    // `g` holds the group's blocks and each activation row and its prepared
    // scales, corrections or sums as many blocks (`matmul_at` checked the
    // activations' type and length).
    let two = |g: *const u8, t: usize| unsafe {
        match ty {
            GgmlType::Q4_0 => avx512::group::<4, 2>(
                nb32,
                g,
                [x(t), x(t + 1)],
                [dx(t), dx(t + 1)],
                [corr(t), corr(t + 1)],
            ),
            GgmlType::Q5_0 => avx512::group::<5, 2>(
                nb32,
                g,
                [x(t), x(t + 1)],
                [dx(t), dx(t + 1)],
                [corr(t), corr(t + 1)],
            ),
            GgmlType::Q8_0 => avx512::group::<8, 2>(
                nb32,
                g,
                [x(t), x(t + 1)],
                [dx(t), dx(t + 1)],
                [corr(t), corr(t + 1)],
            ),
            GgmlType::Q4K => {
                avx512::group_q4k::<2>(nb256, g, [x(t), x(t + 1)], [ksub(t), ksub(t + 1)])
            }
            _ => avx512::group_q6k::<2>(nb256, g, [x(t), x(t + 1)], [q6c(t), q6c(t + 1)]),
        }
    };
    // K-type batches: eight tokens per pass over a group widened once.
    const BATCH: usize = 8;
    let wide_bytes = match ty {
        GgmlType::Q4K => avx512::Q4K_WIDE,
        GgmlType::Q6K => avx512::Q6K_WIDE,
        _ => 0,
    } * nb256;
    let batched = wide_bytes > 0 && n_tokens >= BATCH;
    let widen = |g: *const u8, wide: *mut u8| unsafe {
        match ty {
            GgmlType::Q4K => avx512::widen_q4k(nb256, g, wide),
            _ => avx512::widen_q6k(nb256, g, wide),
        }
    };
    let batch = |g: *const u8, wide: *const u8, t: usize| unsafe {
        let xs = std::array::from_fn(|i| x(t + i));
        match ty {
            GgmlType::Q4K => avx512::group_q4k_batch::<BATCH>(
                nb256,
                g,
                wide,
                xs,
                std::array::from_fn(|i| ksub(t + i)),
            ),
            _ => avx512::group_q6k_batch::<BATCH>(
                nb256,
                wide,
                xs,
                std::array::from_fn(|i| q6c(t + i)),
            ),
        }
    };
    let one = |g: *const u8, t: usize| unsafe {
        match ty {
            GgmlType::Q4_0 => avx512::group::<4, 1>(nb32, g, [x(t)], [dx(t)], [corr(t)]),
            GgmlType::Q5_0 => avx512::group::<5, 1>(nb32, g, [x(t)], [dx(t)], [corr(t)]),
            GgmlType::Q8_0 => avx512::group::<8, 1>(nb32, g, [x(t)], [dx(t)], [corr(t)]),
            GgmlType::Q4K => avx512::group_q4k::<1>(nb256, g, [x(t)], [ksub(t)]),
            _ => avx512::group_q6k::<1>(nb256, g, [x(t)], [q6c(t)]),
        }
    };
    // The groups in memory order: the kernels prefetch ahead of the block
    // they read, into the next group at a group's end.
    let n = groups.len() / group_bytes;
    WIDE.with_borrow_mut(|wide| {
        if batched && wide.len() < wide_bytes / 64 {
            wide.resize(wide_bytes / 64, Line([0; 64]));
        }
        for i in 0..n {
            let g = &groups[i * group_bytes..(i + 1) * group_bytes];
            let r0 = (g0 + i) * GROUP;
            let mut t = 0;
            if batched {
                let wide = wide.as_mut_ptr() as *mut u8;
                widen(g.as_ptr(), wide);
                while t + BATCH <= n_tokens {
                    for (j, row) in batch(g.as_ptr(), wide, t).iter().enumerate() {
                        store16(r0, t + j, row);
                    }
                    t += BATCH;
                }
            }
            while t + 2 <= n_tokens {
                for (j, row) in two(g.as_ptr(), t).iter().enumerate() {
                    store16(r0, t + j, row);
                }
                t += 2;
            }
            if t < n_tokens {
                store16(r0, t, &one(g.as_ptr(), t)[0]);
            }
        }
    });
}

/// 64 bytes, 64-byte aligned: the unit of [`WIDE`].
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Each thread's widened K-type group (`packed::avx512::widen_q4k`,
    /// `widen_q6k`): a prompt unpacks each group once for all its batches of
    /// tokens. It grows to the widest group the thread has met (about 180 KiB
    /// for 8192 columns) and stays, so no product allocates after the first.
    static WIDE: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One thread's share of a matrix product: rows `r0..r1` of `w` against
/// every token of `acts`.
struct Rows<'a, 'w> {
    isa: simd::Isa,
    w: &'a WeightView<'w>,
    acts: &'a ActBuf,
    row_bytes: usize,
    out: OutPtr,
}

impl Rows<'_, '_> {
    fn q_row(&self, t: usize) -> &[u8] {
        match self.acts.row(t) {
            ActRow::Q(x) => x,
            ActRow::F32(_) => unreachable!("quantized weights take quantized activations"),
        }
    }

    fn store(&self, r: usize, t: usize, v: f32) {
        // SAFETY: `t * n_rows + r` < y.len() (`matmul_at` checked the length),
        // and row `r` belongs to this thread alone.
        unsafe { *self.out.add(t * self.w.n_rows + r) = v };
    }

    /// Prompt processing: tiles of `R` rows × `T` tokens over the first
    /// `n_tokens / T * T` tokens (the last rows that do not fill a tile go one
    /// at a time); returns how many tokens it did. Each row's weights stay in
    /// the L1 cache while the tokens stream past, and each activation block is
    /// read once for `R` rows.
    fn tiled<const R: usize, const T: usize>(&self, r0: usize, r1: usize) -> usize {
        let n_tokens = self.acts.n_tokens;
        if !simd::has_tile(self.isa, self.w.ty) || n_tokens < T {
            return 0;
        }
        let (ty, n) = (self.w.ty, self.w.n_cols);
        let t_full = n_tokens / T * T;
        let r_full = r0 + (r1 - r0) / R * R;
        for r in (r0..r_full).step_by(R) {
            let ws: [&[u8]; R] = std::array::from_fn(|k| self.w.row(r + k, self.row_bytes));
            for t in (0..t_full).step_by(T) {
                let xs: [&[u8]; T] = std::array::from_fn(|k| self.q_row(t + k));
                let v = simd::tile::<R, T>(self.isa, ty, n, ws, xs);
                for (k, row) in v.iter().enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        self.store(r + k, t + j, v);
                    }
                }
            }
        }
        for r in r_full..r1 {
            let ws = [self.w.row(r, self.row_bytes)];
            for t in (0..t_full).step_by(T) {
                let xs: [&[u8]; T] = std::array::from_fn(|k| self.q_row(t + k));
                let v = simd::tile::<1, T>(self.isa, ty, n, ws, xs);
                for (j, &v) in v[0].iter().enumerate() {
                    self.store(r, t + j, v);
                }
            }
        }
        t_full
    }

    /// [`Rows::tiled`] for F16 weights, whose activations are f32 rows
    /// (`simd::tile_f16`, AVX-512 only): 4 rows × 3 tokens keep 24
    /// accumulators and 8 widened weight registers in the 32. The tokens go
    /// in blocks of about 512 KiB of activations, which stay in L2 while all
    /// of this thread's row tiles pass over them (the whole prompt's would
    /// come from L3 for every tile: 0.7× the speed on llama-1b).
    fn tiled_f16<const R: usize, const T: usize>(&self, r0: usize, r1: usize) -> usize {
        let (n, n_tokens) = (self.w.n_cols, self.acts.n_tokens);
        if !simd::has_tile_f16(self.isa, n) || n_tokens < T {
            return 0;
        }
        let x_row = |t: usize| match self.acts.row(t) {
            ActRow::F32(x) => x,
            ActRow::Q(_) => unreachable!("F16 weights take f32 activations"),
        };
        let t_full = n_tokens / T * T;
        let r_full = r0 + (r1 - r0) / R * R;
        // Tokens in blocks of about 512 KiB of activations.
        let block = (131_072 / n).max(1).div_ceil(T) * T;
        // Rows `a..b` times tokens `t0..t1`: one R-row tile, or fewer rows
        // one at a time.
        let tile = |a: usize, b: usize, t0: usize, t1: usize| {
            for t in (t0..t1).step_by(T) {
                let xs: [&[f32]; T] = std::array::from_fn(|k| x_row(t + k));
                if b - a == R {
                    let ws: [&[u8]; R] = std::array::from_fn(|k| self.w.row(a + k, self.row_bytes));
                    let v = simd::tile_f16::<R, T>(self.isa, n, ws, xs);
                    for (k, row) in v.iter().enumerate() {
                        for (j, &v) in row.iter().enumerate() {
                            self.store(a + k, t + j, v);
                        }
                    }
                } else {
                    for r in a..b {
                        let v = simd::tile_f16::<1, T>(
                            self.isa,
                            n,
                            [self.w.row(r, self.row_bytes)],
                            xs,
                        );
                        for (j, &v) in v[0].iter().enumerate() {
                            self.store(r, t + j, v);
                        }
                    }
                }
            }
        };
        for t0 in (0..t_full).step_by(block) {
            let t1 = (t0 + block).min(t_full);
            for r in (r0..r_full).step_by(R) {
                tile(r, r + R, t0, t1);
            }
            tile(r_full, r1, t0, t1);
        }
        t_full
    }

    /// Tokens `t0..` (all of them when generating): four rows at a time where
    /// a tile kernel exists, then one at a time. The four rows come from the
    /// four quarters of this thread's rows, so the weights are read as four
    /// long sequential streams that the hardware prefetcher follows; four
    /// neighbouring rows would make four short streams it loses track of.
    fn rest(&self, r0: usize, r1: usize, t0: usize) {
        let (ty, n, n_tokens) = (self.w.ty, self.w.n_cols, self.acts.n_tokens);
        if t0 >= n_tokens {
            return;
        }
        let mut done = r0;
        if simd::four_rows_help(self.isa, ty) {
            let quarter = (r1 - r0) / 4;
            for i in 0..quarter {
                // Two rows ahead in each stream: generation reads the weights
                // from memory, and the hardware alone keeps too few in flight.
                if i + 2 < quarter {
                    for k in 0..4 {
                        simd::prefetch(self.w.row(r0 + k * quarter + i + 2, self.row_bytes));
                    }
                }
                let rows = [0, 1, 2, 3].map(|k| r0 + k * quarter + i);
                let ws = rows.map(|r| self.w.row(r, self.row_bytes));
                for t in t0..n_tokens {
                    let v = simd::tile::<4, 1>(self.isa, ty, n, ws, [self.q_row(t)]);
                    for (r, v) in rows.into_iter().zip(v) {
                        self.store(r, t, v[0]);
                    }
                }
            }
            done = r0 + 4 * quarter;
        }
        for r in done..r1 {
            let wr = self.w.row(r, self.row_bytes);
            for t in t0..n_tokens {
                self.store(r, t, vec_dot_at(self.isa, ty, n, wr, self.acts.row(t)));
            }
        }
    }
}
