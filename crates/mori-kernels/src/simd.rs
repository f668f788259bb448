//! Run-time dispatch to the SIMD dot products, each beside the scalar
//! reference in `quants`/`kquants` that it must equal.
//!
//! Budgets (checked by the tests below and in `tests/kernels.rs`):
//! - quantized types: **bit-identical** to the scalar reference. Block products
//!   are exact integers, and the references fix the float order to the one an
//!   8-lane kernel uses (lane k = elements with (e mod 32) / 4 == k, one fused
//!   multiply-add per lane and block, then the halves-then-pairs tree), so
//!   there is nothing left to differ.
//! - F32/F16/BF16 weights: relative 1e-5 of the sum of |products| (the SIMD
//!   code keeps two 8-lane accumulators; the reference one).
//!
//! x86-64 paths need AVX2 + FMA + F16C, chosen at run time;
//! `is_x86_feature_detected!` caches its answer, so a check costs one load.
//! Other CPUs, and x86 CPUs without AVX2, run the scalar references.

use crate::{kquants, quants};

#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The instruction set the dispatched kernels use on this CPU.
pub fn isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        return "avx2+fma+f16c";
    }
    "scalar"
}

/// Defines a dispatching function: the AVX2 kernel `x86::$name` where the CPU
/// has it, else the scalar reference `$scalar`.
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident ( $($arg:ident : $ty:ty),* ) => $scalar:path) => {
        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) -> f32 {
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: AVX2, FMA and F16C are present (checked just above);
                // the kernel reads only within its slices, as its scalar twin.
                return unsafe { x86::$name($($arg),*) };
            }
            $scalar($($arg),*)
        }
    };
}

dispatch!(
    /// Q8_0 weights · Q8_0 activations (same number of blocks).
    dot_q8_0_q8_0(w: &[u8], x: &[u8]) => quants::dot_q8_0_q8_0
);
dispatch!(
    /// Q4_0 weights · Q8_0 activations.
    dot_q4_0_q8_0(w: &[u8], x: &[u8]) => quants::dot_q4_0_q8_0
);
dispatch!(
    /// Q4_1 weights · Q8_1 activations.
    dot_q4_1_q8_1(w: &[u8], x: &[u8]) => quants::dot_q4_1_q8_1
);
dispatch!(
    /// Q5_0 weights · Q8_0 activations.
    dot_q5_0_q8_0(w: &[u8], x: &[u8]) => quants::dot_q5_0_q8_0
);
dispatch!(
    /// Q5_1 weights · Q8_1 activations.
    dot_q5_1_q8_1(w: &[u8], x: &[u8]) => quants::dot_q5_1_q8_1
);
dispatch!(
    /// Q4_K weights · Q8_K activations over `n` elements.
    dot_q4_k_q8_k(n: usize, w: &[u8], x: &[u8]) => kquants::vec_dot_q4_k_q8_k_scalar
);
dispatch!(
    /// Q5_K weights · Q8_K activations over `n` elements.
    dot_q5_k_q8_k(n: usize, w: &[u8], x: &[u8]) => kquants::vec_dot_q5_k_q8_k_scalar
);
dispatch!(
    /// Q6_K weights · Q8_K activations over `n` elements.
    dot_q6_k_q8_k(n: usize, w: &[u8], x: &[u8]) => kquants::vec_dot_q6_k_q8_k_scalar
);
dispatch!(
    /// F32 weights (little-endian bytes) · f32 activations.
    dot_f32(w: &[u8], x: &[f32]) => quants::dot_f32
);
dispatch!(
    /// F16 weights · f32 activations.
    dot_f16(w: &[u8], x: &[f32]) => quants::dot_f16
);
dispatch!(
    /// BF16 weights · f32 activations.
    dot_bf16(w: &[u8], x: &[f32]) => quants::dot_bf16
);

/// True where [`dot_rows4`] has a kernel for weights of type `ty` on this CPU.
pub fn has_dot_rows4(ty: crate::GgmlType) -> bool {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        use crate::GgmlType as T;
        // The K types do 256 elements of integer work per multiply-add, so
        // their single chain is not what limits them, and four streams
        // measured slower than one (Q4_K_M generation 12.4 -> 11.1 tokens/s).
        return matches!(ty, T::Q8_0 | T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1);
    }
    let _ = ty;
    false
}

