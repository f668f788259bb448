//! Recipes: the shipped example Morifiles, recipes on recipes, adapters, and FROM errors.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{bytes, fake_gguf, sha256_hex, write};
use mori_store::{media_type, AdapterFormat, Error, Message, Morifile, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn default_model_sha() -> String {
    sha256_hex(&fs::read(repo_root().join("assets/default-model/mori-fortunes.gguf")).unwrap())
}

#[test]
fn creates_the_three_example_recipes() {
    let (_dir, store) = store();
    let base = default_model_sha();
    for (file, name) in [
        ("government.Morifile", "city-services"),
        ("finance.Morifile", "bank-helper:v1"),
        ("manufacturing.Morifile", "line-assist"),
    ] {
        let path = repo_root().join("examples/recipes").join(file);
        let parsed = Morifile::parse(&fs::read_to_string(&path).unwrap(), file).unwrap();
        assert_eq!(parsed.from, "../../assets/default-model/mori-fortunes.gguf");
        assert!(
            parsed.system.as_ref().unwrap().len() > 200,
            "{file}: a realistic system prompt"
        );
        assert!(parsed.messages.len() >= 2, "{file}: an example exchange");
        assert_eq!(parsed.messages[0].role, "user");
        assert_eq!(parsed.messages[1].role, "assistant");
        assert!(parsed.parameters.temperature.is_some() && !parsed.parameters.stop.is_empty());
        assert_eq!(parsed.licenses.len(), 1);

        let manifest = store.create(name, &path).unwrap();
        assert_eq!(manifest.from.as_ref().unwrap().hex(), base, "{file}");
        assert_eq!(manifest.layers[0].media_type, media_type::GGUF);
        assert_eq!(manifest.layers[0].digest.hex(), base);
        let media: Vec<&str> = manifest
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect();
        for wanted in [
            media_type::PARAMS,
            media_type::SYSTEM,
            media_type::MESSAGES,
            media_type::LICENSE,
        ] {
            assert!(media.contains(&wanted), "{file}: {wanted} in {media:?}");
        }

        let resolved = store.resolve(name).unwrap();
        assert_eq!(sha256_hex(&fs::read(&resolved.path).unwrap()), base);
        let recipe = resolved.recipe.unwrap();
        assert_eq!(recipe.parameters, parsed.parameters);
        assert_eq!(recipe.system, parsed.system);
        assert_eq!(recipe.messages, parsed.messages);
        assert_eq!(recipe.licenses, parsed.licenses);
        assert_eq!(recipe.from.as_ref().unwrap().hex(), base);
    }
    let list = store.list().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|e| e.recipe && e.digest.hex() == base));
    // The base blob is stored once; the digest alone gives the bare model, without a recipe.
    let bare = store.resolve(&format!("sha256:{base}")).unwrap();
    assert!(bare.recipe.is_none() && bare.manifest.is_none());
    assert_eq!(sha256_hex(&fs::read(&bare.path).unwrap()), base);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn a_recipe_on_a_recipe_inherits_and_overrides() {
    let (dir, store) = store();
    write(&dir.path().join("base.gguf"), &fake_gguf(1, 4000));
    store.import(&dir.path().join("base.gguf"), "base").unwrap();
    let first = dir.path().join("first/Morifile");
    write(
        &first,
        b"FROM base\nPARAMETER temperature 0.5\nPARAMETER seed 3\nPARAMETER stop END\nSYSTEM Be brief.\nTEMPLATE {{ .Prompt }}\nMESSAGE user hi\nMESSAGE assistant hello\n",
    );
    let m1 = store.create("first", &first).unwrap();
    let second = dir.path().join("second.Morifile");
    write(
        &second,
        b"from first\nparameter TEMPERATURE 0.9\nsystem \"Be very brief.\"\n",
    );
    let m2 = store.create("second", &second).unwrap();
    assert_eq!(m2.from, m1.from);
    let recipe = store.resolve("second").unwrap().recipe.unwrap();
    assert_eq!(recipe.parameters.temperature, Some(0.9));
    assert_eq!(recipe.parameters.seed, Some(3));
    assert_eq!(recipe.parameters.stop, vec!["END".to_string()]);
    assert_eq!(recipe.system.as_deref(), Some("Be very brief."));
    assert_eq!(recipe.template.as_deref(), Some("{{ .Prompt }}"));
    assert_eq!(
        recipe.messages,
        vec![
            Message {
                role: "user".into(),
                content: "hi".into()
            },
            Message {
                role: "assistant".into(),
                content: "hello".into()
            }
        ]
    );
    // Removing the recipes keeps the base model; removing the base then empties the store.
    store.rm("first").unwrap();
    store.rm("second").unwrap();
    assert!(store.resolve("base").is_ok());
    store.rm("base").unwrap();
    assert_eq!(fs::read_dir(store.root().join("blobs")).unwrap().count(), 0);
}

