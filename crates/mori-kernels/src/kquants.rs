//! ggml's K-quant super-block formats (256 elements): Q4_K, Q5_K and Q6_K
//! for weights, Q8_K for the activations they are multiplied with. Reference
//! quantizers follow ggml's non-imatrix algorithms so Mori's files match
//! llama.cpp's; dot products use ggml's integer decomposition.
//!
//! Layouts:
//! - Q4_K: f16 d, f16 dmin, 12 bytes of packed 6-bit (scale, min) pairs for 8
//!   sub-blocks of 32, 128 bytes of nibbles; value = d*sc*q - dmin*m.
//! - Q5_K: as Q4_K plus 32 bytes of fifth bits (qh) before the nibbles.
//! - Q6_K: 128 bytes low nibbles (ql), 64 bytes high 2-bit pairs (qh), 16 i8
//!   scales for sub-blocks of 16, f16 d; value = d*sc*(q - 32).
//! - Q8_K: f32 d, 256 x i8, 16 x i16 sums of each group of 16.

use crate::quants::f16_at;
use half::f16;

pub const QK_K: usize = 256;

#[repr(C)]
pub struct BlockQ4K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}
#[repr(C)]
pub struct BlockQ5K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: u16,
}
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; 256],
    pub bsums: [i16; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

const Q4K: usize = 144;
const Q5K: usize = 176;
const Q6K: usize = 210;
const Q8K: usize = 292;

/// Round half to even, as ggml's `nearest_int` does with its float trick.
#[inline]
fn nearest_int(v: f32) -> i32 {
    v.round_ties_even() as i32
}

fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// The 6-bit scale and min of sub-block `j` from the 12 packed bytes.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// ggml's `make_qkx2_quants`: a scale and (negated) min for `x` with levels
/// `0..=nmax`, refined by a small search weighted by `w`. Returns (scale, -min).
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    w: &[f32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = min.min(x[i]);
        max = max.max(x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.iter_mut().for_each(|v| *v = 0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = li as u8;
        let diff = scale * li as f32 + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = li as u8;
            let lf = li as f32;
            sum_l += w[i] * lf;
            sum_l2 += w[i] * lf * lf;
            sum_xl += w[i] * lf * x[i];
        }
        let dd = sum_w * sum_l2 - sum_l * sum_l;
        if dd > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / dd;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / dd;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Shared by Q4_K and Q5_K: per sub-block scales and mins, packed to 6 bits,
/// then the levels recomputed against the rounded scales.
fn quantize_k_scales(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    yb: &mut [u8],
    levels: &mut [u8; QK_K],
) {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().map(|v| v * v).sum();
        let av_x = (sum_x2 / 32.0).sqrt();
        for l in 0..32 {
            weights[l] = av_x + xs[l].abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut levels[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
        );
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max(s);
        max_min = max_min.max(m);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut yb[4..16];
    sc.iter_mut().for_each(|v| *v = 0);
    for j in 0..8 {
        let ls = nearest_int(inv_scale * scales[j]).min(63) as u8;
        let lm = nearest_int(inv_min * mins[j]).min(63) as u8;
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(yb, 0, max_scale / 63.0);
    put_f16(yb, 2, max_min / 63.0);
    let (d_all, dmin_all) = (f16_at(yb, 0), f16_at(yb, 2));
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &yb[4..16]);
        let d = d_all * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            levels[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

fn check(name: &str, n_in: usize, in_bs: usize, n_out: usize, out_bs: usize) -> crate::Result<()> {
    if !n_in.is_multiple_of(in_bs)
        || !n_out.is_multiple_of(out_bs)
        || n_in / in_bs != n_out / out_bs
    {
        return Err(crate::Error::Size {
            what: leak(name),
            expected: n_in / in_bs.max(1) * out_bs,
            got: n_out,
        });
    }
    Ok(())
}

fn leak(name: &str) -> &'static str {
    match name {
        "q4_k" => "Q4_K row",
        "q5_k" => "Q5_K row",
        "q6_k" => "Q6_K row",
        _ => "Q8_K row",
    }
}

pub fn quantize_row_q4_k(src: &[f32], dst: &mut [u8]) -> crate::Result<()> {
    check("q4_k", src.len(), QK_K, dst.len(), Q4K)?;
    let mut levels = [0u8; QK_K];
    for (x, yb) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q4K)) {
        quantize_k_scales(x, 15, -1.0, 20, yb, &mut levels);
        for (c, chunk) in levels.chunks_exact(64).enumerate() {
            for l in 0..32 {
                yb[16 + 32 * c + l] = chunk[l] | (chunk[l + 32] << 4);
            }
        }
    }
    Ok(())
}

pub fn quantize_row_q5_k(src: &[f32], dst: &mut [u8]) -> crate::Result<()> {
    check("q5_k", src.len(), QK_K, dst.len(), Q5K)?;
    let mut levels = [0u8; QK_K];
    for (x, yb) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q5K)) {
        quantize_k_scales(x, 31, -0.5, 15, yb, &mut levels);
        let (head, qs) = yb.split_at_mut(48);
        let qh = &mut head[16..48];
        qh.iter_mut().for_each(|v| *v = 0);
        let (mut m1, mut m2) = (1u8, 2u8);
        for (c, chunk) in levels.chunks_exact(64).enumerate() {
            for j in 0..32 {
                let (mut l1, mut l2) = (chunk[j], chunk[j + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                qs[32 * c + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
    Ok(())
}

/// ggml's `make_qx_quants` with `rmse_type = 1` (weights x²): a signed scale
/// for levels `-nmax..nmax-1`, stored in `l` offset by `nmax`.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [u8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l.iter_mut().for_each(|v| *v = 0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, &xi) in x.iter().enumerate() {
        let li = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        l[i] = (li + nmax) as u8;
        let w = xi * xi;
        sumlx += w * xi * li as f32;
        suml2 += w * li as f32 * li as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &xi in x {
            let li = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
            let w = xi * xi;
            sumlx += w * xi * li as f32;
            suml2 += w * li as f32 * li as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &xi) in x.iter().enumerate() {
                l[i] = (nmax + nearest_int(iscale * xi).clamp(-nmax, nmax - 1)) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

pub fn quantize_row_q6_k(src: &[f32], dst: &mut [u8]) -> crate::Result<()> {
    check("q6_k", src.len(), QK_K, dst.len(), Q6K)?;
    let mut levels = [0u8; QK_K];
    for (x, yb) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q6K)) {
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
        for ib in 0..16 {
            let s = make_qx_quants(
                32,
                &x[16 * ib..16 * ib + 16],
                &mut levels[16 * ib..16 * ib + 16],
            );
            scales[ib] = s;
            if s.abs() > max_abs {
                max_abs = s.abs();
                max_scale = s;
            }
        }
        yb.iter_mut().for_each(|v| *v = 0);
        if max_abs < 1e-15 {
            continue;
        }
        let iscale = -128.0 / max_scale;
        put_f16(yb, 208, 1.0 / iscale);
        for ib in 0..16 {
            yb[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
        }
        let d_all = f16_at(yb, 208);
        for j in 0..16 {
            let d = d_all * yb[192 + j] as i8 as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                levels[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as u8;
            }
        }
        for half in 0..2 {
            let lv = &levels[128 * half..128 * half + 128];
            for l in 0..32 {
                let (q1, q2, q3, q4) = (lv[l], lv[l + 32], lv[l + 64], lv[l + 96]);
                yb[64 * half + l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                yb[64 * half + l + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                yb[128 + 32 * half + l] =
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
    Ok(())
}

/// Q8_K activations with ggml's reference rounding (inverse scale -127/max,
/// max the first element of largest magnitude, ties to even), the 16 group
/// sums after them. The AVX2 path gives the bits of the scalar one.
pub fn quantize_row_q8_k(src: &[f32], dst: &mut [u8]) -> crate::Result<()> {
    check("q8_k", src.len(), QK_K, dst.len(), Q8K)?;
    #[cfg(target_arch = "x86_64")]
    let fast = crate::simd::has_avx2();
    for (x, yb) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8K)) {
        // SAFETY: the CPU has AVX2 and FMA (`fast`); both slices are one block.
        #[cfg(target_arch = "x86_64")]
        if fast && unsafe { x86_q8k::block(x, yb) } {
            continue;
        }
        q8k_block_scalar(x, yb);
    }
    Ok(())
}

/// One Q8_K block, element by element: the reference of the SIMD path.
pub(crate) fn q8k_block_scalar(x: &[f32], yb: &mut [u8]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        yb.iter_mut().for_each(|v| *v = 0);
        return;
    }
    let iscale = -127.0 / max;
    for j in 0..QK_K {
        yb[4 + j] = nearest_int(iscale * x[j]).min(127) as i8 as u8;
    }
    for g in 0..16 {
        let s: i32 = (0..16).map(|k| yb[4 + 16 * g + k] as i8 as i32).sum();
        yb[260 + 2 * g..262 + 2 * g].copy_from_slice(&(s as i16).to_le_bytes());
    }
    yb[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

#[cfg(target_arch = "x86_64")]
mod x86_q8k {
    use super::QK_K;
    use std::arch::x86_64::*;

    /// [`super::q8k_block_scalar`] eight values at a time. Returns false,
    /// writing nothing, for a block holding an infinity or NaN (the scalar
    /// path's casts saturate where the vector conversion does not).
    ///
    /// # Safety
    /// The CPU has AVX2; `x` holds 256 values and `yb` 292 bytes.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block(x: &[f32], yb: &mut [u8]) -> bool {
        debug_assert!(x.len() == QK_K && yb.len() == 292);
        let p = x.as_ptr();
        let sign = _mm256_set1_ps(-0.0);
        let abs = |i: usize| _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * i)));
        let big = _mm256_set1_ps(f32::MAX);
        let mut amax = _mm256_setzero_ps();
        let mut finite = _mm256_cmp_ps::<_CMP_EQ_OQ>(amax, amax);
        for i in 0..QK_K / 8 {
            let a = abs(i);
            finite = _mm256_and_ps(finite, _mm256_cmp_ps::<_CMP_LE_OQ>(a, big));
            amax = _mm256_max_ps(amax, a);
        }
        if _mm256_movemask_ps(finite) != 0xff {
            return false;
        }
        let h = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        let m = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
        if m == 0.0 {
            yb.iter_mut().for_each(|v| *v = 0);
            return true;
        }
        // The first element of that magnitude, as the scalar scan keeps it.
        let mv = _mm256_set1_ps(m);
        let mut max = 0.0f32;
        for i in 0..QK_K / 8 {
            let eq = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(abs(i), mv));
            if eq != 0 {
                max = x[8 * i + eq.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        let is = _mm256_set1_ps(iscale);
        let top = _mm256_set1_epi32(127);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let ones8 = _mm256_set1_epi8(1);
        let ones16 = _mm256_set1_epi16(1);
        let q = yb.as_mut_ptr();
        for c in 0..QK_K / 32 {
            // Round to nearest even (the default rounding mode), at most 127.
            let v: [__m256i; 4] = std::array::from_fn(|k| {
                let f = _mm256_mul_ps(is, _mm256_loadu_ps(p.add(32 * c + 8 * k)));
                _mm256_min_epi32(_mm256_cvtps_epi32(f), top)
            });
            let w01 = _mm256_packs_epi32(v[0], v[1]);
            let w23 = _mm256_packs_epi32(v[2], v[3]);
            let b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w01, w23), order);
            _mm256_storeu_si256(q.add(4 + 32 * c) as *mut __m256i, b);
            // Group sums 2c and 2c + 1: one per 128-bit half.
            let s = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, b), ones16);
            let s = _mm256_hadd_epi32(s, s);
            let s = _mm256_hadd_epi32(s, s);
            let lo = _mm256_extract_epi32::<0>(s) as i16;
            let hi = _mm256_extract_epi32::<4>(s) as i16;
            std::ptr::copy_nonoverlapping(lo.to_le_bytes().as_ptr(), q.add(260 + 4 * c), 2);
            std::ptr::copy_nonoverlapping(hi.to_le_bytes().as_ptr(), q.add(262 + 4 * c), 2);
        }
        let d = 1.0 / iscale;
        std::ptr::copy_nonoverlapping(d.to_le_bytes().as_ptr(), q, 4);
        true
    }
}

pub fn dequantize_row_q4_k(src: &[u8], dst: &mut [f32]) -> crate::Result<()> {
    check("q4_k", dst.len(), QK_K, src.len(), Q4K)?;
    for (xb, y) in src.chunks_exact(Q4K).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (f16_at(xb, 0), f16_at(xb, 2));
        for c in 0..4 {
            let (s1, m1) = scale_min_k4(2 * c, &xb[4..16]);
            let (s2, m2) = scale_min_k4(2 * c + 1, &xb[4..16]);
            let q = &xb[16 + 32 * c..16 + 32 * c + 32];
            for l in 0..32 {
                y[64 * c + l] = d * s1 as f32 * (q[l] & 0x0f) as f32 - dmin * m1 as f32;
                y[64 * c + 32 + l] = d * s2 as f32 * (q[l] >> 4) as f32 - dmin * m2 as f32;
            }
        }
    }
    Ok(())
}

pub fn dequantize_row_q5_k(src: &[u8], dst: &mut [f32]) -> crate::Result<()> {
    check("q5_k", dst.len(), QK_K, src.len(), Q5K)?;
    for (xb, y) in src.chunks_exact(Q5K).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (f16_at(xb, 0), f16_at(xb, 2));
        let qh = &xb[16..48];
        for c in 0..4 {
            let (s1, m1) = scale_min_k4(2 * c, &xb[4..16]);
            let (s2, m2) = scale_min_k4(2 * c + 1, &xb[4..16]);
            let q = &xb[48 + 32 * c..48 + 32 * c + 32];
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for l in 0..32 {
                let lo = (q[l] & 0x0f) + if qh[l] & u1 != 0 { 16 } else { 0 };
                let hi = (q[l] >> 4) + if qh[l] & u2 != 0 { 16 } else { 0 };
                y[64 * c + l] = d * s1 as f32 * lo as f32 - dmin * m1 as f32;
                y[64 * c + 32 + l] = d * s2 as f32 * hi as f32 - dmin * m2 as f32;
            }
        }
    }
    Ok(())
}

/// The 6-bit level (0..63) of element `i` (0..256) of a Q6_K block.
#[inline]
pub(crate) fn q6_level(xb: &[u8], i: usize) -> i32 {
    let (half, r) = (i / 128, i % 128);
    let (quarter, l) = (r / 32, r % 32);
    let ql = xb[64 * half + l + if quarter % 2 == 1 { 32 } else { 0 }];
    let lo = if quarter < 2 { ql & 0x0f } else { ql >> 4 };
    let hi = (xb[128 + 32 * half + l] >> (2 * quarter)) & 3;
    (lo | (hi << 4)) as i32
}

/// Writes the 6-bit level of element `i` into a Q6_K block (the inverse of
/// [`q6_level`]: the 256 levels cover every bit of `ql` and `qh` once).
pub(crate) fn set_q6_level(xb: &mut [u8], i: usize, level: u8) {
    let (half, r) = (i / 128, i % 128);
    let (quarter, l) = (r / 32, r % 32);
    let at = 64 * half + l + if quarter % 2 == 1 { 32 } else { 0 };
    xb[at] = if quarter < 2 {
        (xb[at] & 0xf0) | (level & 0x0f)
    } else {
        (xb[at] & 0x0f) | ((level & 0x0f) << 4)
    };
    let h = &mut xb[128 + 32 * half + l];
    *h = (*h & !(3 << (2 * quarter))) | (((level >> 4) & 3) << (2 * quarter));
}

pub fn dequantize_row_q6_k(src: &[u8], dst: &mut [f32]) -> crate::Result<()> {
    check("q6_k", dst.len(), QK_K, src.len(), Q6K)?;
    for (xb, y) in src.chunks_exact(Q6K).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(xb, 208);
        for (i, v) in y.iter_mut().enumerate() {
            let sc = xb[192 + i / 16] as i8 as f32;
            *v = d * sc * (q6_level(xb, i) - 32) as f32;
        }
    }
    Ok(())
}

pub fn dequantize_row_q8_k(src: &[u8], dst: &mut [f32]) -> crate::Result<()> {
    check("q8_k", dst.len(), QK_K, src.len(), Q8K)?;
    for (xb, y) in src.chunks_exact(Q8K).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
        for j in 0..QK_K {
            y[j] = d * xb[4 + j] as i8 as f32;
        }
    }
    Ok(())
}

#[inline]
fn q8k_d(xb: &[u8]) -> f32 {
    f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]])
}

