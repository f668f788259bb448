//! Mori's on-disk model store: blobs by sha256, manifests by `name:tag`, pinned pulls from
//! Hugging Face–compatible hubs, and recipes built from a `Morifile`.
//!
//! ```no_run
//! use mori_store::{PullRequest, Store};
//!
//! let store = Store::from_env()?; // MORI_HOME, default ~/.mori
//! let mut request = PullRequest::from_env("Qwen/Qwen2.5-0.5B-Instruct-GGUF");
//! request.selector = Some("q4_k_m".into());
//! let pulled = store.pull(&request, &mut |p| eprintln!("{} {}/{:?}", p.file, p.done, p.total))?;
//! let model = store.resolve(&pulled.name.to_string())?;
//! println!("{}", model.path.display());
//! # Ok::<(), mori_store::Error>(())
//! ```
//!
//! Every write goes to a temporary file in the store, is fsynced and renamed into place, so a
//! reader never sees half a blob or half a manifest; blobs never change once written; every
//! name is validated before it touches the file system. The crate never prints: long
//! operations report through a [`Progress`] callback.

mod digest;
mod error;
mod manifest;
mod morifile;
mod name;
mod pull;
mod recipe;
mod resolve;
mod store;

pub use digest::{Digest, MIN_PREFIX_LEN};
pub use error::{Error, Result};
pub use manifest::{media_type, Layer, Manifest, ModelFormat, Source, SCHEMA_VERSION};
pub use morifile::{Message, Morifile, Parameters, PARAMETER_KEYS};
pub use name::{validate_rel_filename, validate_repo, ModelRef, DEFAULT_NAMESPACE, DEFAULT_TAG};
pub use pull::{PullOutcome, PullRequest, DEFAULT_ENDPOINT};
pub use recipe::{Adapter, AdapterFormat, Recipe};
pub use resolve::ResolvedModel;
pub use store::{
    BlobProblem, BlobProblemKind, GcReport, ModelEntry, RemoveReport, Store, VerifyReport,
};

/// Progress of one file in a pull (or one blob in a verify), for drawing a progress bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The file being transferred (as named in the repository), or the blob's digest.
    pub file: String,
    /// Bytes done so far, including bytes of a resumed partial download.
    pub done: u64,
    /// The file's size, when known.
    pub total: Option<u64>,
}
