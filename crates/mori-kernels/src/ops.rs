//! Element-wise and row-wise operations of the forward pass: norms, RoPE,
//! softmax, activations. They are cheap next to the matrix products, so they
//! are written as plain loops the compiler vectorises.

use crate::scratch::SyncPtr;

/// RMS normalisation of one row: `out[i] = x[i] / sqrt(mean(x²) + eps) * w[i]`.
///
/// Each square is taken in f32 and the squares are summed in f64, as ggml
/// does, so that long rows of large activations do not lose precision.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), w.len());
    debug_assert_eq!(x.len(), out.len());
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

/// RMS normalisation in place, then scaling by `w`.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = *v * scale * g;
    }
}

/// Softmax of a row in place. Returns nothing; an all `-inf` row becomes all zeros
/// rather than NaN, since a fully masked row has no mass to give.
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// SwiGLU: `gate[i] = silu(gate[i]) * up[i]`, in place over `gate`, with
/// `silu(x) = x / (1 + exp(-x))` and the `exp` of [`exp_approx`] (the one
/// llama.cpp's vectorised SwiGLU uses, so the results match it bit for bit).
pub fn silu_mul_inplace(gate: &mut [f32], up: &[f32]) {
    assert_eq!(
        gate.len(),
        up.len(),
        "silu_mul_inplace: gate and up lengths"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() {
        // SAFETY: AVX2 and FMA are present; the lengths are equal.
        unsafe { x86_exp::silu_mul(gate, up) };
        return;
    }
    silu_mul_scalar(gate, up);
}

/// [`silu_mul_inplace`] element by element: the reference of the SIMD path.
pub(crate) fn silu_mul_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let s = *g / (1.0 + exp_approx(0.0 - *g));
        *g = s * u;
    }
}

/// GELU with the tanh approximation, `0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²)))`,
/// in f32 in the order ggml writes it, with the one fused multiply-add its x86
/// build forms (`1 + (0.044715·x)·x`). This is the scalar reference of
/// [`gelu_mul_inplace`], and the function its table is built from.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044_715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (COEF_A * x).mul_add(x, 1.0)).tanh())
}

/// `f16(gelu_tanh(x))` for every f16 value `x`, indexed by its bits: ggml's CPU
/// backend computes GELU of f32 activations by rounding them to f16 and looking
/// the result up in this table.
fn gelu_table() -> &'static [half::f16] {
    static TABLE: std::sync::OnceLock<Vec<half::f16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|b| half::f16::from_f32(gelu_tanh(half::f16::from_bits(b).to_f32())))
            .collect()
    })
}

/// GeGLU: `gate[i] = gelu(gate[i]) * up[i]`, in place over `gate`, as llama.cpp's
/// CPU backend computes it (`ggml_vec_geglu_f32`): 0 at or below -10, the
/// identity at or above 10, and between them the gate rounded to f16 and its
/// GELU read from an f16 table, so the results match it bit for bit.
pub fn gelu_mul_inplace(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len());
    let table = gelu_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            table[half::f16::from_f32(x).to_bits() as usize].to_f32() * u
        };
    }
}

/// `x[i] = cap · tanh(x[i] / cap)`: soft-capping of logits, evaluated as
/// llama.cpp does (a scale by `1/cap`, tanh, a scale by `cap`).
pub fn softcap_inplace(x: &mut [f32], cap: f32) {
    let inv = 1.0 / cap;
    for v in x.iter_mut() {
        *v = (*v * inv).tanh() * cap;
    }
}

/// `dst[i] += src[i]`.
pub fn add_inplace(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// How rotary position embedding pairs up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Adjacent pairs `(x[2i], x[2i+1])`: the original Llama layout, which GGUF
    /// converters produce for `llama` by permuting the Q and K weights.
    Normal,
    /// Split halves `(x[i], x[i + n_rot/2])`: the GPT-NeoX layout used as is by
    /// Qwen, Gemma and most Hugging Face models.
    Neox,
}

/// Precomputed rotation angles for one set of RoPE parameters.
///
/// The angle of pair `i` at position `p` is `p * base^(-2i/n_rot)`, adjusted by
/// the frequency factors (Llama 3 style scaling) and YaRN or linear scaling.
#[derive(Debug, Clone)]
pub struct Rope {
    pub layout: RopeLayout,
    /// Number of leading dimensions of each head that are rotated.
    pub n_rot: usize,
    pub base: f32,
    /// Position multiplier: 1/factor for linear and YaRN scaling.
    pub freq_scale: f32,
    /// YaRN extrapolation mix; 0 disables YaRN.
    pub ext_factor: f32,
    /// Magnitude multiplier of cos/sin (YaRN attention factor).
    pub attn_factor: f32,
    /// YaRN correction range in pair dimensions, `[low, high]`.
    pub corr_dims: [f32; 2],
    /// Per-pair divisors of the angle (`rope_freqs.weight`), `n_rot/2` long, or empty.
    pub freq_factors: Vec<f32>,
}

impl Rope {
    /// Plain RoPE without scaling.
    pub fn new(layout: RopeLayout, n_rot: usize, base: f32) -> Self {
        Rope {
            layout,
            n_rot,
            base,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            corr_dims: [0.0, 0.0],
            freq_factors: Vec::new(),
        }
    }

