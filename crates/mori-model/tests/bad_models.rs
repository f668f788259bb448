//! Models that cannot run get one clear error naming the file and the key or
//! tensor at fault; requests that cannot be served get errors, not panics.

use mori_formats::{GgufFile, GgufWriter, Value};
use mori_kernels::{GgmlType, ThreadPool};
use mori_model::random::{build, FileType, RandomSpec};
use mori_model::{Logits, Model};

fn tiny() -> GgufWriter {
    build(&RandomSpec::tiny(
        "llama",
        FileType::Uniform(GgmlType::Q8_0),
    ))
    .unwrap()
}

/// Writes `w` and loads it, expecting an error; returns its message.
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

fn modified(f: impl FnOnce(&mut GgufWriter)) -> GgufWriter {
    let bytes = tiny().to_bytes().unwrap();
    let file = GgufFile::from_bytes(bytes, "tiny.gguf").unwrap();
    let mut w = GgufWriter::from_file(&file).unwrap();
    f(&mut w);
    w
}

#[test]
fn unknown_architecture() {
    let msg = load_err(&modified(|w| {
        w.add("general.architecture", Value::String("gpt-j".into()))
    }));
    assert!(msg.contains("gpt-j") && msg.contains("llama"), "{msg}");
}

#[test]
fn missing_tensor() {
    let msg = load_err(&modified(|w| {
        assert!(w.remove_tensor("blk.1.ffn_up.weight"))
    }));
    assert!(msg.contains("blk.1.ffn_up.weight"), "{msg}");
}

#[test]
fn shape_that_contradicts_the_metadata() {
    let msg = load_err(&modified(|w| {
        w.add("llama.feed_forward_length", Value::U32(768))
    }));
    assert!(
        msg.contains("ffn_gate.weight") && msg.contains("768"),
        "{msg}"
    );
}

#[test]
fn missing_and_inconsistent_hyper_parameters() {
    let msg = load_err(&modified(|w| assert!(w.remove("llama.block_count"))));
    assert!(msg.contains("llama.block_count"), "{msg}");
    let msg = load_err(&modified(|w| {
        w.add("llama.attention.head_count_kv", Value::U32(3))
    }));
    assert!(msg.contains("head_count_kv"), "{msg}");
    let msg = load_err(&modified(|w| w.add("llama.vocab_size", Value::U32(1000))));
    assert!(msg.contains("vocab_size"), "{msg}");
}

#[test]
fn broken_tokenizer_metadata() {
    let msg = load_err(&modified(|w| assert!(w.remove("tokenizer.ggml.tokens"))));
    assert!(msg.contains("tokenizer.ggml.tokens"), "{msg}");
    let msg = load_err(&modified(|w| {
        w.add("tokenizer.ggml.model", Value::String("t5".into()))
    }));
    assert!(msg.contains("t5"), "{msg}");
    let msg = load_err(&modified(|w| {
        w.add("tokenizer.ggml.bos_token_id", Value::U32(99999))
    }));
    assert!(msg.contains("bos_token_id"), "{msg}");
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    let bytes = tiny().to_bytes().unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = Model::load(&path)
        .err()
        .expect("truncated file loaded")
        .to_string();
    assert!(
        msg.contains("cut.gguf") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn prompt_over_the_context_and_bad_tokens_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.gguf");
    tiny().write(&path).unwrap();
    let model = Model::load(&path).unwrap();
    let pool = ThreadPool::new(1);
    let mut cache = model.new_cache(8);
    let msg = model
        .forward(&pool, &mut cache, &[1; 9], Logits::Last)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains('9') && msg.contains('8'),
        "says how long and what the limit is: {msg}"
    );
    assert_eq!(cache.n_used(), 0, "nothing was half-done");
    let msg = model
        .forward(&pool, &mut cache, &[1, 5000], Logits::Last)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("5000"), "{msg}");
    assert!(model.forward(&pool, &mut cache, &[], Logits::Last).is_err());
    model
        .forward(&pool, &mut cache, &[1, 2, 3, 4, 5, 6], Logits::Last)
        .unwrap();
    let msg = model
        .forward(&pool, &mut cache, &[1, 2, 3], Logits::Last)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("already used: 6"), "{msg}");
}

/// A random model of `arch`, changed by `f`.
fn modified_arch(arch: &str, f: impl FnOnce(&mut GgufWriter)) -> GgufWriter {
    let spec = RandomSpec::tiny(arch, FileType::Uniform(GgmlType::Q8_0));
    let file = GgufFile::from_bytes(build(&spec).unwrap().to_bytes().unwrap(), "t.gguf").unwrap();
    let mut w = GgufWriter::from_file(&file).unwrap();
    f(&mut w);
    w
}

