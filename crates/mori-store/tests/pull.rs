//! Pulls from a fake hub: selection, pinning, resuming, hash checks, concurrency, errors.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{bytes, fake_gguf, sha256_hex, Hub};
use mori_store::{media_type, Error, ModelFormat, Progress, PullRequest, Store};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// A hub with a GGUF repository of two quantizations and a README.
fn gguf_hub() -> (Hub, Vec<u8>, Vec<u8>) {
    let hub = Hub::start();
    let q4 = fake_gguf(1, 300 * 1024);
    let q8 = fake_gguf(2, 200 * 1024);
    hub.add_repo(
        "Org/Tiny-GGUF",
        SHA,
        vec![
            ("README.md", b"# tiny\n".to_vec(), false),
            ("tiny-Q4_K_M.gguf", q4.clone(), true),
            ("tiny-Q8_0.gguf", q8.clone(), true),
        ],
    );
    (hub, q4, q8)
}

fn request(hub: &Hub, repo: &str, selector: Option<&str>) -> PullRequest {
    PullRequest {
        endpoint: hub.url.clone(),
        selector: selector.map(str::to_string),
        ..PullRequest::new(repo)
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn no_progress() -> impl FnMut(&Progress) {
    |_| {}
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn pulls_gguf_by_quant_and_pins_the_commit() {
    let (hub, q4, _) = gguf_hub();
    let (_dir, store) = store();
    let mut events = Vec::new();
    let out = store
        .pull(&request(&hub, "Org/Tiny-GGUF", Some("q4_k_m")), &mut |p| {
            events.push(p.clone())
        })
        .unwrap();
    assert_eq!(out.name.to_string(), "org/tiny-gguf:q4_k_m");
    assert_eq!(out.downloaded, vec!["tiny-Q4_K_M.gguf".to_string()]);
    let source = out.manifest.source.as_ref().unwrap();
    assert_eq!(source.revision, SHA);
    assert_eq!(source.reference.as_deref(), Some("main"));
    assert_eq!(source.repo, "Org/Tiny-GGUF");
    assert_eq!(source.endpoint, hub.url);
    assert_eq!(source.files, vec!["tiny-Q4_K_M.gguf".to_string()]);
    let layer = out.manifest.gguf_layer().unwrap();
    assert_eq!(layer.digest.hex(), sha256_hex(&q4));
    assert_eq!(layer.size, q4.len() as u64);

    // The download used the pinned commit, not the branch name.
    let reqs = hub.file_requests("tiny-Q4_K_M.gguf");
    assert_eq!(reqs.len(), 1);
    assert!(
        reqs[0].path.contains(&format!("/resolve/{SHA}/")),
        "{:?}",
        reqs[0]
    );
    // Progress ends at the full size.
    let last = events.last().unwrap();
    assert_eq!(
        (last.file.as_str(), last.done, last.total),
        ("tiny-Q4_K_M.gguf", q4.len() as u64, Some(q4.len() as u64))
    );

    // It resolves by name, and a second pull downloads nothing.
    let resolved = store.resolve("org/tiny-gguf:q4_k_m").unwrap();
    assert_eq!(fs::read(&resolved.path).unwrap(), q4);
    let again = store
        .pull(
            &request(&hub, "Org/Tiny-GGUF", Some("Q4_K_M")),
            &mut no_progress(),
        )
        .unwrap();
    assert!(again.downloaded.is_empty());
    assert_eq!(hub.file_requests("tiny-Q4_K_M.gguf").len(), 1);
    // Nothing is left in partial/ but lock files, and tmp/ is empty.
    assert!(dir_names(&store.root().join("partial"))
        .iter()
        .all(|f| f.ends_with(".lock")));
    assert!(dir_names(&store.root().join("tmp")).is_empty());
}

#[test]
fn ambiguous_or_missing_selectors_list_the_candidates() {
    let (hub, _, _) = gguf_hub();
    let (_dir, store) = store();
    let err = store
        .pull(&request(&hub, "Org/Tiny-GGUF", None), &mut no_progress())
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Select { .. }), "{msg}");
    assert!(
        msg.contains("tiny-Q4_K_M.gguf") && msg.contains("tiny-Q8_0.gguf"),
        "{msg}"
    );
    let msg = store
        .pull(
            &request(&hub, "Org/Tiny-GGUF", Some("Q5_K_M")),
            &mut no_progress(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Q5_K_M") && msg.contains("tiny-Q8_0.gguf"),
        "{msg}"
    );
    // A file name selects that file.
    let out = store
        .pull(
            &request(&hub, "Org/Tiny-GGUF", Some("tiny-Q8_0.gguf")),
            &mut no_progress(),
        )
        .unwrap();
    assert_eq!(out.name.to_string(), "org/tiny-gguf:tiny-q8_0");
}

#[test]
fn resumes_after_the_server_cuts_a_transfer() {
    let (hub, q4, _) = gguf_hub();
    let (_dir, store) = store();
    let cut_at = 100 * 1024 + 17;
    hub.cut_next("tiny-Q4_K_M.gguf", cut_at);
    let req = request(&hub, "Org/Tiny-GGUF", Some("Q4_K_M"));
    let err = store.pull(&req, &mut no_progress()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Interrupted { .. }), "{msg}");
    assert!(
        msg.contains("tiny-Q4_K_M.gguf") && msg.contains("resumes"),
        "{msg}"
    );
    let part = store
        .root()
        .join("partial")
        .join(format!("{}.part", sha256_hex(&q4)));
    assert_eq!(
        fs::metadata(&part).unwrap().len(),
        cut_at as u64,
        "the partial download is kept"
    );
    assert!(
        dir_names(&store.root().join("blobs")).is_empty(),
        "no blob is visible"
    );
    assert!(store.list().unwrap().is_empty(), "no manifest is visible");

    hub.clear_log();
    let mut first_progress = None;
    let out = store
        .pull(&req, &mut |p| {
            first_progress.get_or_insert(p.done);
        })
        .unwrap();
    assert_eq!(
        first_progress,
        Some(cut_at as u64),
        "progress starts at the resumed offset"
    );
    let reqs = hub.file_requests("tiny-Q4_K_M.gguf");
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].range.as_deref(),
        Some(format!("bytes={cut_at}-").as_str())
    );
    assert_eq!(reqs[0].status, 206);
    assert_eq!(
        reqs[0].body_sent,
        q4.len() - cut_at,
        "only the rest was served"
    );
    assert!(!part.exists());
    let path = store.resolve(&out.name.to_string()).unwrap().path;
    assert_eq!(fs::read(path).unwrap(), q4);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn resumes_through_a_redirect_without_lfs_info() {
    // The revision API states no sha256; the hub's redirect carries it in X-Linked-Etag.
    let (hub, q4, _) = gguf_hub();
    hub.lfs_in_api(false);
    hub.redirect_lfs(true);
    let (_dir, store) = store();
    hub.cut_next("tiny-Q4_K_M.gguf", 50_000);
    let req = request(&hub, "Org/Tiny-GGUF", Some("q4_k_m"));
    assert!(matches!(
        store.pull(&req, &mut no_progress()),
        Err(Error::Interrupted { .. })
    ));
    hub.clear_log();
    store.pull(&req, &mut no_progress()).unwrap();
    let log = hub.log();
    let hub_hop = log.iter().find(|l| l.path.contains("/resolve/")).unwrap();
    let cdn_hop = log.iter().find(|l| l.path.starts_with("/cdn/")).unwrap();
    assert_eq!(hub_hop.status, 302);
    assert_eq!(cdn_hop.status, 206);
    assert_eq!(cdn_hop.range.as_deref(), Some("bytes=50000-"));
    assert_eq!(cdn_hop.body_sent, q4.len() - 50_000);
    let blob = store
        .root()
        .join("blobs")
        .join(format!("sha256-{}", sha256_hex(&q4)));
    assert_eq!(fs::read(blob).unwrap(), q4);
}