    /// Sets YaRN scaling the way ggml computes it: the correction dimensions
    /// come from the original training context and the two beta bounds.
    pub fn with_yarn(
        mut self,
        factor: f32,
        n_ctx_orig: usize,
        beta_fast: f32,
        beta_slow: f32,
    ) -> Self {
        self.freq_scale = 1.0 / factor;
        self.ext_factor = 1.0;
        let corr_dim = |n_rot_turns: f32| -> f32 {
            self.n_rot as f32
                * (n_ctx_orig as f32 / (n_rot_turns * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * self.base.ln())
        };
        let start = corr_dim(beta_fast).floor();
        let end = corr_dim(beta_slow).ceil();
        self.corr_dims = [start.max(0.0), end.min(self.n_rot as f32 - 1.0)];
        self
    }

    /// Cos and sin of every rotated pair at position `pos`, written to `cs`
    /// as `[cos0, sin0, cos1, sin1, ...]` (`n_rot` floats).
    pub fn angles(&self, pos: usize, cs: &mut [f32]) {
        let half = self.n_rot / 2;
        debug_assert!(cs.len() >= self.n_rot);
        let theta_scale = self.base.powf(-2.0 / self.n_rot as f32);
        let mut theta_extrap = pos as f32;
        for i in 0..half {
            let ff = self.freq_factors.get(i).copied().unwrap_or(1.0);
            let (c, s) = self.yarn(theta_extrap / ff, 2 * i);
            cs[2 * i] = c;
            cs[2 * i + 1] = s;
            theta_extrap *= theta_scale;
        }
    }

    fn yarn(&self, theta_extrap: f32, i0: usize) -> (f32, f32) {
        let theta_interp = self.freq_scale * theta_extrap;
        let mut theta = theta_interp;
        let mut mscale = self.attn_factor;
        if self.ext_factor != 0.0 {
            let y = (i0 as f32 / 2.0 - self.corr_dims[0])
                / (self.corr_dims[1] - self.corr_dims[0]).max(0.001);
            let ramp = 1.0 - y.clamp(0.0, 1.0);
            let mix = ramp * self.ext_factor;
            theta = theta_interp * (1.0 - mix) + theta_extrap * mix;
            mscale *= 1.0 + 0.1 * (1.0 / self.freq_scale).ln();
        }
        (theta.cos() * mscale, theta.sin() * mscale)
    }

    /// Rotates every head of `x` (`n_heads` heads of `head_dim` floats) using the
    /// angles `cs` from [`Rope::angles`].
    ///
    /// Each rotated value is one fused multiply-add over a rounded product,
    /// `fma(a, c, -(b * s))` and `fma(a, s, b * c)`: the contraction the C
    /// compiler makes of ggml's `x0*cos - x1*sin` and `x0*sin + x1*cos` in
    /// llama.cpp's x86 builds. Plain products differ from it in the last bit,
    /// and a last-bit difference in a query or key can cross an f16 rounding
    /// in the attention products and then an 8-bit activation rounding.
    pub fn apply(&self, x: &mut [f32], n_heads: usize, head_dim: usize, cs: &[f32]) {
        let half = self.n_rot / 2;
        for h in 0..n_heads {
            let head = &mut x[h * head_dim..(h + 1) * head_dim];
            match self.layout {
                RopeLayout::Normal => {
                    for i in 0..half {
                        let (c, s) = (cs[2 * i], cs[2 * i + 1]);
                        let (a, b) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = a.mul_add(c, -(b * s));
                        head[2 * i + 1] = a.mul_add(s, b * c);
                    }
                }
                RopeLayout::Neox => {
                    for i in 0..half {
                        let (c, s) = (cs[2 * i], cs[2 * i + 1]);
                        let (a, b) = (head[i], head[i + half]);
                        head[i] = a.mul_add(c, -(b * s));
                        head[i + half] = a.mul_add(s, b * c);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        pub(super) static SCALAR_ATTENTION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        pub(super) static AVX2_ATTENTION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// The SIMD score (q · an f16 key row) has `dot_lanes`' bits. Tested on its
    /// own: in the whole attention, rounding probabilities to f16 hides most
    /// last-bit differences of the scores.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_score_is_bit_identical_to_dot_lanes() {
        use rand::{Rng, SeedableRng};
        if !crate::simd::has_avx2() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut differs = 0;
        for hd in [32, 64, 128, 256] {
            for _ in 0..200 {
                let mut r = || rng.gen_range(-1.0f32..1.0) * 2f32.powi(rng.gen_range(-8..=4));
                let q: Vec<f32> = (0..hd).map(|_| half::f16::from_f32(r()).to_f32()).collect();
                let k: Vec<half::f16> = (0..hd).map(|_| half::f16::from_f32(r())).collect();
                let kf: Vec<f32> = k.iter().map(|x| x.to_f32()).collect();
                // SAFETY: AVX2/FMA/F16C checked above; `k` holds `hd` values.
                let fast = unsafe { x86_attn::dot_f16(&q, k.as_ptr()) };
                let slow = dot_lanes(&q, &kf);
                assert_eq!(fast.to_bits(), slow.to_bits(), "hd {hd}: {fast} vs {slow}");
                if crate::simd::level() == crate::simd::Isa::Avx512 {
                    // Sixteen rows at once: row j is k rotated by j elements.
                    let rows: Vec<f32> = (0..16)
                        .flat_map(|j| (0..hd).map(move |i| (i + j) % hd))
                        .map(|i| kf[i])
                        .collect();
                    let mut wide = [0.0f32; 16];
                    // SAFETY: AVX-512 present; `rows` holds 16 rows of `hd`.
                    unsafe {
                        let v = x86_attn::dot16(q.as_ptr(), rows.as_ptr(), hd);
                        std::arch::x86_64::_mm512_storeu_ps(wide.as_mut_ptr(), v);
                    }
                    for (j, w) in wide.iter().enumerate() {
                        let want = dot_lanes(&q, &rows[j * hd..(j + 1) * hd]);
                        assert_eq!(
                            w.to_bits(),
                            want.to_bits(),
                            "hd {hd}, row {j}: {w} vs {want}"
                        );
                    }
                }
                // How often a plain left-to-right sum differs: the data must be
                // able to tell summation orders apart for this test to mean anything.
                let naive = q.iter().zip(&kf).fold(0.0f32, |s, (a, b)| s + a * b);
                differs += (naive != slow) as usize;
            }
        }
        assert!(
            differs > 100,
            "only {differs} of 800 sums depend on the order"
        );
    }

    /// The SIMD attention gives exactly the scalar attention's bits (which
    /// follow llama.cpp's order), for several shapes, GQA and cache lengths.
    #[test]
    fn simd_attention_is_bit_identical_to_scalar() {
        use rand::{Rng, SeedableRng};
        let pool = crate::ThreadPool::new(2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (n_tokens, pos0, n_head, n_head_kv, hd) in [
            (1, 0, 4, 2, 64),
            (5, 37, 4, 2, 64),
            (3, 70, 2, 1, 128),
            (33, 0, 8, 8, 32),
            (64, 200, 8, 2, 64),
            (9, 30, 14, 2, 64),
            (4, 90, 10, 2, 128),
        ] {
            let n_kv = pos0 + n_tokens;
            let mut r = |n: usize, s: f32| -> Vec<f32> {
                // Magnitudes spread over 2^-6..2^6, so that products summed
                // in another order would round differently.
                (0..n)
                    .map(|_| rng.gen_range(-s..s) * 2f32.powi(rng.gen_range(-6..=6)))
                    .collect()
            };
            let q = r(n_tokens * n_head * hd, 1.0);
            let k: Vec<half::f16> = r(n_kv * n_head_kv * hd, 1.0)
                .into_iter()
                .map(half::f16::from_f32)
                .collect();
            let v: Vec<half::f16> = r(n_kv * n_head_kv * hd, 2.0)
                .into_iter()
                .map(half::f16::from_f32)
                .collect();
            let shape = AttnShape {
                n_tokens,
                pos0,
                n_head,
                n_head_kv,
                head_dim: hd,
                scale: 1.0 / (hd as f32).sqrt(),
            };
            let run = |scalar: bool, avx2: bool| {
                SCALAR_ATTENTION.with(|c| c.set(scalar));
                AVX2_ATTENTION.with(|c| c.set(avx2));
                let mut out = vec![0.0f32; n_tokens * n_head * hd];
                attention(&pool, shape, &q, &k, &v, &mut out, &mut AttnScratch::new());
                SCALAR_ATTENTION.with(|c| c.set(false));
                AVX2_ATTENTION.with(|c| c.set(false));
                out
            };
            // The best tier, AVX2 (the same where that is the best), scalar.
            let slow = run(true, false);
            let fast: Vec<f32> = run(false, false)
                .into_iter()
                .chain(run(false, true))
                .collect();
            let slow2: Vec<f32> = slow.iter().chain(&slow).copied().collect();
            for (i, (a, b)) in fast.iter().zip(&slow2).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "element {i}: {a} vs {b} (shape {n_tokens}x{n_head}x{hd}, pos0 {pos0})"
                );
            }
        }
    }

    /// Random attention inputs: `q` for `n_tokens` rows, and `n_kv` positions of
    /// keys and values in full layout (position p at row p).
    fn attn_inputs(
        seed: u64,
        n_tokens: usize,
        n_kv: usize,
        q_dim: usize,
        kv_dim: usize,
    ) -> (Vec<f32>, Vec<half::f16>, Vec<half::f16>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut r = |n: usize, s: f32| -> Vec<f32> {
            (0..n)
                .map(|_| rng.gen_range(-s..s) * 2f32.powi(rng.gen_range(-3..=3)))
                .collect()
        };
        let q = r(n_tokens * q_dim, 1.0);
        let to16 = |x: Vec<f32>| x.into_iter().map(half::f16::from_f32).collect();
        (q, to16(r(n_kv * kv_dim, 1.0)), to16(r(n_kv * kv_dim, 2.0)))
    }

    /// A ring of `n_rows` rows holding what a cache that wrote positions
    /// `0..n_kv` in order into row `p % n_rows` holds.
    fn ring(full: &[half::f16], kv_dim: usize, n_rows: usize) -> Vec<half::f16> {
        let mut out = vec![half::f16::from_f32(f32::NAN); n_rows * kv_dim];
        for (p, row) in full.chunks(kv_dim).enumerate() {
            out[(p % n_rows) * kv_dim..][..kv_dim].copy_from_slice(row);
        }
        out
    }

    /// Sliding-window attention over a ring gives the bits of the same window
    /// over the full layout (llama.cpp's masked cells), on both paths; it is
    /// close to a plain f64 softmax over the window, and the window matters.
    #[test]
    fn windowed_attention_in_a_ring_matches_full_layout() {
        let pool = crate::ThreadPool::new(2);
        let (n_head, n_head_kv, hd) = (4, 2, 64);
        let (q_dim, kv_dim) = (n_head * hd, n_head_kv * hd);
        for (n_tokens, pos0, window, n_rows) in [
            (1, 40, 16, 16),
            (1, 100, 16, 17),
            (7, 90, 16, 40),
            (5, 3, 16, 20),
            (33, 130, 50, 90),
            (4, 700, 512, 515),
        ] {
            let n_kv = pos0 + n_tokens;
            let (q, k, v) = attn_inputs(n_kv as u64, n_tokens, n_kv, q_dim, kv_dim);
            let (kr, vr) = (ring(&k, kv_dim, n_rows), ring(&v, kv_dim, n_rows));
            let shape = AttnShape {
                n_tokens,
                pos0,
                n_head,
                n_head_kv,
                head_dim: hd,
                scale: 1.0 / (hd as f32).sqrt(),
            };
            let run = |scalar: bool, layout: KvLayout, k: &[half::f16], v: &[half::f16]| {
                SCALAR_ATTENTION.with(|c| c.set(scalar));
                let mut out = vec![0.0f32; n_tokens * q_dim];
                attention_in(
                    &pool,
                    shape,
                    layout,
                    &q,
                    k,
                    v,
                    &mut out,
                    &mut AttnScratch::new(),
                );
                SCALAR_ATTENTION.with(|c| c.set(false));
                out
            };
            let full = KvLayout {
                window: Some(window),
                n_rows: usize::MAX,
            };
            let in_ring = KvLayout {
                window: Some(window),
                n_rows,
            };
            let want = run(true, full, &k, &v);
            for (scalar, layout, kk, vv) in [
                (false, full, &k, &v),
                (true, in_ring, &kr, &vr),
                (false, in_ring, &kr, &vr),
            ] {
                let got = run(scalar, layout, kk, vv);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "window {window} ring {n_rows} scalar {scalar} pos0 {pos0}"
                );
            }
            // Against a plain softmax in f64 over the window.
            let (mut err, mut scale_sum) = (0.0f64, 0.0f64);
            for t in 0..n_tokens {
                let n_seen = pos0 + t + 1;
                let first = n_seen.saturating_sub(window);
                for h in 0..n_head {
                    let kvh = h / (n_head / n_head_kv);
                    let qh = &q[t * q_dim + h * hd..][..hd];
                    let at = |m: &[half::f16], p: usize, d: usize| {
                        m[p * kv_dim + kvh * hd + d].to_f32() as f64
                    };
                    let s: Vec<f64> = (first..n_seen)
                        .map(|p| {
                            (0..hd).map(|d| qh[d] as f64 * at(&k, p, d)).sum::<f64>()
                                * shape.scale as f64
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for d in 0..hd {
                        let o: f64 = (first..n_seen)
                            .zip(&s)
                            .map(|(p, x)| (x - m).exp() / z * at(&v, p, d))
                            .sum();
                        err += (o - want[t * q_dim + h * hd + d] as f64).abs();
                        scale_sum += o.abs();
                    }
                }
            }
            assert!(err / scale_sum < 2e-3, "relative error {}", err / scale_sum);
            if pos0 + 1 > window {
                let unwindowed = run(true, KvLayout::FULL, &k, &v);
                assert_ne!(unwindowed, want, "the window must change the result");
            }
        }
    }

    #[test]
    fn gelu_table_matches_the_scalar_reference() {
        // Known values of the tanh approximation.
        for (x, y) in [
            (1.0f32, 0.841_192),
            (-1.0, -0.158_808),
            (0.0, 0.0),
            (3.0, 2.996_363),
        ] {
            assert!(
                (gelu_tanh(x) - y).abs() < 2e-6,
                "gelu({x}) = {}",
                gelu_tanh(x)
            );
        }
        let xs: Vec<f32> = (-2400..2400).map(|i| i as f32 * 0.00513).collect();
        let up: Vec<f32> = xs.iter().map(|x| 1.5 - x * 0.1).collect();
        let mut g = xs.clone();
        gelu_mul_inplace(&mut g, &up);
        for ((&x, &u), &y) in xs.iter().zip(&up).zip(&g) {
            if x <= -10.0 || x >= 10.0 {
                assert_eq!(y, if x < 0.0 { 0.0 } else { x * u }, "x {x}");
                continue;
            }
            // Exactly the f16 table lookup of the f16-rounded input...
            let x16 = half::f16::from_f32(x).to_f32();
            let want = half::f16::from_f32(gelu_tanh(x16)).to_f32() * u;
            assert_eq!(y.to_bits(), want.to_bits(), "x {x}");
            // ...and close to the exact value: rounding x to f16 moves it by at
            // most 2^-11 |x| (GELU's slope is at most 1.13), the result by 2^-11.
            let exact = gelu_tanh(x) * u;
            let tol = (6e-4 * x.abs() * u.abs() + 5e-4 * exact.abs()) * 1.01;
            assert!((y - exact).abs() <= tol, "x {x}: {y} vs {exact}");
        }
        let mut edges = vec![-10.0f32, -25.0, 10.0, 40.0, -9.99];
        gelu_mul_inplace(&mut edges, &[2.0; 5]);
        assert_eq!(&edges[..4], &[0.0, 0.0, 20.0, 80.0]);
        assert!(edges[4] <= 0.0 && edges[4] > -1e-3);
    }

    /// The GELU table is llama.cpp's entry for entry: with the entries of NaN
    /// inputs set to 0 (their NaN payloads differ and are never used), the
    /// sha256 of its 65536 little-endian f16 values equals that of
    /// `ggml_table_gelu_f16` treated the same way, read with ctypes from
    /// llama-cpp-python 0.3.36's `libggml-cpu.so` after `ggml_cpu_init()`.
    #[test]
    fn gelu_table_is_llama_cpps() {
        use sha2::{Digest, Sha256};
        let bytes: Vec<u8> = gelu_table()
            .iter()
            .enumerate()
            .map(|(i, y)| match half::f16::from_bits(i as u16).is_nan() {
                true => 0,
                false => y.to_bits(),
            })
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            "3112cc8b922b5011981fdea734007a01c19a4ff8d0952da39d15e0e3be641d34"
        );
    }

    #[test]
    fn softcap_bounds_and_keeps_small_values() {
        let mut x = vec![0.5f32, -100.0, 100.0, 0.0];
        softcap_inplace(&mut x, 30.0);
        assert!((x[0] - 0.5).abs() < 1e-3);
        assert!(x[1] > -30.0 && x[1] < -29.0 && x[2] < 30.0 && x[2] > 29.0);
        assert_eq!(x[3], 0.0);
    }

    #[test]
    fn rms_norm_unit_weight_gives_unit_rms() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let mut out = vec![0.0; 64];
        rms_norm(&x, &vec![1.0; 64], 0.0, &mut out);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / 64.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-5, "rms {rms}");
    }

    /// Values that exercise every path of the vector `exp`: ordinary, large
    /// enough to overflow or underflow the normal range, infinities and NaN.
    fn exp_inputs() -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut v: Vec<f32> = (0..4000)
            .map(|i| rng.gen_range(-1.0f32..1.0) * [1.0, 8.0, 60.0, 95.0, 150.0][i % 5])
            .collect();
        v.extend([0.0, -0.0, 88.7, -87.4, -103.9, 200.0, -200.0, f32::INFINITY]);
        v.extend([
            f32::NEG_INFINITY,
            f32::NAN,
            1e-40,
            -1e-40,
            126.5,
            -126.5,
            3.0,
            4.0,
        ]);
        v
    }

    #[test]
    fn simd_silu_is_bit_identical_to_scalar() {
        let gate = exp_inputs();
        let up: Vec<f32> = gate.iter().rev().map(|v| v * 0.37).collect();
        // A length that is not a multiple of 8 takes the scalar tail too.
        for n in [gate.len(), gate.len() - 3] {
            let (mut fast, mut slow) = (gate[..n].to_vec(), gate[..n].to_vec());
            silu_mul_inplace(&mut fast, &up[..n]);
            silu_mul_scalar(&mut slow, &up[..n]);
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "element {i}: gate {}", gate[i]);
            }
        }
    }

    #[test]
    fn simd_softmax_is_bit_identical_to_scalar() {
        let v = exp_inputs();
        let finite: Vec<f32> = v.iter().copied().filter(|x| x.is_finite()).collect();
        let mut rows: Vec<Vec<f32>> = finite
            .chunks(64)
            .map(|c| c[..c.len() / 8 * 8].to_vec())
            .collect();
        // Masked positions, a fully masked row, and rows with NaN.
        rows.push([vec![f32::NEG_INFINITY; 13], finite[..19].to_vec()].concat());
        rows.push(vec![f32::NEG_INFINITY; 16]);
        rows.push([vec![f32::NAN; 3], finite[..13].to_vec()].concat());
        rows.push(v[v.len() - 16..].to_vec());
        for row in rows {
            let (mut fast, mut slow) = (row.clone(), row.clone());
            softmax_lanes(&mut fast);
            softmax_lanes_scalar(&mut slow);
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                // Any NaN is as good as another (a row holding +inf gives inf - inf).
                let same = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
                assert!(same, "position {i} of {row:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn softmax_sums_to_one_and_handles_masked_rows() {
        let mut x = vec![1.0, 2.0, 3.0, f32::NEG_INFINITY];
        softmax_inplace(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
        assert!(x[2] > x[1] && x[1] > x[0]);
        let mut masked = vec![f32::NEG_INFINITY; 3];
        softmax_inplace(&mut masked);
        assert_eq!(masked, vec![0.0; 3]);
    }

    #[test]
    fn rope_preserves_norm_and_is_identity_at_zero() {
        for layout in [RopeLayout::Normal, RopeLayout::Neox] {
            let rope = Rope::new(layout, 8, 10000.0);
            let mut cs = vec![0.0; 8];
            rope.angles(0, &mut cs);
            let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.5).collect();
            let mut x = orig.clone();
            rope.apply(&mut x, 2, 8, &cs);
            assert_eq!(x, orig);
            rope.angles(17, &mut cs);
            rope.apply(&mut x, 2, 8, &cs);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = x.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-4);
            assert_ne!(x, orig);
        }
    }

    #[test]
    fn rope_pairs_follow_layout() {
        // With one pair rotated by 90 degrees the pair (a, b) becomes (-b, a).
        let mut rope = Rope::new(RopeLayout::Neox, 2, 10000.0);
        rope.freq_scale = std::f32::consts::FRAC_PI_2; // angle = pos * 1 * freq_scale
        let mut cs = vec![0.0; 2];
        rope.angles(1, &mut cs);
        let mut x = vec![1.0, 2.0, 7.0];
        rope.apply(&mut x, 1, 3, &cs);
        assert!((x[0] + 2.0).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6);
        assert_eq!(x[2], 7.0, "dimensions past n_rot are not rotated");
    }
}

