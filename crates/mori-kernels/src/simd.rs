//! Run-time dispatch to the SIMD dot products, each beside the scalar
//! reference in `quants`/`kquants` that it must equal.
//!
//! Budgets (checked by the tests below and in `tests/kernels.rs`):
//! - quantized types: **bit-identical** to the scalar reference, in every
//!   tier. Block products are exact integers, and the references fix the
//!   float order to the one an 8-lane kernel uses (lane k = elements with
//!   (e mod 32) / 4 == k, one fused multiply-add per lane and block, then the
//!   halves-then-pairs tree), so there is nothing left to differ.
//! - F32/F16/BF16 weights: bit-identical too (the references follow the
//!   kernels' four accumulators over steps of 32); the tests allow relative
//!   1e-5 of the sum of |products|.
//!
//! Tiers, chosen once at run time (see [`Isa`]): AVX-512 (F, BW, VL) with VNNI;
//! AVX2 + FMA + F16C; the scalar references. `MORI_ISA=avx2` or
//! `MORI_ISA=scalar` caps the tier (to compare tiers on one machine).

use std::sync::atomic::{AtomicU8, Ordering};

use crate::{kquants, quants};

#[cfg(target_arch = "x86_64")]
mod x86;

/// An instruction-set tier of the dispatched kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// The scalar references.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX2's set plus AVX-512 F/BW/VL and VNNI.
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma+f16c",
            Isa::Avx512 => "avx512vnni",
        }
    }

    /// Every tier this CPU can run, lowest first.
    pub fn available() -> Vec<Isa> {
        let best = detect();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i <= best)
            .collect()
    }
}

/// The best tier the CPU has.
fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
        {
            return Isa::Avx512;
        }
        return Isa::Avx2;
    }
    Isa::Scalar
}

#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The tier the dispatched kernels use: the CPU's best, capped by `MORI_ISA`
/// (`scalar`, `avx2`, `avx512`; anything else is ignored). Decided once.
#[inline]
pub fn level() -> Isa {
    match LEVEL.load(Ordering::Relaxed) {
        1 => Isa::Scalar,
        2 => Isa::Avx2,
        3 => Isa::Avx512,
        _ => init_level(),
    }
}

#[cold]
fn init_level() -> Isa {
    let best = detect();
    let cap = match std::env::var("MORI_ISA").as_deref() {
        Ok("scalar") => Isa::Scalar,
        Ok("avx2") => Isa::Avx2,
        _ => Isa::Avx512,
    };
    let isa = best.min(cap);
    LEVEL.store(isa as u8 + 1, Ordering::Relaxed);
    isa
}

/// The instruction set the dispatched kernels use on this CPU.
pub fn isa() -> &'static str {
    level().name()
}

/// Defines a dispatching function: the tier's kernel `x86::<tier>::$name`,
/// else the scalar reference `$scalar`; and `$name_at`, the same for a tier
/// chosen by the caller (tests compare every tier the CPU has).
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $at:ident ( $($arg:ident : $ty:ty),* ) => $scalar:path) => {
        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) -> f32 {
            $at(level(), $($arg),*)
        }

        /// As the function without `_at`, in tier `isa`, which must be one of
        /// [`Isa::available`] (a higher one runs the best available instead).
        #[inline]
        pub fn $at(isa: Isa, $($arg: $ty),*) -> f32 {
            #[cfg(target_arch = "x86_64")]
            match isa.min(detect_cached()) {
                // SAFETY: the CPU has the tier's features (`detect_cached`
                // caps the tier); the kernel reads only within its slices.
                Isa::Avx512 => return unsafe { x86::avx512::$name($($arg),*) },
                Isa::Avx2 => return unsafe { x86::avx2::$name($($arg),*) },
                Isa::Scalar => {}
            }
            let _ = isa;
            $scalar($($arg),*)
        }
    };
}

static DETECTED: AtomicU8 = AtomicU8::new(0);

