//! x86-64 kernels, compiled twice from one source by `isa_kernels!`:
//!
//! - `avx2`: AVX2 + FMA + F16C.
//! - `avx512`: the same code with AVX-512 (F, BW, VL) and VNNI enabled. Byte
//!   products go through `vpdpbusd` (one instruction where AVX2 needs
//!   `vpmaddubsw` + `vpmaddwd`), and the compiler has 32 vector registers
//!   instead of 16, which is what lets a 4 × 4 tile of accumulators live in
//!   registers during prompt processing.
//!
//! Each kernel computes the same 8 integer lanes per block as its scalar
//! reference and accumulates them with the same fused multiply-adds in the
//! same order, so every tier's results are bit-identical to the scalar ones.
//!
//! # Safety (all functions)
//! The caller checks that the CPU has the module's features (`Isa::Avx2` or
//! `Isa::Avx512`). Slices hold whole blocks; a kernel reads only blocks that
//! every one of its slices holds.

/// `dpbusd`-style lanes: 8 i32 lanes, each the sum of 4 adjacent unsigned ×
/// signed byte products.
macro_rules! lanes_u8_i8 {
    (avx2, $u:expr, $s:expr) => {
        _mm256_madd_epi16(_mm256_maddubs_epi16($u, $s), _mm256_set1_epi16(1))
    };
    (avx512, $u:expr, $s:expr) => {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), $u, $s)
    };
    // `init` plus the lanes: VNNI adds into its accumulator for free.
    (avx2, $init:expr, $u:expr, $s:expr) => {
        _mm256_add_epi32($init, lanes_u8_i8!(avx2, $u, $s))
    };
    (avx512, $init:expr, $u:expr, $s:expr) => {
        _mm256_dpbusd_epi32($init, $u, $s)
    };
}