/// Shape of one causal attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Query rows in this batch.
    pub n_tokens: usize,
    /// Position of the first query row; row `t` attends to positions `0..=pos0 + t`.
    pub pos0: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Multiplier of `q·k`, normally `1/sqrt(head_dim)`.
    pub scale: f32,
}

/// Which cached positions a query sees, and where the cache keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    /// A query at position `p` sees positions `p + 1 - window ..= p` (sliding-window
    /// attention, as llama.cpp masks it); `None`: every position `0..=p`.
    pub window: Option<usize>,
    /// Rows the cache holds: position `p` is at row `p % n_rows`, so a
    /// sliding-window layer can keep a ring of little more than its window.
    pub n_rows: usize,
}

impl KvLayout {
    /// Every past position, stored at its own row.
    pub const FULL: KvLayout = KvLayout {
        window: None,
        n_rows: usize::MAX,
    };

    /// The first position a query sees when it sees `n_seen` positions in all.
    fn first_seen(&self, n_seen: usize) -> usize {
        self.window.map_or(0, |w| n_seen.saturating_sub(w))
    }
}

/// Causal multi-head attention with grouped key/value heads.
///
/// `q` and `out` are `[n_tokens][n_head * head_dim]`; `k` and `v` hold
/// `pos0 + n_tokens` positions of `[n_head_kv * head_dim]` f16 values. Query head
/// `h` reads key/value head `h / (n_head / n_head_kv)`. Work is split over
/// (token, head) pairs across the pool's threads.
pub fn attention(
    pool: &crate::ThreadPool,
    shape: AttnShape,
    q: &[f32],
    k: &[half::f16],
    v: &[half::f16],
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    attention_in(pool, shape, KvLayout::FULL, q, k, v, out, scratch)
}

