//! The store on disk: blobs by digest, manifests by name, atomic writes, garbage collection,
//! listing, verification and imports.
//!
//! Layout under the root (`MORI_HOME`, default `~/.mori`):
//!
//! ```text
//! blobs/sha256-<hex>                      immutable file contents, named by their sha256
//! manifests/<namespace>/<model>/<tag>.json  one manifest per name:tag
//! partial/<key>.part, <key>.lock          downloads in progress (resumable) and their locks
//! snapshots/<hex>/<filename>              links giving a safetensors set its file names
//! tmp/                                    files being written; renamed into place when complete
//! store.lock                              shared by writers, exclusive for garbage collection
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fs4::fs_std::FileExt;

use crate::digest::{copy_hashing, Digest};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{media_type, media_type_for_file, Layer, Manifest, ModelFormat};
use crate::name::{validate_rel_filename, ModelRef};
use crate::Progress;

pub(crate) const BLOBS: &str = "blobs";
const MANIFESTS: &str = "manifests";
pub(crate) const PARTIAL: &str = "partial";
pub(crate) const SNAPSHOTS: &str = "snapshots";
pub(crate) const TMP: &str = "tmp";
const LOCK: &str = "store.lock";

/// A model store rooted at a directory. Cheap to clone; every method works on the file system,
/// so several `Store`s (and processes) may share one root.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// One line of [`Store::list`].
#[derive(Clone, Debug, PartialEq)]
pub struct ModelEntry {
    /// The model's `name:tag`.
    pub name: ModelRef,
    /// The model's digest (see [`Manifest::model_digest`]).
    pub digest: Digest,
    /// The total size of all its blobs in bytes.
    pub size: u64,
    /// When its manifest was last written.
    pub modified: SystemTime,
    /// GGUF or safetensors.
    pub format: ModelFormat,
    /// Whether it is a recipe (built by [`Store::create`]).
    pub recipe: bool,
}

/// What [`Store::gc`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GcReport {
    /// Blobs removed because no manifest refers to them.
    pub removed: Vec<Digest>,
    /// Bytes freed by removing them.
    pub freed_bytes: u64,
    /// Why nothing was collected this time, if so (a writer was busy, a manifest was unreadable).
    pub deferred: Option<String>,
}

/// What [`Store::rm`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoveReport {
    /// The name whose manifest was removed.
    pub removed: ModelRef,
    /// The garbage collection that followed.
    pub gc: GcReport,
}

/// What [`Store::verify`] found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// How many blobs were re-hashed.
    pub checked_blobs: usize,
    /// Corrupt or missing blobs.
    pub problems: Vec<BlobProblem>,
    /// Manifests that cannot be read, with the reason.
    pub bad_manifests: Vec<(PathBuf, String)>,
}

impl VerifyReport {
    /// True when every blob hashes to its name and every manifest and layer is present.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.bad_manifests.is_empty()
    }
}

/// One bad blob found by [`Store::verify`].
#[derive(Clone, Debug, PartialEq)]
pub struct BlobProblem {
    /// The digest the blob should have.
    pub digest: Digest,
    /// Where the blob is (or should be).
    pub path: PathBuf,
    /// What is wrong.
    pub kind: BlobProblemKind,
    /// The names whose manifests refer to it.
    pub referenced_by: Vec<ModelRef>,
}

/// What is wrong with a blob.
#[derive(Clone, Debug, PartialEq)]
pub enum BlobProblemKind {
    /// Its bytes hash to another digest.
    Corrupt { actual: Digest },
    /// A manifest refers to it but the file is absent.
    Missing,
}

impl std::fmt::Display for BlobProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            BlobProblemKind::Corrupt { actual } => write!(
                f,
                "blob {} is corrupt: its bytes hash to {actual} ({})",
                self.digest,
                self.path.display()
            )?,
            BlobProblemKind::Missing => write!(
                f,
                "blob {} is missing ({})",
                self.digest,
                self.path.display()
            )?,
        }
        if self.referenced_by.is_empty() {
            write!(f, "; no manifest refers to it")
        } else {
            let names: Vec<String> = self.referenced_by.iter().map(|r| r.to_string()).collect();
            write!(f, "; referenced by {}", names.join(", "))
        }
    }
}

/// Manifest files that cannot be read, with the reason.
pub(crate) type BadManifests = Vec<(PathBuf, String)>;

