//! The float types and ggml's "legacy" 32-element block formats (Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0, Q8_1): layouts, reference quantizers that produce the
//! same bytes as ggml's, dequantizers and scalar dot products.
//!
//! Block layouts (little-endian, packed):
//! - Q4_0: f16 d, 16 bytes of nibbles; element j is the low nibble of byte j,
//!   element j+16 the high nibble; value = (q - 8) * d.
//! - Q4_1: f16 d, f16 m, nibbles as Q4_0; value = q * d + m.
//! - Q5_0: f16 d, u32 qh (fifth bits), nibbles; value = (q - 16) * d.
//! - Q5_1: f16 d, f16 m, u32 qh, nibbles; value = q * d + m.
//! - Q8_0: f16 d, 32 x i8; value = q * d.
//! - Q8_1: f16 d, f16 s (= d * sum of q), 32 x i8 — only for activations.

use half::{bf16, f16};

pub const QK: usize = 32;

#[repr(C)]
pub struct BlockQ4_0 {
    pub d: u16,
    pub qs: [u8; QK / 2],
}
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; QK / 2],
}
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: u16,
    pub m: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; QK],
}
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: u16,
    pub s: u16,
    pub qs: [i8; QK],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

#[inline]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

#[inline]
fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// The element with the largest magnitude, with its sign (ggml scales by it
/// so that the extreme value lands exactly on the end of the range).
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