/// [`attention`] over a cache laid out as `layout` says: a sliding window of
/// positions, kept in a ring of `layout.n_rows` rows.
///
/// The result has the bits llama.cpp computes with every position in its own
/// cell and the ones outside the window masked: a query's scores start at the
/// multiple of 32 at or below its first visible position, so every position
/// keeps the lane it has in the full row, and the masked positions before it
/// would only have added exact zeros.
#[allow(clippy::too_many_arguments)]
pub fn attention_in(
    pool: &crate::ThreadPool,
    shape: AttnShape,
    layout: KvLayout,
    q: &[f32],
    k: &[half::f16],
    v: &[half::f16],
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    let AttnShape {
        n_tokens,
        pos0,
        n_head,
        n_head_kv,
        head_dim: hd,
        scale,
    } = shape;
    let n_kv = pos0 + n_tokens;
    let q_dim = n_head * hd;
    let kv_dim = n_head_kv * hd;
    let n_gqa = n_head / n_head_kv;
    let n_rows = layout.n_rows.min(n_kv);
    debug_assert_eq!(q.len(), n_tokens * q_dim);
    debug_assert_eq!(out.len(), n_tokens * q_dim);
    assert!(
        k.len() >= n_rows * kv_dim && v.len() >= n_rows * kv_dim,
        "attention: the cache holds fewer than {n_rows} rows of {kv_dim}"
    );
    // A ring must still hold the oldest position the first query sees.
    debug_assert!(n_rows >= n_kv - layout.first_seen(pos0 + 1));
    // Cache row of position `p`.
    let row_of = |p: usize| p % layout.n_rows;

    // Scores of one query: from the multiple of 32 at or below its first
    // visible position to its last position, rounded up to 32.
    let span = |n_seen: usize| {
        let lo = layout.first_seen(n_seen) / ROW_PAD * ROW_PAD;
        (lo, n_seen.div_ceil(ROW_PAD) * ROW_PAD - lo)
    };
    let max_span = (pos0 + 1..=n_kv).map(|n| span(n).1).max().unwrap_or(0);
    let tier = AttnTier::of(hd);
    let lens = tier.scratch(hd, n_gqa, max_span);
    #[cfg(target_arch = "x86_64")]
    if tier != AttnTier::Scalar {
        // The cache's rows of one key/value head.
        let kv_head = |kvh: usize| AttnKv {
            k,
            v,
            kv_dim,
            off: kvh * hd,
            n_rows: layout.n_rows,
        };
        if tier == AttnTier::Avx512 {
            // One item per (token, key/value head): its query heads together.
            let attend = match hd {
                64 => x86_attn::attend512::<64>,
                128 => x86_attn::attend512::<128>,
                _ => x86_attn::attend512::<0>,
            };
            per_item(
                pool,
                out,
                n_gqa * hd,
                lens,
                scratch,
                |[scores, qh16, kbuf, acc], item, slot| {
                    let (t, kvh) = (item / n_head_kv, item % n_head_kv);
                    let n_seen = pos0 + t + 1;
                    let kv = kv_head(kvh);
                    let qt = &q[t * q_dim + kvh * n_gqa * hd..][..n_gqa * hd];
                    let len = span(n_seen).1;
                    // SAFETY: AVX-512 F (with AVX2, FMA, F16C) is present
                    // (`simd::level`); the buffers have the sizes `attend512`
                    // documents.
                    unsafe {
                        attend(
                            qt,
                            hd,
                            &kv,
                            layout.first_seen(n_seen),
                            n_seen,
                            scale,
                            qh16,
                            &mut scores[..n_gqa * len],
                            kbuf,
                            acc,
                            slot,
                        )
                    };
                },
            );
            return;
        }
        // One item per (token, head).
        per_item(
            pool,
            out,
            hd,
            lens,
            scratch,
            |[scores, qh16, acc, _], item, slot| {
                let (t, h) = (item / n_head, item % n_head);
                let n_seen = pos0 + t + 1;
                let kv = kv_head(h / n_gqa);
                let qt = &q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
                // SAFETY: AVX2, FMA and F16C are present (checked above); the
                // slices hold what `AttnKv` documents.
                unsafe {
                    x86_attn::attend(
                        qt,
                        &kv,
                        layout.first_seen(n_seen),
                        n_seen,
                        scale,
                        qh16,
                        &mut scores[..span(n_seen).1],
                        acc,
                        slot,
                    )
                };
            },
        );
        return;
    }
    // Rows are padded to whole 32-element steps; the padding holds exact
    // zeros (probability 0, value 0), so it adds nothing.
    per_item(
        pool,
        out,
        hd,
        lens,
        scratch,
        |[scores, qh16, row, vcol], item, acc| {
            let (t, h) = (item / n_head, item % n_head);
            let kvh = h / n_gqa;
            // The cache holds f16, and products with it round the other operand
            // to f16 too, as llama.cpp's do: models whose activations are later
            // quantized to 8 bits amplify even last-bit differences, so matching
            // llama.cpp means matching its roundings and summation order.
            for (d, &s) in qh16
                .iter_mut()
                .zip(&q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd])
            {
                *d = half::f16::from_f32(s).to_f32();
            }
            let n_seen = pos0 + t + 1;
            let first = layout.first_seen(n_seen);
            let (lo, len) = span(n_seen);
            let seen = |j: usize| (first..n_seen).contains(&(lo + j));
            let scores = &mut scores[..len];
            for (j, s) in scores.iter_mut().enumerate() {
                if !seen(j) {
                    *s = f32::NEG_INFINITY;
                    continue;
                }
                let r = row_of(lo + j) * kv_dim + kvh * hd;
                for (x, kx) in row.iter_mut().zip(&k[r..r + hd]) {
                    *x = kx.to_f32();
                }
                *s = dot_lanes(qh16, row) * scale;
            }
            softmax_lanes(scores);
            for s in scores.iter_mut() {
                *s = half::f16::from_f32(*s).to_f32();
            }
            for (d, a) in acc.iter_mut().enumerate() {
                for (j, c) in vcol[..len].iter_mut().enumerate() {
                    *c = if seen(j) {
                        v[row_of(lo + j) * kv_dim + kvh * hd + d].to_f32()
                    } else {
                        0.0
                    };
                }
                *a = dot_lanes(&vcol[..len], scores);
            }
        },
    );
}