/// A manifest as found on disk.
pub(crate) struct StoredManifest {
    pub name: ModelRef,
    pub manifest: Manifest,
    pub modified: SystemTime,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for dir in [BLOBS, MANIFESTS, PARTIAL, SNAPSHOTS, TMP] {
            let path = root.join(dir);
            fs::create_dir_all(&path).at(&path)?;
        }
        Ok(Store { root })
    }

    /// Opens the store at [`Store::default_root`].
    pub fn from_env() -> Result<Store> {
        Store::open(Store::default_root()?)
    }

    /// `MORI_HOME` if set and not empty, else `~/.mori` (`HOME`, or `USERPROFILE` on Windows).
    pub fn default_root() -> Result<PathBuf> {
        if let Some(home) = std::env::var_os("MORI_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(home));
        }
        std::env::var_os("HOME")
            .or_else(|| std::env::var_os("USERPROFILE"))
            .filter(|v| !v.is_empty())
            .map(|home| PathBuf::from(home).join(".mori"))
            .ok_or(Error::NoHome)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(BLOBS).join(digest.blob_file_name())
    }

    /// Whether the store holds the blob.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Where the manifest of `name` lives (whether or not it is there).
    pub fn manifest_path(&self, name: &ModelRef) -> PathBuf {
        self.root.join(name.manifest_rel_path())
    }

    pub(crate) fn dir(&self, which: &str) -> PathBuf {
        self.root.join(which)
    }

    /// Takes the store lock shared: held by every writer (pull, import, create, cp) from its
    /// first blob until its manifest is written, so that garbage collection never removes a
    /// blob that a manifest is about to name.
    pub(crate) fn writer_lock(&self) -> Result<File> {
        let path = self.root.join(LOCK);
        let file = lock_file(&path)?;
        FileExt::lock_shared(&file).at(&path)?;
        Ok(file)
    }

    /// Stores everything `reader` yields as a blob: written to `tmp/`, hashed on the way,
    /// fsynced, then renamed to `blobs/sha256-<hex>` so no half-written blob is ever visible.
    pub fn add_blob(&self, reader: impl Read) -> Result<(Digest, u64)> {
        let tmp_dir = self.dir(TMP);
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .at(&tmp_dir)?;
        let (digest, size) = copy_hashing(reader, BufWriter::new(tmp.as_file())).at(tmp.path())?;
        self.install_blob(tmp, &digest)?;
        Ok((digest, size))
    }

    /// Stores the bytes as a blob.
    pub fn add_blob_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        self.add_blob(bytes)
    }

    /// Copies a file into the store as a blob, hashing while copying.
    pub fn add_blob_file(&self, path: &Path) -> Result<(Digest, u64)> {
        let file = File::open(path).at(path)?;
        self.add_blob(file).map_err(|e| match e {
            // A read error during the copy is about the source file.
            Error::Io { source, .. } => Error::Io {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Fsyncs a complete temporary file and renames it to the blob's place.
    pub(crate) fn install_blob(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<()> {
        tmp.as_file().sync_all().at(tmp.path())?;
        let dest = self.blob_path(digest);
        tmp.persist(&dest).map_err(|e| e.error).at(&dest)?;
        sync_dir(&self.dir(BLOBS));
        Ok(())
    }

    /// Reads the manifest of `name`.
    pub fn read_manifest(&self, name: &ModelRef) -> Result<Manifest> {
        let path = self.manifest_path(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    what: name.to_string(),
                    reason: format!("no such name in the store at {}", self.root.display()),
                })
            }
            Err(e) => return Err(e).at(&path),
        };
        parse_manifest(&bytes).map_err(|reason| Error::BadManifest { path, reason })
    }

    /// Writes a manifest atomically (temporary file, fsync, rename) under its own `name:tag`,
    /// replacing any manifest of that name. Every layer's blob must already be in the store.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<ModelRef> {
        let name = manifest.model_ref()?;
        let path = self.manifest_path(&name);
        manifest.validate().map_err(|reason| Error::BadManifest {
            path: path.clone(),
            reason,
        })?;
        for layer in &manifest.layers {
            if !self.has_blob(&layer.digest) {
                return Err(Error::MissingBlob {
                    digest: layer.digest.to_string(),
                    name: name.to_string(),
                });
            }
        }
        let mut json = serde_json::to_vec_pretty(manifest).expect("a manifest always serialises");
        json.push(b'\n');
        let parent = path.parent().expect("manifest paths have a parent");
        fs::create_dir_all(parent).at(parent)?;
        self.write_atomic(&path, &json)?;
        Ok(name)
    }

    /// Writes `bytes` to `dest` through a fsynced temporary file in `tmp/` and a rename.
    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let tmp_dir = self.dir(TMP);
        let mut tmp = tempfile::Builder::new()
            .prefix("write-")
            .tempfile_in(&tmp_dir)
            .at(&tmp_dir)?;
        tmp.write_all(bytes).at(tmp.path())?;
        tmp.as_file().sync_all().at(tmp.path())?;
        tmp.persist(dest).map_err(|e| e.error).at(dest)?;
        if let Some(parent) = dest.parent() {
            sync_dir(parent);
        }
        Ok(())
    }

    /// Every manifest on disk, and those that cannot be read with the reason.
    pub(crate) fn manifests(&self) -> Result<(Vec<StoredManifest>, BadManifests)> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let top = self.dir(MANIFESTS);
        for ns in read_dir_sorted(&top)? {
            for model in read_dir_sorted(&ns)? {
                for file in read_dir_sorted(&model)? {
                    let parts = (
                        file_name(&ns),
                        file_name(&model),
                        file_name(&file).strip_suffix(".json").map(str::to_string),
                    );
                    let name = match parts {
                        (ns_name, model_name, Some(tag)) => {
                            ModelRef::parse(&format!("{ns_name}/{model_name}:{tag}"))
                        }
                        _ => {
                            bad.push((file.clone(), "not a .json manifest".to_string()));
                            continue;
                        }
                    };
                    let name = match name {
                        Ok(n) => n,
                        Err(e) => {
                            bad.push((file.clone(), e.to_string()));
                            continue;
                        }
                    };
                    let read = fs::read(&file)
                        .map_err(|e| e.to_string())
                        .and_then(|b| parse_manifest(&b));
                    match read {
                        Ok(manifest) => {
                            let modified = fs::metadata(&file)
                                .and_then(|m| m.modified())
                                .unwrap_or(SystemTime::UNIX_EPOCH);
                            good.push(StoredManifest {
                                name,
                                manifest,
                                modified,
                            });
                        }
                        Err(reason) => bad.push((file.clone(), reason)),
                    }
                }
            }
        }
        Ok((good, bad))
    }

    /// Every model in the store, sorted by name. Manifests that cannot be read are left out
    /// ([`Store::verify`] names them).
    pub fn list(&self) -> Result<Vec<ModelEntry>> {
        let (manifests, _) = self.manifests()?;
        let mut entries: Vec<ModelEntry> = manifests
            .into_iter()
            .map(|s| ModelEntry {
                digest: s.manifest.model_digest(),
                size: s.manifest.total_size(),
                format: s.manifest.format(),
                recipe: s.manifest.is_recipe(),
                modified: s.modified,
                name: s.name,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The manifest of `name` (`name[:tag]`).
    pub fn show(&self, name: &str) -> Result<Manifest> {
        self.read_manifest(&ModelRef::parse(name)?)
    }

    /// Removes the manifest of `name`, then garbage-collects blobs no manifest refers to.
    pub fn rm(&self, name: &str) -> Result<RemoveReport> {
        let name = ModelRef::parse(name)?;
        let path = self.manifest_path(&name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    what: name.to_string(),
                    reason: format!("no such name in the store at {}", self.root.display()),
                })
            }
            Err(e) => return Err(e).at(&path),
        }
        // Empty model and namespace directories go too; a failure only leaves an empty folder.
        if let Some(model_dir) = path.parent() {
            if fs::remove_dir(model_dir).is_ok() {
                if let Some(ns_dir) = model_dir.parent() {
                    let _ = fs::remove_dir(ns_dir);
                }
            }
        }
        let gc = self.gc()?;
        Ok(RemoveReport { removed: name, gc })
    }

    /// Removes blobs and snapshot directories no manifest refers to, and leftovers of writers
    /// that died (`tmp/`, download locks). Partial downloads (`*.part`) are kept for resuming.
    ///
    /// It never waits: while a pull, import or create is writing, or while a manifest cannot be
    /// read (its blobs might still be wanted), nothing is removed and `deferred` says why.
    pub fn gc(&self) -> Result<GcReport> {
        let lock_path = self.root.join(LOCK);
        let lock = lock_file(&lock_path)?;
        if !FileExt::try_lock_exclusive(&lock).at(&lock_path)? {
            return Ok(GcReport {
                deferred: Some(
                    "another pull, import or create is writing to the store; run gc again later"
                        .into(),
                ),
                ..GcReport::default()
            });
        }
        let (manifests, bad) = self.manifests()?;
        if let Some((path, reason)) = bad.first() {
            return Ok(GcReport {
                deferred: Some(format!(
                    "manifest {} cannot be read ({reason}); no blob was removed",
                    path.display()
                )),
                ..GcReport::default()
            });
        }
        let referenced: BTreeSet<Digest> = manifests
            .iter()
            .flat_map(|s| s.manifest.layers.iter().map(|l| l.digest.clone()))
            .collect();
        let snapshots: BTreeSet<String> = manifests
            .iter()
            .filter(|s| s.manifest.format() == ModelFormat::Safetensors)
            .map(|s| s.manifest.model_digest().hex().to_string())
            .collect();
        let mut report = GcReport::default();
        for path in read_dir_sorted(&self.dir(BLOBS))? {
            let Some(digest) = Digest::from_blob_file_name(&file_name(&path)) else {
                continue;
            };
            if referenced.contains(&digest) {
                continue;
            }
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).at(&path)?;
            report.removed.push(digest);
            report.freed_bytes += size;
        }
        for path in read_dir_sorted(&self.dir(SNAPSHOTS))? {
            if !snapshots.contains(&file_name(&path)) {
                fs::remove_dir_all(&path).at(&path)?;
            }
        }
        // With the exclusive lock held no writer is active, so these are leftovers.
        for path in read_dir_sorted(&self.dir(TMP))? {
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
        for path in read_dir_sorted(&self.dir(PARTIAL))? {
            if file_name(&path).ends_with(".lock") {
                let _ = fs::remove_file(&path);
            }
        }
        drop(lock);
        Ok(report)
    }

    /// Copies the manifest of `src` to `dst` (replacing `dst` if it exists); blobs are shared.
    pub fn cp(&self, src: &str, dst: &str) -> Result<Manifest> {
        let src = ModelRef::parse(src)?;
        let dst = ModelRef::parse(dst)?;
        let _lock = self.writer_lock()?;
        let mut manifest = self.read_manifest(&src)?;
        manifest.name = dst.name();
        manifest.tag = dst.tag().to_string();
        manifest.created = crate::manifest::now_rfc3339();
        self.write_manifest(&manifest)?;
        Ok(manifest)
    }

    /// Re-hashes every blob and checks that every layer of every manifest is present.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with_progress(&mut |_| {})
    }

    /// [`Store::verify`], reporting each blob's hashing progress (`file` is the digest).
    pub fn verify_with_progress(
        &self,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<VerifyReport> {
        let (manifests, bad) = self.manifests()?;
        let mut refs: BTreeMap<Digest, Vec<ModelRef>> = BTreeMap::new();
        for s in &manifests {
            for layer in &s.manifest.layers {
                let names = refs.entry(layer.digest.clone()).or_default();
                if !names.contains(&s.name) {
                    names.push(s.name.clone());
                }
            }
        }
        let mut report = VerifyReport {
            bad_manifests: bad,
            ..VerifyReport::default()
        };
        let mut present = BTreeSet::new();
        for path in read_dir_sorted(&self.dir(BLOBS))? {
            let Some(digest) = Digest::from_blob_file_name(&file_name(&path)) else {
                continue;
            };
            let total = fs::metadata(&path).map(|m| m.len()).ok();
            let label = digest.to_string();
            let mut reader = ProgressReader {
                inner: File::open(&path).at(&path)?,
                done: 0,
                total,
                file: &label,
                progress: &mut *progress,
            };
            let mut hasher = sha2::Sha256::default();
            crate::digest::hash_into(&mut reader, &mut hasher).at(&path)?;
            let actual = Digest::from_hasher(hasher);
            report.checked_blobs += 1;
            if actual != digest {
                report.problems.push(BlobProblem {
                    referenced_by: refs.get(&digest).cloned().unwrap_or_default(),
                    digest: digest.clone(),
                    path: path.clone(),
                    kind: BlobProblemKind::Corrupt { actual },
                });
            }
            present.insert(digest);
        }
        for (digest, names) in &refs {
            if !present.contains(digest) {
                report.problems.push(BlobProblem {
                    digest: digest.clone(),
                    path: self.blob_path(digest),
                    kind: BlobProblemKind::Missing,
                    referenced_by: names.clone(),
                });
            }
        }
        Ok(report)
    }

    /// Imports a GGUF file or a safetensors directory under `name` (`name[:tag]`).
    pub fn import(&self, path: &Path, name: &str) -> Result<Manifest> {
        if fs::metadata(path).at(path)?.is_dir() {
            self.import_safetensors_dir(path, name)
        } else {
            self.import_gguf(path, name)
        }
    }

    /// Copies a GGUF file into the store (hashing while copying) and names it.
    pub fn import_gguf(&self, path: &Path, name: &str) -> Result<Manifest> {
        let name = ModelRef::parse(name)?;
        if !is_gguf(path)? {
            return Err(Error::NotGguf { path: path.into() });
        }
        let _lock = self.writer_lock()?;
        let (digest, size) = self.add_blob_file(path)?;
        let filename = path
            .file_name()
            .and_then(|f| f.to_str())
            .filter(|f| validate_rel_filename(f).is_ok())
            .map(str::to_string);
        let manifest = Manifest::new(
            &name,
            vec![Layer {
                media_type: media_type::GGUF.into(),
                digest,
                size,
                filename,
            }],
        );
        self.write_manifest(&manifest)?;
        Ok(manifest)
    }

    /// Stores every file of a Hugging Face safetensors directory (`config.json`, tokenizer
    /// files, `*.safetensors`, …; hidden files and subdirectories are skipped) as a blob and
    /// names the set.
    pub fn import_safetensors_dir(&self, dir: &Path, name: &str) -> Result<Manifest> {
        let name = ModelRef::parse(name)?;
        let bad = |reason: &str| Error::BadSafetensorsDir {
            path: dir.into(),
            reason: reason.into(),
        };
        let files: Vec<PathBuf> = read_dir_sorted(dir)?
            .into_iter()
            .filter(|p| p.is_file() && !file_name(p).starts_with('.'))
            .collect();
        if !files.iter().any(|p| file_name(p) == "config.json") {
            return Err(bad("it has no config.json"));
        }
        if !files.iter().any(|p| file_name(p).ends_with(".safetensors")) {
            return Err(bad("it has no *.safetensors file"));
        }
        let _lock = self.writer_lock()?;
        let mut layers = Vec::new();
        for path in &files {
            let filename = file_name(path);
            validate_rel_filename(&filename)?;
            let (digest, size) = self.add_blob_file(path)?;
            layers.push(Layer {
                media_type: media_type_for_file(&filename).into(),
                digest,
                size,
                filename: Some(filename),
            });
        }
        let manifest = Manifest::new(&name, layers);
        self.write_manifest(&manifest)?;
        Ok(manifest)
    }
}