/// Four weight rows of quantized type `ty` (`n` elements each) against one
/// activation row in `vec_dot_type(ty)`: each result has exactly the bits of
/// the single-row product, with four independent chains of multiply-adds in
/// flight. Where [`has_dot_rows4`] is false, four single-row products.
pub fn dot_rows4(ty: crate::GgmlType, n: usize, w: [&[u8]; 4], x: &[u8]) -> [f32; 4] {
    use crate::GgmlType as T;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2, FMA and F16C are present; the kernels read whole blocks
        // within their slices only.
        unsafe {
            match ty {
                T::Q8_0 => return x86::rows4_q8_0_q8_0(w, x),
                T::Q4_0 => return x86::rows4_q4_0_q8_0(w, x),
                T::Q4_1 => return x86::rows4_q4_1_q8_1(w, x),
                T::Q5_0 => return x86::rows4_q5_0_q8_0(w, x),
                T::Q5_1 => return x86::rows4_q5_1_q8_1(w, x),
                _ => {}
            }
        }
    }
    w.map(|w| crate::matmul::vec_dot(ty, n, w, crate::matmul::ActRow::Q(x)))
}

/// One Q4_0 weight row against four Q8_0 activation rows: each result has exactly
/// the bits `dot_q4_0_q8_0` gives for that pair (same operations, same order);
/// the weight block is loaded and unpacked once for the four, which is what makes
/// prompt processing faster than four single products.
pub fn dot4_q4_0_q8_0(w: &[u8], x: [&[u8]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2, FMA and F16C are present; the kernel reads within its slices.
        return unsafe { x86::dot4_q4_0_q8_0(w, x) };
    }
    x.map(|x| quants::dot_q4_0_q8_0(w, x))
}