/// The working memory of [`attention`], kept by the caller between calls:
/// once it has room for the longest context (see [`AttnScratch::reserve`]),
/// attention allocates nothing.
#[derive(Debug, Default)]
pub struct AttnScratch(Vec<f32>);

impl AttnScratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for every call on `n_threads` threads whose queries see at
    /// most `n_ctx` positions, with the heads of `shape` (its tokens and
    /// positions do not matter).
    pub fn reserve(&mut self, shape: AttnShape, n_ctx: usize, n_threads: usize) {
        let n_gqa = shape.n_head / shape.n_head_kv.max(1);
        let max_span = n_ctx.div_ceil(ROW_PAD) * ROW_PAD;
        let lens = AttnTier::of(shape.head_dim).scratch(shape.head_dim, n_gqa, max_span);
        let need = lens.iter().sum::<usize>() * n_threads;
        self.0.reserve(need.saturating_sub(self.0.len()));
    }
}

/// Which attention kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttnTier {
    /// One item per (token, key/value head), AVX-512.
    Avx512,
    /// One item per (token, head), AVX2 + FMA + F16C.
    Avx2,
    /// The portable reference.
    Scalar,
}

impl AttnTier {
    fn of(hd: usize) -> AttnTier {
        #[cfg(target_arch = "x86_64")]
        if hd.is_multiple_of(ROW_PAD) && crate::simd::has_avx2() && !force_scalar_attention() {
            if crate::simd::level() == crate::simd::Isa::Avx512 && !force_avx2_attention() {
                return AttnTier::Avx512;
            }
            return AttnTier::Avx2;
        }
        let _ = hd;
        AttnTier::Scalar
    }

    /// The lengths of one thread's buffers, for queries of `max_span` scores.
    fn scratch(self, hd: usize, n_gqa: usize, max_span: usize) -> [usize; 4] {
        match self {
            // Scores, f16-rounded queries, a block of keys, accumulators.
            AttnTier::Avx512 => [n_gqa * max_span, n_gqa * hd, 16 * hd, n_gqa * ROW_PAD * hd],
            // Scores, the f16-rounded query, accumulators.
            AttnTier::Avx2 => [max_span, hd, ROW_PAD * hd, 0],
            // Scores, the f16-rounded query, a key row, a value column.
            AttnTier::Scalar => [max_span, hd, hd, max_span],
        }
    }
}

/// Runs `work(bufs, i, out_i)` for every item i, where `out_i` is
/// `out[i · len .. (i + 1) · len]`: the items are dealt round-robin to the
/// pool's threads. Each thread's `bufs` are zeroed buffers of the lengths
/// `lens`, carved from its share of `scratch` (grown if it is too small).
fn per_item<const N: usize>(
    pool: &crate::ThreadPool,
    out: &mut [f32],
    len: usize,
    lens: [usize; N],
    scratch: &mut AttnScratch,
    work: impl Fn(&mut [&mut [f32]; N], usize, &mut [f32]) + Sync,
) {
    let n_threads = pool.n_threads();
    let per_thread: usize = lens.iter().sum();
    if scratch.0.len() < per_thread * n_threads {
        scratch.0.resize(per_thread * n_threads, 0.0);
    }
    let bufs = SyncPtr::new(&mut scratch.0);
    let (total, n_items) = (out.len(), out.len().div_ceil(len.max(1)));
    let base = SyncPtr::new(out);
    pool.run(|tid| {
        // SAFETY: each thread takes its own share of `scratch` and its own
        // items' ranges of `out` (disjoint, and inside them), and `run`
        // returns only when all of them are done.
        let buf = unsafe { bufs.slice(tid * per_thread, per_thread) };
        buf.fill(0.0);
        let mut s = crate::scratch::carve(buf, lens);
        let mut item = tid;
        while item < n_items {
            let start = item * len;
            let slot = unsafe { base.slice(start, len.min(total - start)) };
            work(&mut s, item, slot);
            item += n_threads;
        }
    });
}

/// Tests set this to compare the SIMD attention with the scalar one.
#[cfg(target_arch = "x86_64")]
fn force_scalar_attention() -> bool {
    #[cfg(test)]
    return tests::SCALAR_ATTENTION.with(|c| c.get());
    #[cfg(not(test))]
    false
}

