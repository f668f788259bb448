//! Pulls from a Hugging Face–compatible hub: resolve the revision to a commit, choose the
//! files, download each (resumably, verifying the sha256 the hub states) into the store, and
//! write a manifest pinned to that commit.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use fs4::fs_std::FileExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::blocking::{Client, Response};
use reqwest::header::{
    HeaderMap, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, ETAG, LOCATION, RANGE,
};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::digest::{hash_into, Digest};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{media_type, media_type_for_file, Layer, Manifest, Source};
use crate::name::{validate_rel_filename, validate_repo, ModelRef, DEFAULT_TAG};
use crate::store::{lock_file, Store, PARTIAL};
use crate::Progress;

/// The hub used when none is given.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The branch pulled when no revision is given.
const DEFAULT_REVISION: &str = "main";

/// How many redirects a download follows (Hugging Face sends LFS files to a CDN).
const MAX_REDIRECTS: usize = 10;

/// Characters escaped in one path segment of a URL.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The files a checkpoint directory needs besides its `*.safetensors`, taken when present.
const SAFETENSORS_COMPANIONS: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "model.safetensors.index.json",
];

/// What to pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// The hub's base URL, e.g. [`DEFAULT_ENDPOINT`] or a mirror.
    pub endpoint: String,
    /// The repository id, `org/name`.
    pub repo: String,
    /// A file in the repository, or a quantization name (`Q4_K_M`, case-insensitive) matching
    /// exactly one `.gguf` file. `None`: the only `.gguf` file, else the safetensors set.
    pub selector: Option<String>,
    /// A branch, tag or commit; default `main`. The manifest records the commit it resolved to.
    pub revision: Option<String>,
    /// A Hugging Face access token, sent as `Authorization: Bearer` to the endpoint only.
    pub token: Option<String>,
    /// The store name to write (`name[:tag]`); default the repo lowercased, tagged with the
    /// quantization (or `latest`).
    pub name: Option<String>,
}

impl PullRequest {
    /// A request for `repo` at [`DEFAULT_ENDPOINT`] without a token.
    pub fn new(repo: impl Into<String>) -> PullRequest {
        PullRequest {
            endpoint: DEFAULT_ENDPOINT.into(),
            repo: repo.into(),
            selector: None,
            revision: None,
            token: None,
            name: None,
        }
    }

    /// A request for `repo` with the endpoint from `HF_ENDPOINT` and the token from `HF_TOKEN`.
    pub fn from_env(repo: impl Into<String>) -> PullRequest {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        PullRequest {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
            token: var("HF_TOKEN"),
            ..PullRequest::new(repo)
        }
    }
}

/// What [`Store::pull`] did.
#[derive(Clone, Debug)]
pub struct PullOutcome {
    /// The name the manifest was written under.
    pub name: ModelRef,
    /// The manifest written.
    pub manifest: Manifest,
    /// Files that were downloaded (others were already in the store).
    pub downloaded: Vec<String>,
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    lfs: Option<LfsInfo>,
}

#[derive(Deserialize)]
struct LfsInfo {
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    size: Option<u64>,
}

/// What the hub states about a file before its bytes arrive.
#[derive(Default)]
struct Stated {
    sha256: Option<Digest>,
    size: Option<u64>,
}

