//! `mori serve` under load, as a separate process: 32 concurrent streaming
//! clients for 60 s (no failure besides documented 503s, every stream ends with
//! [DONE], resident memory flat), then 30 s where half of them hang up mid-stream
//! (their slots are freed). The driver is scripts/loadtest.py with the client venv
//! that scripts/setup-clients.sh installs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> std::path::PathBuf {
    match std::env::var_os("MORI_CLIENTS_PYTHON") {
        Some(p) => p.into(),
        None => std::path::PathBuf::from(std::env::var("HOME").unwrap())
            .join(".cache/mori/venv-clients/bin/python"),
    }
}

#[test]
fn thirty_two_streaming_clients_for_a_minute_then_half_hang_up() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = root.join("assets/default-model/mori-fortunes.gguf");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_mori"))
            .args([
                "serve",
                "-m",
                model.to_str().unwrap(),
                "--port",
                &port.to_string(),
                "--parallel",
                "2",
                "--queue",
                "32",
            ])
            .env("MORI_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let py = python();
    assert!(
        py.exists(),
        "{} is missing: run `bash scripts/setup-clients.sh`",
        py.display()
    );
    let script = root.join("scripts/loadtest.py");
    for (seconds, half) in [("60", false), ("30", true)] {
        let mut cmd = Command::new(&py);
        cmd.arg(&script)
            .args([
                "--url",
                &url,
                "--model",
                "mori-fortunes",
                "--pid",
                &server.0.id().to_string(),
            ])
            .args(["--clients", "32", "--seconds", seconds]);
        if half {
            cmd.arg("--disconnect-half");
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "load test failed: {stdout}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(v["failures"], 0);
        assert!(v["completed"].as_u64().unwrap() > 100, "{v}");
        if half {
            assert!(v["hung_up"].as_u64().unwrap() > 100, "{v}");
        }
    }
}