/// Tests set this to compare the AVX-512 attention with the AVX2 one.
#[cfg(target_arch = "x86_64")]
fn force_avx2_attention() -> bool {
    #[cfg(test)]
    return tests::AVX2_ATTENTION.with(|c| c.get());
    #[cfg(not(test))]
    false
}

/// One key/value head of the cache: position `p`'s vector starts at
/// `(p % n_rows) * kv_dim + off` in `k` and `v`.
#[cfg(target_arch = "x86_64")]
struct AttnKv<'a> {
    k: &'a [half::f16],
    v: &'a [half::f16],
    kv_dim: usize,
    off: usize,
    n_rows: usize,
}

#[cfg(target_arch = "x86_64")]
impl AttnKv<'_> {
    /// Where position `p`'s vector starts in `k` and `v`. A full cache
    /// (`n_rows` past every position) needs no division.
    #[inline]
    fn at(&self, p: usize) -> usize {
        let row = if p < self.n_rows { p } else { p % self.n_rows };
        row * self.kv_dim + self.off
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_attn {
    //! The attention of one (token, head) with AVX2: the same roundings and
    //! the same order of every float operation as the scalar code above (and
    //! llama.cpp), with the cache read row by row and widened eight values at
    //! a time.

    use super::{softmax_lanes, AttnKv, ROW_PAD};
    use std::arch::x86_64::*;

    /// Eight f16 values at `p`, widened.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn f16x8(p: *const half::f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    /// `dot_lanes`' final combination of four 8-lane accumulators:
    /// (0+2)+(1+3), halves, then ((t0+t1)+(t2+t3)).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn combine(a: [__m256; 4]) -> f32 {
        let x = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));

        let t = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        let pairs = _mm_hadd_ps(t, t); // t0+t1, t2+t3, ...
        _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs))
    }

    /// `dot_lanes(q, k)` for `k` = the `q.len()` (a multiple of 32) f16
    /// values at `k`, widened.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) unsafe fn dot_f16(q: &[f32], k: *const half::f16) -> f32 {
        let mut a = [_mm256_setzero_ps(); 4];
        for i in (0..q.len()).step_by(32) {
            for (j, aj) in a.iter_mut().enumerate() {
                let e = i + 8 * j;
                *aj = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(e)), f16x8(k.add(e)), *aj);
            }
        }
        combine(a)
    }

    /// Rounds every value of `x` to f16 and back (round to nearest even).
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn round_f16(x: &mut [f32]) {
        let mut c = x.chunks_exact_mut(8);
        for ch in &mut c {
            let v = _mm256_loadu_ps(ch.as_ptr());
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm256_storeu_ps(ch.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
        for v in c.into_remainder() {
            *v = half::f16::from_f32(*v).to_f32();
        }
    }

    /// The part of [`attend`] that does not depend on the vector width: `q`
    /// rounded to f16 into `qh16`, then `scores` = the probabilities of the
    /// positions `first..n_seen` of `kv` (`dot` in dot_lanes' order, times
    /// the scale, softmax, rounded to f16), -inf before the softmax for the
    /// positions outside that range.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn probabilities(
        q: &[f32],
        kv: &AttnKv<'_>,
        first: usize,
        n_seen: usize,
        scale: f32,
        qh16: &mut [f32],
        scores: &mut [f32],
        dot: impl Fn(&[f32], *const half::f16) -> f32,
    ) {
        let hd = q.len();
        let lo = first / ROW_PAD * ROW_PAD;
        debug_assert_eq!(lo + scores.len(), n_seen.div_ceil(ROW_PAD) * ROW_PAD);
        qh16.copy_from_slice(q);
        round_f16(qh16);
        for (j, s) in scores.iter_mut().enumerate() {
            let p = lo + j;
            *s = if (first..n_seen).contains(&p) {
                let k = kv.k[kv.at(p)..][..hd].as_ptr();
                dot(qh16, k) * scale
            } else {
                f32::NEG_INFINITY
            };
        }
        softmax_lanes(scores);
        round_f16(scores);
    }

    /// Writes into `out` the attention output of query row `q` over positions
    /// `first..n_seen` of `kv`. `hd` (= `q.len()`) is a multiple of 32;
    /// `scores` spans from `first` rounded down to 32 to `n_seen` rounded up
    /// to 32; `acc` holds 32 · hd floats.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn attend(
        q: &[f32],
        kv: &AttnKv<'_>,
        first: usize,
        n_seen: usize,
        scale: f32,
        qh16: &mut [f32],
        scores: &mut [f32],
        acc: &mut [f32],
        out: &mut [f32],
    ) {
        let hd = q.len();
        let lo = first / ROW_PAD * ROW_PAD;
        let row = |m: &[half::f16], p: usize| m[kv.at(p)..][..hd].as_ptr();
        let seen = |j: usize| (first..n_seen).contains(&(lo + j));
        probabilities(q, kv, first, n_seen, scale, qh16, scores, |q, k| unsafe {
            dot_f16(q, k)
        });
        // Output column d is dot_lanes(v[.., d], scores): position p feeds lane
        // p % 8 of accumulator (p % 32) / 8 (and lo is a multiple of 32). Keep
        // those 32 partial sums for every d (acc[(p % 32) * hd + d]) and walk
        // the cache row by row.
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (j, &sj) in scores.iter().enumerate() {
            let a = acc[(j % ROW_PAD) * hd..][..hd].as_mut_ptr();
            let sp = _mm256_set1_ps(sj);
            if seen(j) {
                let vp = row(kv.v, lo + j);
                for d in (0..hd).step_by(8) {
                    let v = _mm256_fmadd_ps(f16x8(vp.add(d)), sp, _mm256_loadu_ps(a.add(d)));
                    _mm256_storeu_ps(a.add(d), v);
                }
            } else {
                // Masked or padding: the scalar code multiplies a +0 value by a +0 score.
                for d in (0..hd).step_by(8) {
                    let v = _mm256_add_ps(_mm256_loadu_ps(a.add(d)), _mm256_setzero_ps());
                    _mm256_storeu_ps(a.add(d), v);
                }
            }
        }
        // Combine the 32 partial sums of each column in dot_lanes' order, eight
        // columns at a time: x_l = (a0_l + a2_l) + (a1_l + a3_l), t_l = x_l + x_{l+4},
        // then (t0 + t1) + (t2 + t3).
        for d in (0..hd).step_by(8) {
            let lane = |j: usize, l: usize| _mm256_loadu_ps(acc.as_ptr().add((8 * j + l) * hd + d));
            let x: [__m256; 8] = std::array::from_fn(|l| {
                _mm256_add_ps(
                    _mm256_add_ps(lane(0, l), lane(2, l)),
                    _mm256_add_ps(lane(1, l), lane(3, l)),
                )
            });
            let t: [__m256; 4] = std::array::from_fn(|l| _mm256_add_ps(x[l], x[l + 4]));
            let sum = _mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3]));
            _mm256_storeu_ps(out.as_mut_ptr().add(d), sum);
        }
    }

    /// Sixteen f16 values at `p`, widened.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn f16x16(p: *const half::f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }

    /// `dot_lanes(q, k_j)` for 16 rows `k_j` of `hd` floats at `k` (row j at
    /// `k + j · hd`), lane j of the result. Per row, one register holds
    /// accumulators 0 and 1 of `dot_lanes` (elements 32i + 0..16), another 2
    /// and 3, so every lane sees the same fused multiply-adds; their sum is
    /// (0+2 | 1+3) as `combine` forms it. The 16 horizontal sums then go
    /// together: each step adds two registers' halves side by side, so every
    /// row's sum sees the additions of `combine` (halves, quarters, pairs).
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    #[inline]
    pub(super) unsafe fn dot16(q: *const f32, k: *const f32, hd: usize) -> __m512 {
        let s: [__m512; 16] = std::array::from_fn(|j| {
            let kb = k.add(j * hd);
            let (mut a01, mut a23) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for i in (0..hd).step_by(32) {
                let (qp, kp) = (q.add(i), kb.add(i));
                a01 = _mm512_fmadd_ps(_mm512_loadu_ps(qp), _mm512_loadu_ps(kp), a01);
                a23 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(qp.add(16)),
                    _mm512_loadu_ps(kp.add(16)),
                    a23,
                );
            }
            _mm512_add_ps(a01, a23)
        });
        sum16(&s)
    }

    /// Lane j: the horizontal sum of `s[j]` in `combine`'s order.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    #[inline]
    unsafe fn sum16(s: &[__m512; 16]) -> __m512 {
        // x_m = s_m + s_(m+8): two keys per register (8 lanes each).
        let b: [__m512; 8] = std::array::from_fn(|i| {
            let (a, c) = (s[2 * i], s[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(a, c),
                _mm512_shuffle_f32x4::<0xee>(a, c),
            )
        });
        // t_n = x_n + x_(n+4): four keys per register, one per quarter.
        let c: [__m512; 4] = std::array::from_fn(|i| {
            let (a, d) = (b[2 * i], b[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(a, d),
                _mm512_shuffle_f32x4::<0xdd>(a, d),
            )
        });
        // (t0 + t1), (t2 + t3), then their sum; quarter q, lane r ends up
        // holding key 4r + q.
        let d: [__m512; 2] = std::array::from_fn(|i| {
            let (a, e) = (c[2 * i], c[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x88>(a, e),
                _mm512_shuffle_ps::<0xdd>(a, e),
            )
        });
        let f = _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(d[0], d[1]),
            _mm512_shuffle_ps::<0xdd>(d[0], d[1]),
        );
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_ps(order, f)
    }

    /// [`attend`] for the `q.len() / hd` query heads that share one
    /// key/value head, with 512-bit registers. Every (head, position) product
    /// and every output column takes the same operations in the same order as
    /// in [`attend`], so the same bits; the work is arranged otherwise:
    /// - scores: 16 positions at a time, their keys widened once for all the
    ///   heads (`kbuf`: 16 · hd floats), their 16 horizontal sums in one
    ///   [`sum16`];
    /// - outputs: each of the 32 lane classes of `dot_lanes` (positions
    ///   p ≡ c mod 32) summed in registers, up to 4 heads per pass over the
    ///   values, masked positions skipped (they only add exact zeros).
    ///
    /// `scores` holds `heads · span` floats, `acc` `heads · 32 · hd`, `qh16`
    /// and `out` `heads · hd`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub(super) unsafe fn attend512<const HD: usize>(
        q: &[f32],
        hd: usize,
        kv: &AttnKv<'_>,
        first: usize,
        n_seen: usize,
        scale: f32,
        qh16: &mut [f32],
        scores: &mut [f32],
        kbuf: &mut [f32],
        acc: &mut [f32],
        out: &mut [f32],
    ) {
        // A head size known at compile time (`HD`, 0 if not) lets the
        // compiler keep each query in registers across its 16 keys.
        debug_assert!(HD == 0 || HD == hd);
        let hd = if HD == 0 { hd } else { HD };
        let heads = q.len() / hd;
        let span = scores.len() / heads;
        let lo = first / ROW_PAD * ROW_PAD;
        debug_assert_eq!(lo + span, n_seen.div_ceil(ROW_PAD) * ROW_PAD);
        let row = |m: &[half::f16], p: usize| m[kv.at(p)..][..hd].as_ptr();
        let seen = |j: usize| (first..n_seen).contains(&(lo + j));
        qh16.copy_from_slice(q);
        round_f16(qh16);
        let sc = _mm512_set1_ps(scale);
        for j0 in (0..span).step_by(16) {
            for j in 0..16 {
                let kb = kbuf.as_mut_ptr().add(j * hd);
                if seen(j0 + j) {
                    let kp = row(kv.k, lo + j0 + j);
                    for i in (0..hd).step_by(16) {
                        _mm512_storeu_ps(kb.add(i), f16x16(kp.add(i)));
                    }
                } else {
                    for i in (0..hd).step_by(16) {
                        _mm512_storeu_ps(kb.add(i), _mm512_setzero_ps());
                    }
                }
            }
            for g in 0..heads {
                let sg = dot16(qh16.as_ptr().add(g * hd), kbuf.as_ptr(), hd);
                let dst = scores.as_mut_ptr().add(g * span + j0);
                _mm512_storeu_ps(dst, _mm512_mul_ps(sg, sc));
                for j in 0..16 {
                    if !seen(j0 + j) {
                        *dst.add(j) = f32::NEG_INFINITY;
                    }
                }
            }
        }
        for sg in scores.chunks_exact_mut(span) {
            softmax_lanes(sg);
            round_f16(sg);
        }
        // acc[g][c][d]: lane class c's sum for head g, column d. Masked
        // positions would only add exact zeros (to sums that are never -0),
        // so only the seen ones are read.
        let seen_js = (first - lo, n_seen - lo);
        for d0 in (0..hd).step_by(32) {
            let mut g0 = 0;
            while g0 < heads {
                let n = (heads - g0).min(4);
                match n {
                    1 => classes::<1>(kv, lo, seen_js, span, hd, d0, g0, scores, acc),
                    2 => classes::<2>(kv, lo, seen_js, span, hd, d0, g0, scores, acc),
                    3 => classes::<3>(kv, lo, seen_js, span, hd, d0, g0, scores, acc),
                    _ => classes::<4>(kv, lo, seen_js, span, hd, d0, g0, scores, acc),
                }
                g0 += n;
            }
        }
        for g in 0..heads {
            let ag = acc.as_ptr().add(g * ROW_PAD * hd);
            for d in (0..hd).step_by(16) {
                let lane = |j: usize, l: usize| _mm512_loadu_ps(ag.add((8 * j + l) * hd + d));
                let x: [__m512; 8] = std::array::from_fn(|l| {
                    _mm512_add_ps(
                        _mm512_add_ps(lane(0, l), lane(2, l)),
                        _mm512_add_ps(lane(1, l), lane(3, l)),
                    )
                });
                let t: [__m512; 4] = std::array::from_fn(|l| _mm512_add_ps(x[l], x[l + 4]));
                let sum = _mm512_add_ps(_mm512_add_ps(t[0], t[1]), _mm512_add_ps(t[2], t[3]));
                _mm512_storeu_ps(out.as_mut_ptr().add(g * hd + d), sum);
            }
        }
    }

    /// Columns `d0 .. d0 + 32` of heads `g0 .. g0 + H`: for each lane class
    /// c, `Σ p_j · v_j` over the seen positions `js <= j < je` with
    /// j ≡ c (mod 32), in order, in registers, stored to `acc[g][c][d]`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    #[inline]
    unsafe fn classes<const H: usize>(
        kv: &AttnKv<'_>,
        lo: usize,
        (js, je): (usize, usize),
        span: usize,
        hd: usize,
        d0: usize,
        g0: usize,
        scores: &[f32],
        acc: &mut [f32],
    ) {
        // Without a ring's wrap, row j is a fixed stride past row 0.
        let wraps = lo + je > kv.n_rows;
        let base = kv.v.as_ptr().add(kv.off + d0);
        for c in 0..ROW_PAD {
            let mut a = [[_mm512_setzero_ps(); 2]; H];
            let mut j = js - js % ROW_PAD + c;
            if j < js {
                j += ROW_PAD;
            }
            while j < je {
                let vp = if wraps {
                    kv.v.as_ptr().add(kv.at(lo + j) + d0)
                } else {
                    base.add((lo + j) * kv.kv_dim)
                };
                let v0 = f16x16(vp);
                let v1 = f16x16(vp.add(16));
                for (h, ah) in a.iter_mut().enumerate() {
                    let pj = _mm512_set1_ps(*scores.get_unchecked((g0 + h) * span + j));
                    ah[0] = _mm512_fmadd_ps(v0, pj, ah[0]);
                    ah[1] = _mm512_fmadd_ps(v1, pj, ah[1]);
                }
                j += ROW_PAD;
            }
            for (h, ah) in a.iter().enumerate() {
                let dst = acc.as_mut_ptr().add(((g0 + h) * ROW_PAD + c) * hd + d0);
                _mm512_storeu_ps(dst, ah[0]);
                _mm512_storeu_ps(dst.add(16), ah[1]);
            }
        }
    }
}

