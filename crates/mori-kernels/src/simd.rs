//! Run-time dispatch to SIMD dot products, each beside the scalar reference in
//! `quants` that it must equal within a stated budget (see the tests below).
//!
//! x86-64 paths need AVX2 + FMA (+ F16C for f16); anything else uses the
//! scalar code. `is_x86_feature_detected!` caches its answer, so checking it
//! per call costs one load.

use crate::quants;

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

pub fn dot_q8_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA are present (checked just above).
        return unsafe { x86::dot_q8_0_q8_0(w, x) };
    }
    quants::dot_q8_0_q8_0(w, x)
}

pub fn dot_q4_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA are present (checked just above).
        return unsafe { x86::dot_q4_0_q8_0(w, x) };
    }
    quants::dot_q4_0_q8_0(w, x)
}

pub fn dot_f32_bytes(w: &[u8], x: &[f32]) -> f32 {
    quants::dot_f32(w, x)
}

pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && is_x86_feature_detected!("f16c") {
        // SAFETY: AVX2, FMA and F16C are present (checked just above).
        return unsafe { x86::dot_f16(w, x) };
    }
    quants::dot_f16(w, x)
}

pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    quants::dot_bf16(w, x)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::quants::f16_at;

    /// Horizontal sum of 8 floats.
    #[target_feature(enable = "avx2")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Sum of products of 32 signed bytes, as 8 i32 lanes converted to f32.
    #[target_feature(enable = "avx2")]
    unsafe fn dot_i8x32(a: __m256i, b: __m256i) -> __m256 {
        // maddubs needs an unsigned operand: move a's sign onto b.
        let ax = _mm256_sign_epi8(a, a);
        let sy = _mm256_sign_epi8(b, a);
        let p16 = _mm256_maddubs_epi16(ax, sy);
        let p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
        _mm256_cvtepi32_ps(p32)
    }

    /// # Safety
    /// Needs AVX2 and FMA; `w` and `x` hold the same number of Q8_0 blocks.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (wb, xb) in w.chunks_exact(34).zip(x.chunks_exact(34)) {
            let d = _mm256_set1_ps(f16_at(wb, 0) * f16_at(xb, 0));
            let a = _mm256_loadu_si256(wb.as_ptr().add(2) as *const __m256i);
            let b = _mm256_loadu_si256(xb.as_ptr().add(2) as *const __m256i);
            acc = _mm256_fmadd_ps(d, dot_i8x32(a, b), acc);
        }
        hsum(acc)
    }

    /// # Safety
    /// Needs AVX2 and FMA; `w` holds Q4_0 blocks and `x` as many Q8_0 blocks.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mask = _mm256_set1_epi8(0x0f);
        let eight = _mm256_set1_epi8(8);
        for (wb, xb) in w.chunks_exact(18).zip(x.chunks_exact(34)) {
            let d = _mm256_set1_ps(f16_at(wb, 0) * f16_at(xb, 0));
            let q = _mm_loadu_si128(wb.as_ptr().add(2) as *const __m128i);
            // Low nibbles are elements 0..16, high nibbles 16..32.
            let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
            let a = _mm256_sub_epi8(_mm256_and_si256(both, mask), eight);
            let b = _mm256_loadu_si256(xb.as_ptr().add(2) as *const __m256i);
            acc = _mm256_fmadd_ps(d, dot_i8x32(a, b), acc);
        }
        hsum(acc)
    }

    /// # Safety
    /// Needs AVX2, FMA and F16C; `w` holds `x.len()` f16 values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let w0 = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * i) as *const __m128i));
            let w1 = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * i + 16) as *const __m128i));
            acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x.as_ptr().add(i)), acc0);
            acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x.as_ptr().add(i + 8)), acc1);
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        if i < n {
            sum += crate::quants::dot_f16(&w[2 * i..], &x[i..]);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{quantize_row, GgmlType};
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect()
    }

    fn q(ty: GgmlType, x: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; ty.row_size(x.len()).unwrap()];
        quantize_row(ty, x, &mut out).unwrap();
        out
    }

    /// Integer block products are exact; only the float accumulation order
    /// differs, so the budget is a relative 1e-5 of the sum of magnitudes.
    #[test]
    fn simd_q8_0_and_q4_0_match_scalar() {
        for (i, n) in [32usize, 64, 96, 4096, 32 * 33].into_iter().enumerate() {
            let (w, x) = (random(n, i as u64), random(n, 100 + i as u64));
            let xq = q(GgmlType::Q8_0, &x);
            for (wt, simd_f, scalar_f) in [
                (
                    GgmlType::Q8_0,
                    dot_q8_0_q8_0 as fn(&[u8], &[u8]) -> f32,
                    quants::dot_q8_0_q8_0 as fn(&[u8], &[u8]) -> f32,
                ),
                (GgmlType::Q4_0, dot_q4_0_q8_0, quants::dot_q4_0_q8_0),
            ] {
                let wq = q(wt, &w);
                let (a, b) = (simd_f(&wq, &xq), scalar_f(&wq, &xq));
                let scale: f32 = w.iter().zip(&x).map(|(p, q)| (p * q).abs()).sum();
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "{wt} n={n}: simd {a} scalar {b}"
                );
            }
        }
    }

    #[test]
    fn simd_f16_matches_scalar_with_tails() {
        for n in [1usize, 7, 16, 17, 100, 4099] {
            let (w, x) = (random(n, n as u64), random(n, 7 + n as u64));
            let wq = q(GgmlType::F16, &w);
            let (a, b) = (dot_f16(&wq, &x), quants::dot_f16(&wq, &x));
            let scale: f32 = w.iter().zip(&x).map(|(p, q)| (p * q).abs()).sum();
            assert!((a - b).abs() <= 1e-5 * scale, "n={n}: simd {a} scalar {b}");
        }
    }
}