/// [`detect`], remembered.
#[inline]
pub(crate) fn detect_cached() -> Isa {
    match DETECTED.load(Ordering::Relaxed) {
        1 => Isa::Scalar,
        2 => Isa::Avx2,
        3 => Isa::Avx512,
        _ => {
            let isa = detect();
            DETECTED.store(isa as u8 + 1, Ordering::Relaxed);
            isa
        }
    }
}

dispatch!(
    /// Q8_0 weights · Q8_0 activations (same number of blocks).
    dot_q8_0_q8_0, dot_q8_0_q8_0_at(w: &[u8], x: &[u8]) => quants::dot_q8_0_q8_0
);
dispatch!(
    /// Q4_0 weights · Q8_0 activations.
    dot_q4_0_q8_0, dot_q4_0_q8_0_at(w: &[u8], x: &[u8]) => quants::dot_q4_0_q8_0
);
dispatch!(
    /// Q4_1 weights · Q8_1 activations.
    dot_q4_1_q8_1, dot_q4_1_q8_1_at(w: &[u8], x: &[u8]) => quants::dot_q4_1_q8_1
);
dispatch!(
    /// Q5_0 weights · Q8_0 activations.
    dot_q5_0_q8_0, dot_q5_0_q8_0_at(w: &[u8], x: &[u8]) => quants::dot_q5_0_q8_0
);
dispatch!(
    /// Q5_1 weights · Q8_1 activations.
    dot_q5_1_q8_1, dot_q5_1_q8_1_at(w: &[u8], x: &[u8]) => quants::dot_q5_1_q8_1
);
dispatch!(
    /// Q4_K weights · Q8_K activations over `n` elements.
    dot_q4_k_q8_k, dot_q4_k_q8_k_at(n: usize, w: &[u8], x: &[u8]) => kquants::vec_dot_q4_k_q8_k_scalar
);
dispatch!(
    /// Q5_K weights · Q8_K activations over `n` elements.
    dot_q5_k_q8_k, dot_q5_k_q8_k_at(n: usize, w: &[u8], x: &[u8]) => kquants::vec_dot_q5_k_q8_k_scalar
);
dispatch!(
    /// Q6_K weights · Q8_K activations over `n` elements.
    dot_q6_k_q8_k, dot_q6_k_q8_k_at(n: usize, w: &[u8], x: &[u8]) => kquants::vec_dot_q6_k_q8_k_scalar
);
dispatch!(
    /// F32 weights (little-endian bytes) · f32 activations.
    dot_f32, dot_f32_at(w: &[u8], x: &[f32]) => quants::dot_f32
);
dispatch!(
    /// F16 weights · f32 activations.
    dot_f16, dot_f16_at(w: &[u8], x: &[f32]) => quants::dot_f16
);
dispatch!(
    /// BF16 weights · f32 activations.
    dot_bf16, dot_bf16_at(w: &[u8], x: &[f32]) => quants::dot_bf16
);

/// True where [`tile`] has a kernel for weights of type `ty` in tier `isa`:
/// the quantized types on x86 with AVX2 or better.
pub fn has_tile(isa: Isa, ty: crate::GgmlType) -> bool {
    use crate::GgmlType as T;
    isa.min(detect_cached()) >= Isa::Avx2
        && cfg!(target_arch = "x86_64")
        && matches!(
            ty,
            T::Q8_0 | T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q4K | T::Q5K | T::Q6K
        )
}

/// Asks for `bytes` to be brought into L1 ahead of their use (a hint; a
/// no-op off x86).
#[inline]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..bytes.len()).step_by(64) {
        // SAFETY: a prefetch never faults and reads nothing; SSE is part of
        // every x86_64 CPU.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(off) as *const i8);
        }
    }
}

/// True where generation should take four rows at a time through [`tile`]:
/// the 32-element block types. The K types do 256 elements of integer work
/// per multiply-add, so their single chain is not what limits them, and four
/// rows at once measured slower than one (Q4_K_M generation 12.4 -> 11.1
/// tokens/s).
pub fn four_rows_help(isa: Isa, ty: crate::GgmlType) -> bool {
    use crate::GgmlType as T;
    has_tile(isa, ty) && matches!(ty, T::Q8_0 | T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1)
}

