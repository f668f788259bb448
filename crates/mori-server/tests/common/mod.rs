//! Starting a real server for the integration tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mori_server::ServerConfig;

pub fn default_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/default-model/mori-fortunes.gguf")
}

pub fn config(keys: &[&str]) -> ServerConfig {
    ServerConfig {
        models: vec![mori_server::models::ModelSpec::file(
            "mori-fortunes",
            default_model(),
        )],
        addr: "127.0.0.1:0".parse().unwrap(),
        api_keys: keys.iter().map(|k| k.to_string()).collect(),
        parallel: 2,
        queue: 8,
        threads: 2,
        ctx: None,
        max_body_bytes: 1 << 20,
        max_prompt_tokens: 32768,
        cors_origins: Vec::new(),
        keep_alive: Duration::from_secs(300),
    }
}

/// Serves `config` on a free loopback port from a background thread.
pub fn start(config: ServerConfig) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            mori_server::serve_on(listener, config).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

/// The Python with the official clients (`scripts/setup-clients.sh` installs it).
pub fn clients_python() -> PathBuf {
    match std::env::var_os("MORI_CLIENTS_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var("HOME").unwrap())
            .join(".cache/mori/venv-clients/bin/python"),
    }
}
