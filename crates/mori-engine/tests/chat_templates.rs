//! Chat templates render byte for byte as Hugging Face `transformers` renders them.
//!
//! The expected texts were recorded by `scripts/record_chat_templates.py` from the
//! templates of Llama 3, Qwen2.5, Qwen3, Gemma 2, Mistral, DeepSeek-R1-Distill,
//! openPangu-Embedded and ERNIE 4.5, over conversations with system prompts, tools,
//! tool calls, reasoning, Unicode and shapes a template refuses.

use std::path::PathBuf;

use mori_engine::chat::{ChatTemplate, RenderOptions, SpecialTokens, TemplateError};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates")
}

#[test]
fn templates_render_as_transformers_does() {
    let dir = fixtures();
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("chat_templates.json")).unwrap())
            .unwrap();
    let now = chrono::NaiveDateTime::parse_from_str(
        recorded["now"].as_str().unwrap(),
        "%Y-%m-%dT%H:%M:%S",
    )
    .unwrap();
    let mut n_checked = 0;
    let mut failures = Vec::new();
    for t in recorded["templates"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let source = std::fs::read_to_string(dir.join(t["file"].as_str().unwrap())).unwrap();
        let template = ChatTemplate::new(name, &source).unwrap_or_else(|e| panic!("{name}: {e}"));
        let st = &t["special_tokens"];
        let get = |k: &str| st.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let special = SpecialTokens {
            bos_token: get("bos_token"),
            eos_token: get("eos_token"),
            unk_token: get("unk_token"),
            pad_token: get("pad_token"),
        };
        for case in t["cases"].as_array().unwrap() {
            let case_name = case["name"].as_str().unwrap();
            let messages: Vec<Value> = serde_json::from_value(case["messages"].clone()).unwrap();
            let opts = RenderOptions {
                add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
                tools: case.get("tools").filter(|v| !v.is_null()).cloned(),
                documents: None,
                extra: case
                    .get("extra")
                    .and_then(|v| v.as_object())
                    .cloned()
                    .unwrap_or_default(),
                now: Some(now),
            };
            let got = template.render(&messages, &special, &opts);
            n_checked += 1;
            match (case.get("text").and_then(|v| v.as_str()), got) {
                (Some(want), Ok(got)) if want == got => {}
                (Some(want), Ok(got)) => {
                    let at = want
                        .bytes()
                        .zip(got.bytes())
                        .take_while(|(a, b)| a == b)
                        .count();
                    failures.push(format!(
                        "{name}/{case_name}: differs at byte {at}\n  want: {:?}\n  got:  {:?}",
                        &want[want.floor_char_boundary(at.saturating_sub(40))..],
                        &got[got.floor_char_boundary(at.saturating_sub(40))..]
                    ));
                }
                (Some(_), Err(e)) => failures.push(format!("{name}/{case_name}: Mori failed: {e}")),
                (None, Ok(got)) => failures.push(format!(
                    "{name}/{case_name}: transformers raised {:?} but Mori rendered {got:?}",
                    case["error"]
                )),
                (None, Err(e)) => {
                    // A template's own `raise_exception` message must come through unchanged.
                    let want = case["error"].as_str().unwrap();
                    if case["error_type"] == "TemplateError"
                        && !matches!(&e, TemplateError::Raised(m) if m == want)
                    {
                        failures.push(format!("{name}/{case_name}: want raised {want:?}, got {e}"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n_checked} renders differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(n_checked >= 80, "only {n_checked} renders checked");
    eprintln!("{n_checked} renders equal transformers' byte for byte");
}

/// Renders `case` (a recorded conversation) with `template` and no special tokens.
fn render_case(template: &ChatTemplate, case: &Value) -> String {
    let messages: Vec<Value> = serde_json::from_value(case["messages"].clone()).unwrap();
    let opts = RenderOptions {
        add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
        ..Default::default()
    };
    template
        .render(&messages, &SpecialTokens::default(), &opts)
        .unwrap()
}

/// The built-in templates that models of an architecture get when their file has
/// none are their Hugging Face templates, byte for byte, and render every recorded
/// conversation as `transformers` does.
#[test]
fn architecture_builtins_are_the_models_own_templates() {
    let dir = fixtures();
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("chat_templates.json")).unwrap())
            .unwrap();
    for (arch, fixture) in [
        ("ernie4_5", "ernie4.5"),
        ("pangu-embedded", "openpangu-embedded"),
    ] {
        let name = mori_engine::chat::builtin_for_arch(arch).unwrap();
        let builtin = ChatTemplate::builtin(name).unwrap();
        let hf = std::fs::read_to_string(dir.join(format!("{fixture}.jinja"))).unwrap();
        assert_eq!(
            builtin.source(),
            hf,
            "{arch}: built-in differs from the HF template"
        );
        let t = recorded["templates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == fixture)
            .unwrap();
        let mut n = 0;
        for case in t["cases"].as_array().unwrap() {
            // The recorded renders used no special tokens these templates print.
            let (Some(want), None) = (case["text"].as_str(), case.get("tools")) else {
                continue;
            };
            if case.get("extra").is_some() {
                continue;
            }
            assert_eq!(render_case(&builtin, case), want, "{arch}/{}", case["name"]);
            n += 1;
        }
        assert!(n >= 5, "{arch}: only {n} renders checked");
    }
    assert_eq!(mori_engine::chat::builtin_for_arch("llama"), None);
}

/// openPangu's built-in renders as llama.cpp's `pangu-embedded` chat format
/// (llama-chat.cpp), recorded by `scripts/record_llama_cpp_chat.py`.
#[test]
fn pangu_builtin_matches_llama_cpp() {
    let recorded: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("llama_cpp_builtin.json")).unwrap(),
    )
    .unwrap();
    let mut n = 0;
    for f in recorded["formats"].as_array().unwrap() {
        let builtin = ChatTemplate::builtin(f["builtin"].as_str().unwrap()).unwrap();
        for case in f["cases"].as_array().unwrap() {
            // Formats llama.cpp does not have (ERNIE 4.5) record no text.
            let Some(want) = case["text"].as_str() else {
                continue;
            };
            assert_eq!(
                render_case(&builtin, case),
                want,
                "{}/{}",
                f["builtin"],
                case["name"]
            );
            n += 1;
        }
    }
    assert!(n >= 6, "only {n} llama.cpp renders checked");
}

/// A GGUF without `tokenizer.chat_template` gets its architecture's built-in
/// format; other architectures get none.
#[test]
fn files_without_a_template_get_their_architectures_format() {
    use mori_model::random::{build, FileType, RandomSpec};
    let dir = tempfile::tempdir().unwrap();
    let load = |arch: &str| {
        let spec = RandomSpec::tiny(arch, FileType::parse("Q8_0").unwrap());
        let path = dir.path().join(format!("{arch}.gguf"));
        build(&spec).unwrap().write(&path).unwrap();
        mori_model::Model::load(&path).unwrap()
    };
    for arch in ["ernie4_5", "pangu-embedded"] {
        let t = ChatTemplate::from_model(&load(arch)).unwrap().unwrap();
        assert_eq!(t.name(), format!("built-in {arch}"));
    }
    assert!(ChatTemplate::from_model(&load("llama")).unwrap().is_none());
}