#[test]
fn wrong_bytes_are_rejected_and_nothing_is_visible() {
    for redirect in [false, true] {
        let (hub, q4, _) = gguf_hub();
        hub.redirect_lfs(redirect);
        hub.lfs_in_api(!redirect);
        hub.corrupt("tiny-Q4_K_M.gguf");
        let (_dir, store) = store();
        let err = store
            .pull(
                &request(&hub, "Org/Tiny-GGUF", Some("Q4_K_M")),
                &mut no_progress(),
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::HashMismatch { .. }), "{msg}");
        assert!(
            msg.contains("tiny-Q4_K_M.gguf") && msg.contains(&sha256_hex(&q4)),
            "{msg}"
        );
        assert!(dir_names(&store.root().join("blobs")).is_empty());
        assert!(dir_names(&store.root().join("manifests")).is_empty());
        assert!(dir_names(&store.root().join("partial"))
            .iter()
            .all(|f| f.ends_with(".lock")));
        assert!(dir_names(&store.root().join("tmp")).is_empty());
    }
}

#[test]
fn two_pulls_of_the_same_blob_at_once_both_succeed() {
    for lfs_in_api in [true, false] {
        let (hub, q4, _) = gguf_hub();
        hub.lfs_in_api(lfs_in_api);
        // Slow enough that the two downloads overlap.
        hub.chunk_delay(Some(Duration::from_millis(5)));
        let (_dir, store) = store();
        let store = Arc::new(store);
        let req = Arc::new(request(&hub, "Org/Tiny-GGUF", Some("Q4_K_M")));
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (store, req, barrier) = (store.clone(), req.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.pull(&req, &mut |_| {})
                })
            })
            .collect();
        for t in threads {
            let out = t.join().unwrap().unwrap();
            assert_eq!(
                out.manifest.gguf_layer().unwrap().digest.hex(),
                sha256_hex(&q4)
            );
        }
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.checked_blobs, 1);
        let blob = store
            .root()
            .join("blobs")
            .join(format!("sha256-{}", sha256_hex(&q4)));
        assert_eq!(fs::read(blob).unwrap(), q4);
        if lfs_in_api {
            // The second found the blob stored and downloaded nothing.
            assert_eq!(hub.file_requests("tiny-Q4_K_M.gguf").len(), 1);
        }
    }
}

