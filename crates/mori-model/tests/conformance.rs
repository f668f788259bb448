//! Conformance against llama.cpp: Mori's logits for random-weight models of
//! every supported architecture and tensor type, compared with llama.cpp's
//! logits for the same file and tokens, recorded by
//! `scripts/record_conformance.py` under `tests/fixtures/conformance/`.
//!
//! Bounds (from the engine-core issue): mean KL(llama.cpp ‖ Mori) per position
//! ≤ 1e-4 for F32/F16/BF16/Q8_0 weights and ≤ 2e-3 for 4-, 5- and 6-bit types;
//! top-1 agreement ≥ 98%.
//!
//! The reference is llama.cpp's one-token path without weight repacking (see
//! the script for why); the last column shows how far llama.cpp's default
//! batched, repacked kernels are from that same reference.
//!
//! `gemma3_window_slides_as_in_llama_cpp` is the sliding-window check: Gemma 3
//! with a 512-token window gives llama.cpp's logits at positions 600.., and the
//! same weights with a window longer than the text do not.

use std::path::PathBuf;

mod common;

use common::spec_from;
use mori_kernels::ThreadPool;
use mori_model::random::build;
use mori_model::{Logits, Model};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Cases whose KL is well inside the bound but whose top-1 agreement is not yet
/// 98%. Each is a single rounding flip in llama.cpp's or Mori's activation
/// quantization that then spreads through the KV cache: on the same models,
/// llama.cpp's own default kernels agree with this reference on top-1 only
/// 96.9% of the time in four cases (`llama_cpp_self_top1` in the manifest).
/// A listed case must still meet the KL bound and at least 95% top-1, and
/// the test fails once it reaches 98%, so the list can only shrink.
const KNOWN_TOP1_GAPS: &[&str] = &[];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conformance")
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    x.iter().map(|&v| v as f64 - lse).collect()
}

fn argmax(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

struct Outcome {
    name: String,
    mean_kl: f64,
    max_kl: f64,
    top1: f64,
    bound: f64,
    /// How far llama.cpp's default settings are from the reference itself.
    self_kl: f64,
}

fn run_case(case: &Value, n_pos: usize, pool: &ThreadPool, dir: &std::path::Path) -> Outcome {
    let arch = case["arch"].as_str().unwrap();
    let ty = case["type"].as_str().unwrap();
    let name = format!("{arch}-{ty}");
    let spec = spec_from(arch, ty, &case["spec"]);
    let bytes = build(&spec).unwrap().to_bytes().unwrap();
    let digest = format!("{:x}", Sha256::digest(&bytes));
    assert_eq!(
        digest,
        case["sha256"].as_str().unwrap(),
        "{name}: the random model Mori writes changed since the fixture was recorded; \
         re-run scripts/record_conformance.py"
    );
    let path = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, &bytes).unwrap();
    let model = Model::load(&path).unwrap();
    let tokens: Vec<u32> = case["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(tokens.len(), n_pos);
    let mut cache = model.new_cache(n_pos);
    let ours = model
        .forward(pool, &mut cache, &tokens, Logits::All)
        .unwrap();
    let n_vocab = spec.n_vocab;
    let reference = read_f16(case["logits"].as_str().unwrap());
    assert_eq!(reference.len(), n_pos * n_vocab, "{name}: fixture size");

    let (mean_kl, max_kl, top1) = compare(&reference, &ours, n_vocab);
    let exact = matches!(ty, "F32" | "F16" | "BF16" | "Q8_0");
    Outcome {
        name,
        mean_kl,
        max_kl,
        top1,
        bound: if exact { 1e-4 } else { 2e-3 },
        self_kl: case["llama_cpp_self_kl"].as_f64().unwrap_or(f64::NAN),
    }
}

/// Mean KL(reference ‖ ours), max KL and top-1 agreement over the rows of
/// `[rows][n_vocab]` logits.
fn compare(reference: &[f32], ours: &[f32], n_vocab: usize) -> (f64, f64, f64) {
    assert_eq!(reference.len(), ours.len());
    let n_rows = reference.len() / n_vocab;
    let (mut sum_kl, mut max_kl, mut agree) = (0.0f64, 0.0f64, 0usize);
    for (r, m) in reference.chunks(n_vocab).zip(ours.chunks(n_vocab)) {
        let (lp, lq) = (log_softmax(r), log_softmax(m));
        let kl: f64 = lp.iter().zip(&lq).map(|(&p, &q)| p.exp() * (p - q)).sum();
        sum_kl += kl;
        max_kl = max_kl.max(kl);
        agree += (argmax(r) == argmax(m)) as usize;
    }
    (sum_kl / n_rows as f64, max_kl, agree as f64 / n_rows as f64)
}

fn read_f16(name: &str) -> Vec<f32> {
    std::fs::read(fixtures().join(name))
        .unwrap()
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect()
}

#[test]
fn logits_match_llama_cpp() {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("manifest.json")).expect("manifest.json"),
    )
    .unwrap();
    let n_pos = manifest["n_pos"].as_u64().unwrap() as usize;
    let dir = tempfile::tempdir().unwrap();
    let pool = ThreadPool::new(2);
    let cases = manifest["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 33,
        "every architecture x type must be covered"
    );
    for a in mori_model::registry::ARCHITECTURES {
        assert!(
            cases.iter().any(|c| c["arch"] == a.name),
            "architecture {} has no conformance case",
            a.name
        );
    }
    let mut failures = Vec::new();
    println!("reference: {}", manifest["reference"]);
    println!(
        "{:<16} {:>12} {:>12} {:>8} {:>8} {:>15}",
        "case", "mean KL", "max KL", "top-1", "bound", "llama.cpp self"
    );
    for case in cases {
        let o = run_case(case, n_pos, &pool, dir.path());
        println!(
            "{:<16} {:>12.3e} {:>12.3e} {:>7.1}% {:>8.0e} {:>15.3e}",
            o.name,
            o.mean_kl,
            o.max_kl,
            o.top1 * 100.0,
            o.bound,
            o.self_kl
        );
        let known = KNOWN_TOP1_GAPS.contains(&o.name.as_str());
        if o.mean_kl > o.bound || o.top1 < if known { 0.95 } else { 0.98 } {
            failures.push(o.name);
        } else if known && o.top1 >= 0.98 {
            failures.push(format!(
                "{} now meets top-1 98%: remove it from KNOWN_TOP1_GAPS",
                o.name
            ));
        } else if known {
            println!("  ^ known top-1 gap (see KNOWN_TOP1_GAPS)");
        }
    }
    assert!(failures.is_empty(), "outside the bounds: {failures:?}");
}