impl Store {
    /// Pulls a model from a hub into the store and names it. Blocking; do not call it from
    /// inside an async runtime (use `spawn_blocking`).
    ///
    /// Each file goes to `partial/<key>.part` first; a download that breaks off leaves it there
    /// and the next pull resumes with a `Range` request. A file whose bytes do not hash to the
    /// sha256 the hub states is discarded. Concurrent pulls of the same file wait for each
    /// other on a lock file, and the second finds the blob already stored.
    pub fn pull(
        &self,
        request: &PullRequest,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<PullOutcome> {
        validate_repo(&request.repo)?;
        let reference = request
            .revision
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_REVISION.into());
        let hub = Hub::new(request, &reference)?;
        let info = hub.revision_info()?;
        let sha = info
            .sha
            .clone()
            .filter(|s| is_safe_revision(s))
            .ok_or_else(|| Error::HubResponse {
                url: hub.revision_url(),
                reason: "the answer has no usable commit 'sha'".into(),
            })?;
        let names: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        let (files, tag) = select_files(&request.repo, &names, request.selector.as_deref())?;
        let name = match &request.name {
            Some(n) => ModelRef::parse(n)?,
            None => ModelRef::parse(&request.repo.to_ascii_lowercase())?.with_tag(&tag)?,
        };

        let _lock = self.writer_lock()?;
        let mut layers = Vec::new();
        let mut downloaded = Vec::new();
        for file in &files {
            validate_rel_filename(file)?;
            let stated = info
                .siblings
                .iter()
                .find(|s| &s.rfilename == file)
                .and_then(|s| s.lfs.as_ref())
                .map(|lfs| Stated {
                    sha256: lfs.sha256.as_deref().and_then(Digest::from_hex),
                    size: lfs.size,
                })
                .unwrap_or_default();
            let (digest, size, fetched) = hub.download(self, &sha, file, stated, progress)?;
            if fetched {
                downloaded.push(file.clone());
            }
            let media = if files.len() == 1 && file.ends_with(".gguf") {
                media_type::GGUF
            } else {
                media_type_for_file(file)
            };
            layers.push(Layer {
                media_type: media.into(),
                digest,
                size,
                filename: Some(file.clone()),
            });
        }
        let mut manifest = Manifest::new(&name, layers);
        manifest.source = Some(Source {
            endpoint: hub.endpoint.clone(),
            repo: request.repo.clone(),
            revision: sha,
            reference: Some(reference),
            files: files.clone(),
        });
        self.write_manifest(&manifest)?;
        Ok(PullOutcome {
            name,
            manifest,
            downloaded,
        })
    }
}

/// Chooses the files to pull and the tag to give them.
fn select_files(
    repo: &str,
    siblings: &[&str],
    selector: Option<&str>,
) -> Result<(Vec<String>, String)> {
    let select_err = |reason: String| Error::Select {
        repo: repo.into(),
        reason,
    };
    let ggufs: Vec<&str> = siblings
        .iter()
        .copied()
        .filter(|f| f.ends_with(".gguf"))
        .collect();
    let listing = |files: &[&str]| {
        if files.is_empty() {
            "the repository has no .gguf files".to_string()
        } else {
            format!("the .gguf files are: {}", files.join(", "))
        }
    };
    if let Some(selector) = selector.filter(|s| !s.is_empty()) {
        if siblings.contains(&selector) {
            return Ok((vec![selector.to_string()], tag_for_file(selector)));
        }
        let wanted = selector.to_ascii_lowercase();
        let matches: Vec<&str> = ggufs
            .iter()
            .copied()
            .filter(|f| f.to_ascii_lowercase().contains(&wanted))
            .collect();
        return match matches.as_slice() {
            [one] => Ok((vec![one.to_string()], tag_for_quant(selector, one))),
            [] => Err(select_err(format!(
                "no file is named '{selector}' and no .gguf file name contains it; {}",
                listing(&ggufs)
            ))),
            many if many.iter().all(|f| is_split_part(f)) => Err(select_err(format!(
                "'{selector}' matches a GGUF split into parts ({}); split GGUF files are not supported yet",
                many.join(", ")
            ))),
            many => Err(select_err(format!(
                "'{selector}' matches several .gguf files: {}; give the full file name",
                many.join(", ")
            ))),
        };
    }
    if let [one] = ggufs.as_slice() {
        return Ok((vec![one.to_string()], DEFAULT_TAG.into()));
    }
    let weights: Vec<&str> = siblings
        .iter()
        .copied()
        .filter(|f| f.ends_with(".safetensors") && !f.contains('/'))
        .collect();
    if ggufs.is_empty() && siblings.contains(&"config.json") && !weights.is_empty() {
        let mut files: Vec<String> = SAFETENSORS_COMPANIONS
            .iter()
            .filter(|f| siblings.contains(f))
            .map(|f| f.to_string())
            .collect();
        files.extend(weights.iter().map(|f| f.to_string()));
        return Ok((files, DEFAULT_TAG.into()));
    }
    if ggufs.len() > 1 {
        return Err(select_err(format!(
            "it has several .gguf files; choose one by file name or quantization (e.g. Q4_K_M): {}",
            ggufs.join(", ")
        )));
    }
    Err(select_err(
        "it has no .gguf file and no config.json with *.safetensors weights".into(),
    ))
}