#[test]
fn not_found_errors_name_repo_revision_and_file() {
    let (hub, _, _) = gguf_hub();
    let (_dir, store) = store();
    let err = store
        .pull(&request(&hub, "org/missing", None), &mut no_progress())
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::HubNotFound { .. }), "{msg}");
    assert!(
        msg.contains("model 'org/missing' not found at endpoint") && msg.contains(&hub.url),
        "{msg}"
    );
    let mut req = request(&hub, "Org/Tiny-GGUF", Some("Q4_K_M"));
    req.revision = Some("v9".into());
    let msg = store
        .pull(&req, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("'v9'"), "{msg}");
    // The API lists a file the resolve endpoint does not have.
    hub.hide("tiny-Q8_0.gguf");
    let err = store
        .pull(
            &request(&hub, "Org/Tiny-GGUF", Some("Q8_0")),
            &mut no_progress(),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::HubNotFound { file: Some(_), .. }),
        "{msg}"
    );
    assert!(
        msg.contains("file 'tiny-Q8_0.gguf'") && msg.contains("Org/Tiny-GGUF"),
        "{msg}"
    );
    // An unreachable endpoint is an HTTP error, not a panic.
    let dead = PullRequest {
        endpoint: "http://127.0.0.1:9".into(),
        ..PullRequest::new("org/x")
    };
    assert!(matches!(
        store.pull(&dead, &mut no_progress()),
        Err(Error::Http { .. })
    ));
    assert!(matches!(
        store.pull(&request(&hub, "../etc", None), &mut no_progress()),
        Err(Error::InvalidRepo { .. })
    ));
}

