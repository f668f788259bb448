//! Forward-pass invariants that hold for every architecture: feeding tokens
//! one at a time through the KV cache gives the same logits as one batch,
//! long prompts are processed in chunks without changing the result, and the
//! thread count does not change a single bit.

use mori_kernels::{GgmlType, ThreadPool};
use mori_model::random::{write_random_model, FileType, RandomSpec};
use mori_model::{KvCache, Logits, Model};

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
    for arch in ["llama", "qwen2", "qwen3", "gemma3"] {
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
    for arch in ["llama", "gemma3"] {
        let (_d, m) = model(arch, FileType::Uniform(GgmlType::F32));
        let mut cache = m.new_cache(16);
        let l = m
            .forward(&ThreadPool::new(1), &mut cache, &tokens(16), Logits::All)
            .unwrap();
        for row in l.chunks(m.hparams.n_vocab) {
            let mean = row.iter().sum::<f32>() / row.len() as f32;
            let std =
                (row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / row.len() as f32).sqrt();
            assert!(std >= 1.0, "{arch}: logit std {std} < 1");
        }
    }
}

/// A Gemma 3 model whose sliding-window layers keep a ring of 8 + 255 rows:
/// 300 tokens wrap it. It gives exactly the logits of a cache that keeps every
/// position, in one batch, in chunks and one token at a time, in less memory;
/// it rewinds where the ring still holds the window and starts over where not.
#[test]
fn gemma3_ring_cache_equals_a_full_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gemma3.gguf");
    let mut spec = RandomSpec::tiny("gemma3", FileType::Uniform(GgmlType::Q8_0));
    spec.n_layer = 7;
    spec.sliding_window = 8;
    spec.tied_output = true;
    write_random_model(&spec, &path).unwrap();
    let m = Model::load(&path).unwrap();
    let pool = ThreadPool::new(2);
    let n_vocab = m.hparams.n_vocab;
    let toks = tokens(300);

    let mut ring = m.new_cache(320);
    let kv_dim = m.hparams.n_head_kv * m.hparams.head_dim;
    let mut full = KvCache::new(m.hparams.n_layer, 320, kv_dim);
    // Six windowed layers of 8 + 255 rows and one of 320, keys and values in f16.
    assert_eq!(ring.size_bytes(), 2 * (6 * 263 + 320) * kv_dim * 2);
    assert_eq!(full.size_bytes(), 2 * (7 * 320) * kv_dim * 2);
    let from_ring = m.forward(&pool, &mut ring, &toks, Logits::All).unwrap();
    let from_full = m.forward(&pool, &mut full, &toks, Logits::All).unwrap();
    assert_eq!(from_ring, from_full);

    let mut step = m.new_cache(320);
    m.forward(&pool, &mut step, &toks[..250], Logits::Last)
        .unwrap();
    for (i, &t) in toks.iter().enumerate().skip(250) {
        let one = m.forward(&pool, &mut step, &[t], Logits::Last).unwrap();
        assert_eq!(
            one[..],
            from_full[i * n_vocab..(i + 1) * n_vocab],
            "position {i}"
        );
    }

    // The ring holds positions 37..300: rewinding to 290 keeps the window of 290.
    ring.truncate(290);
    assert_eq!(ring.n_used(), 290);
    let again = m
        .forward(&pool, &mut ring, &toks[290..], Logits::Last)
        .unwrap();
    assert_eq!(again[..], from_full[299 * n_vocab..]);
    // Position 20 needs positions 13..20, long overwritten: start over.
    ring.truncate(20);
    assert_eq!(ring.n_used(), 0);

    // The window matters: logits past it differ from the same weights with a
    // window longer than the text, and those within it do not.
    let mut wide = spec.clone();
    wide.sliding_window = 1000;
    write_random_model(&wide, &path).unwrap();
    let w = Model::load(&path).unwrap();
    let mut c = w.new_cache(320);
    let unwindowed = w.forward(&pool, &mut c, &toks[..40], Logits::All).unwrap();
    assert_eq!(unwindowed[..8 * n_vocab], from_full[..8 * n_vocab]);
    assert_ne!(
        unwindowed[39 * n_vocab..],
        from_full[39 * n_vocab..40 * n_vocab]
    );
}

/// Gemma 3 metadata beyond the defaults: a window pattern given as a count or
/// per layer, a RoPE base for windowed layers, and final logit soft-capping
/// (logits become cap · tanh(logit / cap)).
#[test]
fn gemma3_reads_pattern_rope_base_and_softcap() {
    use mori_formats::{Array, GgufFile, GgufWriter, Value};
    let dir = tempfile::tempdir().unwrap();
    let mut spec = RandomSpec::tiny("gemma3", FileType::Uniform(GgmlType::F16));
    spec.n_layer = 7;
    spec.sliding_window = 4;
    let bytes = mori_model::random::build(&spec)
        .unwrap()
        .to_bytes()
        .unwrap();
    let with = |name: &str, f: &dyn Fn(&mut GgufWriter)| -> Model {
        let file = GgufFile::from_bytes(bytes.clone(), "g.gguf").unwrap();
        let mut w = GgufWriter::from_file(&file).unwrap();
        f(&mut w);
        let path = dir.path().join(name);
        w.write(&path).unwrap();
        Model::load(&path).unwrap()
    };
    let plain = with("plain.gguf", &|_| {});
    let swa = plain.hparams.swa.clone().unwrap();
    assert_eq!(swa.window, 4);
    assert_eq!(
        swa.layers,
        [true, true, true, true, true, false, true],
        "five windowed layers in six by default"
    );
    assert_eq!(swa.rope_base, 10000.0);
    let every_other = with("n2.gguf", &|w| {
        w.add("gemma3.attention.sliding_window_pattern", Value::U32(2))
    });
    let layers = every_other.hparams.swa.unwrap().layers;
    assert_eq!(layers, [true, false, true, false, true, false, true]);
    let listed = with("bools.gguf", &|w| {
        let v = vec![false, true, false, false, false, false, true];
        w.add(
            "gemma3.attention.sliding_window_pattern",
            Value::Array(Array::Bool(v)),
        );
        w.add("gemma3.rope.freq_base_swa", Value::F32(500.0));
    });
    let swa = listed.hparams.swa.clone().unwrap();
    assert!(swa.layers[1] && !swa.layers[0]);
    assert_eq!(swa.rope_base, 500.0);

    let pool = ThreadPool::new(2);
    let toks = tokens(12);
    let run = |m: &Model| {
        let mut c = m.new_cache(16);
        m.forward(&pool, &mut c, &toks, Logits::All).unwrap()
    };
    let base = run(&plain);
    // Another pattern or another local base changes the result.
    assert_ne!(run(&listed), base);
    let capped = with("cap.gguf", &|w| {
        w.add("gemma3.final_logit_softcapping", Value::F32(2.0))
    });
    assert_eq!(capped.hparams.final_logit_softcap, Some(2.0));
    let out = run(&capped);
    assert!(base.iter().any(|v| v.abs() > 3.0));
    for (&c, &b) in out.iter().zip(&base) {
        assert!(c.abs() <= 2.0 && (c - 2.0 * (b / 2.0).tanh()).abs() < 1e-6);
    }
}