/// Width of the exponential groups in [`softmax_lanes`].
const LANES: usize = 8;

/// Attention rows are padded with zeros to a multiple of this.
const ROW_PAD: usize = 32;

fma_dispatch!(
    /// Dot product in llama.cpp's AVX2 f16 order (`ggml_vec_dot_f16`): four
    /// 8-lane accumulators of fused multiply-adds over steps of 32 (accumulator
    /// j, lane l takes the elements 32i + 8j + l), combined as (0+2)+(1+3),
    /// then the 8 lanes as halves and two horizontal pair sums; elements past the
    /// last multiple of 32 are added in f64. Matching this order makes the
    /// attention scores and outputs equal llama.cpp's bit for bit.
    pub fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), b.len());
        let mut acc = [[0.0f32; 8]; 4];
        let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
        let tail = ca.remainder().iter().zip(cb.remainder());
        for (xa, xb) in ca.zip(cb) {
            for (j, acc_j) in acc.iter_mut().enumerate() {
                for (l, s) in acc_j.iter_mut().enumerate() {
                    *s = xa[8 * j + l].mul_add(xb[8 * j + l], *s);
                }
            }
        }
        let x: [f32; 8] =
            std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
        let t = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
        let mut sum = ((t[0] + t[1]) + (t[2] + t[3])) as f64;
        for (p, q) in tail {
            sum += (p * q) as f64;
        }
        sum as f32
    }
);

