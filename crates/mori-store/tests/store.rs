//! The store without a hub: names, imports, list/show/rm/cp, garbage collection, verify, resolve.

mod common;

use std::fs;

use common::{bytes, fake_gguf, sha256_hex, write};
use mori_store::{media_type, BlobProblemKind, Error, ModelFormat, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn blob_count(store: &Store) -> usize {
    fs::read_dir(store.root().join("blobs")).unwrap().count()
}

#[test]
fn names_that_escape_the_store_are_refused() {
    let (dir, store) = store();
    let gguf = dir.path().join("m.gguf");
    write(&gguf, &fake_gguf(1, 1000));
    for bad in [
        "../x", "/abs", "a/../b", "a\\b", "a//b", "", "a/b/c", "x:../y", "a\0b", "a b", "..", ".",
    ] {
        let err = store.import(&gguf, bad).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err}");
        assert!(err.to_string().contains("invalid model name"), "{err}");
        assert!(
            matches!(store.show(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(store.rm(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(store.cp("whatever", bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
    }
    // Nothing was written anywhere, inside or outside the store.
    assert_eq!(blob_count(&store), 0);
    assert!(fs::read_dir(store.root().join("manifests"))
        .unwrap()
        .next()
        .is_none());
    assert!(!dir.path().join("x").exists() && !dir.path().join("y").exists());
}

#[test]
fn imports_gguf_and_safetensors_directories() {
    let (dir, store) = store();
    let data = fake_gguf(7, 200 * 1024);
    let gguf = dir.path().join("in/model.gguf");
    write(&gguf, &data);
    let m = store.import(&gguf, "Tiny:V1").unwrap();
    assert_eq!((m.name.as_str(), m.tag.as_str()), ("tiny", "v1"));
    let layer = m.gguf_layer().unwrap();
    assert_eq!(layer.digest.hex(), sha256_hex(&data));
    assert_eq!(layer.filename.as_deref(), Some("model.gguf"));
    assert_eq!(fs::read(store.blob_path(&layer.digest)).unwrap(), data);
    // A file that is not GGUF is refused.
    let text = dir.path().join("notes.txt");
    write(&text, b"hello");
    assert!(matches!(
        store.import(&text, "notes"),
        Err(Error::NotGguf { .. })
    ));

    // A safetensors directory: every file becomes a blob with its name.
    let st = dir.path().join("hf");
    write(&st.join("config.json"), b"{\"model_type\":\"llama\"}");
    write(&st.join("tokenizer.json"), b"{}");
    write(&st.join("model.safetensors"), &bytes(3, 50_000));
    write(&st.join(".hidden"), b"skip me");
    write(&st.join("sub/ignored.bin"), b"skip me");
    let m = store.import(&st, "org/hf-model").unwrap();
    let files: Vec<(&str, &str)> = m
        .layers
        .iter()
        .map(|l| (l.filename.as_deref().unwrap(), l.media_type.as_str()))
        .collect();
    assert_eq!(
        files,
        [
            ("config.json", media_type::CONFIG),
            ("model.safetensors", media_type::SAFETENSORS),
            ("tokenizer.json", media_type::TOKENIZER)
        ]
    );
    assert_eq!(m.format(), ModelFormat::Safetensors);
    let resolved = store.resolve("org/hf-model").unwrap();
    assert_eq!(resolved.format, ModelFormat::Safetensors);
    assert_eq!(
        fs::read(resolved.path.join("model.safetensors")).unwrap(),
        bytes(3, 50_000)
    );
    // A directory without config.json is refused, naming what is missing.
    let empty = dir.path().join("empty");
    write(&empty.join("model.safetensors"), b"x");
    let msg = store.import(&empty, "e").unwrap_err().to_string();
    assert!(
        msg.contains("config.json") && msg.contains("empty"),
        "{msg}"
    );
}

#[test]
fn list_show_cp_rm_and_garbage_collection() {
    let (dir, store) = store();
    let a = fake_gguf(1, 10_000);
    let b = fake_gguf(2, 20_000);
    write(&dir.path().join("a.gguf"), &a);
    write(&dir.path().join("b.gguf"), &b);
    store.import(&dir.path().join("a.gguf"), "alpha").unwrap();
    store
        .import(&dir.path().join("b.gguf"), "org/beta:q8")
        .unwrap();
    store.cp("alpha", "alpha:copy").unwrap();

    let list = store.list().unwrap();
    let names: Vec<String> = list.iter().map(|e| e.name.to_string()).collect();
    assert_eq!(names, ["alpha:copy", "alpha:latest", "org/beta:q8"]);
    assert_eq!(list[0].digest, list[1].digest);
    assert_eq!(list[1].digest.hex(), sha256_hex(&a));
    assert_eq!(list[2].size, 20_000);
    assert!(list
        .iter()
        .all(|e| e.format == ModelFormat::Gguf && !e.recipe));
    assert!(list[0].modified > std::time::UNIX_EPOCH);

    let shown = store.show("alpha:copy").unwrap();
    assert_eq!((shown.name.as_str(), shown.tag.as_str()), ("alpha", "copy"));
    assert!(matches!(store.show("nope"), Err(Error::NotFound { .. })));
    assert!(matches!(store.cp("nope", "x"), Err(Error::NotFound { .. })));

    // Removing one of two names of a blob keeps the blob.
    let report = store.rm("alpha").unwrap();
    assert_eq!(report.removed.to_string(), "alpha:latest");
    assert!(report.gc.removed.is_empty());
    assert_eq!(blob_count(&store), 2);
    // Removing the last name collects it.
    let report = store.rm("alpha:copy").unwrap();
    assert_eq!(report.gc.removed.len(), 1);
    assert_eq!(report.gc.removed[0].hex(), sha256_hex(&a));
    assert_eq!(report.gc.freed_bytes, 10_000);
    assert_eq!(blob_count(&store), 1);
    assert!(!store.root().join("manifests/library/alpha").exists());
    assert!(matches!(store.rm("alpha"), Err(Error::NotFound { .. })));
    assert_eq!(store.list().unwrap().len(), 1);
    // The other model still resolves.
    assert_eq!(
        fs::read(store.resolve("org/beta:q8").unwrap().path).unwrap(),
        b
    );
}

#[test]
fn garbage_collection_waits_for_writers_and_keeps_blobs_of_unreadable_manifests() {
    let (dir, store) = store();
    write(&dir.path().join("a.gguf"), &fake_gguf(1, 1000));
    store.import(&dir.path().join("a.gguf"), "a").unwrap();
    // A stray blob nobody names.
    let (stray, _) = store.add_blob_bytes(b"stray").unwrap();
    // While a manifest cannot be read, nothing is removed.
    let bad = store.root().join("manifests/library/broken/latest.json");
    write(&bad, b"{ not json");
    let report = store.gc().unwrap();
    assert!(report.removed.is_empty());
    assert!(
        report.deferred.as_deref().unwrap().contains("broken"),
        "{report:?}"
    );
    assert!(store.has_blob(&stray));
    // verify names the unreadable manifest.
    let v = store.verify().unwrap();
    assert_eq!(v.bad_manifests.len(), 1);
    assert!(!v.is_ok());
    fs::remove_file(&bad).unwrap();
    // While a writer (a pull, import or create) holds the store lock shared, gc does not wait
    // and removes nothing: the writer's blobs may not be named by a manifest yet.
    {
        use fs4::fs_std::FileExt;
        let lock = fs::File::open(store.root().join("store.lock")).unwrap();
        FileExt::lock_shared(&lock).unwrap();
        let report = store.gc().unwrap();
        assert!(report.removed.is_empty());
        assert!(
            report.deferred.as_deref().unwrap().contains("writing"),
            "{report:?}"
        );
        assert!(store.has_blob(&stray));
    }
    let report = store.gc().unwrap();
    assert_eq!(report.removed, vec![stray.clone()]);
    assert!(!store.has_blob(&stray));
}

#[test]
fn verify_names_corrupt_and_missing_blobs_and_their_manifests() {
    let (dir, store) = store();
    let data = fake_gguf(5, 64 * 1024);
    write(&dir.path().join("m.gguf"), &data);
    let m = store.import(&dir.path().join("m.gguf"), "m").unwrap();
    store.cp("m", "org/other:v2").unwrap();
    write(&dir.path().join("n.gguf"), &fake_gguf(6, 1000));
    let n = store.import(&dir.path().join("n.gguf"), "n").unwrap();
    assert!(store.verify().unwrap().is_ok());

    // Flip one byte of m's blob; remove n's.
    let digest = m.gguf_layer().unwrap().digest.clone();
    let path = store.blob_path(&digest);
    let mut bytes = fs::read(&path).unwrap();
    bytes[1000] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let n_digest = n.gguf_layer().unwrap().digest.clone();
    fs::remove_file(store.blob_path(&n_digest)).unwrap();

    let report = store.verify().unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.checked_blobs, 1);
    assert_eq!(report.problems.len(), 2);
    let corrupt = report.problems.iter().find(|p| p.digest == digest).unwrap();
    assert!(matches!(corrupt.kind, BlobProblemKind::Corrupt { .. }));
    let names: Vec<String> = corrupt
        .referenced_by
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(names, ["m:latest", "org/other:v2"]);
    let text = corrupt.to_string();
    assert!(
        text.contains(&digest.to_string())
            && text.contains("corrupt")
            && text.contains("org/other:v2"),
        "{text}"
    );
    let missing = report
        .problems
        .iter()
        .find(|p| p.digest == n_digest)
        .unwrap();
    assert_eq!(missing.kind, BlobProblemKind::Missing);
    assert!(missing.to_string().contains("n:latest"));
    // Resolving a name whose blob is missing is an error naming the blob.
    assert!(matches!(store.resolve("n"), Err(Error::MissingBlob { .. })));
}

#[test]
fn resolves_by_name_digest_prefix_and_path() {
    let (dir, store) = store();
    let data = fake_gguf(9, 5000);
    let file = dir.path().join("m.gguf");
    write(&file, &data);
    store.import(&file, "org/m:q4").unwrap();
    store.import(&file, "org/m").unwrap();
    let hex = sha256_hex(&data);

    let by_tag = store.resolve("org/m:q4").unwrap();
    assert_eq!(by_tag.name.as_ref().unwrap().to_string(), "org/m:q4");
    assert_eq!(by_tag.digest.as_ref().unwrap().hex(), hex);
    assert_eq!(fs::read(&by_tag.path).unwrap(), data);
    assert!(by_tag.recipe.is_none());
    let latest = store.resolve("org/m").unwrap();
    assert_eq!(latest.name.as_ref().unwrap().tag(), "latest");
    assert_eq!(latest.path, by_tag.path);

    let full = store.resolve(&format!("sha256:{hex}")).unwrap();
    assert_eq!(full.path, by_tag.path);
    assert!(full.manifest.is_some());
    assert_eq!(
        store
            .resolve(&format!("sha256:{}", &hex[..12]))
            .unwrap()
            .path,
        by_tag.path
    );
    assert_eq!(store.resolve(&hex[..14]).unwrap().path, by_tag.path);
    // Too short a prefix, an unknown digest and an unknown name are clear errors.
    assert!(matches!(
        store.resolve(&format!("sha256:{}", &hex[..8])),
        Err(Error::InvalidDigest { .. })
    ));
    assert!(matches!(
        store.resolve(&format!("sha256:{}", "0".repeat(64))),
        Err(Error::NotFound { .. })
    ));
    let msg = store.resolve("nothing-here").unwrap_err().to_string();
    assert!(
        msg.contains("nothing-here") && msg.contains("no such name"),
        "{msg}"
    );

    // A path outside the store resolves to itself.
    let by_path = store.resolve(file.to_str().unwrap()).unwrap();
    assert_eq!(by_path.path, file);
    assert!(by_path.digest.is_none() && by_path.manifest.is_none());
    assert_eq!(by_path.format, ModelFormat::Gguf);

    // Two blobs sharing a 12-digit prefix make that prefix ambiguous: find such a pair cheaply
    // by planting a second blob whose name shares the prefix (a blob is only named by its file).
    let twin = format!("{}{}", &hex[..12], "f".repeat(52));
    fs::write(
        store.root().join("blobs").join(format!("sha256-{twin}")),
        b"GGUFx",
    )
    .unwrap();
    let err = store.resolve(&hex[..12]).unwrap_err();
    assert!(matches!(err, Error::AmbiguousDigest { .. }), "{err}");
    assert!(err.to_string().contains(&twin), "{err}");
    assert_eq!(store.resolve(&hex[..13]).unwrap().path, by_tag.path);
}

#[test]
fn open_creates_the_layout_and_from_env_uses_mori_home() {
    let (dir, store) = store();
    for sub in ["blobs", "manifests", "partial", "snapshots", "tmp"] {
        assert!(store.root().join(sub).is_dir(), "{sub}");
    }
    // Only this test sets MORI_HOME, and nothing else in this binary reads it.
    let home = dir.path().join("home");
    std::env::set_var("MORI_HOME", &home);
    assert_eq!(Store::default_root().unwrap(), home);
    assert_eq!(Store::from_env().unwrap().root(), home);
    std::env::remove_var("MORI_HOME");
    if let Some(h) = std::env::var_os("HOME") {
        assert_eq!(
            Store::default_root().unwrap(),
            std::path::Path::new(&h).join(".mori")
        );
    }
}
