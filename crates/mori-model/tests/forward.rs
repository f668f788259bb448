//! Forward-pass invariants that hold for every architecture: feeding tokens
//! one at a time through the KV cache gives the same logits as one batch,
//! long prompts are processed in chunks without changing the result, and the
//! thread count does not change a single bit.

use mori_kernels::{GgmlType, ThreadPool};
use mori_model::random::{write_random_model, FileType, RandomSpec};
use mori_model::{Logits, Model};

fn model(arch: &str, ty: FileType) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{arch}.gguf"));
    write_random_model(&RandomSpec::tiny(arch, ty), &path).unwrap();
    let m = Model::load(&path).unwrap();
    (dir, m)
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n).map(|i| 3 + (i as u32 * 37) % 380).collect()
}

#[test]
fn incremental_decoding_equals_one_batch() {
    for arch in ["llama", "qwen2", "qwen3"] {
        let (_d, m) = model(arch, FileType::Uniform(GgmlType::Q8_0));
        let pool = ThreadPool::new(2);
        let toks = tokens(24);
        let mut cache = m.new_cache(64);
        let batch = m.forward(&pool, &mut cache, &toks, Logits::All).unwrap();
        let mut cache = m.new_cache(64);
        let n_vocab = m.hparams.n_vocab;
        for (i, &t) in toks.iter().enumerate() {
            let one = m.forward(&pool, &mut cache, &[t], Logits::Last).unwrap();
            assert_eq!(
                one[..],
                batch[i * n_vocab..(i + 1) * n_vocab],
                "{arch}: position {i}"
            );
        }
        assert_eq!(cache.n_used(), 24);
    }
}

#[test]
fn thread_count_does_not_change_results() {
    let (_d, m) = model("qwen2", FileType::Q4KM);
    let toks = tokens(40);
    let mut outs = Vec::new();
    for threads in [1, 2, 3] {
        let mut cache = m.new_cache(64);
        outs.push(
            m.forward(&ThreadPool::new(threads), &mut cache, &toks, Logits::All)
                .unwrap(),
        );
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0], outs[2]);
}

#[test]
fn long_prompts_are_chunked_transparently() {
    let (_d, m) = model("llama", FileType::Uniform(GgmlType::F16));
    let pool = ThreadPool::new(2);
    let toks = tokens(300);
    let mut cache = m.new_cache(320);
    let all = m.forward(&pool, &mut cache, &toks, Logits::All).unwrap();
    assert_eq!(all.len(), 300 * m.hparams.n_vocab);
    let mut cache = m.new_cache(320);
    let last = m.forward(&pool, &mut cache, &toks, Logits::Last).unwrap();
    assert_eq!(last[..], all[299 * m.hparams.n_vocab..]);
    // A rewound cache continues as if the dropped positions were never seen.
    cache.truncate(100);
    let again = m
        .forward(&pool, &mut cache, &toks[100..], Logits::Last)
        .unwrap();
    assert_eq!(again, last);
}

#[test]
fn logits_spread_enough_to_compare() {
    let (_d, m) = model("llama", FileType::Uniform(GgmlType::F32));
    let mut cache = m.new_cache(16);
    let l = m
        .forward(&ThreadPool::new(1), &mut cache, &tokens(16), Logits::All)
        .unwrap();
    for row in l.chunks(m.hparams.n_vocab) {
        let mean = row.iter().sum::<f32>() / row.len() as f32;
        let std = (row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / row.len() as f32).sqrt();
        assert!(std >= 1.0, "logit std {std} < 1");
    }
}