#[inline]
fn q8k_bsum(xb: &[u8], g: usize) -> i32 {
    i16::from_le_bytes([xb[260 + 2 * g], xb[261 + 2 * g]]) as i32
}

// The dot products fix the order of every float operation as the quants.rs
// references do: integer products in 8 lanes (lane k holds the elements e with
// (e mod 32) / 4 == k), one fused multiply-add per lane and super-block, a tree
// at the end; the min terms in their own accumulator. This is the order of an
// 8-wide SIMD kernel and of llama.cpp's x86 kernels.

/// The 8 integer lanes of one super-block: `prod(e)` is element e's product
/// (including its sub-block scale).
#[inline]
fn lanes(prod: impl Fn(usize) -> i32) -> [i32; 8] {
    let mut l = [0i32; 8];
    for e in 0..QK_K {
        l[(e % 32) / 4] += prod(e);
    }
    l
}

#[inline]
fn fma_lanes(acc: &mut [f32; 8], d: f32, l: &[i32; 8]) {
    for (a, &v) in acc.iter_mut().zip(l) {
        *a = d.mul_add(v as f32, *a);
    }
}

/// Sum of the 8 sub-block sums of a Q8_K block weighted by the mins, as 4
/// lanes of adjacent pairs.
#[inline]
pub(crate) fn min_lanes(wb: &[u8], xb: &[u8]) -> [i32; 4] {
    let sub = |j: usize| q8k_bsum(xb, 2 * j) + q8k_bsum(xb, 2 * j + 1);
    let m = |j: usize| scale_min_k4(j, &wb[4..16]).1 as i32;
    [0, 1, 2, 3].map(|k| m(2 * k) * sub(2 * k) + m(2 * k + 1) * sub(2 * k + 1))
}

