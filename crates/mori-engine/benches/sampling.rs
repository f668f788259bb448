//! The sampling chain over a Llama-3 sized vocabulary (128256 logits): what
//! each generated token pays after its forward pass, for greedy decoding,
//! llama.cpp's default chain (top-k 40 first), a chain that ranks every
//! token (top-k off, top-p, penalties) and OpenAI's defaults (temperature 1,
//! nothing truncated).
//!
//!   cargo bench -p mori-engine --bench sampling

use criterion::{criterion_group, criterion_main, Criterion};
use mori_engine::sampling::{Sampler, SamplingParams};
use std::hint::black_box;

const N_VOCAB: usize = 128_256;

fn logits() -> Vec<f32> {
    // A cheap deterministic generator, spread like a model's logits.
    let mut s = 0x9e37_79b9u32;
    (0..N_VOCAB)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 20.0 - 10.0
        })
        .collect()
}

fn sampling(c: &mut Criterion) {
    let l = logits();
    let chains = [
        ("greedy", SamplingParams::greedy()),
        ("default (top-k 40)", SamplingParams::default()),
        (
            "every token (top-p 0.95, penalties)",
            SamplingParams {
                top_k: 0,
                repeat_penalty: 1.1,
                ..Default::default()
            },
        ),
        (
            "nothing truncated (OpenAI's defaults)",
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                ..Default::default()
            },
        ),
    ];
    let mut g = c.benchmark_group("sample 128256 logits");
    for (name, params) in chains {
        let mut s = Sampler::new(params, N_VOCAB).unwrap();
        (0..64).for_each(|i| s.accept(i * 1999 % N_VOCAB as u32));
        g.bench_function(name, |b| b.iter(|| s.sample(black_box(&l)).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, sampling);
criterion_main!(benches);