pub fn quantize_q4_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(18)) {
        let (_, max) = signed_absmax(xb);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(yb, 0, d);
        for j in 0..QK / 2 {
            // Truncation after +8.5 is ggml's rounding (values are >= 0.5 here).
            let q0 = ((xb[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((xb[j + 16] * id + 8.5) as i8).min(15) as u8;
            yb[2 + j] = q0 | (q1 << 4);
        }
    }
}

pub fn quantize_q4_1(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(20)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(yb, 0, d);
        put_f16(yb, 2, min);
        for j in 0..QK / 2 {
            let q0 = (((xb[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((xb[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            yb[4 + j] = q0 | (q1 << 4);
        }
    }
}

pub fn quantize_q5_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(22)) {
        let (_, max) = signed_absmax(xb);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(yb, 0, d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = ((xb[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((xb[j + 16] * id + 16.5) as i8).min(31) as u8;
            yb[6 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
        }
        yb[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

pub fn quantize_q5_1(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(24)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(yb, 0, d);
        put_f16(yb, 2, min);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = ((xb[j] - min) * id + 0.5) as u8;
            let q1 = ((xb[j + 16] - min) * id + 0.5) as u8;
            yb[8 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
        }
        yb[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

pub fn quantize_q8_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(34)) {
        let (amax, _) = signed_absmax(xb);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(yb, 0, d);
        for j in 0..QK {
            yb[2 + j] = (xb[j] * id).round() as i8 as u8;
        }
    }
}

pub fn quantize_q8_1(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(36)) {
        let (amax, _) = signed_absmax(xb);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for j in 0..QK {
            let q = (xb[j] * id).round() as i8;
            sum += q as i32;
            yb[4 + j] = q as u8;
        }
        put_f16(yb, 0, d);
        put_f16(yb, 2, sum as f32 * d);
    }
}

/// One block of activation levels as llama.cpp's x86 build rounds them: the
/// inverse scale is `127 / amax` (not `1 / (amax / 127)`, which can differ in
/// the last bit) and levels round half to even. Writes the 32 levels and
/// returns the scale and the sum of the levels. Used for activations only;
/// weights use the reference rounding above, as ggml's quantizer does.
#[inline]
fn act_levels(xb: &[f32], qs: &mut [u8]) -> (f32, i32) {
    let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(xb) {
        let l = (v * id).round_ties_even() as i8;
        sum += l as i32;
        *q = l as u8;
    }
    (amax / 127.0, sum)
}

/// Q8_0 activations (see [`act_levels`]): eight lanes at a time where the
/// CPU has AVX2 ([`x86_q8_0::block`]), the same bits as
/// [`quantize_q8_0_act_scalar`].
pub fn quantize_q8_0_act(x: &[f32], y: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() {
        for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(34)) {
            // SAFETY: AVX2 is present (checked above); both blocks are whole.
            match unsafe { x86_q8_0::block(xb, &mut yb[2..34]) } {
                Some(d) => put_f16(yb, 0, d),
                None => quantize_q8_0_act_scalar(xb, yb),
            }
        }
        return;
    }
    quantize_q8_0_act_scalar(x, y)
}

/// The scalar reference of [`quantize_q8_0_act`].
pub fn quantize_q8_0_act_scalar(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(34)) {
        let (d, _) = act_levels(xb, &mut yb[2..34]);
        put_f16(yb, 0, d);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_q8_0 {
    use std::arch::x86_64::*;

    /// [`super::act_levels`] of one block of 32 finite values with AVX2:
    /// writes the 32 levels to `qs` and returns the scale, or returns `None`
    /// (and writes nothing) if the block holds an infinity or a NaN or is so
    /// small that `127 / amax` overflows, which the scalar code treats apart. The magnitude maximum does not depend
    /// on the order, the products are the same single roundings, and
    /// `vroundps` rounds half to even as `round_ties_even` does.
    ///
    /// # Safety
    /// The CPU has AVX2; `xb` and `qs` hold 32 elements.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block(xb: &[f32], qs: &mut [u8]) -> Option<f32> {
        debug_assert!(xb.len() == 32 && qs.len() == 32);
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(xb.as_ptr().add(8 * i)));
        let a = v.map(|v| _mm256_andnot_ps(_mm256_set1_ps(-0.0), v));
        let inf = _mm256_set1_ps(f32::INFINITY);
        let finite = a.map(|a| _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(a, inf)));
        if finite.iter().any(|&m| m != 0xff) {
            return None;
        }
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        if !id.is_finite() {
            // Subnormal blocks: 127 / amax overflows, and the scalar code's
            // saturating conversions decide the levels.
            return None;
        }
        let id = _mm256_set1_ps(id);
        let l = v.map(|v| {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(v, id),
            );
            _mm256_cvtps_epi32(r)
        });
        // packs works within 128-bit halves: dwords 0-3 | 8-11 | 4-7 | 12-15
        // of each pair, then bytes in the order 0,2,1,3 of four quarters.
        let w01 = _mm256_packs_epi32(l[0], l[1]);
        let w23 = _mm256_packs_epi32(l[2], l[3]);
        let b = _mm256_packs_epi16(w01, w23);
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, b);
        Some(amax / 127.0)
    }
}

fma_dispatch!(
    /// Q8_1 activations (see [`act_levels`]); the sum term is `d` times the sum
    /// of the levels.
    pub fn quantize_q8_1_act(x: &[f32], y: &mut [u8]) {
        for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(36)) {
            let (d, sum) = act_levels(xb, &mut yb[4..36]);
            put_f16(yb, 0, d);
            put_f16(yb, 2, d * sum as f32);
        }
    }
);

pub fn dequantize_q4_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(18).zip(y.chunks_exact_mut(QK)) {
        let d = f16_at(xb, 0);
        for j in 0..QK / 2 {
            yb[j] = ((xb[2 + j] & 0x0f) as i32 - 8) as f32 * d;
            yb[j + 16] = ((xb[2 + j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn dequantize_q4_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(20).zip(y.chunks_exact_mut(QK)) {
        let (d, m) = (f16_at(xb, 0), f16_at(xb, 2));
        for j in 0..QK / 2 {
            yb[j] = (xb[4 + j] & 0x0f) as f32 * d + m;
            yb[j + 16] = (xb[4 + j] >> 4) as f32 * d + m;
        }
    }
}

#[inline]
fn q5_values(qh: u32, qs: &[u8], j: usize) -> (i32, i32) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (
        ((qs[j] & 0x0f) as u32 | h0) as i32,
        ((qs[j] >> 4) as u32 | h1) as i32,
    )
}

pub fn dequantize_q5_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(22).zip(y.chunks_exact_mut(QK)) {
        let d = f16_at(xb, 0);
        let qh = u32::from_le_bytes([xb[2], xb[3], xb[4], xb[5]]);
        for j in 0..QK / 2 {
            let (a, b) = q5_values(qh, &xb[6..], j);
            yb[j] = (a - 16) as f32 * d;
            yb[j + 16] = (b - 16) as f32 * d;
        }
    }
}

pub fn dequantize_q5_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(24).zip(y.chunks_exact_mut(QK)) {
        let (d, m) = (f16_at(xb, 0), f16_at(xb, 2));
        let qh = u32::from_le_bytes([xb[4], xb[5], xb[6], xb[7]]);
        for j in 0..QK / 2 {
            let (a, b) = q5_values(qh, &xb[8..], j);
            yb[j] = a as f32 * d + m;
            yb[j + 16] = b as f32 * d + m;
        }
    }
}

pub fn dequantize_q8_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(34).zip(y.chunks_exact_mut(QK)) {
        let d = f16_at(xb, 0);
        for j in 0..QK {
            yb[j] = xb[2 + j] as i8 as f32 * d;
        }
    }
}

pub fn dequantize_q8_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(36).zip(y.chunks_exact_mut(QK)) {
        let d = f16_at(xb, 0);
        for j in 0..QK {
            yb[j] = xb[4 + j] as i8 as f32 * d;
        }
    }
}

/// ggml's f32 → bf16: round to nearest even, NaN kept quiet.
pub fn f32_to_bf16_bits(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

pub fn quantize_f16(x: &[f32], y: &mut [u8]) {
    for (v, b) in x.iter().zip(y.chunks_exact_mut(2)) {
        b.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
    }
}

pub fn quantize_bf16(x: &[f32], y: &mut [u8]) {
    for (v, b) in x.iter().zip(y.chunks_exact_mut(2)) {
        b.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
    }
}

pub fn dequantize_f16(x: &[u8], y: &mut [f32]) {
    for (b, v) in x.chunks_exact(2).zip(y.iter_mut()) {
        *v = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}

pub fn dequantize_bf16(x: &[u8], y: &mut [f32]) {
    for (b, v) in x.chunks_exact(2).zip(y.iter_mut()) {
        *v = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}

// ---- scalar dot products: weight blocks against activation blocks ----
//
// The references below fix the order of every float operation: each block's
// integer products are summed in 8 lanes (lane k holds elements 4k..4k+3),
// each lane is scaled into its own f32 accumulator with a fused multiply-add,
// and the lanes are added as a tree at the end. That is the natural order of
// an 8-wide SIMD kernel, and the order llama.cpp's x86 kernels use, so the
// SIMD paths equal these bit for bit and Mori reproduces llama.cpp's logits.

/// Sum of 8 lanes as an AVX2 reduction adds them: halves, then pairs.
#[inline]
pub fn hsum8(a: &[f32; 8]) -> f32 {
    let r = [a[4] + a[0], a[5] + a[1], a[6] + a[2], a[7] + a[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// `acc[k] += d * lane_k` for the 8 lanes of one 32-element block, where
/// `prod(e)` is the integer product of element `e`.
#[inline]
fn accumulate_block(acc: &mut [f32; 8], d: f32, prod: impl Fn(usize) -> i32) {
    for (k, a) in acc.iter_mut().enumerate() {
        let lane: i32 = (4 * k..4 * k + 4).map(&prod).sum();
        *a = d.mul_add(lane as f32, *a);
    }
}

/// Weight value `e` (0..32) of a block whose low nibbles hold elements 0..16.
#[inline]
fn nibble(qs: &[u8], e: usize) -> i32 {
    if e < 16 {
        (qs[e] & 0x0f) as i32
    } else {
        (qs[e - 16] >> 4) as i32
    }
}

#[inline]
fn q5_value(qh: u32, qs: &[u8], e: usize) -> i32 {
    nibble(qs, e) | ((((qh >> e) & 1) as i32) << 4)
}

pub fn dot_q4_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (wb, xb) in w.chunks_exact(18).zip(x.chunks_exact(34)) {
        let d = f16_at(wb, 0) * f16_at(xb, 0);
        accumulate_block(&mut acc, d, |e| {
            (nibble(&wb[2..], e) - 8) * xb[2 + e] as i8 as i32
        });
    }
    hsum8(&acc)
}

pub fn dot_q4_1_q8_1(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (wb, xb) in w.chunks_exact(20).zip(x.chunks_exact(36)) {
        summs += f16_at(wb, 2) * f16_at(xb, 2);
        let d = f16_at(wb, 0) * f16_at(xb, 0);
        accumulate_block(&mut acc, d, |e| {
            nibble(&wb[4..], e) * xb[4 + e] as i8 as i32
        });
    }
    hsum8(&acc) + summs
}

pub fn dot_q5_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (wb, xb) in w.chunks_exact(22).zip(x.chunks_exact(34)) {
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        let d = f16_at(wb, 0) * f16_at(xb, 0);
        accumulate_block(&mut acc, d, |e| {
            (q5_value(qh, &wb[6..], e) - 16) * xb[2 + e] as i8 as i32
        });
    }
    hsum8(&acc)
}

pub fn dot_q5_1_q8_1(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (wb, xb) in w.chunks_exact(24).zip(x.chunks_exact(36)) {
        summs += f16_at(wb, 2) * f16_at(xb, 2);
        let qh = u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]);
        let d = f16_at(wb, 0) * f16_at(xb, 0);
        accumulate_block(&mut acc, d, |e| {
            q5_value(qh, &wb[8..], e) * xb[4 + e] as i8 as i32
        });
    }
    hsum8(&acc) + summs
}

pub fn dot_q8_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (wb, xb) in w.chunks_exact(34).zip(x.chunks_exact(34)) {
        let d = f16_at(wb, 0) * f16_at(xb, 0);
        accumulate_block(&mut acc, d, |e| {
            wb[2 + e] as i8 as i32 * xb[2 + e] as i8 as i32
        });
    }
    hsum8(&acc)
}

/// F32 weights times activations in the order of llama.cpp's x86
/// `ggml_vec_dot_f32`: [`dot_f16`]'s accumulators and combination, with the
/// elements past the last multiple of 32 added by fused multiply-adds in f32.
pub fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    let wf = |i: usize| f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]);
    let n32 = x.len() / 32 * 32;
    let mut acc = [[0.0f32; 8]; 4];
    for i in (0..n32).step_by(32) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, s) in a.iter_mut().enumerate() {
                let e = i + 8 * j + l;
                *s = wf(e).mul_add(x[e], *s);
            }
        }
    }
    let v: [f32; 8] = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    let t = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let mut sum = (t[0] + t[1]) + (t[2] + t[3]);
    for (e, &xv) in x.iter().enumerate().skip(n32) {
        sum = wf(e).mul_add(xv, sum);
    }
    sum
}