/// Scalar reference: Q4_K weights · Q8_K activations over `n` elements.
pub fn vec_dot_q4_k_q8_k_scalar(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut acc_m = [0.0f32; 4];
    for (wb, xb) in w.chunks_exact(Q4K).zip(x.chunks_exact(Q8K)).take(n / QK_K) {
        let d = q8k_d(xb) * f16_at(wb, 0);
        let dmin = -q8k_d(xb) * f16_at(wb, 2);
        let scales: [i32; 8] = std::array::from_fn(|j| scale_min_k4(j, &wb[4..16]).0 as i32);
        let l = lanes(|e| {
            let (sub, c, i) = (e / 32, e / 64, e % 32);
            let q = wb[16 + 32 * c + i];
            let v = if sub % 2 == 0 { q & 0x0f } else { q >> 4 } as i32;
            scales[sub] * v * xb[4 + e] as i8 as i32
        });
        fma_lanes(&mut acc, d, &l);
        for (a, &m) in acc_m.iter_mut().zip(&min_lanes(wb, xb)) {
            *a = dmin.mul_add(m as f32, *a);
        }
    }
    super::quants::hsum8(&acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
}

/// Scalar reference: Q5_K weights · Q8_K activations.
pub fn vec_dot_q5_k_q8_k_scalar(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (wb, xb) in w.chunks_exact(Q5K).zip(x.chunks_exact(Q8K)).take(n / QK_K) {
        let d = q8k_d(xb) * f16_at(wb, 0);
        let dmin = -q8k_d(xb) * f16_at(wb, 2);
        let mins: i32 = min_lanes(wb, xb).iter().sum();
        summs += dmin * mins as f32;
        let scales: [i32; 8] = std::array::from_fn(|j| scale_min_k4(j, &wb[4..16]).0 as i32);
        let qh = &wb[16..48];
        let l = lanes(|e| {
            let (sub, c, i) = (e / 32, e / 64, e % 32);
            let q = wb[48 + 32 * c + i];
            let lo = if sub % 2 == 0 { q & 0x0f } else { q >> 4 } as i32;
            let hi = ((qh[i] >> sub) & 1) as i32;
            scales[sub] * (lo | (hi << 4)) * xb[4 + e] as i8 as i32
        });
        fma_lanes(&mut acc, d, &l);
    }
    super::quants::hsum8(&acc) + summs
}

/// Scalar reference: Q6_K weights · Q8_K activations. The -32 offset of the
/// levels is taken out per lane through the group sums, as SIMD kernels do.
pub fn vec_dot_q6_k_q8_k_scalar(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (wb, xb) in w.chunks_exact(Q6K).zip(x.chunks_exact(Q8K)).take(n / QK_K) {
        let d = q8k_d(xb) * f16_at(wb, 208);
        let sc = |g: usize| wb[192 + g] as i8 as i32;
        let mut l = lanes(|e| sc(e / 16) * q6_level(wb, e) * xb[4 + e] as i8 as i32);
        for (k, v) in l.iter_mut().enumerate() {
            *v -= 32 * (sc(2 * k) * q8k_bsum(xb, 2 * k) + sc(2 * k + 1) * q8k_bsum(xb, 2 * k + 1));
        }
        fma_lanes(&mut acc, d, &l);
    }
    super::quants::hsum8(&acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The dispatched Q8_K rounding equals the scalar one bit for bit: random
    /// blocks at several magnitudes, ties, repeated maxima of either sign, an
    /// all-zero block and blocks holding infinities or NaN.
    #[test]
    fn q8k_rounding_matches_the_scalar_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut blocks: Vec<Vec<f32>> = Vec::new();
        for scale in [1e-30f32, 1e-3, 1.0, 37.5, 1e30] {
            for _ in 0..20 {
                blocks.push(
                    (0..QK_K)
                        .map(|_| rng.gen_range(-1.0f32..1.0) * scale)
                        .collect(),
                );
            }
        }
        // Exact halves of the scale (ties) and the maximum twice, both signs.
        let mut ties: Vec<f32> = (0..QK_K).map(|i| (i as f32 - 128.0) * 0.5).collect();
        ties[7] = 127.0;
        ties[9] = -127.0;
        blocks.push(ties.clone());
        ties[7] = -127.0;
        ties[9] = 127.0;
        blocks.push(ties);
        blocks.push(vec![0.0; QK_K]);
        let mut odd = vec![1.0f32; QK_K];
        odd[3] = f32::INFINITY;
        blocks.push(odd.clone());
        odd[3] = f32::NAN;
        blocks.push(odd);
        for x in &blocks {
            let mut fast = vec![0u8; Q8K];
            let mut slow = vec![0u8; Q8K];
            quantize_row_q8_k(x, &mut fast).unwrap();
            q8k_block_scalar(x, &mut slow);
            assert_eq!(fast, slow, "block starting {:?}", &x[..4]);
        }
    }
}
