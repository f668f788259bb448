//! `mori quantize` end to end: per-tensor lines with `-v`, the summary, the
//! requantizing warning, and clear errors with a non-zero exit.

mod common;
use common::mori;

#[test]
fn quantize_prints_tensors_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.gguf");
    let (s, q, q2) = (
        src.to_str().unwrap(),
        dir.path().join("q.gguf"),
        dir.path().join("q2.gguf"),
    );
    let (ok, _, err) = mori(&["dev", "random-model", s, "--arch", "llama", "--type", "F16"]);
    assert!(ok, "{err}");

    let (ok, out, err) = mori(&[
        "quantize",
        s,
        q.to_str().unwrap(),
        "q4_k_m",
        "-v",
        "-t",
        "2",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("blk.0.attn_v.weight") && out.contains("[256, 128] F16 -> Q6_K"),
        "{out}"
    );
    assert!(
        out.contains("output.weight") && out.contains("F16 -> Q6_K"),
        "{out}"
    );
    assert!(
        out.contains("blk.1.attn_norm.weight") && out.contains("F32 -> F32 (copied)"),
        "{out}"
    );
    assert!(
        out.contains("as Q4_K_M") && out.contains("MiB ->") && out.contains(" s"),
        "{out}"
    );

    // Requantizing works but warns.
    let (ok, _, err) = mori(&[
        "quantize",
        q.to_str().unwrap(),
        q2.to_str().unwrap(),
        "Q8_0",
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning") && err.contains("already quantized"),
        "{err}"
    );

    let (ok, _, err) = mori(&["quantize", s, q2.to_str().unwrap(), "Q2_K"]);
    assert!(!ok);
    assert!(
        err.contains("Q2_K") && err.contains("Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K"),
        "{err}"
    );
    let (ok, _, err) = mori(&["quantize", s, s, "Q8_0"]);
    assert!(!ok);
    assert!(err.contains("overwrite the input"), "{err}");
}