/// F16 weights times activations already rounded to f16, in the order of
/// llama.cpp's x86 `ggml_vec_dot_f16`: four 8-lane accumulators of fused
/// multiply-adds over steps of 32, combined as (0+2)+(1+3), then halves and
/// two horizontal pair sums; elements past the last multiple of 32 are added
/// in f64.
pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    let wf = |i: usize| f16::from_bits(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])).to_f32();
    let n32 = x.len() / 32 * 32;
    let mut acc = [[0.0f32; 8]; 4];
    for i in (0..n32).step_by(32) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, s) in a.iter_mut().enumerate() {
                let e = i + 8 * j + l;
                *s = wf(e).mul_add(x[e], *s);
            }
        }
    }
    let v: [f32; 8] = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    let t = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let mut sum = ((t[0] + t[1]) + (t[2] + t[3])) as f64;
    for (e, &xv) in x.iter().enumerate().skip(n32) {
        sum += (wf(e) * xv) as f64;
    }
    sum as f32
}

/// BF16 weights times activations already rounded to bf16, in the order of
/// llama.cpp's AVX2 `ggml_vec_dot_bf16`: four 8-lane accumulators of
/// multiply-adds over steps of 32, combined as (0+2)+(1+3), then halves and
/// (0+2)+(1+3) of the four; elements past the last multiple of 32 in f64.
pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    let wf = |i: usize| f32::from_bits((u16::from_le_bytes([w[2 * i], w[2 * i + 1]]) as u32) << 16);
    let n32 = x.len() / 32 * 32;
    let mut acc = [[0.0f32; 8]; 4];
    for i in (0..n32).step_by(32) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, s) in a.iter_mut().enumerate() {
                let e = i + 8 * j + l;
                *s = wf(e).mul_add(x[e], *s);
            }
        }
    }
    let v: [f32; 8] = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    let g = [v[4] + v[0], v[5] + v[1], v[6] + v[2], v[7] + v[3]];
    let mut sum = ((g[0] + g[2]) + (g[1] + g[3])) as f64;
    for (e, &xv) in x.iter().enumerate().skip(n32) {
        sum += (wf(e) * xv) as f64;
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector Q8_0 activation rounding gives the scalar reference's bits,
    /// ties, zeros, tiny and huge blocks, infinities and NaN included.
    #[test]
    fn q8_0_activations_match_the_scalar_reference() {
        let mut x: Vec<f32> = (0..32 * 64)
            .map(|i| ((i as f32 * 0.7311).sin() * 3.0).powi(3))
            .collect();
        // Ties: amax 127 makes id 1, so halves round to even.
        for (j, v) in x[..32].iter_mut().enumerate() {
            *v = j as f32 - 15.5;
        }
        x[31] = 127.0;
        x[32..64].iter_mut().for_each(|v| *v = 0.0);
        x[64..96].iter_mut().for_each(|v| *v = -0.0);
        x[96..128]
            .iter_mut()
            .enumerate()
            .for_each(|(j, v)| *v = j as f32 * 1e-40);
        x[130] = f32::INFINITY;
        x[170] = f32::NAN;
        x[200] = f32::NEG_INFINITY;
        x[260] = 3.0e38;
        x[261] = -3.0e38;
        let (mut a, mut b) = (vec![0u8; 34 * 64], vec![0u8; 34 * 64]);
        quantize_q8_0_act(&x, &mut a);
        quantize_q8_0_act_scalar(&x, &mut b);
        for (k, (a, b)) in a.chunks(34).zip(b.chunks(34)).enumerate() {
            assert_eq!(a, b, "block {k}");
        }
    }
}
