//! The `mori` binary end to end: writing a random model, tokenizing,
//! printing logits as JSON lines, and clear errors for bad input.

mod common;
use common::mori;

#[test]
fn tokenize_and_logits_print_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let p = path.to_str().unwrap();
    let (ok, _, err) = mori(&[
        "dev",
        "random-model",
        p,
        "--arch",
        "qwen2",
        "--type",
        "Q4_K_M",
        "--tied",
    ]);
    assert!(ok, "{err}");

    let (ok, out, err) = mori(&["tokenize", p, "the cat"]);
    assert!(ok, "{err}");
    let ids: Vec<u32> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(ids[0], 1, "BOS first");
    assert!(ids.len() > 2);

    let (ok, out, err) = mori(&["logits", p, "--tokens", "1,5,9", "-t", "2"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["pos"], i);
        assert_eq!(l["logits"].as_array().unwrap().len(), 384);
    }

    let (ok, out, _) = mori(&["info", p]);
    assert!(ok);
    assert!(
        out.contains("qwen2") && out.contains("Q4_K") && out.contains("Q6_K"),
        "{out}"
    );
}

#[test]
fn bad_input_gives_a_clear_error_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.gguf");
    let (ok, _, err) = mori(&["logits", missing.to_str().unwrap(), "--tokens", "1"]);
    assert!(!ok);
    assert!(err.contains("nope.gguf"), "{err}");

    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let (ok, _, err) = mori(&["tokenize", junk.to_str().unwrap(), "hi"]);
    assert!(!ok);
    assert!(err.contains("junk.gguf") && err.contains("GGUF"), "{err}");

    let model = dir.path().join("m.gguf");
    assert!(mori(&["dev", "random-model", model.to_str().unwrap()]).0);
    let (ok, _, err) = mori(&["logits", model.to_str().unwrap(), "--tokens", "1,99999"]);
    assert!(!ok);
    assert!(err.contains("99999"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn demo_runs_offline() {
    let (ok, out, err) = mori(&["demo", "hello there", "-n", "4"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("tokens") && out.contains("greedy continuation"),
        "{out}"
    );
}

#[test]
fn run_is_reproducible_with_a_seed_and_rejects_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let p = path.to_str().unwrap();
    let (ok, _, err) = mori(&["dev", "random-model", p, "--type", "Q8_0"]);
    assert!(ok, "{err}");
    let args = |threads: &'static str, seed: &'static str| {
        vec![
            "run",
            p,
            "once upon",
            "-n",
            "16",
            "--seed",
            seed,
            "-t",
            threads,
        ]
    };
    let (ok, a, err) = mori(&args("1", "9"));
    assert!(ok, "{err}");
    assert!(!a.trim().is_empty());
    let (_, b, _) = mori(&args("2", "9"));
    assert_eq!(a, b, "same seed with 1 and 2 threads");
    let (_, c, _) = mori(&args("1", "10"));
    assert_ne!(a, c, "another seed");
    let (ok, _, err) = mori(&["run", p, "-v", "hi", "-n", "3", "--temp", "0"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("tokens/s") && err.contains("generated 3 tokens"),
        "{err}"
    );
    for (bad, names) in [
        (vec!["--top-p", "0"], "top_p"),
        (vec!["--temp", "-1"], "temperature"),
        (vec!["--ctx", "2"], "context holds 2"),
        (vec!["--logit-bias", "5"], "ID=BIAS"),
    ] {
        let mut a = vec!["run", p, "a longer prompt than two tokens"];
        a.extend(bad);
        let (ok, _, err) = mori(&a);
        assert!(!ok && err.contains(names), "{names}: {err}");
    }
}

#[test]
fn bench_reports_prompt_and_generation_speed_as_json() {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/default-model/mori-fortunes.gguf");
    let (ok, out, err) = mori(&[
        "bench",
        model.to_str().unwrap(),
        "-p",
        "32",
        "-n",
        "8",
        "-r",
        "1",
        "-t",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        v["pp_tps"].as_f64().unwrap() > 0.0 && v["tg_tps"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert_eq!(
        (
            v["n_prompt"].as_u64(),
            v["n_gen"].as_u64(),
            v["threads"].as_u64()
        ),
        (Some(32), Some(8), Some(1))
    );
    assert_eq!(v["type"], "Q8_0");
    let (ok, _, err) = mori(&["bench", model.to_str().unwrap(), "-r", "0"]);
    assert!(!ok && err.contains("--reps"), "{err}");
}