macro_rules! isa_kernels {
    ($isa:ident, $f:literal) => {
        pub(crate) mod $isa {
            use std::arch::x86_64::*;

            use crate::kquants::QK_K;

            /// The f16 at byte `off` of `b`, widened by the F16C instruction
            /// (exact, so this equals `quants::f16_at`).
            ///
            /// Written in assembly on purpose: from intrinsics LLVM inserts the
            /// 16 bits into whatever register is at hand (`vpinsrw`, which keeps
            /// the register's other lanes) and it picked the accumulator,
            /// chaining every block's scale behind the previous block's
            /// multiply-add: 18 cycles a block instead of about 4. A broadcast
            /// load writes the whole register, so no chain.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn f16_at(b: &[u8], off: usize) -> f32 {
                debug_assert!(off + 2 <= b.len());
                let p = b.as_ptr().add(off);
                let v: __m128;
                // SAFETY: reads the two bytes at `p`, within the block (callers
                // pass offsets inside their block's layout).
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
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn hsum(v: __m256) -> f32 {
                let lo = _mm256_castps256_ps128(v);
                let hi = _mm256_extractf128_ps(v, 1);
                let s = _mm_add_ps(lo, hi);
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }

            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn load32(p: &[u8], off: usize) -> __m256i {
                debug_assert!(off + 32 <= p.len());
                _mm256_loadu_si256(p.as_ptr().add(off) as *const __m256i)
            }

            /// 8 i32 lanes of unsigned × signed byte products, 4 adjacent
            /// pairs per lane. The AVX2 form needs every pair sum to fit i16:
            /// |u| ≤ 127 with s ≥ -127, or |u| ≤ 63 with any s, does.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn lanes_u8_i8(u: __m256i, s: __m256i) -> __m256i {
                lanes_u8_i8!($isa, u, s)
            }

            /// `init` + [`lanes_u8_i8`]`(u, s)` (exact integers, so the same
            /// lanes whichever way they are added).
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn lanes_u8_i8_plus(init: __m256i, u: __m256i, s: __m256i) -> __m256i {
                lanes_u8_i8!($isa, init, u, s)
            }

            /// 8 i32 lanes of signed × signed byte products. Neither side may
            /// hold -128 where the other is negative (weights here never do).
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn lanes_i8_i8(a: __m256i, b: __m256i) -> __m256i {
                lanes_u8_i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
            }

            /// 32 nibbles of 16 bytes: low nibbles are elements 0..16, high 16..32.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn nibbles(p: &[u8], off: usize) -> __m256i {
                debug_assert!(off + 16 <= p.len());
                let q = _mm_loadu_si128(p.as_ptr().add(off) as *const __m128i);
                let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
                _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
            }

            /// Byte j is 0xff where bit j of `bits` is set, else 0.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn bytes_from_bits(bits: u32) -> __m256i {
                let v = _mm256_set1_epi32(bits as i32);
                // Byte j takes source byte j / 8 (shuffles stay within 128-bit
                // halves, and both halves hold the same 4 bytes).
                let idx = _mm256_setr_epi8(
                    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                    3, 3, 3, 3, 3, 3, 3,
                );
                let spread = _mm256_shuffle_epi8(v, idx);
                let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
                _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit)
            }

            /// The running sums of one row's dot product: eight float lanes,
            /// plus four more for the types that keep their minimum terms
            /// apart (Q4_K's four lanes; the scalar sum of Q4_1, Q5_1 and Q5_K
            /// in lane 0).
            #[derive(Clone, Copy)]
            pub struct Acc {
                v: __m256,
                m: __m128,
            }

            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn acc_zero() -> Acc {
                Acc {
                    v: _mm256_setzero_ps(),
                    m: _mm_setzero_ps(),
                }
            }

            /// One weight type's dot product as a step per block, with the
            /// work that depends only on the weight block (`unpack`) or only
            /// on the activation block (`share`) split out, so that a tile of
            /// rows × tokens does each once. Every kernel shape runs the same
            /// steps in the same order for each (row, token) pair, so all are
            /// bit-identical.
            pub trait Blocks {
                /// Bytes of a weight block and of an activation block.
                const W: usize;
                const X: usize;
                /// A weight block made ready for its products.
                type Wu: Copy;
                /// An activation block made ready for its products.
                type Xs: Copy;
                unsafe fn unpack(wb: &[u8]) -> Self::Wu;
                unsafe fn share(xb: &[u8]) -> Self::Xs;
                /// `acc` after the block product.
                unsafe fn step(acc: Acc, w: Self::Wu, x: Self::Xs) -> Acc;
                /// The sum.
                unsafe fn finish(acc: Acc) -> f32;
            }

            /// `acc += d * lanes` in f32.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn fma_acc(acc: Acc, d: f32, lanes: __m256i) -> Acc {
                fma_accv(acc, _mm256_set1_ps(d), lanes)
            }

            /// `acc += d * lanes` in f32, `d` already in every lane.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn fma_accv(acc: Acc, d: __m256, lanes: __m256i) -> Acc {
                Acc {
                    v: _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc.v),
                    m: acc.m,
                }
            }

            /// An f16 scale widened and broadcast to every lane.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn f16_all(b: &[u8], off: usize) -> __m256 {
                _mm256_set1_ps(f16_at(b, off))
            }

            /// Adds `v` to the scalar kept in lane 0 of `acc.m`.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn add_scalar(acc: Acc, v: f32) -> Acc {
                Acc {
                    v: acc.v,
                    m: _mm_add_ss(acc.m, _mm_set_ss(v)),
                }
            }

            /// The eight lanes' sum plus the scalar in lane 0 of `m`.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn finish_scalar(acc: Acc) -> f32 {
                hsum(acc.v) + _mm_cvtss_f32(acc.m)
            }

            /// The products of `R` weight rows with `T` activation rows over
            /// `nb` blocks: `R × T` independent chains of multiply-adds, each
            /// weight block unpacked once for the `T` tokens and each
            /// activation block prepared once for the `R` rows.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn tile<K: Blocks, const R: usize, const T: usize>(
                nb: usize,
                w: [&[u8]; R],
                x: [&[u8]; T],
            ) -> [[f32; T]; R] {
                let w = w.map(|w| &w[..nb * K::W]);
                let x = x.map(|x| &x[..nb * K::X]);
                let mut acc = [[acc_zero(); T]; R];
                for b in 0..nb {
                    let xs: [K::Xs; T] =
                        std::array::from_fn(|t| K::share(x[t].get_unchecked(b * K::X..)));
                    for r in 0..R {
                        let wu = K::unpack(w[r].get_unchecked(b * K::W..));
                        for t in 0..T {
                            acc[r][t] = K::step(acc[r][t], wu, xs[t]);
                        }
                    }
                }
                acc.map(|row| row.map(|a| K::finish(a)))
            }

            /// An activation block pointer, for the types whose step reads the
            /// activations itself.
            #[derive(Clone, Copy)]
            pub struct Raw(*const u8);
            impl Raw {
                #[inline]
                unsafe fn bytes<'a>(self, n: usize) -> &'a [u8] {
                    std::slice::from_raw_parts(self.0, n)
                }
            }

            pub struct Q8_0;
            impl Blocks for Q8_0 {
                const W: usize = 34;
                const X: usize = 34;
                type Wu = (__m256, __m256i);
                type Xs = (__m256, __m256i);
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn unpack(wb: &[u8]) -> Self::Wu {
                    (f16_all(wb, 0), load32(wb, 2))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn share(xb: &[u8]) -> Self::Xs {
                    (f16_all(xb, 0), load32(xb, 2))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn step(acc: Acc, (dw, q): Self::Wu, (dx, x): Self::Xs) -> Acc {
                    fma_accv(acc, _mm256_mul_ps(dw, dx), lanes_i8_i8(q, x))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn finish(acc: Acc) -> f32 {
                    hsum(acc.v)
                }
            }

            pub struct Q4_0;
            impl Blocks for Q4_0 {
                const W: usize = 18;
                const X: usize = 34;
                /// The scale (in every lane) and the 32 levels 0..16 (unsigned).
                type Wu = (__m256, __m256i);
                /// The scale, the 32 values, and -8·(their sum) in the eight lanes.
                type Xs = (__m256, __m256i, __m256i);
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn unpack(wb: &[u8]) -> Self::Wu {
                    (f16_all(wb, 0), nibbles(wb, 2))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn share(xb: &[u8]) -> Self::Xs {
                    let x = load32(xb, 2);
                    let eights = lanes_u8_i8(_mm256_set1_epi8(8), x);
                    (f16_all(xb, 0), x, _mm256_sub_epi32(_mm256_setzero_si256(), eights))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn step(acc: Acc, (dw, q): Self::Wu, (dx, x, minus8): Self::Xs) -> Acc {
                    // Σ(q - 8)·x = Σ q·x - 8·Σx: the same integers per lane as
                    // signed levels would give, with -8·Σx shared by every row.
                    let lanes = lanes_u8_i8_plus(minus8, q, x);
                    fma_accv(acc, _mm256_mul_ps(dw, dx), lanes)
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn finish(acc: Acc) -> f32 {
                    hsum(acc.v)
                }
            }

            pub struct Q4_1;
            impl Blocks for Q4_1 {
                const W: usize = 20;
                const X: usize = 36;
                /// Scale, minimum, levels.
                type Wu = (f32, f32, __m256i);
                /// Scale, scaled sum, values.
                type Xs = (f32, f32, __m256i);
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn unpack(wb: &[u8]) -> Self::Wu {
                    (f16_at(wb, 0), f16_at(wb, 2), nibbles(wb, 4))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn share(xb: &[u8]) -> Self::Xs {
                    (f16_at(xb, 0), f16_at(xb, 2), load32(xb, 4))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn step(acc: Acc, (dw, mw, q): Self::Wu, (dx, sx, x): Self::Xs) -> Acc {
                    let acc = add_scalar(acc, mw * sx);
                    fma_acc(acc, dw * dx, lanes_u8_i8(q, x))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn finish(acc: Acc) -> f32 {
                    finish_scalar(acc)
                }
            }

            pub struct Q5_0;
            impl Blocks for Q5_0 {
                const W: usize = 22;
                const X: usize = 34;
                /// The scale and the levels - 16 as signed bytes.
                type Wu = (f32, __m256i);
                type Xs = (f32, __m256i);
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn unpack(wb: &[u8]) -> Self::Wu {
                    let qh = (wb.as_ptr().add(2) as *const u32).read_unaligned();
                    // level - 16 as a signed byte: set the high nibble to 0xf0
                    // where the fifth bit is clear (nibble - 16), leave it
                    // where it is set.
                    let high =
                        _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xf0u8 as i8));
                    (f16_at(wb, 0), _mm256_or_si256(nibbles(wb, 6), high))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn share(xb: &[u8]) -> Self::Xs {
                    (f16_at(xb, 0), load32(xb, 2))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn step(acc: Acc, (dw, q): Self::Wu, (dx, x): Self::Xs) -> Acc {
                    fma_acc(acc, dw * dx, lanes_i8_i8(q, x))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn finish(acc: Acc) -> f32 {
                    hsum(acc.v)
                }
            }

            pub struct Q5_1;
            impl Blocks for Q5_1 {
                const W: usize = 24;
                const X: usize = 36;
                type Wu = (f32, f32, __m256i);
                type Xs = (f32, f32, __m256i);
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn unpack(wb: &[u8]) -> Self::Wu {
                    let qh = (wb.as_ptr().add(4) as *const u32).read_unaligned();
                    let high = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
                    (
                        f16_at(wb, 0),
                        f16_at(wb, 2),
                        _mm256_or_si256(nibbles(wb, 8), high),
                    )
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn share(xb: &[u8]) -> Self::Xs {
                    (f16_at(xb, 0), f16_at(xb, 2), load32(xb, 4))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn step(acc: Acc, (dw, mw, q): Self::Wu, (dx, sx, x): Self::Xs) -> Acc {
                    let acc = add_scalar(acc, mw * sx);
                    fma_acc(acc, dw * dx, lanes_u8_i8(q, x))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn finish(acc: Acc) -> f32 {
                    finish_scalar(acc)
                }
            }

            /// The 8 six-bit sub-block scales and 8 mins of a Q4_K/Q5_K block
            /// (packed in its bytes 4..16), unpacked with word operations:
            /// returns the scales as i16s and the mins as eight i16 lanes.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn k4_scales_mins(wb: &[u8]) -> ([i16; 8], __m128i) {
                const LOW6: u32 = 0x3f3f_3f3f;
                const LOW4: u32 = 0x0f0f_0f0f;
                const LOW2: u32 = 0x0303_0303;
                let p = wb[4..16].as_ptr();
                let a = (p as *const u32).read_unaligned();
                let b = (p.add(4) as *const u32).read_unaligned();
                let c = (p.add(8) as *const u32).read_unaligned();
                // Sub-blocks 0..4 keep their low six bits; 4..8 take a nibble
                // from `c` and their top two bits from the high bits of `a`
                // (scales) or `b` (mins).
                let scales_lo = a & LOW6;
                let scales_hi = (c & LOW4) | (((a >> 6) & LOW2) << 4);
                let mins_lo = b & LOW6;
                let mins_hi = ((c >> 4) & LOW4) | (((b >> 6) & LOW2) << 4);
                let scales = (scales_lo as u64 | (scales_hi as u64) << 32).to_le_bytes();
                let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, mins_hi as i32, mins_lo as i32));
                (scales.map(|s| s as i16), mins)
            }

            /// `kquants::min_lanes`: lane k = min[2k]·sum[2k] +
            /// min[2k+1]·sum[2k+1], where sum[j] is the sum of sub-block j's
            /// activations (two of the Q8_K block's sixteen 16-element sums).
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn k4_min_lanes(mins: __m128i, xb: &[u8]) -> __m128i {
                let bsums = load32(xb, 260);
                let sums = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bsums),
                    _mm256_extracti128_si256(bsums, 1),
                );
                _mm_madd_epi16(mins, sums)
            }

            /// Integer lanes of one 32-element sub-block of unsigned levels
            /// `q` (0..32) times activations, scaled by the sub-block's scale.
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn scaled_lanes(q: __m256i, x: __m256i, scale: i16) -> __m256i {
                _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(scale))
            }

            /// The Q8_K block's scale (an f32 in its first four bytes).
            #[inline]
            unsafe fn q8k_d(xb: &[u8]) -> f32 {
                (xb.as_ptr() as *const f32).read_unaligned()
            }

            /// A Q4_K or Q5_K block made ready: its two scales, its 256 levels
            /// as eight 32-byte sub-blocks, the sub-block scales and mins.
            #[derive(Clone, Copy)]
            pub struct K45 {
                d: f32,
                dmin: f32,
                q: [__m256i; 8],
                scales: [i16; 8],
                mins: __m128i,
            }

            impl K45 {
                /// The block `wb` with its levels `q` already unpacked.
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn new(wb: &[u8], q: [__m256i; 8]) -> K45 {
                    let (scales, mins) = k4_scales_mins(wb);
                    K45 {
                        d: f16_at(wb, 0),
                        dmin: f16_at(wb, 2),
                        q,
                        scales,
                        mins,
                    }
                }

                /// The integer lanes of the block times a Q8_K block, each
                /// sub-block scaled by its scale (mins apart).
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn scaled_sum(&self, xb: &[u8]) -> __m256i {
                    let mut sumi = _mm256_setzero_si256();
                    for c in 0..4 {
                        let lo = load32(xb, 4 + 64 * c);
                        let hi = load32(xb, 36 + 64 * c);
                        let p_lo = scaled_lanes(self.q[2 * c], lo, self.scales[2 * c]);
                        let p_hi = scaled_lanes(self.q[2 * c + 1], hi, self.scales[2 * c + 1]);
                        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
                    }
                    sumi
                }
            }

            pub struct Q4K;
            impl Blocks for Q4K {
                const W: usize = Q4_K_BYTES;
                const X: usize = Q8_K_BYTES;
                type Wu = K45;
                type Xs = Raw;
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn unpack(wb: &[u8]) -> K45 {
                    let m4 = _mm256_set1_epi8(0x0f);
                    let mut q = [_mm256_setzero_si256(); 8];
                    for c in 0..4 {
                        let v = load32(wb, 16 + 32 * c);
                        q[2 * c] = _mm256_and_si256(v, m4);
                        q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                    }
                    K45::new(wb, q)
                }
                #[inline]
                unsafe fn share(xb: &[u8]) -> Raw {
                    Raw(xb.as_ptr())
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn step(acc: Acc, w: K45, xb: Raw) -> Acc {
                    let xb = xb.bytes(Self::X);
                    let dy = q8k_d(xb);
                    let d = dy * w.d;
                    let dmin = -dy * w.dmin;
                    let sumi = w.scaled_sum(xb);
                    let acc = fma_acc(acc, d, sumi);
                    let m = _mm_cvtepi32_ps(k4_min_lanes(w.mins, xb));
                    Acc {
                        v: acc.v,
                        m: _mm_fmadd_ps(_mm_set1_ps(dmin), m, acc.m),
                    }
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn finish(acc: Acc) -> f32 {
                    let m = _mm_add_ps(acc.m, _mm_movehl_ps(acc.m, acc.m));
                    let m = _mm_add_ss(m, _mm_movehdup_ps(m));
                    hsum(acc.v) + _mm_cvtss_f32(m)
                }
            }

            pub struct Q5K;
            impl Blocks for Q5K {
                const W: usize = Q5_K_BYTES;
                const X: usize = Q8_K_BYTES;
                type Wu = K45;
                type Xs = Raw;
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn unpack(wb: &[u8]) -> K45 {
                    let m4 = _mm256_set1_epi8(0x0f);
                    let sixteen = _mm256_set1_epi8(16);
                    let qh = load32(wb, 16);
                    // The fifth bit of sub-block j is bit j of each qh byte.
                    let high = |j: usize| {
                        let m = _mm256_set1_epi8((1u8 << j) as i8);
                        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m), m), sixteen)
                    };
                    let mut q = [_mm256_setzero_si256(); 8];
                    for c in 0..4 {
                        let v = load32(wb, 48 + 32 * c);
                        q[2 * c] = _mm256_or_si256(_mm256_and_si256(v, m4), high(2 * c));
                        q[2 * c + 1] = _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                            high(2 * c + 1),
                        );
                    }
                    K45::new(wb, q)
                }
                #[inline]
                unsafe fn share(xb: &[u8]) -> Raw {
                    Raw(xb.as_ptr())
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn step(acc: Acc, w: K45, xb: Raw) -> Acc {
                    let xb = xb.bytes(Self::X);
                    let dy = q8k_d(xb);
                    let d = dy * w.d;
                    let dmin = -dy * w.dmin;
                    let m = k4_min_lanes(w.mins, xb);
                    let m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0b01_00_11_10));
                    let m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0b10_11_00_01));
                    let acc = add_scalar(acc, dmin * _mm_cvtsi128_si32(m) as f32);
                    let sumi = w.scaled_sum(xb);
                    fma_acc(acc, d, sumi)
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn finish(acc: Acc) -> f32 {
                    finish_scalar(acc)
                }
            }

            /// A Q6_K block made ready: its scale, its 256 levels (0..64) as
            /// eight 32-byte quarters, each quarter's two 16-element group
            /// scales as i16 lanes, and the sixteen group scales as i16s for
            /// the -32 offset.
            #[derive(Clone, Copy)]
            pub struct K6 {
                d: f32,
                q: [__m256i; 8],
                s: [__m256i; 8],
                scales16: __m256i,
            }

            pub struct Q6K;
            impl Blocks for Q6K {
                const W: usize = Q6_K_BYTES;
                const X: usize = Q8_K_BYTES;
                type Wu = K6;
                type Xs = Raw;
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn unpack(wb: &[u8]) -> K6 {
                    let m4 = _mm256_set1_epi8(0x0f);
                    let m3 = _mm256_set1_epi8(3);
                    let scales8 = _mm_loadu_si128(wb.as_ptr().add(192) as *const __m128i);
                    // Group g's scale in every i16 lane of a 128-bit half.
                    let sc = |g: i32| -> __m128i {
                        let idx = _mm_set1_epi16((g | (g << 8)) as i16 & 0x0f0f);
                        _mm_cvtepi8_epi16(_mm_shuffle_epi8(scales8, idx))
                    };
                    let mut q = [_mm256_setzero_si256(); 8];
                    let mut s = [_mm256_setzero_si256(); 8];
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
                        q[4 * h] = _mm256_or_si256(_mm256_and_si256(ql1, m4), top(0));
                        q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql2, m4), top(2));
                        q[4 * h + 2] = _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                            top(4),
                        );
                        q[4 * h + 3] = _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql2, 4), m4),
                            top(6),
                        );
                        for k in 0..4 {
                            let g = (8 * h + 2 * k) as i32;
                            s[4 * h + k] = _mm256_set_m128i(sc(g + 1), sc(g));
                        }
                    }
                    K6 {
                        d: f16_at(wb, 208),
                        q,
                        s,
                        scales16: _mm256_cvtepi8_epi16(scales8),
                    }
                }
                #[inline]
                unsafe fn share(xb: &[u8]) -> Raw {
                    Raw(xb.as_ptr())
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn step(acc: Acc, w: K6, xb: Raw) -> Acc {
                    let xb = xb.bytes(Self::X);
                    let d = q8k_d(xb) * w.d;
                    // The -32 offset of the levels, per lane through the 16 group sums.
                    let bsums = load32(xb, 260);
                    let offset = _mm256_slli_epi32(_mm256_madd_epi16(bsums, w.scales16), 5);
                    let mut sumi = _mm256_setzero_si256();
                    for h in 0..2 {
                        for k in 0..4 {
                            let xq = load32(xb, 4 + 128 * h + 32 * k);
                            let i = 4 * h + k;
                            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w.q[i], xq), w.s[i]);
                            sumi = _mm256_add_epi32(sumi, p);
                        }
                    }
                    fma_acc(acc, d, _mm256_sub_epi32(sumi, offset))
                }
                #[target_feature(enable = $f)]
                #[inline]
                unsafe fn finish(acc: Acc) -> f32 {
                    hsum(acc.v)
                }
            }

            /// Blocks both sides hold: the K types read `n / 256` blocks, the
            /// others as many whole blocks as every slice holds.
            fn n_blocks<K: Blocks>(n: Option<usize>, w: &[&[u8]], x: &[&[u8]]) -> usize {
                let nb = w
                    .iter()
                    .map(|w| w.len() / K::W)
                    .chain(x.iter().map(|x| x.len() / K::X))
                    .min()
                    .unwrap_or(0);
                n.map_or(nb, |n| nb.min(n / QK_K))
            }

            /// Public kernels of each type: a single product, and tiles of
            /// `R` rows × `T` tokens.
            macro_rules! kernels {
                ($k:ty, $dot:ident, $tile:ident, n) => {
                    #[target_feature(enable = $f)]
                    pub unsafe fn $dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
                        let nb = n_blocks::<$k>(Some(n), &[w], &[x]);
                        tile::<$k, 1, 1>(nb, [w], [x])[0][0]
                    }
                    #[target_feature(enable = $f)]
                    pub unsafe fn $tile<const R: usize, const T: usize>(
                        n: usize,
                        w: [&[u8]; R],
                        x: [&[u8]; T],
                    ) -> [[f32; T]; R] {
                        let nb = n_blocks::<$k>(Some(n), &w, &x);
                        tile::<$k, R, T>(nb, w, x)
                    }
                };
                ($k:ty, $dot:ident, $tile:ident) => {
                    #[target_feature(enable = $f)]
                    pub unsafe fn $dot(w: &[u8], x: &[u8]) -> f32 {
                        let nb = n_blocks::<$k>(None, &[w], &[x]);
                        tile::<$k, 1, 1>(nb, [w], [x])[0][0]
                    }
                    #[target_feature(enable = $f)]
                    pub unsafe fn $tile<const R: usize, const T: usize>(
                        w: [&[u8]; R],
                        x: [&[u8]; T],
                    ) -> [[f32; T]; R] {
                        let nb = n_blocks::<$k>(None, &w, &x);
                        tile::<$k, R, T>(nb, w, x)
                    }
                };
            }
            kernels!(Q8_0, dot_q8_0_q8_0, tile_q8_0_q8_0);
            kernels!(Q4_0, dot_q4_0_q8_0, tile_q4_0_q8_0);
            kernels!(Q4_1, dot_q4_1_q8_1, tile_q4_1_q8_1);
            kernels!(Q5_0, dot_q5_0_q8_0, tile_q5_0_q8_0);
            kernels!(Q5_1, dot_q5_1_q8_1, tile_q5_1_q8_1);
            kernels!(Q4K, dot_q4_k_q8_k, tile_q4_k_q8_k, n);
            kernels!(Q5K, dot_q5_k_q8_k, tile_q5_k_q8_k, n);
            kernels!(Q6K, dot_q6_k_q8_k, tile_q6_k_q8_k, n);

            /// `quants::dot_f32`'s order: four accumulators over steps of 32.
            #[target_feature(enable = $f)]
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
            #[target_feature(enable = $f)]
            pub unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
                let n = x.len();
                debug_assert!(w.len() >= 2 * n);
                let n32 = n / 32 * 32;
                let mut a = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                while i < n32 {
                    for (j, aj) in a.iter_mut().enumerate() {
                        let e = i + 8 * j;
                        let wv =
                            _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * e) as *const __m128i));
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
            #[target_feature(enable = $f)]
            #[inline]
            unsafe fn bf16x8(p: *const u8) -> __m256 {
                let h = _mm_loadu_si128(p as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            }

            /// `quants::dot_bf16`'s order: four accumulators over steps of 32.
            #[target_feature(enable = $f)]
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
                    let wv =
                        f32::from_bits((u16::from_le_bytes([w[2 * e], w[2 * e + 1]]) as u32) << 16);
                    sum += (wv * xv) as f64;
                }
                sum as f32
            }
        }
    };
}

