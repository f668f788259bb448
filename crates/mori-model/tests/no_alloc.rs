//! The token loop allocates nothing: once a session's working memory
//! (`Scratch`), its logits buffer and its KV cache have grown to a pass's
//! sizes, further passes of that size make no heap allocation on any thread,
//! for every architecture family and the weight layouts they load into
//! (repacked or read in place).
//!
//! A counting global allocator sees every allocation of the process, the
//! pool's worker threads included; this file holds one test so that no other
//! test runs beside it.

use mori_kernels::alloc_count::{allocations_in, Counting};
use mori_kernels::{GgmlType, ThreadPool};
use mori_model::random::{write_random_model, FileType, RandomSpec};
use mori_model::{Logits, Model, Scratch};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn tokens(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| 3 + (i * 37 + salt * 11) % 380)
        .collect()
}

#[test]
fn forward_passes_allocate_nothing_once_warm() {
    let dir = tempfile::tempdir().unwrap();
    let gemma_windowed = RandomSpec {
        sliding_window: 16,
        ..RandomSpec::tiny("gemma3", FileType::Uniform(GgmlType::Q8_0))
    };
    let specs = [
        RandomSpec::tiny("llama", FileType::Uniform(GgmlType::Q4_0)),
        RandomSpec::tiny("llama", FileType::Uniform(GgmlType::F16)),
        RandomSpec::tiny("qwen2", FileType::Q4KM),
        RandomSpec::tiny("qwen3", FileType::Uniform(GgmlType::Q8_0)),
        gemma_windowed,
        RandomSpec::tiny("qwen3moe", FileType::Uniform(GgmlType::Q8_0)),
        RandomSpec::tiny("ernie4_5-moe", FileType::Q4KM),
    ];
    for (i, spec) in specs.iter().enumerate() {
        let name = format!("{}-{:?}", spec.arch, spec.file_type);
        let path = dir.path().join(format!("{i}.gguf"));
        write_random_model(spec, &path).unwrap();
        let model = Model::load(&path).unwrap();
        let pool = ThreadPool::new(2);
        let mut cache = model.new_cache(128);
        let mut scratch = Scratch::new();
        let mut logits = Vec::new();
        let mut run = |toks: &[u32], want: Logits| {
            model
                .forward_into(&pool, &mut cache, &mut scratch, toks, want, &mut logits)
                .unwrap();
        };
        // Warm-up: a prompt, every position's logits once, two tokens.
        run(&tokens(24, 0), Logits::Last);
        run(&tokens(24, 1), Logits::All);
        run(&[5], Logits::Last);
        run(&[6], Logits::Last);

        let n = allocations_in(|| {
            for t in 0..32 {
                run(&[7 + t], Logits::Last);
            }
        });
        assert_eq!(n, 0, "{name}: generating 32 tokens allocated {n} times");
        let batch = tokens(24, 2);
        let n = allocations_in(|| run(&batch, Logits::All));
        assert_eq!(n, 0, "{name}: a warm 24-token batch allocated {n} times");
        assert_eq!(cache.n_used(), 24 * 3 + 2 + 32);
        assert_eq!(logits.len(), 24 * model.hparams.n_vocab);
    }
}
