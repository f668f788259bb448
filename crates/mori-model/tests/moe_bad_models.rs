//! Mixture-of-experts files that cannot run get one clear error naming the
//! file and the key or tensor at fault, never a panic.

use mori_formats::{GgufFile, GgufWriter, Value};
use mori_kernels::GgmlType;
use mori_model::random::{build, FileType, RandomSpec};
use mori_model::Model;

/// A tiny random model of `arch` (8 experts, 2 per token), changed by `f`.
fn modified(arch: &str, f: impl FnOnce(&mut GgufWriter)) -> GgufWriter {
    let spec = RandomSpec::tiny(arch, FileType::Uniform(GgmlType::Q8_0));
    let bytes = build(&spec).unwrap().to_bytes().unwrap();
    let file = GgufFile::from_bytes(bytes, "tiny.gguf").unwrap();
    let mut w = GgufWriter::from_file(&file).unwrap();
    f(&mut w);
    w
}

/// Writes `w` and loads it, expecting an error that names the file; returns it.
fn load_err(w: &GgufWriter) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    w.write(&path).unwrap();
    match Model::load(&path) {
        Ok(_) => panic!("a broken model loaded"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("bad.gguf"),
                "the error must name the file: {msg}"
            );
            msg
        }
    }
}

#[test]
fn unmodified_models_load() {
    for arch in ["qwen3moe", "ernie4_5-moe"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ok.gguf");
        modified(arch, |_| {}).write(&path).unwrap();
        let model = Model::load(&path).unwrap();
        assert!(model.routing_trace().is_some(), "{arch} has experts");
    }
}

#[test]
fn missing_expert_count() {
    let msg = load_err(&modified("qwen3moe", |w| {
        assert!(w.remove("qwen3moe.expert_count"))
    }));
    assert!(msg.contains("qwen3moe.expert_count"), "{msg}");
}

#[test]
fn missing_experts_per_token() {
    let msg = load_err(&modified("qwen3moe", |w| {
        assert!(w.remove("qwen3moe.expert_used_count"))
    }));
    assert!(msg.contains("qwen3moe.expert_used_count"), "{msg}");
}

#[test]
fn more_experts_per_token_than_experts() {
    let msg = load_err(&modified("qwen3moe", |w| {
        w.add("qwen3moe.expert_used_count", Value::U32(9))
    }));
    assert!(
        msg.contains("expert_used_count") && msg.contains("9"),
        "{msg}"
    );
}

#[test]
fn ernie_needs_its_interleave_step() {
    let msg = load_err(&modified("ernie4_5-moe", |w| {
        assert!(w.remove("ernie4_5-moe.interleave_moe_layer_step"))
    }));
    assert!(
        msg.contains("ernie4_5-moe.interleave_moe_layer_step"),
        "{msg}"
    );
}

#[test]
fn expert_tensor_of_the_wrong_shape() {
    // 7 experts where the metadata says 8.
    let msg = load_err(&modified("qwen3moe", |w| {
        let name = "blk.1.ffn_up_exps.weight";
        assert!(w.remove_tensor(name));
        let n = 256 * 256 * 7;
        w.add_tensor(name, vec![256, 256, 7], GgmlType::F32, vec![0u8; n * 4])
            .unwrap();
    }));
    assert!(
        msg.contains("blk.1.ffn_up_exps.weight") && msg.contains("[256, 256, 8]"),
        "{msg}"
    );
}

#[test]
fn expert_tensor_as_a_matrix() {
    let msg = load_err(&modified("qwen3moe", |w| {
        let name = "blk.0.ffn_down_exps.weight";
        assert!(w.remove_tensor(name));
        w.add_tensor(
            name,
            vec![256, 256],
            GgmlType::F32,
            vec![0u8; 256 * 256 * 4],
        )
        .unwrap();
    }));
    assert!(msg.contains("blk.0.ffn_down_exps.weight"), "{msg}");
}

#[test]
fn missing_router() {
    let msg = load_err(&modified("qwen3moe", |w| {
        assert!(w.remove_tensor("blk.0.ffn_gate_inp.weight"))
    }));
    assert!(msg.contains("blk.0.ffn_gate_inp.weight"), "{msg}");
}

#[test]
fn missing_shared_expert() {
    let msg = load_err(&modified("ernie4_5-moe", |w| {
        assert!(w.remove_tensor("blk.1.ffn_down_shexp.weight"))
    }));
    assert!(msg.contains("blk.1.ffn_down_shexp.weight"), "{msg}");
}

#[test]
fn dense_lead_layer_needs_a_dense_ffn() {
    let msg = load_err(&modified("ernie4_5-moe", |w| {
        assert!(w.remove_tensor("blk.0.ffn_gate.weight"))
    }));
    assert!(msg.contains("blk.0.ffn_gate.weight"), "{msg}");
}
