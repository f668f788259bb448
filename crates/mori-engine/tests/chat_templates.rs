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
