//! Kernel properties on random data: round-trip error of every block type
//! within a stated budget, the dispatched (SIMD) dot products equal to the
//! scalar references, quantized products close to the f32 product, matrix
//! products independent of the thread count, and wrong sizes rejected.

use mori_kernels::{
    dequantize_row, matmul, quantize_row, vec_dot, vec_dot_type, ActBuf, ActRow, GgmlType,
    ThreadPool, WeightView,
};
use rand::{Rng, SeedableRng};

/// Gaussian-ish data (sum of uniforms), the shape real activations and weights have.
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum::<f32>())
        .collect()
}

fn quant(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_size(x.len()).unwrap()];
    quantize_row(ty, x, &mut q).unwrap();
    q
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

/// Round-trip RMS error relative to the data's RMS. Budgets follow from the
/// step of each format (about step/sqrt(12) for uniform rounding), with margin.
#[test]
fn round_trip_error_within_budget() {
    let budgets = [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 1e-3),
        (GgmlType::BF16, 5e-3),
        (GgmlType::Q8_0, 0.01),
        (GgmlType::Q8_1, 0.01),
        (GgmlType::Q8K, 0.01),
        (GgmlType::Q6K, 0.03),
        (GgmlType::Q5_0, 0.06),
        (GgmlType::Q5_1, 0.06),
        (GgmlType::Q5K, 0.06),
        (GgmlType::Q4_0, 0.12),
        (GgmlType::Q4_1, 0.12),
        (GgmlType::Q4K, 0.12),
    ];
    for (ty, budget) in budgets {
        let x = data(256 * 16, ty as u64);
        let mut back = vec![0.0f32; x.len()];
        dequantize_row(ty, &quant(ty, &x), &mut back).unwrap();
        let err: Vec<f32> = x.iter().zip(&back).map(|(a, b)| a - b).collect();
        let rel = rms(&err) / rms(&x);
        println!("{ty:<5} relative RMS error {rel:.5} (budget {budget})");
        assert!(
            rel <= budget,
            "{ty}: relative RMS error {rel} over budget {budget}"
        );
    }
}

fn scalar_dot(ty: GgmlType, n: usize, w: &[u8], act: ActRow) -> f32 {
    use mori_kernels::{kquants, quants};
    match (ty, act) {
        (GgmlType::F32, ActRow::F32(x)) => quants::dot_f32(w, x),
        (GgmlType::F16, ActRow::F32(x)) => quants::dot_f16(w, x),
        (GgmlType::BF16, ActRow::F32(x)) => quants::dot_bf16(w, x),
        (GgmlType::Q4_0, ActRow::Q(x)) => quants::dot_q4_0_q8_0(w, x),
        (GgmlType::Q4_1, ActRow::Q(x)) => quants::dot_q4_1_q8_1(w, x),
        (GgmlType::Q5_0, ActRow::Q(x)) => quants::dot_q5_0_q8_0(w, x),
        (GgmlType::Q5_1, ActRow::Q(x)) => quants::dot_q5_1_q8_1(w, x),
        (GgmlType::Q8_0, ActRow::Q(x)) => quants::dot_q8_0_q8_0(w, x),
        (GgmlType::Q4K, ActRow::Q(x)) => kquants::vec_dot_q4_k_q8_k_scalar(n, w, x),
        (GgmlType::Q5K, ActRow::Q(x)) => kquants::vec_dot_q5_k_q8_k_scalar(n, w, x),
        (GgmlType::Q6K, ActRow::Q(x)) => kquants::vec_dot_q6_k_q8_k_scalar(n, w, x),
        _ => unreachable!(),
    }
}

const WEIGHT_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// Lengths: one block, a few, many, and (for the float types) odd lengths that
/// leave SIMD tails.
fn lengths(ty: GgmlType) -> Vec<usize> {
    let bs = ty.block_size();
    if bs == 1 {
        vec![1, 7, 15, 16, 17, 33, 1000, 4099]
    } else {
        vec![bs, 3 * bs, 7 * bs, 33 * bs]
    }
}

/// The dispatched dot product (SIMD where the CPU has it) equals the scalar
/// reference bit for bit for every type: integer block sums are exact, and
/// both keep llama.cpp's float order (the float types: four 8-lane
/// accumulators over steps of 32, activations rounded to a 16-bit weight's
/// own type).
#[test]
fn dispatched_dot_equals_scalar_reference() {
    for ty in WEIGHT_TYPES {
        for (i, n) in lengths(ty).into_iter().enumerate() {
            let w = data(n, 10 + i as u64);
            let x = data(n, 20 + i as u64);
            let wq = quant(ty, &w);
            let mut acts = ActBuf::new();
            acts.prepare(ty, &x, 1, n).unwrap();
            let (xq, xr);
            let act = match vec_dot_type(ty) {
                GgmlType::F32 => ActRow::F32(&x),
                // 16-bit weights take activations rounded to their own type.
                t @ (GgmlType::F16 | GgmlType::BF16) => {
                    let mut r = vec![0.0f32; n];
                    dequantize_row(t, &quant(t, &x), &mut r).unwrap();
                    xr = r;
                    ActRow::F32(&xr)
                }
                t => {
                    xq = quant(t, &x);
                    ActRow::Q(&xq)
                }
            };
            let fast = vec_dot(ty, n, &wq, act);
            let reference = scalar_dot(ty, n, &wq, act);
            // Every product follows llama.cpp's order exactly: same bits.
            assert_eq!(
                fast.to_bits(),
                reference.to_bits(),
                "{ty} n={n}: dispatched {fast} vs scalar {reference}"
            );
        }
    }
}