#[test]
fn ernie_and_pangu_name_what_is_missing() {
    // openPangu-Embedded needs the output projection's bias, as llama.cpp does.
    let msg = load_err(&modified_arch("pangu-embedded", |w| {
        assert!(w.remove_tensor("blk.1.attn_output.bias"))
    }));
    assert!(msg.contains("blk.1.attn_output.bias"), "{msg}");
    // Hyper-parameters are read under the architecture's own prefix.
    let msg = load_err(&modified_arch("pangu-embedded", |w| {
        assert!(w.remove("pangu-embedded.embedding_length"))
    }));
    assert!(msg.contains("pangu-embedded.embedding_length"), "{msg}");
    let msg = load_err(&modified_arch("ernie4_5", |w| {
        assert!(w.remove("ernie4_5.block_count"))
    }));
    assert!(msg.contains("ernie4_5.block_count"), "{msg}");
    let msg = load_err(&modified_arch("ernie4_5", |w| {
        assert!(w.remove_tensor("blk.0.ffn_down.weight"))
    }));
    assert!(msg.contains("blk.0.ffn_down.weight"), "{msg}");
    // A bias of the wrong width is named with its shape.
    let msg = load_err(&modified_arch("ernie4_5", |w| {
        assert!(w.remove_tensor("blk.0.attn_k.bias"));
        w.add_tensor("blk.0.attn_k.bias", vec![7], GgmlType::F32, vec![0u8; 28])
            .unwrap();
    }));
    assert!(
        msg.contains("blk.0.attn_k.bias") && msg.contains('7'),
        "{msg}"
    );
}

#[test]
fn ernie_and_pangu_biases_are_optional_where_llama_cpp_makes_them_so() {
    // Real ERNIE 4.5 checkpoints have no biases, and openPangu's q/k/v biases
    // are optional in llama.cpp: both files still load without them.
    for arch in ["ernie4_5", "pangu-embedded"] {
        let w = modified_arch(arch, |w| {
            for i in 0..2 {
                for t in ["attn_q", "attn_k", "attn_v"] {
                    assert!(w.remove_tensor(&format!("blk.{i}.{t}.bias")));
                }
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ok.gguf");
        w.write(&path).unwrap();
        Model::load(&path).unwrap_or_else(|e| panic!("{arch}: {e}"));
    }
}

/// A small Gemma 3 model with a sliding window, modified by `f`.
fn gemma3_modified(f: impl FnOnce(&mut GgufWriter)) -> GgufWriter {
    let mut spec = RandomSpec::tiny("gemma3", FileType::Uniform(GgmlType::Q8_0));
    spec.sliding_window = 8;
    let bytes = build(&spec).unwrap().to_bytes().unwrap();
    let file = GgufFile::from_bytes(bytes, "gemma3.gguf").unwrap();
    let mut w = GgufWriter::from_file(&file).unwrap();
    f(&mut w);
    w
}

#[test]
fn gemma3_missing_tensors_and_bad_keys() {
    for t in [
        "blk.1.post_ffw_norm.weight",
        "blk.0.post_attention_norm.weight",
        "blk.1.attn_q_norm.weight",
        "blk.0.attn_k_norm.weight",
    ] {
        let msg = load_err(&gemma3_modified(|w| assert!(w.remove_tensor(t))));
        assert!(msg.contains(t), "{msg}");
    }
    let msg = load_err(&gemma3_modified(|w| {
        assert!(w.remove("gemma3.embedding_length"))
    }));
    assert!(msg.contains("gemma3.embedding_length"), "{msg}");
    let msg = load_err(&gemma3_modified(|w| {
        w.add(
            "gemma3.attention.sliding_window_pattern",
            Value::Array(mori_formats::Array::Bool(vec![true; 5])),
        )
    }));
    assert!(msg.contains("sliding_window_pattern"), "{msg}");
    let msg = load_err(&gemma3_modified(|w| {
        w.add(
            "gemma3.attention.sliding_window",
            Value::String("wide".into()),
        )
    }));
    assert!(msg.contains("gemma3.attention.sliding_window"), "{msg}");
    let msg = load_err(&gemma3_modified(|w| {
        w.add("gemma3.final_logit_softcapping", Value::F32(-3.0))
    }));
    assert!(msg.contains("final_logit_softcapping"), "{msg}");
    // The head width is read from the file; a wrong one contradicts the tensors.
    let msg = load_err(&gemma3_modified(|w| {
        w.add("gemma3.attention.key_length", Value::U32(32));
        w.add("gemma3.attention.value_length", Value::U32(32));
        w.add("gemma3.rope.dimension_count", Value::U32(32));
    }));
    assert!(msg.contains("attn_q.weight"), "{msg}");
}