/// `exp(x)` by range reduction to `2^n * e^b` and a degree-5 polynomial in
/// `b`, with fused multiply-adds. Accurate to about 1.5 ulp; it is the
/// approximation llama.cpp's AVX2 softmax and SiLU use (`ggml_v_expf`), step
/// for step, so Mori's probabilities and activations match llama.cpp's bit
/// for bit.
#[inline]
pub fn exp_approx(x: f32) -> f32 {
    let c = f32::from_bits;
    let r = c(0x4b40_0000); // 1.5 * 2^23: adding it rounds to an integer
    let z = x.mul_add(c(0x3fb8_aa3b), r); // x / ln 2 + r
    let n = z - r;
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    // 2^n, built in the exponent field from z's low bits.
    let e = z.to_bits() << 23;
    let k = c(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6) * b);
    if n.abs() <= 126.0 || n.is_nan() {
        return j.mul_add(k, k);
    }
    // Out of the normal exponent range: scale in two steps (or saturate).
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = c(g.wrapping_add(0x7f00_0000));
    if n.abs() > 192.0 {
        return s1 * s1;
    }
    let s2 = c(e.wrapping_sub(g));
    s2.mul_add(j, s2) * s1
}

/// Softmax in place over a row whose length is a multiple of 8: each group
/// of 8 exponentials is summed halves-then-pairs and the groups in f64, then
/// the row is multiplied by the f32 reciprocal of the sum (llama.cpp's order).
pub fn softmax_lanes(x: &mut [f32]) {
    debug_assert_eq!(x.len() % LANES, 0);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() {
        // SAFETY: AVX2 and FMA are present.
        unsafe { x86_exp::softmax_lanes(x) };
        return;
    }
    softmax_lanes_scalar(x);
}

/// [`softmax_lanes`] element by element: the reference of the SIMD path.
pub(crate) fn softmax_lanes_scalar(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0.0f64;
    for chunk in x.chunks_exact_mut(LANES) {
        let mut lanes = [0.0f32; LANES];
        for (l, v) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *v = exp_approx(*v - max);
            *l = *v;
        }
        sum += crate::quants::hsum8(&lanes) as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(target_arch = "x86_64")]
mod x86_exp {
    //! [`exp_approx`] eight lanes at a time, and the SwiGLU and softmax built
    //! on it: every lane takes the scalar code's operations in its order, so
    //! the same bits.

    use super::{exp_approx, LANES};
    use std::arch::x86_64::*;

    /// [`exp_approx`] of each lane. Lanes outside the normal exponent range
    /// (|n| > 126, rare: underflow to 0 or overflow) go through the scalar
    /// function.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn exp8(x: __m256) -> __m256 {
        let c = |b: u32| _mm256_set1_ps(f32::from_bits(b));
        let r = c(0x4b40_0000);
        let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), _mm256_fnmadd_ps(n, c(0x3f31_7200), x));
        let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_set1_epi32(1.0f32.to_bits() as i32),
        ));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
                u,
                _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
            ),
            u,
            _mm256_mul_ps(c(0x3f7f_fff6), b),
        );
        let y = _mm256_fmadd_ps(j, k, k);
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let out = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0)));
        if out == 0 {
            return y;
        }
        let (mut xs, mut ys) = ([0.0f32; 8], [0.0f32; 8]);
        _mm256_storeu_ps(xs.as_mut_ptr(), x);
        _mm256_storeu_ps(ys.as_mut_ptr(), y);
        for l in 0..8 {
            if out >> l & 1 != 0 {
                ys[l] = exp_approx(xs[l]);
            }
        }
        _mm256_loadu_ps(ys.as_ptr())
    }

    /// [`super::silu_mul_scalar`], eight at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
        let n8 = gate.len() / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        for i in (0..n8).step_by(8) {
            let g = _mm256_loadu_ps(gate.as_ptr().add(i));
            let s = _mm256_div_ps(
                g,
                _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))),
            );
            let u = _mm256_loadu_ps(up.as_ptr().add(i));
            _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(s, u));
        }
        super::silu_mul_scalar(&mut gate[n8..], &up[n8..]);
    }

    /// [`super::softmax_lanes_scalar`], a group of eight at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_lanes(x: &mut [f32]) {
        // `f32::max` skips NaN; `max_ps` returns its second operand when
        // either is NaN, so the running maximum goes second.
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        for ch in x.chunks_exact(LANES) {
            m = _mm256_max_ps(_mm256_loadu_ps(ch.as_ptr()), m);
        }
        let mut ms = [0.0f32; 8];
        _mm256_storeu_ps(ms.as_mut_ptr(), m);
        let max = ms.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            x.iter_mut().for_each(|v| *v = 0.0);
            return;
        }
        let mv = _mm256_set1_ps(max);
        let mut sum = 0.0f64;
        for ch in x.chunks_exact_mut(LANES) {
            let v = exp8(_mm256_sub_ps(_mm256_loadu_ps(ch.as_ptr()), mv));
            _mm256_storeu_ps(ch.as_mut_ptr(), v);
            // quants::hsum8: (a_l + a_{l+4}), then (r0 + r2) + (r1 + r3).
            let r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            sum += _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r))) as f64;
        }
        let inv = (1.0 / sum) as f32;
        let iv = _mm256_set1_ps(inv);
        let mut chunks = x.chunks_exact_mut(LANES);
        for ch in &mut chunks {
            _mm256_storeu_ps(
                ch.as_mut_ptr(),
                _mm256_mul_ps(_mm256_loadu_ps(ch.as_ptr()), iv),
            );
        }
        chunks.into_remainder().iter_mut().for_each(|v| *v *= inv);
    }
}

/// Plain f32 dot product with four accumulators so the compiler can vectorise it.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for j in 0..8 {
            acc[j] += a[c * 8 + j] * b[c * 8 + j];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}