/// One Q8_0 weight row against four Q8_0 activation rows, bit-identical to four
/// `dot_q8_0_q8_0` calls.
pub fn dot4_q8_0_q8_0(w: &[u8], x: [&[u8]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        return unsafe { x86::dot4_q8_0_q8_0(w, x) };
    }
    x.map(|x| quants::dot_q8_0_q8_0(w, x))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2 kernels. Each computes the same 8 integer lanes per block as its
    //! scalar reference and accumulates them with the same fused
    //! multiply-adds, so the results are bit-identical.
    //!
    //! # Safety (all functions)
    //! The caller checks that the CPU has AVX2, FMA and F16C. Slices hold
    //! whole blocks; weights and activations hold the same number of them.

    use std::arch::x86_64::*;

    use crate::kquants::QK_K;

    /// The f16 at byte `off` of `b`, widened by the F16C instruction (the
    /// conversion is exact, so this equals `quants::f16_at`).
    ///
    /// Written in assembly on purpose: from intrinsics LLVM inserts the 16 bits
    /// into whatever register is at hand (`vpinsrw`, which keeps the register's
    /// other lanes) and it picked the accumulator, chaining every block's scale
    /// behind the previous block's multiply-add: 18 cycles a block instead of
    /// about 4. A broadcast load writes the whole register, so no chain.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn f16_at(b: &[u8], off: usize) -> f32 {
        let p = b[off..off + 2].as_ptr();
        let v: __m128;
        // SAFETY: reads the two bytes at `p`, which the slice index above checked.
        std::arch::asm!(
            "vpbroadcastw {v}, word ptr [{p}]",
            "vcvtph2ps {v}, {v}",
            p = in(reg) p,
            v = out(xmm_reg) v,
            options(pure, readonly, nostack, preserves_flags),
        );
        _mm_cvtss_f32(v)
    }

    const Q4_K_BYTES: usize = 144;
    const Q5_K_BYTES: usize = 176;
    const Q6_K_BYTES: usize = 210;
    const Q8_K_BYTES: usize = 292;

    /// Sum of 8 floats: halves, then pairs (`quants::hsum8`'s order).
    #[target_feature(enable = "avx2")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn load32(p: &[u8], off: usize) -> __m256i {
        debug_assert!(off + 32 <= p.len());
        _mm256_loadu_si256(p.as_ptr().add(off) as *const __m256i)
    }

    /// 8 i32 lanes of unsigned × signed byte products, 4 adjacent pairs per
    /// lane. Needs every pair sum to fit i16: |u| ≤ 63 with s ≥ -128 does.
    #[target_feature(enable = "avx2")]
    unsafe fn lanes_u8_i8(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    /// 8 i32 lanes of signed × signed byte products. Neither side may hold -128
    /// where the other is negative (weights here never hold -128).
    #[target_feature(enable = "avx2")]
    unsafe fn lanes_i8_i8(a: __m256i, b: __m256i) -> __m256i {
        lanes_u8_i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
    }

    /// 32 nibbles of 16 bytes: low nibbles are elements 0..16, high 16..32.
    #[target_feature(enable = "avx2")]
    unsafe fn nibbles(p: &[u8], off: usize) -> __m256i {
        debug_assert!(off + 16 <= p.len());
        let q = _mm_loadu_si128(p.as_ptr().add(off) as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
    }

    /// Byte j is 0xff where bit j of `bits` is set, else 0.
    #[target_feature(enable = "avx2")]
    unsafe fn bytes_from_bits(bits: u32) -> __m256i {
        let v = _mm256_set1_epi32(bits as i32);
        // Byte j takes source byte j / 8 (shuffles stay within 128-bit halves,
        // and both halves hold the same 4 bytes).
        let idx = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        );
        let spread = _mm256_shuffle_epi8(v, idx);
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit)
    }

    /// `acc += d * lanes` in f32.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma_lanes(acc: __m256, d: f32, lanes: __m256i) -> __m256 {
        _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc)
    }

    /// The running sums of one row's dot product: eight float lanes, plus
    /// four more for the types that keep their minimum terms apart (Q4_K's
    /// four lanes; the scalar sum of Q4_1, Q5_1 and Q5_K in lane 0).
    #[derive(Clone, Copy)]
    pub(super) struct Acc {
        v: __m256,
        m: __m128,
    }

    /// One weight type's dot product, as a step per block. Single-row and
    /// four-row kernels run the same steps in the same order for each row, so
    /// their results are bit-identical.
    pub(super) trait Blocks {
        /// Bytes of a weight block and of an activation block.
        const W: usize;
        const X: usize;
        /// What the steps of all rows share about one activation block.
        type Shared: Copy;
        /// Computes that once per activation block.
        unsafe fn share(xb: &[u8]) -> Self::Shared;
        /// `acc` after the block `wb` · `xb`.
        unsafe fn step(acc: Acc, wb: &[u8], xb: &[u8], sh: Self::Shared) -> Acc;
        /// The row's sum.
        unsafe fn finish(acc: Acc) -> f32;
    }

    /// `acc += d * lanes` in f32.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn fma_acc(acc: Acc, d: f32, lanes: __m256i) -> Acc {
        Acc {
            v: _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc.v),
            m: acc.m,
        }
    }

    /// Adds `v` to the scalar kept in lane 0 of `acc.m`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn add_scalar(acc: Acc, v: f32) -> Acc {
        Acc {
            v: acc.v,
            m: _mm_add_ss(acc.m, _mm_set_ss(v)),
        }
    }

    /// The eight lanes' sum plus the scalar in lane 0 of `m`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn finish_scalar(acc: Acc) -> f32 {
        hsum(acc.v) + _mm_cvtss_f32(acc.m)
    }

    /// The product over `nb` blocks of one row.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot<K: Blocks>(nb: usize, w: &[u8], x: &[u8]) -> f32 {
        let mut acc = Acc {
            v: _mm256_setzero_ps(),
            m: _mm_setzero_ps(),
        };
        let (w, x) = (&w[..nb * K::W], &x[..nb * K::X]);
        for (wb, xb) in w.chunks_exact(K::W).zip(x.chunks_exact(K::X)) {
            acc = K::step(acc, wb, xb, K::share(xb));
        }
        K::finish(acc)
    }

    /// Four rows against one activation row: four independent chains of
    /// multiply-adds instead of one, and each activation block loaded once.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_rows4<K: Blocks>(nb: usize, w: [&[u8]; 4], x: &[u8]) -> [f32; 4] {
        let zero = Acc {
            v: _mm256_setzero_ps(),
            m: _mm_setzero_ps(),
        };
        let mut acc = [zero; 4];
        let w = w.map(|w| &w[..nb * K::W]);
        for (b, xb) in x[..nb * K::X].chunks_exact(K::X).enumerate() {
            let sh = K::share(xb);
            for r in 0..4 {
                acc[r] = K::step(acc[r], &w[r][b * K::W..(b + 1) * K::W], xb, sh);
            }
        }
        [
            K::finish(acc[0]),
            K::finish(acc[1]),
            K::finish(acc[2]),
            K::finish(acc[3]),
        ]
    }

    pub(super) struct Q8_0;
    impl Blocks for Q8_0 {
        const W: usize = 34;
        const X: usize = 34;
        type Shared = ();
        #[inline]
        unsafe fn share(_: &[u8]) {}
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn step(acc: Acc, wb: &[u8], xb: &[u8], _: ()) -> Acc {
            let d = f16_at(wb, 0) * f16_at(xb, 0);
            fma_acc(acc, d, lanes_i8_i8(load32(wb, 2), load32(xb, 2)))
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn finish(acc: Acc) -> f32 {
            hsum(acc.v)
        }
    }

    pub(super) struct Q4_0;
    impl Blocks for Q4_0 {
        const W: usize = 18;
        const X: usize = 34;
        /// The activation block's scale and 8·(its sum) in the eight lanes.
        type Shared = (f32, __m256i);
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn share(xb: &[u8]) -> (f32, __m256i) {
            (
                f16_at(xb, 0),
                lanes_u8_i8(_mm256_set1_epi8(8), load32(xb, 2)),
            )
        }
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn step(acc: Acc, wb: &[u8], xb: &[u8], (dx, eights): (f32, __m256i)) -> Acc {
            let d = f16_at(wb, 0) * dx;
            // Σ(q - 8)·x = Σ q·x - 8·Σx: the same integers per lane as signed
            // levels would give, with the 8·Σx part shared by every row.
            let lanes = _mm256_sub_epi32(lanes_u8_i8(nibbles(wb, 2), load32(xb, 2)), eights);
            fma_acc(acc, d, lanes)
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn finish(acc: Acc) -> f32 {
            hsum(acc.v)
        }
    }

    pub(super) struct Q4_1;
    impl Blocks for Q4_1 {
        const W: usize = 20;
        const X: usize = 36;
        type Shared = ();
        #[inline]
        unsafe fn share(_: &[u8]) {}
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn step(acc: Acc, wb: &[u8], xb: &[u8], _: ()) -> Acc {
            let acc = add_scalar(acc, f16_at(wb, 2) * f16_at(xb, 2));
            let d = f16_at(wb, 0) * f16_at(xb, 0);
            fma_acc(acc, d, lanes_u8_i8(nibbles(wb, 4), load32(xb, 4)))
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn finish(acc: Acc) -> f32 {
            finish_scalar(acc)
        }
    }

    pub(super) struct Q5_0;
    impl Blocks for Q5_0 {
        const W: usize = 22;
        const X: usize = 34;
        type Shared = ();
        #[inline]
        unsafe fn share(_: &[u8]) {}
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn step(acc: Acc, wb: &[u8], xb: &[u8], _: ()) -> Acc {
            let d = f16_at(wb, 0) * f16_at(xb, 0);
            let qh = (wb.as_ptr().add(2) as *const u32).read_unaligned();
            // level - 16 as a signed byte: set the high nibble to 0xf0 where
            // the fifth bit is clear (nibble - 16), leave it where it is set.
            let high = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xf0u8 as i8));
            let q = _mm256_or_si256(nibbles(wb, 6), high);
            fma_acc(acc, d, lanes_i8_i8(q, load32(xb, 2)))
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn finish(acc: Acc) -> f32 {
            hsum(acc.v)
        }
    }

    pub(super) struct Q5_1;
    impl Blocks for Q5_1 {
        const W: usize = 24;
        const X: usize = 36;
        type Shared = ();
        #[inline]
        unsafe fn share(_: &[u8]) {}
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn step(acc: Acc, wb: &[u8], xb: &[u8], _: ()) -> Acc {
            let acc = add_scalar(acc, f16_at(wb, 2) * f16_at(xb, 2));
            let d = f16_at(wb, 0) * f16_at(xb, 0);
            let qh = (wb.as_ptr().add(4) as *const u32).read_unaligned();
            let high = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
            let q = _mm256_or_si256(nibbles(wb, 8), high);
            fma_acc(acc, d, lanes_u8_i8(q, load32(xb, 4)))
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn finish(acc: Acc) -> f32 {
            finish_scalar(acc)
        }
    }

    /// The 8 six-bit sub-block scales and 8 mins of a Q4_K/Q5_K block (packed
    /// in its bytes 4..16), unpacked with word operations: returns the scales
    /// as i16s and the mins as eight i16 lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn k4_scales_mins(wb: &[u8]) -> ([i16; 8], __m128i) {
        const LOW6: u32 = 0x3f3f_3f3f;
        const LOW4: u32 = 0x0f0f_0f0f;
        const LOW2: u32 = 0x0303_0303;
        let p = wb[4..16].as_ptr();
        let a = (p as *const u32).read_unaligned();
        let b = (p.add(4) as *const u32).read_unaligned();
        let c = (p.add(8) as *const u32).read_unaligned();
        // Sub-blocks 0..4 keep their low six bits; 4..8 take a nibble from `c`
        // and their top two bits from the high bits of `a` (scales) or `b` (mins).
        let scales_lo = a & LOW6;
        let scales_hi = (c & LOW4) | (((a >> 6) & LOW2) << 4);
        let mins_lo = b & LOW6;
        let mins_hi = ((c >> 4) & LOW4) | (((b >> 6) & LOW2) << 4);
        let scales = (scales_lo as u64 | (scales_hi as u64) << 32).to_le_bytes();
        let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, mins_hi as i32, mins_lo as i32));
        (scales.map(|s| s as i16), mins)
    }

    /// `kquants::min_lanes`: lane k = min[2k]·sum[2k] + min[2k+1]·sum[2k+1], where
    /// sum[j] is the sum of sub-block j's activations (two of the Q8_K block's
    /// sixteen 16-element sums).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn k4_min_lanes(mins: __m128i, xb: &[u8]) -> __m128i {
        let bsums = load32(xb, 260);
        let sums = _mm_hadd_epi16(
            _mm256_castsi256_si128(bsums),
            _mm256_extracti128_si256(bsums, 1),
        );
        _mm_madd_epi16(mins, sums)
    }

    /// Integer lanes of one 32-element sub-block of unsigned levels `q`
    /// (0..32) times activations, scaled by the sub-block's scale.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn scaled_lanes(q: __m256i, x: __m256i, scale: i16) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(scale))
    }

    /// The Q8_K block's scale (an f32 in its first four bytes).
    #[inline]
    unsafe fn q8k_d(xb: &[u8]) -> f32 {
        (xb.as_ptr() as *const f32).read_unaligned()
    }

    pub(super) struct Q4K;
    impl Blocks for Q4K {
        const W: usize = Q4_K_BYTES;
        const X: usize = Q8_K_BYTES;
        type Shared = ();
        #[inline]
        unsafe fn share(_: &[u8]) {}
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn step(acc: Acc, wb: &[u8], xb: &[u8], _: ()) -> Acc {
            let m4 = _mm256_set1_epi8(0x0f);
            let dy = q8k_d(xb);
            let d = dy * f16_at(wb, 0);
            let dmin = -dy * f16_at(wb, 2);
            let (scales, mins) = k4_scales_mins(wb);
            let mut sumi = _mm256_setzero_si256();
            for c in 0..4 {
                let q = load32(wb, 16 + 32 * c);
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                let p_lo = scaled_lanes(lo, load32(xb, 4 + 64 * c), scales[2 * c]);
                let p_hi = scaled_lanes(hi, load32(xb, 36 + 64 * c), scales[2 * c + 1]);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
            }
            let acc = fma_acc(acc, d, sumi);
            let m = _mm_cvtepi32_ps(k4_min_lanes(mins, xb));
            Acc {
                v: acc.v,
                m: _mm_fmadd_ps(_mm_set1_ps(dmin), m, acc.m),
            }
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn finish(acc: Acc) -> f32 {
            let m = _mm_add_ps(acc.m, _mm_movehl_ps(acc.m, acc.m));
            let m = _mm_add_ss(m, _mm_movehdup_ps(m));
            hsum(acc.v) + _mm_cvtss_f32(m)
        }
    }

    pub(super) struct Q5K;
    impl Blocks for Q5K {
        const W: usize = Q5_K_BYTES;
        const X: usize = Q8_K_BYTES;
        type Shared = ();
        #[inline]
        unsafe fn share(_: &[u8]) {}
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn step(acc: Acc, wb: &[u8], xb: &[u8], _: ()) -> Acc {
            let m4 = _mm256_set1_epi8(0x0f);
            let sixteen = _mm256_set1_epi8(16);
            let dy = q8k_d(xb);
            let d = dy * f16_at(wb, 0);
            let dmin = -dy * f16_at(wb, 2);
            let (scales, mins) = k4_scales_mins(wb);
            let m = k4_min_lanes(mins, xb);
            let m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0b01_00_11_10));
            let m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0b10_11_00_01));
            let acc = add_scalar(acc, dmin * _mm_cvtsi128_si32(m) as f32);
            let qh = load32(wb, 16);
            // The fifth bit of sub-block j is bit j of each qh byte.
            let high = |j: usize| {
                let m = _mm256_set1_epi8((1u8 << j) as i8);
                _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m), m), sixteen)
            };
            let mut sumi = _mm256_setzero_si256();
            for c in 0..4 {
                let q = load32(wb, 48 + 32 * c);
                let lo = _mm256_or_si256(_mm256_and_si256(q, m4), high(2 * c));
                let hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                    high(2 * c + 1),
                );
                let p_lo = scaled_lanes(lo, load32(xb, 4 + 64 * c), scales[2 * c]);
                let p_hi = scaled_lanes(hi, load32(xb, 36 + 64 * c), scales[2 * c + 1]);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
            }
            fma_acc(acc, d, sumi)
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn finish(acc: Acc) -> f32 {
            finish_scalar(acc)
        }
    }

    pub(super) struct Q6K;
    impl Blocks for Q6K {
        const W: usize = Q6_K_BYTES;
        const X: usize = Q8_K_BYTES;
        type Shared = ();
        #[inline]
        unsafe fn share(_: &[u8]) {}
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn step(acc: Acc, wb: &[u8], xb: &[u8], _: ()) -> Acc {
            let m4 = _mm256_set1_epi8(0x0f);
            let m3 = _mm256_set1_epi8(3);
            let d = q8k_d(xb) * f16_at(wb, 208);
            // The -32 offset of the levels, per lane through the 16 group sums.
            let bsums = load32(xb, 260);
            let scales8 = _mm_loadu_si128(wb[192..208].as_ptr() as *const __m128i);
            let scales16 = _mm256_cvtepi8_epi16(scales8);
            let offset = _mm256_slli_epi32(_mm256_madd_epi16(bsums, scales16), 5);
            // Group g's scale in every i16 lane of a 128-bit half.
            let sc = |g: i32| -> __m128i {
                let idx = _mm_set1_epi16((g | (g << 8)) as i16 & 0x0f0f);
                _mm_cvtepi8_epi16(_mm_shuffle_epi8(scales8, idx))
            };
            let mut sumi = _mm256_setzero_si256();
            for h in 0..2 {
                let ql1 = load32(wb, 64 * h);
                let ql2 = load32(wb, 64 * h + 32);
                let qh = load32(wb, 128 + 32 * h);
                let top = |shift: i32| {
                    let bits = match shift {
                        0 => qh,
                        2 => _mm256_srli_epi16(qh, 2),
                        4 => _mm256_srli_epi16(qh, 4),
                        _ => _mm256_srli_epi16(qh, 6),
                    };
                    _mm256_slli_epi16(_mm256_and_si256(bits, m3), 4)
                };
                let quarters = [
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), top(0)),
                    _mm256_or_si256(_mm256_and_si256(ql2, m4), top(2)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), top(4)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql2, 4), m4), top(6)),
                ];
                for (k, q) in quarters.into_iter().enumerate() {
                    let g = (8 * h + 2 * k) as i32;
                    let s = _mm256_set_m128i(sc(g + 1), sc(g));
                    let xq = load32(xb, 4 + 128 * h + 32 * k);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, xq), s);
                    sumi = _mm256_add_epi32(sumi, p);
                }
            }
            fma_acc(acc, d, _mm256_sub_epi32(sumi, offset))
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn finish(acc: Acc) -> f32 {
            hsum(acc.v)
        }
    }

    /// Public single-row and four-row kernels of each type (the K types: single
    /// row only). The K types take the row length `n` and read `n / 256`
    /// blocks; the others read as many whole blocks as both slices hold.
    macro_rules! kernels {
        ($k:ty, $dot:ident, n) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
                let nb = (n / QK_K).min(w.len() / <$k>::W).min(x.len() / <$k>::X);
                dot::<$k>(nb, w, x)
            }
        };
        ($k:ty, $dot:ident, $rows4:ident) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $dot(w: &[u8], x: &[u8]) -> f32 {
                let nb = (w.len() / <$k>::W).min(x.len() / <$k>::X);
                dot::<$k>(nb, w, x)
            }
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $rows4(w: [&[u8]; 4], x: &[u8]) -> [f32; 4] {
                let nb = w
                    .iter()
                    .fold(x.len() / <$k>::X, |n, w| n.min(w.len() / <$k>::W));
                dot_rows4::<$k>(nb, w, x)
            }
        };
    }
    kernels!(Q8_0, dot_q8_0_q8_0, rows4_q8_0_q8_0);
    kernels!(Q4_0, dot_q4_0_q8_0, rows4_q4_0_q8_0);
    kernels!(Q4_1, dot_q4_1_q8_1, rows4_q4_1_q8_1);
    kernels!(Q5_0, dot_q5_0_q8_0, rows4_q5_0_q8_0);
    kernels!(Q5_1, dot_q5_1_q8_1, rows4_q5_1_q8_1);
    kernels!(Q4K, dot_q4_k_q8_k, n);
    kernels!(Q5K, dot_q5_k_q8_k, n);
    kernels!(Q6K, dot_q6_k_q8_k, n);

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q4_0_q8_0(w: &[u8], x: [&[u8]; 4]) -> [f32; 4] {
        let nb = x.iter().fold(w.len() / 18, |n, x| n.min(x.len() / 34));
        let mut acc = [_mm256_setzero_ps(); 4];
        for b in 0..nb {
            let wb = &w[18 * b..18 * b + 18];
            let dw = f16_at(wb, 0);
            let q = _mm256_sub_epi8(nibbles(wb, 2), _mm256_set1_epi8(8));
            for k in 0..4 {
                let xb = &x[k][34 * b..34 * b + 34];
                let d = dw * f16_at(xb, 0);
                acc[k] = fma_lanes(acc[k], d, lanes_i8_i8(q, load32(xb, 2)));
            }
        }
        [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q8_0_q8_0(w: &[u8], x: [&[u8]; 4]) -> [f32; 4] {
        let nb = x.iter().fold(w.len() / 34, |n, x| n.min(x.len() / 34));
        let mut acc = [_mm256_setzero_ps(); 4];
        for b in 0..nb {
            let wb = &w[34 * b..34 * b + 34];
            let dw = f16_at(wb, 0);
            let q = load32(wb, 2);
            for k in 0..4 {
                let xb = &x[k][34 * b..34 * b + 34];
                let d = dw * f16_at(xb, 0);
                acc[k] = fma_lanes(acc[k], d, lanes_i8_i8(q, load32(xb, 2)));
            }
        }
        [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
    }

    /// `quants::dot_f32`'s order: four accumulators over steps of 32.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        debug_assert!(w.len() >= 4 * n);
        let wp = w.as_ptr() as *const f32;
        let n32 = n / 32 * 32;
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < n32 {
            for (j, aj) in a.iter_mut().enumerate() {
                let e = i + 8 * j;
                let wv = _mm256_loadu_ps(wp.add(e));
                *aj = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.as_ptr().add(e)), *aj);
            }
            i += 32;
        }
        let v = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
        let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pairs = _mm_hadd_ps(t, t);
        let mut sum = _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs));
        for (e, &xv) in x.iter().enumerate().skip(n32) {
            sum = wp.add(e).read_unaligned().mul_add(xv, sum);
        }
        sum
    }

    /// `quants::dot_f16`'s order: four accumulators over steps of 32.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        debug_assert!(w.len() >= 2 * n);
        let n32 = n / 32 * 32;
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < n32 {
            for (j, aj) in a.iter_mut().enumerate() {
                let e = i + 8 * j;
                let wv = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * e) as *const __m128i));
                *aj = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.as_ptr().add(e)), *aj);
            }
            i += 32;
        }
        let v = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
        let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pairs = _mm_hadd_ps(t, t);
        let mut sum = _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs)) as f64;
        for (e, &xv) in x.iter().enumerate().skip(n32) {
            let wv = half::f16::from_le_bytes([w[2 * e], w[2 * e + 1]]).to_f32();
            sum += (wv * xv) as f64;
        }
        sum as f32
    }

    /// 8 bf16 values widened to f32 (a bf16 is the top half of an f32).
    #[target_feature(enable = "avx2")]
    unsafe fn bf16x8(p: *const u8) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    }

    /// `quants::dot_bf16`'s order: four accumulators over steps of 32.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        debug_assert!(w.len() >= 2 * n);
        let n32 = n / 32 * 32;
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < n32 {
            for (j, aj) in a.iter_mut().enumerate() {
                let e = i + 8 * j;
                let wv = bf16x8(w.as_ptr().add(2 * e));
                *aj = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.as_ptr().add(e)), *aj);
            }
            i += 32;
        }
        let v = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
        let g = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let g = _mm_add_ps(g, _mm_movehl_ps(g, g));
        let g = _mm_add_ss(g, _mm_movehdup_ps(g));
        let mut sum = _mm_cvtss_f32(g) as f64;
        for (e, &xv) in x.iter().enumerate().skip(n32) {
            let wv = f32::from_bits((u16::from_le_bytes([w[2 * e], w[2 * e + 1]]) as u32) << 16);
            sum += (wv * xv) as f64;
        }
        sum as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{quantize_row, GgmlType};
    use rand::{Rng, SeedableRng};

    /// Wide-ranging data with a few outliers, so scales, mins and the
    /// extreme levels (0, 15, 31, 63, ±127) all occur.
    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let v = rng.gen_range(-2.0f32..2.0);
                if i % 61 == 0 {
                    v * 20.0
                } else {
                    v
                }
            })
            .collect()
    }

    fn q(ty: GgmlType, x: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; ty.row_size(x.len()).unwrap()];
        quantize_row(ty, x, &mut out).unwrap();
        out
    }

    type BlockDot = fn(&[u8], &[u8]) -> f32;
    type SuperBlockDot = fn(usize, &[u8], &[u8]) -> f32;

    /// The four-token kernels give each token exactly the single kernel's bits.
    #[test]
    fn four_token_kernels_equal_four_single_products() {
        for (ty, four, one) in [
            (
                GgmlType::Q4_0,
                dot4_q4_0_q8_0 as fn(&[u8], [&[u8]; 4]) -> [f32; 4],
                dot_q4_0_q8_0 as BlockDot,
            ),
            (GgmlType::Q8_0, dot4_q8_0_q8_0, dot_q8_0_q8_0),
        ] {
            for (seed, n) in [(1u64, 32usize), (2, 96), (3, 2048), (4, 4096)] {
                let w = q(ty, &random(n, seed));
                let xs: Vec<Vec<u8>> = (0..4)
                    .map(|k| q(GgmlType::Q8_0, &random(n, seed * 10 + k)))
                    .collect();
                let got = four(&w, [&xs[0], &xs[1], &xs[2], &xs[3]]);
                for k in 0..4 {
                    assert_eq!(
                        got[k].to_bits(),
                        one(&w, &xs[k]).to_bits(),
                        "{ty} n={n} token {k}"
                    );
                }
            }
        }
    }

    /// The four-row kernels give each row exactly the single-row kernel's bits
    /// (and so the scalar reference's), for every quantized type.
    #[test]
    fn four_row_kernels_equal_single_products() {
        use crate::matmul::{vec_dot, vec_dot_type, ActRow};
        let types = [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
        ];
        for ty in types {
            for (seed, n) in [(1u64, 256usize), (2, 768), (3, 2048), (4, 4096)] {
                let ws: Vec<Vec<u8>> = (0..4).map(|k| q(ty, &random(n, seed * 7 + k))).collect();
                let x = q(vec_dot_type(ty), &random(n, seed * 100));
                let legacy = !matches!(ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K);
                assert_eq!(has_dot_rows4(ty), legacy && isa() != "scalar", "{ty}");
                let got = dot_rows4(ty, n, [&ws[0], &ws[1], &ws[2], &ws[3]], &x);
                for k in 0..4 {
                    let one = vec_dot(ty, n, &ws[k], ActRow::Q(&x));
                    assert_eq!(got[k].to_bits(), one.to_bits(), "{ty} n={n} row {k}");
                }
            }
        }
    }

    /// Every quantized SIMD kernel returns exactly the scalar reference's bits.
    #[test]
    fn quantized_simd_is_bit_identical_to_scalar() {
        let legacy: [(GgmlType, GgmlType, BlockDot, BlockDot); 5] = [
            (
                GgmlType::Q8_0,
                GgmlType::Q8_0,
                dot_q8_0_q8_0,
                quants::dot_q8_0_q8_0,
            ),
            (
                GgmlType::Q4_0,
                GgmlType::Q8_0,
                dot_q4_0_q8_0,
                quants::dot_q4_0_q8_0,
            ),
            (
                GgmlType::Q4_1,
                GgmlType::Q8_1,
                dot_q4_1_q8_1,
                quants::dot_q4_1_q8_1,
            ),
            (
                GgmlType::Q5_0,
                GgmlType::Q8_0,
                dot_q5_0_q8_0,
                quants::dot_q5_0_q8_0,
            ),
            (
                GgmlType::Q5_1,
                GgmlType::Q8_1,
                dot_q5_1_q8_1,
                quants::dot_q5_1_q8_1,
            ),
        ];
        let kquant: [(GgmlType, SuperBlockDot, SuperBlockDot); 3] = [
            (
                GgmlType::Q4K,
                dot_q4_k_q8_k,
                kquants::vec_dot_q4_k_q8_k_scalar,
            ),
            (
                GgmlType::Q5K,
                dot_q5_k_q8_k,
                kquants::vec_dot_q5_k_q8_k_scalar,
            ),
            (
                GgmlType::Q6K,
                dot_q6_k_q8_k,
                kquants::vec_dot_q6_k_q8_k_scalar,
            ),
        ];
        for seed in 0..20u64 {
            for n in [256usize, 512, 256 * 11, 4096] {
                let (w, x) = (random(n, seed), random(n, 1000 + seed));
                for &(wt, xt, fast, reference) in &legacy {
                    let (wq, xq) = (q(wt, &w), q(xt, &x));
                    let (a, b) = (fast(&wq, &xq), reference(&wq, &xq));
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{wt} n={n} seed={seed}: {a} vs {b}"
                    );
                }
                let xq = q(GgmlType::Q8K, &x);
                for &(wt, fast, reference) in &kquant {
                    let wq = q(wt, &w);
                    let (a, b) = (fast(n, &wq, &xq), reference(n, &wq, &xq));
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{wt} n={n} seed={seed}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// Float weights: relative 1e-5 of the sum of |products|, at every tail length.
    #[test]
    fn float_simd_matches_scalar_with_tails() {
        type FloatDot = fn(&[u8], &[f32]) -> f32;
        let kernels: [(GgmlType, FloatDot, FloatDot); 3] = [
            (GgmlType::F32, dot_f32, quants::dot_f32),
            (GgmlType::F16, dot_f16, quants::dot_f16),
            (GgmlType::BF16, dot_bf16, quants::dot_bf16),
        ];
        for n in (0..40).chain([100, 4096, 4099, 5003]) {
            let (w, x) = (random(n, n as u64), random(n, 7 + n as u64));
            for &(ty, fast, reference) in &kernels {
                let wq = q(ty, &w);
                let (a, b) = (fast(&wq, &x), reference(&wq, &x));
                let scale: f32 = w.iter().zip(&x).map(|(p, q)| (p * q).abs()).sum();
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "{ty} n={n}: simd {a} scalar {b}"
                );
            }
        }
    }

    #[test]
    fn isa_is_named() {
        let isa = isa();
        println!("dispatched kernels use: {isa}");
        assert!(["avx2+fma+f16c", "scalar"].contains(&isa));
    }
}