isa_kernels!(avx2, "avx2,fma,f16c");
isa_kernels!(avx512, "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");

/// 512-bit prompt-processing tiles for Q4_0 and Q8_0 (the AVX-512 tier only):
/// one zmm register holds the 8 lanes of two (row, token) pairs, so one
/// `vpdpbusd`, one conversion, one multiply and one fused multiply-add serve
/// two products. Each half accumulates its own pair's blocks in order with the
/// scalar reference's operations, so the results are bit-identical to it.
pub(crate) mod zmm {
    use std::arch::x86_64::*;

    /// A weight type whose blocks become unsigned levels `q` with
    /// `level = q - OFFSET` and an f16 scale at byte 0.
    pub trait Unsigned {
        const W: usize;
        const OFFSET: i8;
        unsafe fn levels(wb: *const u8) -> __m256i;
    }

    pub struct Q4_0;
    impl Unsigned for Q4_0 {
        const W: usize = 18;
        const OFFSET: i8 = 8;
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        #[inline]
        unsafe fn levels(wb: *const u8) -> __m256i {
            let q = _mm_loadu_si128(wb.add(2) as *const __m128i);
            let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
            _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
        }
    }

    pub struct Q8_0;
    impl Unsigned for Q8_0 {
        const W: usize = 34;
        // -128 as the u8 128: (q + 128) - 128.
        const OFFSET: i8 = -128;
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        #[inline]
        unsafe fn levels(wb: *const u8) -> __m256i {
            let q = _mm256_loadu_si256(wb.add(2) as *const __m256i);
            _mm256_xor_si256(q, _mm256_set1_epi8(-128))
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn f16_scalar(p: *const u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            u16::from_le_bytes([*p, *p.add(1)]) as i32,
        )))
    }

    /// Two 256-bit halves as one zmm.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn join_i(lo: __m256i, hi: __m256i) -> __m512i {
        _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn join_f(lo: f32, hi: f32) -> __m512 {
        let lo = _mm512_castps256_ps512(_mm256_set1_ps(lo));
        _mm512_castpd_ps(_mm512_insertf64x4(
            _mm512_castps_pd(lo),
            _mm256_castps_pd(_mm256_set1_ps(hi)),
            1,
        ))
    }

    /// Sum of 8 floats: halves, then pairs (`quants::hsum8`'s order).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// 4 weight rows × 4 Q8_0 activation rows over the blocks all of them hold.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn tile4x4<K: Unsigned>(w: [&[u8]; 4], x: [&[u8]; 4]) -> [[f32; 4]; 4] {
        const X: usize = 34;
        let nb = w
            .iter()
            .map(|w| w.len() / K::W)
            .chain(x.iter().map(|x| x.len() / X))
            .min()
            .unwrap_or(0);
        let wp = w.map(|w| w.as_ptr());
        let xp = x.map(|x| x.as_ptr());
        let offset = _mm512_set1_epi8(K::OFFSET);
        // acc[r][p]: row r with tokens 2p (low half) and 2p + 1 (high half).
        let mut acc = [[_mm512_setzero_ps(); 2]; 4];
        for b in 0..nb {
            let mut xs = [_mm512_setzero_si512(); 2];
            let mut dx = [_mm512_setzero_ps(); 2];
            let mut minus_off = [_mm512_setzero_si512(); 2];
            for p in 0..2 {
                let (x0, x1) = (xp[2 * p].add(b * X), xp[2 * p + 1].add(b * X));
                xs[p] = join_i(
                    _mm256_loadu_si256(x0.add(2) as *const __m256i),
                    _mm256_loadu_si256(x1.add(2) as *const __m256i),
                );
                dx[p] = join_f(f16_scalar(x0), f16_scalar(x1));
                // -OFFSET·Σx per lane, the part every row shares.
                let off = _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, xs[p]);
                minus_off[p] = _mm512_sub_epi32(_mm512_setzero_si512(), off);
            }
            for r in 0..4 {
                let wb = wp[r].add(b * K::W);
                let q = _mm512_broadcast_i64x4(K::levels(wb));
                let dw = _mm512_set1_ps(f16_scalar(wb));
                for p in 0..2 {
                    let lanes = _mm512_dpbusd_epi32(minus_off[p], q, xs[p]);
                    let d = _mm512_mul_ps(dw, dx[p]);
                    acc[r][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes), acc[r][p]);
                }
            }
        }
        let mut out = [[0.0f32; 4]; 4];
        for r in 0..4 {
            for p in 0..2 {
                let v = acc[r][p];
                out[r][2 * p] = hsum(_mm512_castps512_ps256(v));
                out[r][2 * p + 1] = hsum(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                    _mm512_castps_pd(v),
                    1,
                )));
            }
        }
        out
    }
}

