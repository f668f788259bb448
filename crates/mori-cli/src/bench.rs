//! `mori bench`: prompt processing and generation speed of a model, like llama-bench.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use mori_engine::Session;
use mori_model::Model;
use rand::{Rng, SeedableRng};

#[derive(Args)]
pub struct BenchArgs {
    /// A .gguf file, a name[:tag] in the store, or a digest.
    model: String,
    /// Prompt tokens processed in one batch (pp); 0 skips the test.
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Tokens generated one at a time (tg); 0 skips the test.
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Repetitions; the median is reported.
    #[arg(short = 'r', long, default_value_t = 3)]
    reps: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

pub fn bench(a: BenchArgs) -> Result<()> {
    if a.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let model = Model::load(crate::store::model_path(&a.model)?)?;
    let threads = a
        .threads
        .unwrap_or_else(crate::commands::default_threads)
        .max(1);
    let n_vocab = model.hparams.n_vocab as u32;
    let n_ctx = a.n_prompt.max(a.n_gen).max(1);
    // Random tokens, as llama-bench uses: the speed does not depend on the text.
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let tokens: Vec<u32> = (0..n_ctx).map(|_| rng.gen_range(0..n_vocab)).collect();
    let mut session = Session::new(&model, n_ctx, threads);
    // Warm-up: page the weights in and start the threads.
    session.feed(&tokens[..n_ctx.min(16)])?;
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for _ in 0..a.reps {
        if a.n_prompt > 0 {
            session.clear();
            let t = Instant::now();
            session.feed(&tokens[..a.n_prompt])?;
            pp.push(a.n_prompt as f64 / t.elapsed().as_secs_f64());
        }
        if a.n_gen > 0 {
            session.clear();
            let t = Instant::now();
            for &tok in &tokens[..a.n_gen] {
                session.feed(&[tok])?;
            }
            tg.push(a.n_gen as f64 / t.elapsed().as_secs_f64());
        }
    }
    let info = &model.info;
    let ty = info.tensor_types.first().map(|t| t.0.name()).unwrap_or("?");
    let (pp_tps, tg_tps) = (median(pp), median(tg));
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": a.model.to_string(), "arch": info.arch, "type": ty,
                "size_bytes": info.file_size, "n_params": info.n_params, "threads": threads,
                "n_prompt": a.n_prompt, "n_gen": a.n_gen, "reps": a.reps,
                "pp_tps": pp_tps, "tg_tps": tg_tps, "isa": mori_kernels::simd::isa(),
            })
        );
    } else {
        println!(
            "model: {} ({}, {ty}, {:.2} GiB, {} parameters), {threads} threads, {}",
            a.model,
            info.arch,
            info.file_size as f64 / (1u64 << 30) as f64,
            info.n_params,
            mori_kernels::simd::isa()
        );
        if a.n_prompt > 0 {
            println!(
                "pp{:<5} {pp_tps:>10.2} tokens/s (median of {})",
                a.n_prompt, a.reps
            );
        }
        if a.n_gen > 0 {
            println!(
                "tg{:<5} {tg_tps:>10.2} tokens/s (median of {})",
                a.n_gen, a.reps
            );
        }
    }
    Ok(())
}

/// Read bandwidth in GB/s: `threads` threads each sum their own `mib` MiB
/// array (far larger than any cache), best of 5 passes. The sum is kept so
/// the reads cannot be optimised away; wide integer adds keep the loop far
/// below memory speed, so memory is what it measures.
pub fn read_bandwidth(threads: usize, mib: usize) -> f64 {
    const STREAMS: usize = 8;
    let words = mib * (1 << 20) / 8;
    let arrays: Vec<Vec<u64>> = (0..threads)
        .map(|k| (0..words as u64).map(|i| i ^ k as u64).collect())
        .collect();
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let sums: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = arrays
                .iter()
                .map(|a| {
                    s.spawn(move || {
                        // Eight regions read side by side (eight streams for
                        // the prefetchers, as a matrix product's rows are),
                        // eight independent sums each.
                        let part = a.len() / STREAMS;
                        let parts: Vec<&[u64]> = a.chunks_exact(part).take(STREAMS).collect();
                        let mut acc = [[0u64; 8]; STREAMS];
                        for i in (0..part - part % 8).step_by(8) {
                            for (acc, p) in acc.iter_mut().zip(&parts) {
                                for (x, &v) in acc.iter_mut().zip(&p[i..i + 8]) {
                                    *x = x.wrapping_add(v);
                                }
                            }
                        }
                        acc.iter().flatten().fold(0u64, |x, &y| x.wrapping_add(y))
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("probe thread"))
                .collect()
        });
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(sums);
        let read = words / STREAMS / 8 * 8 * STREAMS;
        best = best.max((threads * read * 8) as f64 / secs / 1e9);
    }
    best
}