/// A quantized product is close to the f32 product of the dequantized weights
/// with the original activations: the only extra error is the activations'
/// 8-bit rounding (relative budget 2% of the sum of |products|).
#[test]
fn quantized_dot_close_to_float_dot() {
    for ty in WEIGHT_TYPES {
        let n = 4096;
        let (w, x) = (data(n, 1), data(n, 2));
        let wq = quant(ty, &w);
        let mut wd = vec![0.0f32; n];
        dequantize_row(ty, &wq, &mut wd).unwrap();
        let exact: f32 = wd.iter().zip(&x).map(|(a, b)| a * b).sum();
        let mut acts = ActBuf::new();
        acts.prepare(ty, &x, 1, n).unwrap();
        let mut y = [0.0f32];
        let pool = ThreadPool::new(1);
        matmul(
            &pool,
            &WeightView::new(ty, &wq, 1, n).unwrap(),
            &acts,
            &mut y,
        )
        .unwrap();
        let scale: f32 = wd.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
        assert!(
            (y[0] - exact).abs() <= 0.02 * scale,
            "{ty}: {} vs {exact}",
            y[0]
        );
    }
}

/// Every thread count gives the same bits (each output is computed whole by
/// one thread), and matches a naive product within the quantization budget.
#[test]
fn matmul_is_thread_count_independent() {
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
    ] {
        let (n_rows, n_cols, n_tokens) = (37, 512, 5);
        let w = data(n_rows * n_cols, 3);
        let x = data(n_tokens * n_cols, 4);
        let wq: Vec<u8> = w.chunks(n_cols).flat_map(|r| quant(ty, r)).collect();
        let view = WeightView::new(ty, &wq, n_rows, n_cols).unwrap();
        let mut acts = ActBuf::new();
        acts.prepare(ty, &x, n_tokens, n_cols).unwrap();
        let mut outs = Vec::new();
        for threads in [1, 2, 3] {
            let mut y = vec![0.0f32; n_tokens * n_rows];
            matmul(&ThreadPool::new(threads), &view, &acts, &mut y).unwrap();
            outs.push(y);
        }
        assert_eq!(outs[0], outs[1], "{ty}: 1 vs 2 threads");
        assert_eq!(outs[0], outs[2], "{ty}: 1 vs 3 threads");
        // Against the f32 product of the dequantized weights, the only error
        // left is the activations' rounding: 2% of the sum of |products|.
        let mut wd = vec![0.0f32; n_rows * n_cols];
        for (src, dst) in wq
            .chunks(ty.row_size(n_cols).unwrap())
            .zip(wd.chunks_mut(n_cols))
        {
            dequantize_row(ty, src, dst).unwrap();
        }
        for t in 0..n_tokens {
            for r in 0..n_rows {
                let prods = (0..n_cols).map(|c| wd[r * n_cols + c] * x[t * n_cols + c]);
                let naive: f32 = prods.clone().sum();
                let scale: f32 = prods.map(f32::abs).sum();
                let got = outs[0][t * n_rows + r];
                assert!(
                    (got - naive).abs() <= 0.02 * scale,
                    "{ty} t={t} r={r}: {got} vs {naive}"
                );
            }
        }
    }
}

#[test]
fn wrong_sizes_are_errors_not_panics() {
    let x = data(64, 5);
    let mut small = vec![0u8; 10];
    assert!(quantize_row(GgmlType::Q8_0, &x, &mut small).is_err());
    assert!(
        quantize_row(GgmlType::Q4K, &x, &mut vec![0u8; 1000]).is_err(),
        "64 is not a whole Q4_K block"
    );
    let mut out = vec![0.0f32; 64];
    assert!(dequantize_row(GgmlType::Q4_0, &[0u8; 35], &mut out).is_err());
    assert!(WeightView::new(GgmlType::Q8_0, &[0u8; 34], 2, 32).is_err());
    let mut acts = ActBuf::new();
    assert!(acts.prepare(GgmlType::Q8_0, &x, 3, 32).is_err());
    acts.prepare(GgmlType::Q8_0, &x, 2, 32).unwrap();
    let w = quant(GgmlType::F16, &x[..32]);
    let view = WeightView::new(GgmlType::F16, &w, 1, 32).unwrap();
    let mut y = vec![0.0f32; 2];
    assert!(
        matmul(&ThreadPool::new(1), &view, &acts, &mut y).is_err(),
        "activations prepared for another type"
    );
}

