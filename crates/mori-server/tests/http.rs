//! The server's behaviour over raw HTTP: malformed requests get 4xx with a clear
//! message and never hurt the server; a full queue answers 503 with Retry-After; a
//! client that disconnects frees its slot; a client that stops reading does not
//! stall others; metrics, request ids, CORS and idle unloading.

mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mori_kernels::GgmlType;
use mori_model::random::{write_random_model, FileType, RandomSpec};
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    // In a workspace build reqwest's features are unified with mori-store's,
    // which brings rustls without a built-in crypto provider: name one (these
    // tests speak plain HTTP, but building a client needs it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

async fn post(
    addr: &std::net::SocketAddr,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

async fn health(addr: &std::net::SocketAddr) -> Value {
    client()
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A browser's CORS preflight for a chat completion from `origin`.
async fn preflight(addr: &std::net::SocketAddr, origin: &str) -> reqwest::Response {
    client()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{addr}/v1/chat/completions"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap()
}

/// Waits (up to 10 s) until the server reports this many running and waiting generations.
async fn wait_load(addr: &std::net::SocketAddr, running: u64, waiting: u64, what: &str) {
    let t = Instant::now();
    loop {
        let h = health(addr).await;
        if (h["running"].as_u64(), h["waiting"].as_u64()) == (Some(running), Some(waiting)) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{what}: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A random model slow enough (and with end-of-text banned) that a generation
/// runs for many seconds unless it is stopped.
fn slow_model(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("slow.gguf");
    let mut spec = RandomSpec::tiny("llama", FileType::Uniform(GgmlType::Q8_0));
    spec.n_embd = 512;
    spec.n_layer = 4;
    spec.n_head = 8;
    spec.n_head_kv = 4;
    spec.n_ff = 1536;
    spec.n_ctx_train = 8192;
    write_random_model(&spec, &path).unwrap();
    path
}

fn long_chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "Go on."}], "stream": true,
           "max_tokens": 100000, "logit_bias": {"2": -100}, "seed": 1})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_4xx_and_the_server_survives() {
    let addr = common::start(common::config(&[]));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/chat/completions", b"{not json".to_vec(), 400, "invalid request"),
        ("/v1/chat/completions", br#"{"model": "mori-fortunes", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}"#.to_vec(), 400, "max_tokens"),
        ("/v1/chat/completions", br#"{"model": "mori-fortunes", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}"#.to_vec(), 400, "at least 1"),
        ("/v1/chat/completions", br#"{"model": "mori-fortunes"}"#.to_vec(), 400, "messages"),
        ("/v1/chat/completions", br#"{"model": "mori-fortunes", "messages": []}"#.to_vec(), 400, "must not be empty"),
        ("/v1/chat/completions", br#"{"model": "mori-fortunes", "messages": [{"content": "no role"}]}"#.to_vec(), 400, "role"),
        ("/v1/chat/completions", br#"{"model": "mori-fortunes", "messages": [{"role": "user", "content": "x"}], "top_p": 7}"#.to_vec(), 400, "top_p"),
        ("/v1/chat/completions", br#"{"model": "mori-fortunes", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"99999": 5}}"#.to_vec(), 400, "vocabulary"),
        ("/v1/completions", br#"{"model": "mori-fortunes", "prompt": "x", "logprobs": 9}"#.to_vec(), 400, "logprobs"),
        ("/v1/completions", br#"{"model": "mori-fortunes", "prompt": [1, 2, 999999]}"#.to_vec(), 400, "vocabulary"),
        ("/v1/completions", b"{\"model\": \"mori-fortunes\", \"prompt\": \"\xff\xfe bad utf-8\"}".to_vec(), 400, "UTF-8"),
        ("/api/chat", br#"{"model": "mori-fortunes", "messages": [{"role": "user", "content": "x"}], "options": {"num_ctx": -1}}"#.to_vec(), 400, "num_ctx"),
        ("/api/generate", br#"{"model": "mori-fortunes", "prompt": "x", "options": {"temperature": -1}}"#.to_vec(), 400, "temperature"),
        ("/api/generate", br#"{"model": 12}"#.to_vec(), 400, "model"),
    ];
    for (path, body, want, needle) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (status, _, text) = post(&addr, path, body).await;
        assert_eq!(status, want, "{path} {shown} -> {status} {text}");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path} {shown}: not JSON: {text}"));
        let msg = v["error"]["message"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            msg.contains(needle)
                || v["error"]["param"]
                    .as_str()
                    .is_some_and(|p| p.contains(needle)),
            "{path} {shown}: {text}"
        );
    }
    // A body over the limit (1 MiB here) is refused before it is parsed.
    let huge = format!(
        r#"{{"model": "mori-fortunes", "prompt": "{}"}}"#,
        "a".repeat(2 << 20)
    );
    let (status, _, text) = post(&addr, "/v1/completions", huge).await;
    assert_eq!(status, 413, "{text}");
    let (status, _, _) = post(&addr, "/v1/nothing-here", "{}").await;
    assert_eq!(status, 404);
    assert_eq!(health(&addr).await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_503_with_retry_after_and_disconnects_free_slots() {
    let dir = tempfile::tempdir().unwrap();
    let model = slow_model(dir.path());
    let mut cfg = common::config(&[]);
    cfg.models = vec![mori_server::models::ModelSpec::file("slow", model)];
    cfg.parallel = 1;
    cfg.queue = 1;
    cfg.ctx = Some(8192);
    let addr = common::start(cfg);
    let url = format!("http://{addr}/v1/chat/completions");

    // A: runs. Read its first chunk so it surely holds the slot.
    let a = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(long_chat("slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    let mut a_stream = a.bytes_stream();
    a_stream.next().await.unwrap().unwrap();
    wait_load(&addr, 1, 0, "A never started").await;
    // B: admitted to the queue; its stream opens but stays silent without a slot.
    let b = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(long_chat("slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(b.status(), 200);
    wait_load(&addr, 1, 1, "B is not in the queue").await;
    // C: the queue is full.
    let (status, headers, text) = post(&addr, "/v1/chat/completions", long_chat("slow")).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert!(text.contains("busy"), "{text}");

    // A disconnects: its generation stops and B gets the slot at once.
    drop(a_stream);
    wait_load(&addr, 1, 0, "A's slot was not freed for B").await;
    // B now streams text: the role chunk, then content.
    let mut b_stream = b.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data:").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), b_stream.next())
            .await
            .expect("B never streamed")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(b_stream);
    wait_load(&addr, 0, 0, "a disconnected client kept its slot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_stall_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(&[]);
    cfg.models.push(mori_server::models::ModelSpec::file(
        "slow",
        slow_model(dir.path()),
    ));
    cfg.ctx = Some(8192);
    let addr = common::start(cfg);
    // The stalled client opens a long stream and never reads it.
    let stalled = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(long_chat("slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    let t = Instant::now();
    for i in 0..5 {
        let body = json!({"model": "mori-fortunes", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16, "seed": i});
        let (status, _, text) = post(&addr, "/v1/chat/completions", body.to_string()).await;
        assert_eq!(status, 200, "{text}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "other clients were stalled for {:?}",
        t.elapsed()
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_request_ids_cors_and_idle_unloading() {
    let mut cfg = common::config(&[]);
    cfg.keep_alive = Duration::from_millis(300);
    cfg.cors_origins = vec!["http://app.example".into()];
    let addr = common::start(cfg);
    let body = json!({"model": "mori-fortunes", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8});
    let (status, headers, _) = post(&addr, "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 200);
    assert!(
        headers.get("x-request-id").is_some_and(|v| !v.is_empty()),
        "{headers:?}"
    );
    assert!(headers
        .get("x-completion-id")
        .is_some_and(|v| v.to_str().unwrap().starts_with("chatcmpl-")));

    let m = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "mori_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1",
        "mori_generated_tokens_total{api=\"openai_chat\"}",
        "mori_time_to_first_token_seconds_count{api=\"openai_chat\"} 1",
        "mori_queue_depth 0",
        "mori_slots_running 0",
    ] {
        assert!(m.contains(needle), "metrics lack {needle:?}:\n{m}");
    }

    let pre = preflight(&addr, "http://app.example").await;
    assert_eq!(
        pre.headers().get("access-control-allow-origin").unwrap(),
        "http://app.example"
    );
    let other = client()
        .get(format!("http://{addr}/health"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // The model is unloaded once idle for the keep-alive time.
    let ps = |addr| async move {
        client()
            .get(format!("http://{addr}/api/ps"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(ps(addr).await["models"].as_array().unwrap().len(), 1);
    let t = Instant::now();
    while !ps(addr).await["models"].as_array().unwrap().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the idle model was never unloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/api/tags` describes every model from its file header: listing a store of
/// many models must not load them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_models_loads_none() {
    let addr = common::start(common::config(&[]));
    let get = |path: &'static str| async move {
        client()
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let tags = get("/api/tags").await;
    let m = &tags["models"][0];
    assert_eq!(m["name"], "mori-fortunes");
    assert_eq!(m["details"]["family"], "llama");
    assert!(m["details"]["parameter_size"]
        .as_str()
        .unwrap()
        .ends_with('M'));
    assert!(m["size"].as_u64().unwrap() > 0);
    assert!(
        get("/api/ps").await["models"]
            .as_array()
            .unwrap()
            .is_empty(),
        "listing loaded a model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_unless_configured() {
    let addr = common::start(common::config(&[]));
    let pre = preflight(&addr, "http://app.example").await;
    assert!(pre.headers().get("access-control-allow-origin").is_none());
}

/// A recipe served under its own name: its system prompt and example messages
/// go in front of every conversation, its parameters are the defaults (a
/// request's own values win), and `/api/show` tells what it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipe_brings_its_system_prompt_messages_and_defaults() {
    use mori_server::models::{Defaults, ModelSpec, Recipe};
    let mut config = common::config(&[]);
    let recipe = Recipe {
        system: Some("You answer questions about fortune cookies.".into()),
        template: None,
        messages: vec![
            ("user".into(), "What is a fortune?".into()),
            ("assistant".into(), "A short saying.".into()),
        ],
        defaults: Defaults {
            temperature: Some(0.0),
            num_predict: Some(7),
            seed: Some(5),
            ..Default::default()
        },
        license: Some("BSD".into()),
    };
    config.models.push(ModelSpec {
        name: "fortune-desk".into(),
        path: common::default_model(),
        digest: Some("sha256:".to_string() + &"ab".repeat(32)),
        recipe: Some(recipe.clone()),
    });
    let addr = common::start(config);

    let chat = |model: &str, messages: Value, options: Value| {
        json!({"model": model, "messages": messages, "stream": false, "options": options})
            .to_string()
    };
    let question = json!([{"role": "user", "content": "Tell me my fortune."}]);
    // The recipe with no options at all...
    let (st, _, body) = post(
        &addr,
        "/api/chat",
        chat("fortune-desk", question.clone(), json!({})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let via_recipe: Value = serde_json::from_str(&body).unwrap();
    // ...answers as the base model does when given the same conversation and options by hand.
    let by_hand = json!([
        {"role": "system", "content": recipe.system.clone().unwrap()},
        {"role": "user", "content": "What is a fortune?"},
        {"role": "assistant", "content": "A short saying."},
        {"role": "user", "content": "Tell me my fortune."}
    ]);
    let (st, _, body) = post(
        &addr,
        "/api/chat",
        chat(
            "mori-fortunes",
            by_hand,
            json!({"temperature": 0, "num_predict": 7, "seed": 5}),
        ),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let base: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(via_recipe["message"]["content"], base["message"]["content"]);
    assert_eq!(via_recipe["prompt_eval_count"], base["prompt_eval_count"]);
    assert!(
        via_recipe["eval_count"].as_u64().unwrap() <= 7,
        "{via_recipe}"
    );
    // The request's own values win over the recipe's.
    let (_, _, body) = post(
        &addr,
        "/api/chat",
        chat("fortune-desk", question.clone(), json!({"num_predict": 2})),
    )
    .await;
    let short: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(short["eval_count"], 2, "{short}");
    // A conversation with its own system prompt keeps it (the recipe's is not added).
    let own =
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
    let (_, _, body) = post(&addr, "/api/chat", chat("fortune-desk", own, json!({}))).await;
    let with_own: Value = serde_json::from_str(&body).unwrap();
    assert!(
        with_own["prompt_eval_count"].as_u64() < via_recipe["prompt_eval_count"].as_u64(),
        "{with_own}"
    );
    // The OpenAI API applies the recipe too.
    let (st, _, body) = post(
        &addr,
        "/v1/chat/completions",
        json!({"model": "fortune-desk", "messages": question}).to_string(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let oa: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        oa["choices"][0]["message"]["content"],
        base["message"]["content"]
    );
    assert_eq!(oa["usage"]["prompt_tokens"], base["prompt_eval_count"]);

    let (st, _, body) = post(
        &addr,
        "/api/show",
        json!({"model": "fortune-desk"}).to_string(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let show: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(show["system"], recipe.system.unwrap());
    assert_eq!(show["license"], "BSD");
    let params = show["parameters"].as_str().unwrap();
    assert!(
        params.contains("temperature 0") && params.contains("num_predict 7"),
        "{params}"
    );
    let modelfile = show["modelfile"].as_str().unwrap();
    assert!(
        modelfile.starts_with(&format!("FROM sha256:{}", "ab".repeat(32))),
        "{modelfile}"
    );
    assert!(modelfile.contains("MESSAGE user"), "{modelfile}");
}