/// The sliding window really slides: at positions 600.. of a 640-token text,
/// Mori's logits for Gemma 3 with a 512-token window are llama.cpp's, and
/// those of the same weights with a window longer than the text (so every
/// layer sees every position) are clearly not.
#[test]
fn gemma3_window_slides_as_in_llama_cpp() {
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("gemma3-window.json"))
            .expect("gemma3-window.json"),
    )
    .unwrap();
    let (from, to) = (
        fx["positions_from"].as_u64().unwrap() as usize,
        fx["positions_to"].as_u64().unwrap() as usize,
    );
    let tokens: Vec<u32> = fx["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let window = fx["spec"]["sliding_window"].as_u64().unwrap() as usize;
    assert!(
        from > window + 64 && tokens.len() >= to,
        "positions {from}..{to} must lie well past the window of {window}"
    );
    let reference = read_f16(fx["logits"].as_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let pool = ThreadPool::new(2);
    let run = |spec: &mori_model::random::RandomSpec, digest: &str| -> Vec<f32> {
        let bytes = build(spec).unwrap().to_bytes().unwrap();
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            digest,
            "the random model Mori writes changed since the fixture was recorded; \
             re-run scripts/record_conformance.py --arch gemma3"
        );
        let path = dir
            .path()
            .join(format!("window-{}.gguf", spec.sliding_window));
        std::fs::write(&path, &bytes).unwrap();
        let model = Model::load(&path).unwrap();
        let mut cache = model.new_cache(to);
        let logits = model
            .forward(&pool, &mut cache, &tokens[..to], Logits::All)
            .unwrap();
        logits[from * spec.n_vocab..].to_vec()
    };
    let spec = spec_from("gemma3", fx["type"].as_str().unwrap(), &fx["spec"]);
    let ours = run(&spec, fx["sha256"].as_str().unwrap());
    let (mean_kl, max_kl, top1) = compare(&reference, &ours, spec.n_vocab);
    println!(
        "window {window}, positions {from}..{to}: mean KL {mean_kl:.3e}, max KL {max_kl:.3e}, top-1 {:.1}%",
        top1 * 100.0
    );
    let unlimited = fx["unlimited_window"].as_u64().unwrap() as usize;
    assert!(unlimited >= to);
    let wide = mori_model::random::RandomSpec {
        sliding_window: unlimited,
        ..spec.clone()
    };
    let ours_wide = run(&wide, fx["unlimited_window_sha256"].as_str().unwrap());
    let (wide_kl, _, wide_top1) = compare(&reference, &ours_wide, spec.n_vocab);
    println!(
        "window {unlimited} (nothing slides): mean KL {wide_kl:.3e}, top-1 {:.1}% (llama.cpp's own: {})",
        wide_top1 * 100.0,
        fx["unlimited_window_kl"]
    );
    assert!(
        mean_kl <= 1e-4 && top1 >= 0.98,
        "window {window}: mean KL {mean_kl:.3e}, top-1 {top1}"
    );
    // Ten times the bound the windowed model meets.
    assert!(
        wide_kl >= 10.0 * 1e-4,
        "a window that does not slide should give clearly different logits (KL {wide_kl:.3e})"
    );
}