/// 512-bit prompt-processing tiles for F16 weights (the AVX-512 tier only):
/// per (row, token) pair two registers hold `quants::dot_f16`'s four 8-lane
/// accumulators (elements `32i + 0..16` and `32i + 16..32`), each lane takes
/// the same fused multiply-adds in the same order, and the final combination
/// is that of the AVX2 kernel, so the results are its bits. Each widened
/// weight register serves `T` tokens and each activation load `R` rows.
pub(crate) mod zmm_f16 {
    use std::arch::x86_64::*;

    /// `dot_f16(w[r], x[t])` for `R` rows of `n` f16 values at `w[r]` and `T`
    /// rows of `n` f32 values at `x[t]`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `n` is a multiple of 32 and every row holds
    /// `n` values.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub unsafe fn tile<const R: usize, const T: usize>(
        n: usize,
        w: [*const u8; R],
        x: [*const f32; T],
    ) -> [[f32; T]; R] {
        debug_assert_eq!(n % 32, 0);
        let mut a01 = [[_mm512_setzero_ps(); T]; R];
        let mut a23 = [[_mm512_setzero_ps(); T]; R];
        let mut i = 0;
        while i < n {
            let wv: [[__m512; 2]; R] = std::array::from_fn(|r| {
                let p = w[r].add(2 * i) as *const __m256i;
                [
                    _mm512_cvtph_ps(_mm256_loadu_si256(p)),
                    _mm512_cvtph_ps(_mm256_loadu_si256(p.add(1))),
                ]
            });
            for t in 0..T {
                let x0 = _mm512_loadu_ps(x[t].add(i));
                let x1 = _mm512_loadu_ps(x[t].add(i + 16));
                for r in 0..R {
                    a01[r][t] = _mm512_fmadd_ps(wv[r][0], x0, a01[r][t]);
                    a23[r][t] = _mm512_fmadd_ps(wv[r][1], x1, a23[r][t]);
                }
            }
            i += 32;
        }
        let mut out = [[0.0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                // (0+2 | 1+3), then (0+2)+(1+3), halves, and two pair sums.
                let s = _mm512_add_ps(a01[r][t], a23[r][t]);
                let v = _mm256_add_ps(
                    _mm512_castps512_ps256(s),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)),
                );
                let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let pairs = _mm_hadd_ps(h, h);
                out[r][t] = _mm_cvtss_f32(_mm_hadd_ps(pairs, pairs));
            }
        }
        out
    }
}
