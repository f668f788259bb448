//! What the fixture-driven tests share.

use mori_model::random::{FileType, MoeSpec, RandomSpec};
use serde_json::Value;

/// The random model a fixture's `spec` object describes, as architecture `arch`
/// in type `ty` (the recording scripts write the same fields).
pub fn spec_from(arch: &str, ty: &str, s: &Value) -> RandomSpec {
    let u = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("spec field {k}")) as usize;
    RandomSpec {
        arch: arch.to_string(),
        n_vocab: u("vocab"),
        n_embd: u("embd"),
        n_layer: u("layers"),
        n_head: u("heads"),
        n_head_kv: u("kv_heads"),
        head_dim: u("head_dim"),
        n_ff: u("ff"),
        n_ctx_train: u("ctx"),
        rope_base: s["rope_base"].as_f64().unwrap() as f32,
        rms_eps: 1e-5,
        tied_output: s["tied"].as_bool().unwrap(),
        sliding_window: s["sliding_window"].as_u64().unwrap_or(0) as usize,
        file_type: FileType::parse(ty).unwrap(),
        seed: s["seed"].as_u64().unwrap(),
        moe: moe_from(s),
    }
}

/// The experts of a fixture's spec: `experts` (count), `experts_used`,
/// `expert_ff`, and optionally `shared_experts` and `dense_lead`.
fn moe_from(s: &Value) -> Option<MoeSpec> {
    let n_expert = s.get("experts")?.as_u64()? as usize;
    let u = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
    Some(MoeSpec {
        n_expert,
        n_expert_used: u("experts_used"),
        n_ff_exp: u("expert_ff"),
        n_expert_shared: u("shared_experts"),
        n_layer_dense_lead: u("dense_lead"),
    })
}
