//! A fake Hugging Face hub for the pull tests: a small HTTP/1.1 server on 127.0.0.1 that serves
//! repositories in the hub's layout and can misbehave on demand (cut a transfer, send wrong
//! bytes, require a token, redirect to a "CDN"), and records every request it sees.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// A fake GGUF file: the magic, then pseudo-random bytes.
pub fn fake_gguf(seed: u64, len: usize) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(bytes(seed, len - 4));
    b
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `data` to `path`, creating parent directories.
pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

struct RepoFile {
    data: Vec<u8>,
    lfs: bool,
}

struct Repo {
    sha: String,
    files: BTreeMap<String, RepoFile>,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    /// Body bytes sent (all of the body unless the transfer was cut).
    pub body_sent: usize,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    /// File name → bytes to send before closing the connection (once).
    cut: HashMap<String, usize>,
    /// Files served with one byte flipped (the headers still state the true sha256).
    corrupt: HashSet<String>,
    /// Files the revision API lists but the resolve endpoint answers 404 for.
    missing: HashSet<String>,
    /// host:port, for absolute redirect locations.
    port: u16,
    token: Option<String>,
    redirect: bool,
    lfs_in_api: bool,
    /// Pause between 16 KiB chunks of a body.
    chunk_delay: Option<Duration>,
    log: Vec<Logged>,
}

/// A running fake hub; it lives until the test process ends.
#[derive(Clone)]
pub struct Hub {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Hub {
    pub fn start() -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            lfs_in_api: true,
            port: listener.local_addr().unwrap().port(),
            ..State::default()
        }));
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                thread::spawn(move || handle(stream, &state));
            }
        });
        Hub { url, state }
    }

    /// Adds a repository `org/name` at commit `sha`; files are (name, bytes, stored in LFS).
    pub fn add_repo(&self, repo: &str, sha: &str, files: Vec<(&str, Vec<u8>, bool)>) {
        let files = files
            .into_iter()
            .map(|(n, data, lfs)| (n.to_string(), RepoFile { data, lfs }))
            .collect();
        self.state.lock().unwrap().repos.insert(
            repo.to_string(),
            Repo {
                sha: sha.to_string(),
                files,
            },
        );
    }

    pub fn cut_next(&self, file: &str, after: usize) {
        self.state
            .lock()
            .unwrap()
            .cut
            .insert(file.to_string(), after);
    }
    pub fn corrupt(&self, file: &str) {
        self.state.lock().unwrap().corrupt.insert(file.to_string());
    }
    pub fn hide(&self, file: &str) {
        self.state.lock().unwrap().missing.insert(file.to_string());
    }
    pub fn require_token(&self, token: &str) {
        self.state.lock().unwrap().token = Some(token.to_string());
    }
    pub fn redirect_lfs(&self, on: bool) {
        self.state.lock().unwrap().redirect = on;
    }
    pub fn lfs_in_api(&self, on: bool) {
        self.state.lock().unwrap().lfs_in_api = on;
    }
    pub fn chunk_delay(&self, delay: Option<Duration>) {
        self.state.lock().unwrap().chunk_delay = delay;
    }
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }
    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
    /// Requests for a file of a repository (through the hub or the CDN).
    pub fn file_requests(&self, file: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| {
                l.path.contains("/resolve/") && l.path.ends_with(&format!("/{file}"))
                    || l.path.starts_with("/cdn/") && l.path.ends_with(&format!("/{file}"))
            })
            .collect()
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Close after this many body bytes.
    cut: Option<usize>,
}

impl Reply {
    fn status(status: u16, text: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: text.as_bytes().to_vec(),
            cut: None,
        }
    }
}