/// The tag for a quantization selector: the selector lowercased if it is a valid tag.
fn tag_for_quant(selector: &str, file: &str) -> String {
    if ModelRef::parse(&format!("x:{selector}")).is_ok() {
        selector.to_ascii_lowercase()
    } else {
        tag_for_file(file)
    }
}

/// The tag for a file chosen by name: its stem, lowercased, with odd characters made `-`.
fn tag_for_file(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let stem = base.strip_suffix(".gguf").unwrap_or(base);
    let tag: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(96)
        .collect();
    if tag.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        tag
    } else {
        DEFAULT_TAG.into()
    }
}

/// Whether a file name looks like one part of a split GGUF (`…-00001-of-00003.gguf`).
fn is_split_part(file: &str) -> bool {
    let Some(stem) = file.strip_suffix(".gguf") else {
        return false;
    };
    let b = stem.as_bytes();
    b.len() > 15 && {
        let tail = &stem[stem.len() - 15..];
        tail.starts_with('-')
            && tail[1..6].bytes().all(|c| c.is_ascii_digit())
            && &tail[6..10] == "-of-"
            && tail[10..].bytes().all(|c| c.is_ascii_digit())
    }
}

/// A commit id safe to put in a URL path.
fn is_safe_revision(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One hub and repository.
struct Hub {
    client: Client,
    endpoint: String,
    origin: Url,
    repo: String,
    reference: String,
    token: Option<String>,
}

impl Hub {
    fn new(request: &PullRequest, reference: &str) -> Result<Hub> {
        let endpoint = request.endpoint.trim().trim_end_matches('/').to_string();
        let origin = Url::parse(&endpoint).map_err(|e| Error::Http {
            url: endpoint.clone(),
            reason: format!("not a valid endpoint URL: {e}"),
        })?;
        if !matches!(origin.scheme(), "http" | "https") {
            return Err(Error::Http {
                url: endpoint,
                reason: "the endpoint must be an http:// or https:// URL".into(),
            });
        }
        // reqwest is built without a bundled crypto provider; install ring's for this process
        // unless the program already chose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(None::<Duration>)
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("mori/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Http {
                url: endpoint.clone(),
                reason: error_chain(&e),
            })?;
        Ok(Hub {
            client,
            endpoint,
            origin,
            repo: request.repo.clone(),
            reference: reference.to_string(),
            token: request.token.clone().filter(|t| !t.trim().is_empty()),
        })
    }

    fn revision_url(&self) -> String {
        format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.endpoint,
            self.repo,
            utf8_percent_encode(&self.reference, SEGMENT)
        )
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.origin.scheme()
            && url.host_str() == self.origin.host_str()
            && url.port_or_known_default() == self.origin.port_or_known_default()
    }

    /// Sends a GET, with the token only to the hub itself.
    fn get(&self, url: &Url, range_from: Option<u64>) -> Result<Response> {
        let mut req = self.client.get(url.clone());
        if let (Some(token), true) = (&self.token, self.same_origin(url)) {
            req = req.header(AUTHORIZATION, format!("Bearer {}", token.trim()));
        }
        if let Some(from) = range_from {
            req = req.header(RANGE, format!("bytes={from}-"));
        }
        req.send().map_err(|e| Error::Http {
            url: url.to_string(),
            reason: error_chain(&e),
        })
    }

    /// Maps a failed status to the error that explains it.
    fn status_error(&self, resp: Response, file: Option<&str>) -> Error {
        let status = resp.status();
        let url = resp.url().to_string();
        match status {
            StatusCode::NOT_FOUND => Error::HubNotFound {
                endpoint: self.endpoint.clone(),
                repo: self.repo.clone(),
                revision: self.reference.clone(),
                file: file.map(str::to_string),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::HubUnauthorized {
                endpoint: self.endpoint.clone(),
                repo: self.repo.clone(),
                status: status.as_u16(),
                token_sent: self.token.is_some(),
            },
            _ => {
                let mut body = String::new();
                let _ = resp.take(400).read_to_string(&mut body);
                Error::HubStatus {
                    url,
                    status: status.as_u16(),
                    body: body.trim().to_string(),
                }
            }
        }
    }

    fn revision_info(&self) -> Result<RevisionInfo> {
        let url_text = self.revision_url();
        let url = Url::parse(&url_text).map_err(|e| Error::Http {
            url: url_text.clone(),
            reason: e.to_string(),
        })?;
        let resp = self.get(&url, None)?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, None));
        }
        let bytes = resp.bytes().map_err(|e| Error::Http {
            url: url_text.clone(),
            reason: error_chain(&e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::HubResponse {
            url: url_text,
            reason: format!("not the revision JSON the hub API gives: {e}"),
        })
    }

    /// GETs a file, following redirects by hand so that the hub's own headers (the sha256 in
    /// `X-Linked-Etag`/`ETag`, the size in `X-Linked-Size`) are seen before the CDN answers.
    fn get_file(&self, url: Url, range_from: Option<u64>, stated: &mut Stated) -> Result<Response> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.get(&url, range_from)?;
            let headers = resp.headers();
            let from_hub = self.same_origin(&url);
            if stated.sha256.is_none() {
                stated.sha256 = header_sha256(headers, "x-linked-etag").or_else(|| {
                    from_hub
                        .then(|| header_sha256(headers, ETAG.as_str()))
                        .flatten()
                });
            }
            if stated.size.is_none() {
                stated.size = header_u64(headers, "x-linked-size");
            }
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let location = headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::HubResponse {
                    url: url.to_string(),
                    reason: format!("HTTP {} without a Location header", resp.status()),
                })?;
            url = url.join(location).map_err(|e| Error::HubResponse {
                url: url.to_string(),
                reason: format!("bad redirect Location '{location}': {e}"),
            })?;
        }
        Err(Error::HubResponse {
            url: url.to_string(),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Downloads one file into the store; returns its digest, size and whether bytes were
    /// fetched (false when the blob was already there).
    fn download(
        &self,
        store: &Store,
        sha: &str,
        file: &str,
        mut stated: Stated,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(Digest, u64, bool)> {
        let path: Vec<String> = file
            .split('/')
            .map(|seg| utf8_percent_encode(seg, SEGMENT).to_string())
            .collect();
        let url_text = format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            self.repo,
            sha,
            path.join("/")
        );
        let url = Url::parse(&url_text).map_err(|e| Error::Http {
            url: url_text.clone(),
            reason: e.to_string(),
        })?;
        // The partial file is keyed by the content digest when the hub states it up front,
        // else by what is being downloaded (the commit pins the content).
        let key = match &stated.sha256 {
            Some(d) => d.hex().to_string(),
            None => Digest::of_bytes(
                format!("{}\n{}\n{sha}\n{file}", self.endpoint, self.repo).as_bytes(),
            )
            .hex()
            .to_string(),
        };
        let partial_dir = store.dir(PARTIAL);
        let lock_path = partial_dir.join(format!("{key}.lock"));
        let part_path = partial_dir.join(format!("{key}.part"));
        let lock = lock_file(&lock_path)?;
        // Another pull of the same file waits here, then finds the blob stored.
        FileExt::lock_exclusive(&lock).at(&lock_path)?;
        if let Some(d) = &stated.sha256 {
            if let Ok(meta) = fs::metadata(store.blob_path(d)) {
                let size = meta.len();
                progress(&Progress {
                    file: file.into(),
                    done: size,
                    total: Some(size),
                });
                return Ok((d.clone(), size, false));
            }
        }

        // At most: one try resuming, one starting over if the server will not resume.
        for _attempt in 0..3 {
            let offset = match fs::metadata(&part_path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e).at(&part_path),
            };
            if let Some(size) = stated.size {
                if offset > size {
                    fs::remove_file(&part_path).at(&part_path)?;
                    continue;
                }
            }
            let resp = self.get_file(url.clone(), (offset > 0).then_some(offset), &mut stated)?;
            let status = resp.status();
            // The hub's headers may name a blob the store already has (when the revision API
            // gave no sha256): then the body is not needed.
            if let Some(d) = stated
                .sha256
                .as_ref()
                .filter(|d| status.is_success() && store.has_blob(d))
            {
                let size = fs::metadata(store.blob_path(d))
                    .at(store.blob_path(d))?
                    .len();
                let _ = fs::remove_file(&part_path);
                progress(&Progress {
                    file: file.into(),
                    done: size,
                    total: Some(size),
                });
                return Ok((d.clone(), size, false));
            }
            let mut hasher = Sha256::new();
            let (mut out, mut done, total) = if offset > 0 && status == StatusCode::PARTIAL_CONTENT
            {
                let (start, total) =
                    content_range(resp.headers()).ok_or_else(|| Error::HubResponse {
                        url: url_text.clone(),
                        reason: "HTTP 206 without a usable Content-Range".into(),
                    })?;
                if start != offset {
                    fs::remove_file(&part_path).at(&part_path)?;
                    continue;
                }
                let mut out = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&part_path)
                    .at(&part_path)?;
                out.rewind().at(&part_path)?;
                let hashed = hash_into(&mut out, &mut hasher).at(&part_path)?;
                if hashed != offset {
                    fs::remove_file(&part_path).at(&part_path)?;
                    continue;
                }
                (out, offset, stated.size.or(total))
            } else if status == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
                fs::remove_file(&part_path).at(&part_path)?;
                continue;
            } else if status.is_success() {
                // A full answer (200), also when a range was asked for: start over.
                let out = File::create(&part_path).at(&part_path)?;
                let length = header_u64(resp.headers(), CONTENT_LENGTH.as_str());
                (out, 0, stated.size.or(length))
            } else {
                return Err(self.status_error(resp, Some(file)));
            };
            if let (Some(size), Some(total)) = (stated.size, total) {
                if size != total {
                    fs::remove_file(&part_path).at(&part_path)?;
                    return Err(Error::HubResponse {
                        url: url_text,
                        reason: format!(
                            "the hub states {size} bytes for '{file}' but sends {total}"
                        ),
                    });
                }
            }
            progress(&Progress {
                file: file.into(),
                done,
                total,
            });
            let mut resp = resp;
            let mut buf = vec![0u8; 1 << 16];
            let broke_off = |done: u64, reason: String| Error::Interrupted {
                file: file.into(),
                url: url_text.clone(),
                done,
                total,
                reason,
                partial: part_path.clone(),
            };
            loop {
                let n = match resp.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = out.sync_all();
                        return Err(broke_off(done, error_chain(&e)));
                    }
                };
                out.write_all(&buf[..n]).at(&part_path)?;
                hasher.update(&buf[..n]);
                done += n as u64;
                progress(&Progress {
                    file: file.into(),
                    done,
                    total,
                });
            }
            out.sync_all().at(&part_path)?;
            drop(out);
            if let Some(total) = total {
                if done < total {
                    return Err(broke_off(done, "the connection closed early".into()));
                }
                if done > total {
                    fs::remove_file(&part_path).at(&part_path)?;
                    return Err(Error::HubResponse {
                        url: url_text,
                        reason: format!(
                            "received {done} bytes for '{file}', more than the {total} stated"
                        ),
                    });
                }
            }
            let got = Digest::from_hasher(hasher);
            if let Some(expected) = &stated.sha256 {
                if *expected != got {
                    fs::remove_file(&part_path).at(&part_path)?;
                    return Err(Error::HashMismatch {
                        file: file.into(),
                        expected: expected.to_string(),
                        got: got.to_string(),
                    });
                }
            }
            install_part(store, &part_path, &got)?;
            return Ok((got, done, true));
        }
        Err(Error::HubResponse {
            url: url_text,
            reason: format!("could not resume or restart the download of '{file}'"),
        })
    }
}