/// ggml's Q8_0 rule on a hand-made block: scale = max|x|/127, values rounded
/// half away from zero.
#[test]
fn q8_0_block_is_ggml_layout() {
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = -63.5;
    x[2] = 1.0;
    let q = quant(GgmlType::Q8_0, &x);
    assert_eq!(
        u16::from_le_bytes([q[0], q[1]]),
        half::f16::from_f32(1.0).to_bits()
    );
    assert_eq!(q[2] as i8, 127);
    assert_eq!(q[3] as i8, -64);
    assert_eq!(q[4] as i8, 1);
}

/// Q4_0, Q5_0, Q8_0, Q4_K and Q6_K weights repacked in groups of 16 rows give, in every tier
/// and for any number of tokens and threads, exactly the bits of the scalar
/// product on the file's layout, with extreme values (a `-128` Q8_0 weight,
/// activations at ±127) included.
#[test]
fn packed_weights_give_the_plain_bits_in_every_tier() {
    use mori_kernels::matmul_at;
    use mori_kernels::packed::pack;
    use mori_kernels::simd::Isa;
    for ty in mori_kernels::packed::packed_types() {
        let (n_rows, n_cols) = (48, 2048 + 256);
        let mut w = data(n_rows * n_cols, 11);
        w[5] = 40.0; // a block whose largest value is far from the rest
        let mut wq: Vec<u8> = w.chunks(n_cols).flat_map(|r| quant(ty, r)).collect();
        if ty == GgmlType::Q8_0 {
            wq[2] = 0x80; // -128: never written by the quantizer, valid in a file
        }
        let packed = pack(ty, &wq, n_rows, n_cols, 2).unwrap();
        let plain = WeightView::new(ty, &wq, n_rows, n_cols).unwrap();
        let view = WeightView::packed(ty, &packed, n_rows, n_cols).unwrap();
        for n_tokens in [1, 2, 3, 8, 19] {
            let mut x = data(n_tokens * n_cols, 12 + n_tokens as u64);
            x[0] = 1000.0;
            x[1] = -1000.0;
            x[300..332].iter_mut().for_each(|v| *v = -1000.0); // a sub-block at -127
            let mut acts = ActBuf::new();
            acts.prepare(ty, &x, n_tokens, n_cols).unwrap();
            let mut want = vec![0.0f32; n_tokens * n_rows];
            matmul_at(Isa::Scalar, &ThreadPool::new(1), &plain, &acts, &mut want).unwrap();
            for isa in Isa::available() {
                for threads in [1, 2, 3] {
                    let mut got = vec![0.0f32; n_tokens * n_rows];
                    matmul_at(isa, &ThreadPool::new(threads), &view, &acts, &mut got).unwrap();
                    let same = want
                        .iter()
                        .zip(&got)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{ty} {isa:?} {n_tokens} tokens {threads} threads");
                }
            }
        }
        let eight = ty.row_size(n_cols).unwrap() * 8;
        assert!(
            WeightView::packed(ty, &wq[..eight], 8, n_cols).is_err(),
            "8 rows"
        );
    }
}

/// F16 weights in a prompt (the AVX-512 tier's 4 × 3 tiles in token blocks,
/// their leftover rows and tokens, and every other tier) give `quants::dot_f16`'s bits for
/// every (row, token).
#[test]
fn f16_prompt_products_give_the_scalar_bits_in_every_tier() {
    for (n_rows, n_cols, n_tokens) in [
        (37, 512, 10),
        (9, 4096, 70),
        (8, 96, 4),
        (5, 64, 3),
        (4, 40, 6),
    ] {
        let w = data(n_rows * n_cols, 21);
        let x = data(n_tokens * n_cols, 22);
        let wq: Vec<u8> = w
            .chunks(n_cols)
            .flat_map(|r| quant(GgmlType::F16, r))
            .collect();
        let view = WeightView::new(GgmlType::F16, &wq, n_rows, n_cols).unwrap();
        let mut acts = ActBuf::new();
        acts.prepare(GgmlType::F16, &x, n_tokens, n_cols).unwrap();
        let rb = n_cols * 2;
        // The activations as the product takes them: rounded to f16.
        let xh: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        for isa in mori_kernels::simd::Isa::available() {
            let mut y = vec![0.0f32; n_tokens * n_rows];
            mori_kernels::matmul::matmul_at(isa, &ThreadPool::new(2), &view, &acts, &mut y)
                .unwrap();
            for t in 0..n_tokens {
                let xt = &xh[t * n_cols..(t + 1) * n_cols];
                for r in 0..n_rows {
                    let want = mori_kernels::quants::dot_f16(&wq[r * rb..(r + 1) * rb], xt);
                    assert_eq!(
                        y[t * n_rows + r].to_bits(),
                        want.to_bits(),
                        "{isa:?} {n_rows}x{n_cols}x{n_tokens} t={t} r={r}"
                    );
                }
            }
        }
    }
}