fn handle(mut stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let path = target.split('?').next().unwrap().to_string();
    let range = headers.get("range").cloned();
    let authorization = headers.get("authorization").cloned();
    let (reply, delay) = {
        let mut st = state.lock().unwrap();
        let reply = route(&mut st, &path, range.as_deref(), authorization.as_deref());
        (reply, st.chunk_delay)
    };
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    let limit = reply.cut.unwrap_or(reply.body.len()).min(reply.body.len());
    // Logged before the reply goes out, so a test that has its answer also sees the entry.
    state.lock().unwrap().log.push(Logged {
        path,
        range,
        authorization,
        status: reply.status,
        body_sent: limit,
    });
    if stream.write_all(head.as_bytes()).is_ok() {
        for chunk in reply.body[..limit].chunks(16 * 1024) {
            if stream.write_all(chunk).is_err() {
                break;
            }
            if let Some(d) = delay {
                thread::sleep(d);
            }
        }
        let _ = stream.flush();
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn route(st: &mut State, path: &str, range: Option<&str>, auth: Option<&str>) -> Reply {
    if let Some(token) = &st.token {
        if !path.starts_with("/cdn/") && auth != Some(&format!("Bearer {token}")) {
            return Reply::status(401, "Invalid credentials in Authorization header");
        }
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        // {org}/{name}/revision/{rev}
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        if parts.len() != 4 || parts[2] != "revision" {
            return Reply::status(404, "not found");
        }
        let repo = format!("{}/{}", parts[0], parts[1]);
        let Some(r) = st.repos.get(&repo) else {
            return Reply::status(404, "Repository not found");
        };
        if parts[3] != "main" && parts[3] != r.sha {
            return Reply::status(404, "Revision not found");
        }
        let siblings: Vec<serde_json::Value> = r
            .files
            .iter()
            .map(|(name, f)| {
                if f.lfs && st.lfs_in_api {
                    serde_json::json!({"rfilename": name, "lfs": {"sha256": sha256_hex(&f.data), "size": f.data.len(), "pointerSize": 134}})
                } else {
                    serde_json::json!({"rfilename": name})
                }
            })
            .collect();
        let body = serde_json::json!({"id": repo, "sha": r.sha, "siblings": siblings});
        return Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            cut: None,
        };
    }
    // /cdn/{sha256}/{file}: the "CDN" the hub redirects LFS files to.
    if let Some(rest) = path.strip_prefix("/cdn/") {
        let (hash, file) = rest.split_once('/').unwrap_or((rest, ""));
        let found = st
            .repos
            .values()
            .flat_map(|r| r.files.iter())
            .find(|(name, f)| name.as_str() == file && sha256_hex(&f.data) == hash)
            .map(|(name, f)| (name.clone(), f.data.clone()));
        let Some((name, data)) = found else {
            return Reply::status(404, "no such object");
        };
        let mut reply = body_reply(st, &name, &data, range);
        reply
            .headers
            .push(("ETag".into(), "\"cdn-object-etag\"".into()));
        return reply;
    }
    // /{org}/{name}/resolve/{rev}/{file...}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() == 5 && parts[2] == "resolve" {
        let repo = format!("{}/{}", parts[0], parts[1]);
        let Some(r) = st.repos.get(&repo) else {
            return Reply::status(404, "Repository not found");
        };
        if parts[3] != "main" && parts[3] != r.sha {
            return Reply::status(404, "Revision not found");
        }
        let Some(f) = r
            .files
            .get(parts[4])
            .filter(|_| !st.missing.contains(parts[4]))
        else {
            return Reply::status(404, "Entry not found");
        };
        let (data, lfs) = (f.data.clone(), f.lfs);
        let hash = sha256_hex(&data);
        let file = parts[4].to_string();
        if lfs && st.redirect {
            return Reply {
                status: 302,
                headers: vec![
                    // Another host name for the same server, as a CDN is another host.
                    (
                        "Location".into(),
                        format!("http://localhost:{}/cdn/{hash}/{file}", st.port),
                    ),
                    ("X-Linked-Etag".into(), format!("\"{hash}\"")),
                    ("X-Linked-Size".into(), data.len().to_string()),
                    (
                        "ETag".into(),
                        "\"0123456789abcdef0123456789abcdef01234567\"".into(),
                    ),
                ],
                body: Vec::new(),
                cut: None,
            };
        }
        let mut reply = body_reply(st, &file, &data, range);
        if lfs {
            reply.headers.push(("ETag".into(), format!("W/\"{hash}\"")));
            reply
                .headers
                .push(("X-Linked-Etag".into(), format!("\"{hash}\"")));
            reply
                .headers
                .push(("X-Linked-Size".into(), data.len().to_string()));
        } else {
            // Git blob ids are sha1s: 40 hex digits, which a client must not take for a sha256.
            reply
                .headers
                .push(("ETag".into(), format!("\"{}\"", &hash[..40])));
        }
        return reply;
    }
    Reply::status(404, "not found")
}

/// The bytes of a file, honouring `Range: bytes=N-` and the cut/corrupt switches.
fn body_reply(st: &mut State, file: &str, data: &[u8], range: Option<&str>) -> Reply {
    let mut data = data.to_vec();
    if st.corrupt.contains(file) {
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
    }
    let total = data.len();
    let (status, body, mut headers) = match range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
    {
        Some(from) => {
            let from: usize = from.parse().unwrap();
            if from >= total {
                return Reply {
                    status: 416,
                    headers: vec![("Content-Range".into(), format!("bytes */{total}"))],
                    body: Vec::new(),
                    cut: None,
                };
            }
            (
                206,
                data[from..].to_vec(),
                vec![(
                    "Content-Range".into(),
                    format!("bytes {from}-{}/{total}", total - 1),
                )],
            )
        }
        None => (200, data, Vec::new()),
    };
    headers.push(("Accept-Ranges".into(), "bytes".into()));
    Reply {
        status,
        headers,
        body,
        cut: st.cut.remove(file),
    }
}