/// `R` weight rows of quantized type `ty` (`n` elements each) against `T`
/// activation rows in `vec_dot_type(ty)`, in tier `isa`: `out[r][t]` has
/// exactly the bits of the single product `w[r] · x[t]`, with `R × T`
/// independent chains of multiply-adds in flight, each weight block unpacked
/// once for the `T` tokens and each activation block prepared once for the
/// `R` rows. Where [`has_tile`] is false, `R × T` single products.
pub fn tile<const R: usize, const T: usize>(
    isa: Isa,
    ty: crate::GgmlType,
    n: usize,
    w: [&[u8]; R],
    x: [&[u8]; T],
) -> [[f32; T]; R] {
    #[cfg(target_arch = "x86_64")]
    if has_tile(isa, ty) {
        use crate::GgmlType as G;
        macro_rules! go {
            ($m:ident) => {
                // SAFETY: `has_tile` checked that the CPU has the tier's
                // features; the kernels read whole blocks within their slices.
                unsafe {
                    match ty {
                        G::Q8_0 => return x86::$m::tile_q8_0_q8_0(w, x),
                        G::Q4_0 => return x86::$m::tile_q4_0_q8_0(w, x),
                        G::Q4_1 => return x86::$m::tile_q4_1_q8_1(w, x),
                        G::Q5_0 => return x86::$m::tile_q5_0_q8_0(w, x),
                        G::Q5_1 => return x86::$m::tile_q5_1_q8_1(w, x),
                        G::Q4K => return x86::$m::tile_q4_k_q8_k(n, w, x),
                        G::Q5K => return x86::$m::tile_q5_k_q8_k(n, w, x),
                        G::Q6K => return x86::$m::tile_q6_k_q8_k(n, w, x),
                        _ => {}
                    }
                }
            };
        }
        if isa.min(detect_cached()) == Isa::Avx512 {
            if R == 4 && T == 4 && matches!(ty, G::Q4_0 | G::Q8_0) {
                let w4: [&[u8]; 4] = std::array::from_fn(|k| w[k]);
                let x4: [&[u8]; 4] = std::array::from_fn(|k| x[k]);
                // SAFETY: the CPU has the AVX-512 tier's features (checked above).
                let v = unsafe {
                    match ty {
                        G::Q4_0 => x86::zmm::tile4x4::<x86::zmm::Q4_0>(w4, x4),
                        _ => x86::zmm::tile4x4::<x86::zmm::Q8_0>(w4, x4),
                    }
                };
                return std::array::from_fn(|r| std::array::from_fn(|t| v[r][t]));
            }
            go!(avx512);
        } else {
            go!(avx2);
        }
    }
    w.map(|w| x.map(|x| crate::matmul::vec_dot_at(isa, ty, n, w, crate::matmul::ActRow::Q(x))))
}

/// Whether [`tile_f16`] runs: F16 weights with `n` (a multiple of 32)
/// columns in the AVX-512 tier.
pub fn has_tile_f16(isa: Isa, n: usize) -> bool {
    cfg!(target_arch = "x86_64") && isa.min(detect_cached()) == Isa::Avx512 && n.is_multiple_of(32)
}

