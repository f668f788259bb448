//! The official OpenAI and Ollama Python clients, unchanged, against a real Mori
//! server: chat and completion, streaming and not, logprobs, stop, seeds, and the
//! documented exception for each error.

mod common;

use std::process::Command;

fn run_client(script: &str) {
    let addr = common::start(common::config(&["test-key"]));
    let python = common::clients_python();
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/setup-clients.sh` (scripts/test does) to install the OpenAI and Ollama clients",
        python.display()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{addr}"))
        .arg("test-key")
        .arg("mori-fortunes")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{stderr}",
        script.display()
    );
}

#[test]
fn openai_python_client() {
    run_client("openai_client.py");
}

#[test]
fn ollama_python_client() {
    run_client("ollama_client.py");
}
