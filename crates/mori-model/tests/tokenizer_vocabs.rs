//! Tokenizer conformance with llama.cpp's own test cases: the vocabularies
//! `ggml-vocab-NAME.gguf` with inputs `.inp` and expected ids `.out` that ship
//! in PyPI's llama-cpp-python sdist (fetched by `scripts/fetch-vocabs.sh`,
//! pointed at by `MORI_VOCAB_DIR`). As in llama.cpp's test-tokenizer-0, text
//! is tokenized without BOS/EOS and without parsing control tokens.

use std::path::{Path, PathBuf};

use mori_formats::GgufFile;
use mori_model::{Detokenizer, Tokenizer};

const VOCABS: &[&str] = &[
    "llama-spm",
    "llama-bpe",
    "qwen2",
    "gpt-2",
    "phi-3",
    "deepseek-llm",
];

fn vocab_dir() -> Option<PathBuf> {
    match std::env::var_os("MORI_VOCAB_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!("MORI_VOCAB_DIR is not set: llama.cpp's tokenizer cases were NOT run (scripts/test sets it)");
            None
        }
    }
}

fn read_cases(dir: &Path, name: &str) -> Vec<(String, Vec<u32>)> {
    let base = dir.join(format!("ggml-vocab-{name}.gguf"));
    let inp = std::fs::read_to_string(base.with_extension("gguf.inp"))
        .unwrap_or_else(|e| panic!("{name}.inp: {e}"));
    let out = std::fs::read_to_string(base.with_extension("gguf.out"))
        .unwrap_or_else(|e| panic!("{name}.out: {e}"));
    // As llama.cpp reads them: cases separated by the marker line, the file
    // ending with a marker (so no empty case follows the last one).
    let mut inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if inp.ends_with("\n__ggml_vocab_test__\n") {
        inputs.pop();
    }
    let outputs: Vec<&str> = out.lines().collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: .inp and .out disagree on the number of cases"
    );
    inputs
        .into_iter()
        .zip(outputs)
        .map(|(i, o)| {
            (
                i.to_string(),
                o.split_whitespace().map(|t| t.parse().unwrap()).collect(),
            )
        })
        .collect()
}

fn load(dir: &Path, name: &str) -> Tokenizer {
    let f = GgufFile::open(dir.join(format!("ggml-vocab-{name}.gguf"))).unwrap();
    Tokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn llama_cpp_tokenizer_cases_pass() {
    let Some(dir) = vocab_dir() else { return };
    let mut failures = Vec::new();
    for name in VOCABS {
        let tok = load(&dir, name);
        let cases = read_cases(&dir, name);
        let mut passed = 0;
        for (text, expected) in &cases {
            let got = tok.encode(text, false, false);
            if &got == expected {
                passed += 1;
            } else {
                failures.push(format!(
                    "{name}: {text:?}\n  expected {expected:?}\n  got      {got:?}"
                ));
            }
        }
        println!("{name:<14} {passed}/{} cases", cases.len());
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn decoding_gives_back_the_text() {
    let Some(dir) = vocab_dir() else { return };
    for name in VOCABS {
        let tok = load(&dir, name);
        for (text, _) in read_cases(&dir, name) {
            let ids = tok.encode(&text, false, false);
            let back = tok.decode(&ids, false);
            // SentencePiece vocabularies drop a leading space on decode (the
            // prefix they add on encode) and cannot tell it from a real one.
            let expect = if name.contains("spm") || *name == "phi-3" {
                text.strip_prefix(' ').unwrap_or(&text).to_string()
            } else {
                text.clone()
            };
            let back = if name.contains("spm") || *name == "phi-3" {
                back.strip_prefix(' ').unwrap_or(&back).to_string()
            } else {
                back
            };
            assert_eq!(back, expect, "{name}: decode(encode(s)) != s");
        }
    }
}

#[test]
fn streaming_never_splits_a_character() {
    let Some(dir) = vocab_dir() else { return };
    let text = "日本語のテキスト、中文文本，and emoji 🦙🚀😶‍🌫️ done";
    for name in VOCABS {
        let tok = load(&dir, name);
        let ids = tok.encode(text, false, false);
        let mut d = Detokenizer::new(&tok);
        let mut streamed = String::new();
        for &id in &ids {
            let part = d.push(id);
            assert!(
                !part.contains('\u{FFFD}'),
                "{name}: a broken character was emitted"
            );
            streamed.push_str(&part);
        }
        streamed.push_str(&d.finish());
        assert_eq!(streamed.trim_start(), text, "{name}");
    }
}