/// Parses and validates manifest bytes; the error is the reason.
fn parse_manifest(bytes: &[u8]) -> std::result::Result<Manifest, String> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    manifest.validate()?;
    Ok(manifest)
}

/// Whether the file starts with the GGUF magic.
pub(crate) fn is_gguf(path: &Path) -> Result<bool> {
    let mut file = File::open(path).at(path)?;
    let mut magic = [0u8; 4];
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"GGUF"),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e).at(path),
    }
}

/// Opens (creating) a lock file without truncating it.
pub(crate) fn lock_file(path: &Path) -> Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at(path)
}

/// Entries of a directory, sorted; a missing directory has none.
pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(dir),
    };
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.at(dir)?.path());
    }
    paths.sort();
    Ok(paths)
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Makes a directory's entries durable after a rename. Best effort: some file systems refuse
/// to fsync a directory, and the data itself was already fsynced.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Puts a relative symbolic link to a blob at `link` (relative, so the store can move);
/// `depth` is the number of components of the file name under the snapshot directory.
#[cfg(unix)]
pub(crate) fn link_blob(_blob: &Path, digest: &Digest, depth: usize, link: &Path) -> Result<()> {
    let mut target = PathBuf::new();
    for _ in 0..depth + 1 {
        target.push("..");
    }
    target.push(BLOBS);
    target.push(digest.blob_file_name());
    std::os::unix::fs::symlink(&target, link).at(link)
}

/// Puts a hard link to a blob at `link`, or a copy where hard links are refused.
#[cfg(not(unix))]
pub(crate) fn link_blob(blob: &Path, _digest: &Digest, _depth: usize, link: &Path) -> Result<()> {
    fs::hard_link(blob, link)
        .or_else(|_| fs::copy(blob, link).map(|_| ()))
        .at(link)
}

/// A reader that reports its progress.
pub(crate) struct ProgressReader<'a, R> {
    pub inner: R,
    pub done: u64,
    pub total: Option<u64>,
    pub file: &'a str,
    pub progress: &'a mut dyn FnMut(&Progress),
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(&Progress {
            file: self.file.to_string(),
            done: self.done,
            total: self.total,
        });
        Ok(n)
    }
}