#[test]
fn adapters_are_stored_and_pinned() {
    let (dir, store) = store();
    let root = dir.path();
    write(&root.join("base.gguf"), &fake_gguf(1, 4000));
    write(&root.join("lora.gguf"), &fake_gguf(2, 3000));
    write(
        &root.join("peft/adapter_model.safetensors"),
        &bytes(3, 2000),
    );
    write(&root.join("peft/adapter_config.json"), b"{\"r\":8}");
    write(&root.join("single/adapter.safetensors"), &bytes(4, 1000));
    let morifile = root.join("Morifile");
    write(&morifile, b"FROM ./base.gguf\nADAPTER ./lora.gguf\nADAPTER peft\nADAPTER single/adapter.safetensors\n");
    store.create("tuned", &morifile).unwrap();
    let recipe = store.resolve("tuned").unwrap().recipe.unwrap();
    assert_eq!(recipe.adapters.len(), 3);
    assert_eq!(recipe.adapters[0].format, AdapterFormat::Gguf);
    assert_eq!(
        fs::read(&recipe.adapters[0].path).unwrap(),
        fake_gguf(2, 3000)
    );
    assert_eq!(recipe.adapters[1].format, AdapterFormat::Safetensors);
    assert_eq!(fs::read(&recipe.adapters[1].path).unwrap(), bytes(3, 2000));
    assert_eq!(
        fs::read(recipe.adapters[1].config.as_ref().unwrap()).unwrap(),
        b"{\"r\":8}"
    );
    assert_eq!(recipe.adapters[2].format, AdapterFormat::Safetensors);
    assert!(recipe.adapters[2].config.is_none());
    // The adapters are blobs: deleting the originals changes nothing.
    fs::remove_dir_all(root.join("peft")).unwrap();
    assert!(store.verify().unwrap().is_ok());

    // A PEFT directory without its config is refused, naming what is missing.
    write(&root.join("bad/adapter_model.safetensors"), b"x");
    write(&morifile, b"FROM ./base.gguf\nADAPTER bad\n");
    let msg = store.create("bad", &morifile).unwrap_err().to_string();
    assert!(
        msg.contains("ADAPTER bad") && msg.contains("adapter_config.json"),
        "{msg}"
    );
}

#[test]
fn bad_from_and_bad_morifiles_are_clear_errors() {
    let (dir, store) = store();
    let morifile = dir.path().join("Morifile");
    write(&morifile, b"FROM no-such-model\n");
    let err = store.create("x", &morifile).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Recipe { .. }), "{msg}");
    assert!(
        msg.contains("FROM no-such-model") && msg.contains("not found"),
        "{msg}"
    );
    write(&dir.path().join("notes.txt"), b"not a model");
    write(&morifile, b"FROM notes.txt\n");
    let msg = store.create("x", &morifile).unwrap_err().to_string();
    assert!(msg.contains("not a GGUF file"), "{msg}");
    // A parse error names the file and the line.
    write(&morifile, b"FROM x\n\nPARAMETER warmth 3\n");
    let err = store.create("x", &morifile).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Morifile { line: 3, .. }), "{msg}");
    assert!(
        msg.contains("Morifile:3") && msg.contains("warmth"),
        "{msg}"
    );
    assert!(matches!(
        store.create("../x", &morifile),
        Err(Error::InvalidName { .. })
    ));
    // Nothing was named.
    assert!(store.list().unwrap().is_empty());
}
