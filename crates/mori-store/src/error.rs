//! The one error type of mori-store: every message names the file, name, digest or URL at fault.

use std::io;
use std::path::PathBuf;

/// What can go wrong in the store, in a pull or in a recipe.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed on `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The store's root could not be found (no `MORI_HOME` and no home directory).
    #[error("cannot find the model store: set MORI_HOME or HOME")]
    NoHome,

    /// A model name or tag that is not allowed (it could escape the store, or uses odd characters).
    #[error("invalid model name '{name}': {reason}")]
    InvalidName { name: String, reason: String },

    /// A file name inside a model (a hub file or a manifest layer) that is not a safe relative path.
    #[error("invalid file name '{name}': {reason}")]
    InvalidFileName { name: String, reason: String },

    /// A Hugging Face repository id that is not `org/name` (or `name`).
    #[error("invalid repository '{repo}': {reason}")]
    InvalidRepo { repo: String, reason: String },

    /// A digest that is not `sha256:` followed by 64 hex digits (or a hex prefix of at least 12).
    #[error("invalid digest '{digest}': {reason}")]
    InvalidDigest { digest: String, reason: String },

    /// Nothing in the store (and no file) answers to this name, digest or path.
    #[error("model '{what}' not found: {reason}")]
    NotFound { what: String, reason: String },

    /// A digest prefix matches more than one blob.
    #[error("digest prefix '{prefix}' is ambiguous: it matches {}", candidates.join(", "))]
    AmbiguousDigest {
        prefix: String,
        candidates: Vec<String>,
    },

    /// A name or digest resolves to something that is not a runnable model.
    #[error("'{what}' is not a model: {reason}")]
    NotAModel { what: String, reason: String },

    /// A manifest file that cannot be read as a Mori manifest.
    #[error("manifest {path}: {reason}")]
    BadManifest { path: PathBuf, reason: String },

    /// A manifest refers to a blob the store does not hold.
    #[error("blob {digest} (referenced by {name}) is missing from the store")]
    MissingBlob { digest: String, name: String },

    /// A file given as a GGUF model is not one.
    #[error("{path} is not a GGUF file (it does not start with the magic bytes 'GGUF')")]
    NotGguf { path: PathBuf },

    /// A directory given as a safetensors model lacks what a model needs.
    #[error("safetensors directory {path}: {reason}")]
    BadSafetensorsDir { path: PathBuf, reason: String },

    /// The hub has no such repository, revision or file.
    #[error("model '{repo}' not found at endpoint {endpoint} (revision '{revision}'{}): HTTP 404", file.as_ref().map(|f| format!(", file '{f}'")).unwrap_or_default())]
    HubNotFound {
        endpoint: String,
        repo: String,
        revision: String,
        file: Option<String>,
    },

    /// The hub refused access: the repository is gated, private or missing.
    #[error("{endpoint} refused access to '{repo}' (HTTP {status}): {}", if *token_sent { "the token in HF_TOKEN was not accepted for this repository" } else { "this repository needs a token; set HF_TOKEN to a Hugging Face access token (the repository may also not exist)" })]
    HubUnauthorized {
        endpoint: String,
        repo: String,
        status: u16,
        token_sent: bool,
    },

    /// The hub answered with an unexpected HTTP status.
    #[error("{url} answered HTTP {status}: {body}")]
    HubStatus {
        url: String,
        status: u16,
        body: String,
    },

    /// The hub's answer could not be understood.
    #[error("unexpected answer from {url}: {reason}")]
    HubResponse { url: String, reason: String },

    /// The connection to the hub failed before an answer came.
    #[error("request to {url} failed: {reason}")]
    Http { url: String, reason: String },

    /// A download broke off; what arrived is kept in `partial` and the next pull resumes from it.
    #[error("download of '{file}' from {url} broke off after {done} of {} bytes: {reason}; the partial download is kept at {} and the next pull resumes from it", total.map(|t| t.to_string()).unwrap_or_else(|| "?".into()), partial.display())]
    Interrupted {
        file: String,
        url: String,
        done: u64,
        total: Option<u64>,
        reason: String,
        partial: PathBuf,
    },

    /// The downloaded bytes do not hash to what the hub states; nothing was stored.
    #[error("hash mismatch for '{file}': the hub states sha256 {expected}, the downloaded bytes hash to {got}; the download was discarded")]
    HashMismatch {
        file: String,
        expected: String,
        got: String,
    },

    /// The repository's files do not let the selector pick one model.
    #[error("cannot choose what to pull from '{repo}': {reason}")]
    Select { repo: String, reason: String },

    /// A `Morifile` that cannot be parsed; `line` is 1-based (0 when the problem is the whole file).
    #[error("{}: {message}", if *line == 0 { file.clone() } else { format!("{file}:{line}") })]
    Morifile {
        file: String,
        line: usize,
        message: String,
    },

    /// A recipe that parsed but cannot be built (its FROM or ADAPTER cannot be found or used).
    #[error("recipe {file}: {message}")]
    Recipe { file: String, message: String },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
