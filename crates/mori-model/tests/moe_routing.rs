//! Expert routing against llama.cpp: for random mixture-of-experts models with
//! 8 experts, Mori must send every token of every MoE layer to the same
//! experts, in the same order, with the same weights (within 1e-5) as
//! llama.cpp did, as recorded by `scripts/record_moe_routing.py` under
//! `tests/fixtures/moe_routing/` (llama.cpp's `ffn_moe_topk-N` and
//! `ffn_moe_weights_norm-N` tensors, read with its eval callback).

use std::path::PathBuf;

mod common;

use common::spec_from;
use mori_kernels::ThreadPool;
use mori_model::arch::moe::RoutingRecord;
use mori_model::random::build;
use mori_model::{Logits, Model};
use serde_json::Value;
use sha2::{Digest, Sha256};

const WEIGHT_TOLERANCE: f32 = 1e-5;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/moe_routing")
}

/// Mori's routing for the fixture's model and tokens, one token per pass as
/// the reference ran, then the whole prompt as one batch.
fn mori_routing(fx: &Value, dir: &std::path::Path) -> (Vec<RoutingRecord>, Vec<RoutingRecord>) {
    let (arch, ty) = (fx["arch"].as_str().unwrap(), fx["type"].as_str().unwrap());
    let spec = spec_from(arch, ty, &fx["spec"]);
    let bytes = build(&spec).unwrap().to_bytes().unwrap();
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        fx["sha256"].as_str().unwrap(),
        "{arch}-{ty}: the random model Mori writes changed since the fixture was recorded; \
         re-run scripts/record_moe_routing.py"
    );
    let path = dir.join(format!("{arch}-{ty}.gguf"));
    std::fs::write(&path, &bytes).unwrap();
    let model = Model::load(&path).unwrap();
    let tokens: Vec<u32> = fx["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let pool = ThreadPool::new(2);
    let trace = model
        .routing_trace()
        .expect("an MoE model has a routing trace");
    let run = |chunk: usize| {
        trace.enable();
        let mut cache = model.new_cache(tokens.len());
        for c in tokens.chunks(chunk) {
            model.forward(&pool, &mut cache, c, Logits::Last).unwrap();
        }
        trace.disable();
        trace.take()
    };
    (run(1), run(tokens.len()))
}

/// Compares `ours` with the fixture's layers; returns (tokens x layers
/// compared, mismatches described).
fn compare(fx: &Value, ours: &[RoutingRecord], tolerance: f32) -> (usize, Vec<String>, f32) {
    let mut problems = Vec::new();
    let mut n = 0;
    let mut max_dw = 0.0f32;
    let layers = fx["layers"].as_array().unwrap();
    let n_tokens = fx["tokens"].as_array().unwrap().len();
    let n_moe_layers = ours
        .iter()
        .map(|r| r.layer)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(
        n_moe_layers.into_iter().collect::<Vec<_>>(),
        layers
            .iter()
            .map(|l| l["layer"].as_u64().unwrap() as usize)
            .collect::<Vec<_>>(),
        "Mori and llama.cpp route in different layers"
    );
    assert_eq!(
        ours.len(),
        layers.len() * n_tokens,
        "one record per layer and token"
    );
    for l in layers {
        let il = l["layer"].as_u64().unwrap() as usize;
        for pos in 0..n_tokens {
            let want_ids: Vec<u32> = l["experts"][pos]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let want_w: Vec<f32> = l["weights"][pos]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let got = ours
                .iter()
                .find(|r| r.layer == il && r.pos == pos)
                .unwrap_or_else(|| panic!("no routing record for layer {il}, position {pos}"));
            n += 1;
            if got.experts != want_ids {
                problems.push(format!(
                    "layer {il} pos {pos}: experts {:?}, llama.cpp {want_ids:?}",
                    got.experts
                ));
                continue;
            }
            for (g, w) in got.weights.iter().zip(&want_w) {
                max_dw = max_dw.max((g - w).abs());
            }
            if got
                .weights
                .iter()
                .zip(&want_w)
                .any(|(g, w)| (g - w).abs() > tolerance)
            {
                problems.push(format!(
                    "layer {il} pos {pos}: weights {:?}, llama.cpp {want_w:?}",
                    got.weights
                ));
            }
        }
    }
    (n, problems, max_dw)
}

#[test]
fn routing_matches_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let mut names: Vec<_> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures/moe_routing")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    assert!(names.len() >= 2, "a fixture per MoE architecture");
    let mut failures = Vec::new();
    for path in names {
        let fx: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let n_expert = fx["spec"]["experts"].as_u64().unwrap();
        assert!(
            n_expert >= 8,
            "{name}: routing is checked with at least 8 experts"
        );
        let (one_by_one, batched) = mori_routing(&fx, dir.path());
        let tolerance = WEIGHT_TOLERANCE;
        for (how, ours) in [("token by token", &one_by_one), ("as one batch", &batched)] {
            let (n, problems, max_dw) = compare(&fx, ours, tolerance);
            println!(
                "{name:<20} {how:<15} {:>3}/{n} (token, layer) routings match \
                 (weights within {tolerance:.0e}), max |weight diff| {max_dw:.2e}",
                n - problems.len()
            );
            for p in problems.iter().take(5) {
                println!("  {p}");
            }
            if !problems.is_empty() {
                failures.push(format!("{name} {how}: {} differ", problems.len()));
            }
        }
    }
    assert!(failures.is_empty(), "routing differs: {failures:?}");
}