#[test]
fn a_token_is_required_and_then_accepted() {
    let (hub, q4, _) = gguf_hub();
    hub.require_token("hf_secret");
    hub.redirect_lfs(true);
    let (_dir, store) = store();
    let mut req = request(&hub, "Org/Tiny-GGUF", Some("Q4_K_M"));
    let err = store.pull(&req, &mut no_progress()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::HubUnauthorized {
                token_sent: false,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("HF_TOKEN") && msg.contains("Org/Tiny-GGUF"),
        "{msg}"
    );
    req.token = Some("wrong".into());
    let msg = store
        .pull(&req, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not accepted"), "{msg}");
    req.token = Some("hf_secret".into());
    hub.clear_log();
    let out = store.pull(&req, &mut no_progress()).unwrap();
    assert_eq!(
        out.manifest.gguf_layer().unwrap().digest.hex(),
        sha256_hex(&q4)
    );
    for l in hub.log() {
        if l.path.starts_with("/cdn/") {
            assert_eq!(l.authorization, None, "the token is not sent to the CDN");
        } else {
            assert_eq!(l.authorization.as_deref(), Some("Bearer hf_secret"));
        }
    }
}

#[test]
fn pulls_a_safetensors_repository() {
    let hub = Hub::start();
    let config = br#"{"architectures":["LlamaForCausalLM"],"model_type":"llama"}"#.to_vec();
    let shard1 = bytes(10, 150 * 1024);
    let shard2 = bytes(11, 90 * 1024);
    hub.add_repo(
        "org/small",
        SHA,
        vec![
            ("config.json", config.clone(), false),
            ("tokenizer.json", b"{\"model\":{}}".to_vec(), false),
            ("tokenizer_config.json", b"{}".to_vec(), false),
            ("model-00001-of-00002.safetensors", shard1.clone(), true),
            ("model-00002-of-00002.safetensors", shard2.clone(), true),
            (
                "model.safetensors.index.json",
                b"{\"weight_map\":{}}".to_vec(),
                false,
            ),
            ("README.md", b"hi".to_vec(), false),
            ("onnx/model.safetensors", bytes(12, 100), true),
        ],
    );
    hub.redirect_lfs(true);
    let (_dir, store) = store();
    let out = store
        .pull(&request(&hub, "org/small", None), &mut no_progress())
        .unwrap();
    assert_eq!(out.name.to_string(), "org/small:latest");
    let files: Vec<&str> = out
        .manifest
        .layers
        .iter()
        .map(|l| l.filename.as_deref().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]
    );
    let media: Vec<&str> = out
        .manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    assert_eq!(media[0], media_type::CONFIG);
    assert_eq!(media[1], media_type::TOKENIZER);
    assert_eq!(media[4], media_type::SAFETENSORS);
    let resolved = store.resolve("org/small").unwrap();
    assert_eq!(resolved.format, ModelFormat::Safetensors);
    assert!(resolved.path.is_dir());
    assert_eq!(fs::read(resolved.path.join("config.json")).unwrap(), config);
    assert_eq!(
        fs::read(resolved.path.join("model-00002-of-00002.safetensors")).unwrap(),
        shard2
    );
    assert_eq!(
        fs::read(resolved.path.join("model-00001-of-00002.safetensors")).unwrap(),
        shard1
    );
    // A pull under a chosen name; the blobs are already stored, so nothing is downloaded even
    // though only the hub's headers (not the revision API) state the sha256 of the shards.
    hub.lfs_in_api(false);
    let mut named = request(&hub, "org/small", None);
    named.name = Some("Small:Fast".into());
    let again = store.pull(&named, &mut no_progress()).unwrap();
    assert_eq!(again.name.to_string(), "small:fast");
    assert!(
        again
            .downloaded
            .iter()
            .all(|f| !f.ends_with(".safetensors")),
        "{:?}",
        again.downloaded
    );
    assert_eq!(again.manifest.model_digest(), out.manifest.model_digest());
    // Resolving by the set's digest prefix finds the same directory.
    let digest = resolved.digest.clone().unwrap();
    let by_digest = store.resolve(&digest.hex()[..16]).unwrap();
    assert_eq!(by_digest.path, resolved.path);
    assert!(store.verify().unwrap().is_ok());
}
