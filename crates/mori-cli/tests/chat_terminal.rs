//! The interactive chat of `mori run`, driven through a pseudo-terminal as a person
//! would: commands, a multi-line question, an answer streamed and stopped with
//! Ctrl-C mid-way, Ctrl-C at the prompt, a complete answer, and `/bye`.

use std::process::Command;
use std::time::{Duration, Instant};

use rexpect::session::{spawn_command, PtySession};

fn random_model(dir: &std::path::Path) -> String {
    let path = dir.join("chat.gguf");
    let p = path.to_str().unwrap().to_string();
    // Big enough that an answer running to the end of an 8192-token context takes
    // many seconds, so Ctrl-C surely lands mid-answer.
    let out = Command::new(env!("CARGO_BIN_EXE_mori"))
        .args([
            "dev",
            "random-model",
            &p,
            "--type",
            "Q8_0",
            "--embd",
            "512",
            "--layers",
            "4",
        ])
        .args([
            "--ff",
            "1536",
            "--heads",
            "8",
            "--kv-heads",
            "4",
            "--ctx",
            "8192",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

fn chat(model: &str, extra: &[&str]) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mori"));
    // Token 2 is the random model's end of text: banning it keeps the answer going.
    cmd.args([
        "run",
        model,
        "--ctx",
        "8192",
        "--seed",
        "7",
        "--logit-bias",
        "2=-inf",
        "-t",
        "1",
    ]);
    cmd.args(extra);
    spawn_command(cmd, Some(60_000)).unwrap()
}

/// Reads at least `n` characters of output (the answer being streamed).
fn read_chars(p: &mut PtySession, n: usize) -> String {
    let mut got = String::new();
    let t = Instant::now();
    while got.chars().count() < n {
        match p.try_read() {
            Some(c) => got.push(c),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no answer streamed: {got:?}"
        );
    }
    got
}

#[test]
fn chat_streams_stops_on_ctrl_c_and_leaves_on_bye() {
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(dir.path());

    let mut p = chat(&model, &[]);
    p.exp_string("/bye to leave").unwrap();
    p.exp_string(">>> ").unwrap();

    p.send_line("/system Answer briefly.").unwrap();
    p.exp_string("System message set.").unwrap();
    p.send_line("/system").unwrap();
    p.exp_string("System message: Answer briefly.").unwrap();
    p.send_line("/nonsense").unwrap();
    p.exp_string("Unknown command /nonsense").unwrap();

    // Ctrl-C at the prompt drops the line and keeps the chat open.
    p.exp_string(">>> ").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("/bye or Ctrl-D leaves").unwrap();

    // A question over two lines, then its answer streams until Ctrl-C stops it.
    p.exp_string(">>> ").unwrap();
    p.send_line("\"\"\"Hello,").unwrap();
    p.exp_string("... ").unwrap();
    p.send_line("how are you?\"\"\"").unwrap();
    p.exp_string("how are you?\"\"\"").unwrap();
    let streamed = read_chars(&mut p, 40);
    assert!(
        !streamed.contains(">>> "),
        "the answer ended before Ctrl-C: {streamed:?}"
    );
    p.send_control('c').unwrap();
    p.exp_string("[stopped]").unwrap();
    p.exp_string(">>> ").unwrap();

    // The program is still alive and takes commands.
    p.send_line("/clear").unwrap();
    p.exp_string("Cleared the conversation.").unwrap();
    p.send_line("/bye").unwrap();
    p.exp_eof().unwrap();
    let status = format!("{:?}", p.process_mut().wait().unwrap());
    assert!(
        status.starts_with("Exited(") && status.ends_with(", 0)"),
        "mori run did not exit cleanly after /bye: {status}"
    );
}

#[test]
fn chat_answers_in_full_then_takes_the_next_question() {
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(dir.path());
    let mut p = chat(&model, &["-n", "6", "--verbose"]);
    p.exp_string(">>> ").unwrap();
    p.send_line("First question").unwrap();
    p.exp_string("generated 6 tokens").unwrap();
    p.exp_string(">>> ").unwrap();
    p.send_line("Second question").unwrap();
    p.exp_string("generated 6 tokens").unwrap();
    p.exp_string(">>> ").unwrap();
    // End of input (Ctrl-D) leaves too.
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}