/// Renames a complete, fsynced, verified partial file to its blob.
fn install_part(store: &Store, part: &Path, digest: &Digest) -> Result<()> {
    let dest = store.blob_path(digest);
    fs::rename(part, &dest).at(&dest)?;
    if let Some(dir) = dest.parent() {
        #[cfg(unix)]
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        #[cfg(not(unix))]
        let _ = dir;
    }
    Ok(())
}

/// A sha256 from an ETag-like header: 64 hex digits, possibly quoted and weak (`W/"…"`).
fn header_sha256(headers: &HeaderMap, name: &str) -> Option<Digest> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    Digest::from_hex(value.trim_matches('"'))
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `Content-Range: bytes start-end/total` → (start, total if stated).
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?.trim();
    let rest = value.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// An error with its causes, for messages (reqwest's top-level message alone is vague).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_files() {
        let repo = "org/m";
        let files = ["README.md", "m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-q4_0.gguf"];
        let (f, tag) = select_files(repo, &files, Some("q4_k_m")).unwrap();
        assert_eq!(
            (f, tag.as_str()),
            (vec!["m-Q4_K_M.gguf".to_string()], "q4_k_m")
        );
        let (f, tag) = select_files(repo, &files, Some("m-Q8_0.gguf")).unwrap();
        assert_eq!(
            (f, tag.as_str()),
            (vec!["m-Q8_0.gguf".to_string()], "m-q8_0")
        );
        let e = select_files(repo, &files, Some("Q4"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("several") && e.contains("m-q4_0.gguf"), "{e}");
        let e = select_files(repo, &files, Some("Q5_K_M"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("m-Q8_0.gguf"), "{e}");
        let e = select_files(repo, &files, None).unwrap_err().to_string();
        assert!(e.contains("several") && e.contains("m-Q4_K_M.gguf"), "{e}");
        let (f, tag) = select_files(repo, &["a.gguf", "README.md"], None).unwrap();
        assert_eq!((f, tag.as_str()), (vec!["a.gguf".to_string()], "latest"));
        let st = [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "README.md",
        ];
        let (f, _) = select_files(repo, &st, None).unwrap();
        assert_eq!(
            f,
            vec![
                "config.json",
                "tokenizer.json",
                "model.safetensors.index.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        assert!(select_files(repo, &["README.md"], None).is_err());
        let split = [
            "m-Q4_K_M-00001-of-00002.gguf",
            "m-Q4_K_M-00002-of-00002.gguf",
        ];
        let e = select_files(repo, &split, Some("q4_k_m"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("split"), "{e}");
    }

    #[test]
    fn parses_headers() {
        let mut h = HeaderMap::new();
        let hex = "a".repeat(64);
        h.insert("etag", format!("W/\"{hex}\"").parse().unwrap());
        h.insert("x-linked-size", "123".parse().unwrap());
        h.insert(CONTENT_RANGE, "bytes 100-199/200".parse().unwrap());
        assert_eq!(header_sha256(&h, "etag").unwrap().hex(), hex);
        assert_eq!(header_u64(&h, "x-linked-size"), Some(123));
        assert_eq!(content_range(&h), Some((100, Some(200))));
        h.insert("etag", "\"0123abcd\"".parse().unwrap());
        assert!(header_sha256(&h, "etag").is_none());
    }
}
