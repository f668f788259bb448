//! The model store from the command line: import, list, show, run by name and by
//! digest, cp, rm, verify (catching a corrupted blob), and a recipe built with
//! `mori create` that `mori run` applies. Each test has its own MORI_HOME.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn default_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/default-model/mori-fortunes.gguf")
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `mori ARGS` with MORI_HOME=`home`: (succeeded, stdout, stderr).
fn mori(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mori"))
        .args(args)
        .env("MORI_HOME", home)
        .current_dir(repo_root())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ok(home: &Path, args: &[&str]) -> String {
    let (good, out, err) = mori(home, args);
    assert!(good, "mori {args:?} failed:\n{out}\n{err}");
    out
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn import_list_show_run_copy_remove_and_verify() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let file = default_model();
    let hex = sha256_hex(&file);

    let out = ok(h, &["import", file.to_str().unwrap(), "fortunes:v1"]);
    assert!(out.contains(&format!("sha256:{hex}")), "{out}");
    let list = ok(h, &["list"]);
    assert!(
        list.contains("fortunes:v1") && list.contains(&hex[..12]),
        "{list}"
    );

    let show = ok(h, &["show", "fortunes:v1"]);
    for want in [
        "architecture  llama",
        &format!("digest        sha256:{hex}"),
        "tensor types",
        "context",
        "template",
    ] {
        assert!(show.contains(want), "missing {want:?} in:\n{show}");
    }

    // The same answer by path, by name, by digest and by a digest prefix.
    let args = |m: &str| {
        [
            "run",
            m,
            "The secret of happiness is",
            "-n",
            "8",
            "--temperature",
            "0",
        ]
        .map(String::from)
    };
    let run = |m: &str| {
        let a = args(m);
        ok(h, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let by_path = run(file.to_str().unwrap());
    assert!(!by_path.trim().is_empty());
    assert_eq!(run("fortunes:v1"), by_path);
    assert_eq!(run(&format!("sha256:{hex}")), by_path);
    assert_eq!(run(&hex[..16]), by_path);

    // cp shares the blob; rm of the first name keeps it for the second.
    ok(h, &["cp", "fortunes:v1", "team/fortunes:prod"]);
    let out = ok(h, &["rm", "fortunes:v1"]);
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(run("team/fortunes:prod"), by_path);
    let (good, _, err) = mori(h, &["run", "fortunes:v1", "x", "-n", "1"]);
    assert!(!good && err.contains("fortunes:v1"), "{err}");

    let out = ok(h, &["verify"]);
    assert!(out.contains("all intact"), "{out}");
    // Flip one byte of the blob: verify names it and fails.
    let blob = h.join("blobs").join(format!("sha256-{hex}"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let mut perm = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&blob, perm).unwrap();
    std::fs::write(&blob, &bytes).unwrap();
    let (good, out, err) = mori(h, &["verify"]);
    assert!(!good, "verify passed a corrupt blob:\n{out}");
    assert!(
        out.contains(&hex) && out.contains("team/fortunes:prod"),
        "{out}\n{err}"
    );
}

#[test]
fn names_that_escape_the_store_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let file = default_model();
    for bad in ["../evil", "/abs/name", "a/../b", "a\\b"] {
        let (good, _, err) = mori(home.path(), &["import", file.to_str().unwrap(), bad]);
        assert!(!good, "{bad} was accepted");
        assert!(err.contains("name"), "{bad}: {err}");
    }
    assert!(!home.path().join("evil").exists());
}

#[test]
fn a_recipe_from_create_is_what_run_uses() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let out = ok(
        h,
        &[
            "create",
            "city-services",
            "-f",
            "examples/recipes/government.Morifile",
        ],
    );
    assert!(out.contains("created"), "{out}");
    let show = ok(h, &["show", "city-services"]);
    assert!(show.contains("Citizen Services Office"), "{show}");
    assert!(show.contains("\"temperature\":0.2"), "{show}");
    assert!(show.contains("CC-BY-4.0"), "{show}");
    assert!(show.contains("from          sha256:"), "{show}");

    let run = ok(
        h,
        &[
            "run",
            "city-services",
            "Where do I pay a parking fine?",
            "-n",
            "6",
        ],
    );
    assert!(!run.trim().is_empty());
}

/// `mori run RECIPE` answers exactly as the base model does when given the
/// recipe's system prompt and parameters by hand; options on the command line
/// still win over the recipe's.
#[test]
fn run_applies_the_recipe_and_the_command_line_wins() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let base = default_model();
    let morifile = h.join("Morifile");
    std::fs::write(
        &morifile,
        format!(
            "FROM {}\nPARAMETER temperature 0.7\nPARAMETER seed 11\nPARAMETER top_k 20\nPARAMETER num_predict 10\nSYSTEM You are terse.\n",
            base.display()
        ),
    )
    .unwrap();
    ok(h, &["create", "terse", "-f", morifile.to_str().unwrap()]);
    let q = "What is the meaning of life?";
    let by_hand = |seed: &str| {
        ok(
            h,
            &[
                "run",
                base.to_str().unwrap(),
                q,
                "--system",
                "You are terse.",
                "--temperature",
                "0.7",
                "--seed",
                seed,
                "--top-k",
                "20",
                "-n",
                "10",
            ],
        )
    };
    let recipe = ok(h, &["run", "terse", q]);
    assert!(!recipe.trim().is_empty());
    assert_eq!(recipe, by_hand("11"));
    assert_eq!(ok(h, &["run", "terse", q, "--seed", "12"]), by_hand("12"));
}

/// A Hugging Face directory runs as it is, from its path and from the store,
/// and gives what its conversion to GGUF gives.
#[test]
fn a_safetensors_model_runs_from_its_directory_and_from_the_store() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let dir = h.join("tiny-qwen");
    let d = dir.to_str().unwrap();
    ok(
        h,
        &["dev", "random-hf", d, "--arch", "qwen2", "--type", "BF16"],
    );
    let run = |model: &str| {
        ok(
            h,
            &[
                "run",
                model,
                "the rain in",
                "--raw",
                "-n",
                "12",
                "--seed",
                "3",
            ],
        )
    };
    let from_dir = run(d);
    assert!(!from_dir.is_empty());
    ok(h, &["import", d, "tiny-qwen:bf16"]);
    assert_eq!(run("tiny-qwen:bf16"), from_dir);
    let gguf = h.join("tiny-qwen.gguf");
    ok(h, &["convert", d, gguf.to_str().unwrap(), "--type", "BF16"]);
    assert_eq!(run(gguf.to_str().unwrap()), from_dir);
    // The directory's tokenizer.json encodes as the converted vocabulary does.
    let tok = |m: &str| ok(h, &["tokenize", m, "the rain<|im_end|> in spain"]);
    assert_eq!(tok(d), tok(gguf.to_str().unwrap()));
}
