//! Element-wise and row-wise operations of the forward pass: norms, RoPE,
//! softmax, activations. They are cheap next to the matrix products, so they
//! are written as plain loops the compiler vectorises.

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

fma_dispatch!(
    /// SwiGLU: `gate[i] = silu(gate[i]) * up[i]`, in place over `gate`, with
    /// `silu(x) = x / (1 + exp(-x))` and the `exp` of [`exp_approx`] (the one
    /// llama.cpp's vectorised SwiGLU uses, so the results match it bit for bit).
    pub fn silu_mul_inplace(gate: &mut [f32], up: &[f32]) {
        for (g, &u) in gate.iter_mut().zip(up) {
            let s = *g / (1.0 + exp_approx(0.0 - *g));
            *g = s * u;
        }
    }
);

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
    pub fn apply(&self, x: &mut [f32], n_heads: usize, head_dim: usize, cs: &[f32]) {
        let half = self.n_rot / 2;
        for h in 0..n_heads {
            let head = &mut x[h * head_dim..(h + 1) * head_dim];
            match self.layout {
                RopeLayout::Normal => {
                    for i in 0..half {
                        let (c, s) = (cs[2 * i], cs[2 * i + 1]);
                        let (a, b) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = a * c - b * s;
                        head[2 * i + 1] = a * s + b * c;
                    }
                }
                RopeLayout::Neox => {
                    for i in 0..half {
                        let (c, s) = (cs[2 * i], cs[2 * i + 1]);
                        let (a, b) = (head[i], head[i + half]);
                        head[i] = a * c - b * s;
                        head[i + half] = a * s + b * c;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_weight_gives_unit_rms() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let mut out = vec![0.0; 64];
        rms_norm(&x, &vec![1.0; 64], 0.0, &mut out);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / 64.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-5, "rms {rms}");
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
    debug_assert_eq!(q.len(), n_tokens * q_dim);
    debug_assert_eq!(out.len(), n_tokens * q_dim);
    debug_assert!(k.len() >= n_kv * kv_dim && v.len() >= n_kv * kv_dim);

    // One lock per (token, head) output slice: each is taken by exactly one
    // thread, so the locks never contend; they only prove disjointness.
    let slots: Vec<std::sync::Mutex<&mut [f32]>> =
        out.chunks_mut(hd).map(std::sync::Mutex::new).collect();
    let n_items = n_tokens * n_head;
    let n_threads = pool.n_threads();
    pool.run(|tid| {
        // Rows are padded to whole 32-element steps; the padding holds exact
        // zeros (probability 0, value 0), so it adds nothing.
        let n_pad = n_kv.div_ceil(ROW_PAD) * ROW_PAD;
        let mut scores = vec![0.0f32; n_pad];
        let mut qh16 = vec![0.0f32; hd];
        let mut row = vec![0.0f32; hd];
        let mut vcol = vec![0.0f32; n_pad];
        let mut acc = vec![0.0f32; hd];
        let mut item = tid;
        while item < n_items {
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
            for (p, s) in scores[..n_seen].iter_mut().enumerate() {
                let kh = &k[p * kv_dim + kvh * hd..p * kv_dim + (kvh + 1) * hd];
                for (r, x) in row.iter_mut().zip(kh) {
                    *r = x.to_f32();
                }
                *s = dot_lanes(&qh16, &row) * scale;
            }
            scores[n_seen..]
                .iter_mut()
                .for_each(|s| *s = f32::NEG_INFINITY);
            softmax_lanes(&mut scores);
            for s in scores.iter_mut() {
                *s = half::f16::from_f32(*s).to_f32();
            }
            for (d, a) in acc.iter_mut().enumerate() {
                for (p, c) in vcol[..n_seen].iter_mut().enumerate() {
                    *c = v[p * kv_dim + kvh * hd + d].to_f32();
                }
                vcol[n_seen..].iter_mut().for_each(|c| *c = 0.0);
                *a = dot_lanes(&vcol, &scores);
            }
            let mut slot = slots[item].lock().unwrap_or_else(|e| e.into_inner());
            slot.copy_from_slice(&acc);
            item += n_threads;
        }
    });
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

fma_dispatch!(
    /// Softmax in place over a row whose length is a multiple of 8: each group
    /// of 8 exponentials is summed halves-then-pairs and the groups in f64, then
    /// the row is multiplied by the f32 reciprocal of the sum (llama.cpp's order).
    pub fn softmax_lanes(x: &mut [f32]) {
        debug_assert_eq!(x.len() % LANES, 0);
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
);

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
