//! Kernel throughput: the dispatched (SIMD) dot product of every weight type
//! against its scalar reference, and a multi-threaded matrix-vector product
//! of a 4096 x 4096 matrix (the shape of a 7B model's attention projections).
//!
//!   cargo bench -p mori-kernels --bench kernels

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mori_kernels::{
    kquants, matmul, matmul_at, packed, quantize_row, quants, simd, vec_dot_type, ActBuf, GgmlType,
    ThreadPool, WeightView,
};
use std::hint::black_box;

fn data(n: usize, seed: u32) -> Vec<f32> {
    // A cheap deterministic generator: benchmarks need values, not statistics.
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn quant(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_size(x.len()).unwrap()];
    quantize_row(ty, x, &mut q).unwrap();
    q
}

type Dot = fn(usize, &[u8], &[u8], &[f32]) -> f32;

/// (type, dispatched, scalar): quantized kernels read `xq`, float kernels `x`.
fn kernels() -> Vec<(GgmlType, Dot, Dot)> {
    vec![
        (
            GgmlType::F32,
            |_, w, _, x| simd::dot_f32(w, x),
            |_, w, _, x| quants::dot_f32(w, x),
        ),
        (
            GgmlType::F16,
            |_, w, _, x| simd::dot_f16(w, x),
            |_, w, _, x| quants::dot_f16(w, x),
        ),
        (
            GgmlType::BF16,
            |_, w, _, x| simd::dot_bf16(w, x),
            |_, w, _, x| quants::dot_bf16(w, x),
        ),
        (
            GgmlType::Q8_0,
            |_, w, q, _| simd::dot_q8_0_q8_0(w, q),
            |_, w, q, _| quants::dot_q8_0_q8_0(w, q),
        ),
        (
            GgmlType::Q4_0,
            |_, w, q, _| simd::dot_q4_0_q8_0(w, q),
            |_, w, q, _| quants::dot_q4_0_q8_0(w, q),
        ),
        (
            GgmlType::Q4_1,
            |_, w, q, _| simd::dot_q4_1_q8_1(w, q),
            |_, w, q, _| quants::dot_q4_1_q8_1(w, q),
        ),
        (
            GgmlType::Q5_0,
            |_, w, q, _| simd::dot_q5_0_q8_0(w, q),
            |_, w, q, _| quants::dot_q5_0_q8_0(w, q),
        ),
        (
            GgmlType::Q5_1,
            |_, w, q, _| simd::dot_q5_1_q8_1(w, q),
            |_, w, q, _| quants::dot_q5_1_q8_1(w, q),
        ),
        (GgmlType::Q4K, simd_q4k, |n, w, q, _| {
            kquants::vec_dot_q4_k_q8_k_scalar(n, w, q)
        }),
        (
            GgmlType::Q5K,
            |n, w, q, _| simd::dot_q5_k_q8_k(n, w, q),
            |n, w, q, _| kquants::vec_dot_q5_k_q8_k_scalar(n, w, q),
        ),
        (
            GgmlType::Q6K,
            |n, w, q, _| simd::dot_q6_k_q8_k(n, w, q),
            |n, w, q, _| kquants::vec_dot_q6_k_q8_k_scalar(n, w, q),
        ),
    ]
}

fn simd_q4k(n: usize, w: &[u8], q: &[u8], _: &[f32]) -> f32 {
    simd::dot_q4_k_q8_k(n, w, q)
}

/// One 4096-element row, hot in cache: the arithmetic cost of each kernel.
fn dot_products(c: &mut Criterion) {
    let n = 4096;
    let (w, x) = (data(n, 1), data(n, 2));
    let mut g = c.benchmark_group("dot_4096");
    g.throughput(Throughput::Elements(n as u64));
    for (ty, fast, scalar) in kernels() {
        let wq = quant(ty, &w);
        let xq = match vec_dot_type(ty) {
            GgmlType::F32 => Vec::new(),
            at => quant(at, &x),
        };
        g.bench_with_input(BenchmarkId::new(simd::isa(), ty), &ty, |b, _| {
            b.iter(|| fast(n, black_box(&wq), black_box(&xq), black_box(&x)))
        });
        g.bench_with_input(BenchmarkId::new("scalar", ty), &ty, |b, _| {
            b.iter(|| scalar(n, black_box(&wq), black_box(&xq), black_box(&x)))
        });
    }
    g.finish();
}

/// A 4096 x 4096 matrix times one token on every core: streams the weights
/// from memory, as a generation step does.
fn matvec(c: &mut Criterion) {
    let (rows, cols) = (4096, 4096);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = ThreadPool::new(threads);
    let w = data(rows * cols, 3);
    let x = data(cols, 4);
    let mut g = c.benchmark_group(format!("matvec_4096x4096_{threads}threads"));
    g.sample_size(10);
    g.throughput(Throughput::Elements((rows * cols) as u64));
    for ty in [
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
    ] {
        let wq: Vec<u8> = w.chunks(cols).flat_map(|r| quant(ty, r)).collect();
        let view = WeightView::new(ty, &wq, rows, cols).unwrap();
        let mut acts = ActBuf::new();
        let mut y = vec![0.0f32; rows];
        g.bench_function(ty.to_string(), |b| {
            b.iter(|| {
                acts.prepare(ty, &x, 1, cols).unwrap();
                matmul(&pool, &view, &acts, &mut y).unwrap();
            })
        });
        if packed::packable(ty, rows, cols) && simd::level() == simd::Isa::Avx512 {
            let p = packed::pack(ty, &wq, rows, cols, threads).unwrap();
            let view = WeightView::packed(ty, &p, rows, cols).unwrap();
            g.bench_function(format!("{ty}x16"), |b| {
                b.iter(|| {
                    acts.prepare(ty, &x, 1, cols).unwrap();
                    matmul(&pool, &view, &acts, &mut y).unwrap();
                })
            });
        }
    }
    g.finish();
}

/// A 2048 x 2048 matrix times 128 tokens on every core, as prompt processing
/// does, in every kernel tier this CPU has (the tiers give the same bits).
fn matmat(c: &mut Criterion) {
    let (rows, cols, tokens) = (2048, 2048, 128);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = ThreadPool::new(threads);
    let w = data(rows * cols, 5);
    let x = data(tokens * cols, 6);
    let mut g = c.benchmark_group(format!("matmat_2048x2048x{tokens}_{threads}threads"));
    g.sample_size(10);
    g.throughput(Throughput::Elements((rows * cols * tokens) as u64));
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::F16,
    ] {
        let wq: Vec<u8> = w.chunks(cols).flat_map(|r| quant(ty, r)).collect();
        let view = WeightView::new(ty, &wq, rows, cols).unwrap();
        let mut acts = ActBuf::new();
        acts.prepare(ty, &x, tokens, cols).unwrap();
        let mut y = vec![0.0f32; rows * tokens];
        for isa in simd::Isa::available().into_iter().skip(1) {
            g.bench_function(BenchmarkId::new(isa.name(), ty), |b| {
                b.iter(|| matmul_at(isa, &pool, &view, &acts, &mut y).unwrap())
            });
        }
        if packed::packable(ty, rows, cols) && simd::level() == simd::Isa::Avx512 {
            let p = packed::pack(ty, &wq, rows, cols, threads).unwrap();
            let view = WeightView::packed(ty, &p, rows, cols).unwrap();
            g.bench_function(BenchmarkId::new("x16", ty), |b| {
                b.iter(|| matmul_at(simd::Isa::Avx512, &pool, &view, &acts, &mut y).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, dot_products, matvec, matmat);
criterion_main!(benches);