/// `dot_f16(w[r], x[t])` for an R × T tile (see [`has_tile_f16`]; other
/// cases go one product at a time): the same bits as [`dot_f16_at`].
pub fn tile_f16<const R: usize, const T: usize>(
    isa: Isa,
    n: usize,
    w: [&[u8]; R],
    x: [&[f32]; T],
) -> [[f32; T]; R] {
    #[cfg(target_arch = "x86_64")]
    if has_tile_f16(isa, n) && w.iter().all(|w| w.len() >= 2 * n) && x.iter().all(|x| x.len() >= n)
    {
        // SAFETY: AVX-512 F is present, `n` is a multiple of 32 and every
        // row holds `n` values (all checked above).
        return unsafe { x86::zmm_f16::tile(n, w.map(|w| w.as_ptr()), x.map(|x| x.as_ptr())) };
    }
    w.map(|w| x.map(|x| dot_f16_at(isa, w, &x[..n])))
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
    type BlockDotAt = fn(Isa, &[u8], &[u8]) -> f32;
    type SuperBlockDot = fn(usize, &[u8], &[u8]) -> f32;
    type SuperBlockDotAt = fn(Isa, usize, &[u8], &[u8]) -> f32;

    const QUANTIZED: [GgmlType; 8] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    /// Every tile shape gives each (row, token) pair exactly the single
    /// product's bits (and so the scalar reference's), in every tier this CPU
    /// has, for every quantized type.
    #[test]
    fn tiles_equal_single_products_in_every_tier() {
        use crate::matmul::{vec_dot_at, vec_dot_type, ActRow};
        fn check<const R: usize, const T: usize>(isa: Isa, ty: GgmlType, n: usize, seed: u64) {
            let ws: Vec<Vec<u8>> = (0..R as u64)
                .map(|k| q(ty, &random(n, seed * 7 + k)))
                .collect();
            let xs: Vec<Vec<u8>> = (0..T as u64)
                .map(|k| q(vec_dot_type(ty), &random(n, seed * 100 + k)))
                .collect();
            let w: [&[u8]; R] = std::array::from_fn(|k| ws[k].as_slice());
            let x: [&[u8]; T] = std::array::from_fn(|k| xs[k].as_slice());
            let got = tile::<R, T>(isa, ty, n, w, x);
            for r in 0..R {
                for t in 0..T {
                    let one = quants_reference(ty, n, w[r], x[t]);
                    let fast = vec_dot_at(isa, ty, n, w[r], ActRow::Q(x[t]));
                    assert_eq!(fast.to_bits(), one.to_bits(), "{isa:?} {ty} n={n} single");
                    assert_eq!(
                        got[r][t].to_bits(),
                        one.to_bits(),
                        "{isa:?} {ty} n={n} tile {R}x{T} row {r} token {t}"
                    );
                }
            }
        }
        let tiers = Isa::available();
        println!("tiers: {tiers:?}");
        for isa in tiers {
            for ty in QUANTIZED {
                let legacy = !matches!(ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K);
                assert_eq!(has_tile(isa, ty), isa >= Isa::Avx2, "{ty}");
                assert_eq!(four_rows_help(isa, ty), legacy && isa >= Isa::Avx2, "{ty}");
                for (seed, n) in [(1u64, 256usize), (2, 768), (3, 2048)] {
                    check::<1, 1>(isa, ty, n, seed);
                    check::<4, 1>(isa, ty, n, seed);
                    check::<1, 4>(isa, ty, n, seed);
                    check::<2, 4>(isa, ty, n, seed);
                    check::<4, 4>(isa, ty, n, seed);
                    check::<3, 5>(isa, ty, n, seed);
                }
            }
        }
    }

    /// The scalar reference product of a quantized type.
    fn quants_reference(ty: GgmlType, n: usize, w: &[u8], x: &[u8]) -> f32 {
        match ty {
            GgmlType::Q8_0 => quants::dot_q8_0_q8_0(w, x),
            GgmlType::Q4_0 => quants::dot_q4_0_q8_0(w, x),
            GgmlType::Q4_1 => quants::dot_q4_1_q8_1(w, x),
            GgmlType::Q5_0 => quants::dot_q5_0_q8_0(w, x),
            GgmlType::Q5_1 => quants::dot_q5_1_q8_1(w, x),
            GgmlType::Q4K => kquants::vec_dot_q4_k_q8_k_scalar(n, w, x),
            GgmlType::Q5K => kquants::vec_dot_q5_k_q8_k_scalar(n, w, x),
            GgmlType::Q6K => kquants::vec_dot_q6_k_q8_k_scalar(n, w, x),
            _ => unreachable!("{ty} is not quantized"),
        }
    }

    /// Every quantized SIMD kernel returns exactly the scalar reference's bits.
    #[test]
    fn quantized_simd_is_bit_identical_to_scalar() {
        let legacy: [(GgmlType, GgmlType, BlockDotAt, BlockDot); 5] = [
            (
                GgmlType::Q8_0,
                GgmlType::Q8_0,
                dot_q8_0_q8_0_at,
                quants::dot_q8_0_q8_0,
            ),
            (
                GgmlType::Q4_0,
                GgmlType::Q8_0,
                dot_q4_0_q8_0_at,
                quants::dot_q4_0_q8_0,
            ),
            (
                GgmlType::Q4_1,
                GgmlType::Q8_1,
                dot_q4_1_q8_1_at,
                quants::dot_q4_1_q8_1,
            ),
            (
                GgmlType::Q5_0,
                GgmlType::Q8_0,
                dot_q5_0_q8_0_at,
                quants::dot_q5_0_q8_0,
            ),
            (
                GgmlType::Q5_1,
                GgmlType::Q8_1,
                dot_q5_1_q8_1_at,
                quants::dot_q5_1_q8_1,
            ),
        ];
        let kquant: [(GgmlType, SuperBlockDotAt, SuperBlockDot); 3] = [
            (
                GgmlType::Q4K,
                dot_q4_k_q8_k_at,
                kquants::vec_dot_q4_k_q8_k_scalar,
            ),
            (
                GgmlType::Q5K,
                dot_q5_k_q8_k_at,
                kquants::vec_dot_q5_k_q8_k_scalar,
            ),
            (
                GgmlType::Q6K,
                dot_q6_k_q8_k_at,
                kquants::vec_dot_q6_k_q8_k_scalar,
            ),
        ];
        for isa in Isa::available() {
            for seed in 0..20u64 {
                for n in [256usize, 512, 256 * 11, 4096] {
                    let (w, x) = (random(n, seed), random(n, 1000 + seed));
                    for &(wt, xt, fast, reference) in &legacy {
                        let (wq, xq) = (q(wt, &w), q(xt, &x));
                        let (a, b) = (fast(isa, &wq, &xq), reference(&wq, &xq));
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{isa:?} {wt} n={n} seed={seed}: {a} vs {b}"
                        );
                    }
                    let xq = q(GgmlType::Q8K, &x);
                    for &(wt, fast, reference) in &kquant {
                        let wq = q(wt, &w);
                        let (a, b) = (fast(isa, n, &wq, &xq), reference(n, &wq, &xq));
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{isa:?} {wt} n={n} seed={seed}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// Float weights: relative 1e-5 of the sum of |products|, at every tail length.
    #[test]
    fn float_simd_matches_scalar_with_tails() {
        type FloatDot = fn(&[u8], &[f32]) -> f32;
        type FloatDotAt = fn(Isa, &[u8], &[f32]) -> f32;
        let kernels: [(GgmlType, FloatDotAt, FloatDot); 3] = [
            (GgmlType::F32, dot_f32_at, quants::dot_f32),
            (GgmlType::F16, dot_f16_at, quants::dot_f16),
            (GgmlType::BF16, dot_bf16_at, quants::dot_bf16),
        ];
        for isa in Isa::available() {
            for n in (0..40).chain([100, 4096, 4099, 5003]) {
                let (w, x) = (random(n, n as u64), random(n, 7 + n as u64));
                for &(ty, fast, reference) in &kernels {
                    let wq = q(ty, &w);
                    let (a, b) = (fast(isa, &wq, &x), reference(&wq, &x));
                    let scale: f32 = w.iter().zip(&x).map(|(p, q)| (p * q).abs()).sum();
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{isa:?} {ty} n={n}: simd {a} scalar {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn isa_is_named() {
        let isa = isa();
        println!("dispatched kernels use: {isa}");
        assert!(["avx512vnni", "avx2+fma+f16c", "scalar"].contains(&isa));
    }
}
