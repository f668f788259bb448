//! The model store on the command line: `list`, `show`, `rm`, `cp`, `verify`,
//! `pull`, `import`, `create`, and the resolution every MODEL argument goes
//! through (a file path, a `name[:tag]` in the store, or a digest).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use mori_model::Model;
use mori_store::{ModelFormat, PullRequest, ResolvedModel, Store};

/// What a MODEL argument names.
pub fn resolve(arg: &str) -> Result<ResolvedModel> {
    // A file on disk needs no store (and must not create one).
    let p = Path::new(arg);
    let hf_dir = p.is_dir() && p.join("config.json").is_file();
    if p.is_file() || hf_dir {
        return Ok(ResolvedModel {
            path: p.to_path_buf(),
            format: if hf_dir {
                ModelFormat::Safetensors
            } else {
                ModelFormat::Gguf
            },
            digest: None,
            name: None,
            manifest: None,
            recipe: None,
        });
    }
    let store = Store::from_env()?;
    store.resolve(arg).with_context(|| {
        format!(
            "{arg:?} is neither a model file nor a model in the store at {} (`mori list` shows them)",
            store.root().display()
        )
    })
}

/// The GGUF file a MODEL argument names, for the commands that need one.
pub fn gguf(arg: &str) -> Result<PathBuf> {
    let r = resolve(arg)?;
    if r.format != ModelFormat::Gguf {
        bail!(
            "{arg:?} is a safetensors model; convert it first: mori convert {} OUT.gguf",
            r.path.display()
        );
    }
    Ok(r.path)
}

/// What a MODEL argument names, for [`mori_model::Model::load`]: a GGUF file
/// or a Hugging Face directory.
pub fn model_path(arg: &str) -> Result<PathBuf> {
    Ok(resolve(arg)?.path)
}

/// A store recipe as the server applies it.
pub fn server_recipe(r: &mori_store::Recipe) -> mori_server::models::Recipe {
    let p = &r.parameters;
    mori_server::models::Recipe {
        system: r.system.clone(),
        template: r.template.clone(),
        messages: r
            .messages
            .iter()
            .map(|m| (m.role.clone(), m.content.clone()))
            .collect(),
        defaults: mori_server::models::Defaults {
            temperature: p.temperature,
            top_k: p.top_k.map(|v| v as usize),
            top_p: p.top_p,
            min_p: p.min_p,
            repeat_penalty: p.repeat_penalty,
            repeat_last_n: p.repeat_last_n.and_then(|v| usize::try_from(v).ok()),
            seed: p.seed,
            num_ctx: p.num_ctx.map(|v| v as usize),
            num_predict: p.num_predict.and_then(|v| usize::try_from(v).ok()),
            stop: p.stop.clone(),
        },
        license: (!r.licenses.is_empty()).then(|| r.licenses.join("\n\n")),
    }
}

/// Every GGUF model of the store, as the server offers them.
pub fn all_server_models() -> Result<Vec<mori_server::models::ModelSpec>> {
    let store = Store::from_env()?;
    let mut out = Vec::new();
    for e in store.list()? {
        out.push(server_model(&store, &e.name.to_string())?);
    }
    Ok(out)
}

/// The store model `name` as the server offers it.
pub fn server_model(store: &Store, name: &str) -> Result<mori_server::models::ModelSpec> {
    let r = store.resolve(name)?;
    Ok(mori_server::models::ModelSpec {
        name: r
            .name
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_else(|| name.to_string()),
        path: r.path.clone(),
        digest: r.digest.as_ref().map(|d| d.to_string()),
        recipe: r.recipe.as_ref().map(server_recipe),
    })
}

fn human_size(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.1} kB", n / 1e3)
    }
}

#[derive(Args)]
pub struct ListArgs {}

pub fn list(_: ListArgs) -> Result<()> {
    let store = Store::from_env()?;
    let entries = store.list()?;
    println!(
        "{:<40} {:<14} {:>10}  {:<20} KIND",
        "NAME", "DIGEST", "SIZE", "MODIFIED"
    );
    for e in entries {
        let modified = chrono::DateTime::<chrono::Local>::from(e.modified)
            .format("%Y-%m-%d %H:%M")
            .to_string();
        let kind = match (e.recipe, e.format) {
            (true, _) => "recipe",
            (false, ModelFormat::Gguf) => "gguf",
            (false, ModelFormat::Safetensors) => "safetensors",
        };
        println!(
            "{:<40} {:<14} {:>10}  {:<20} {kind}",
            e.name.to_string(),
            e.digest.short(),
            human_size(e.size),
            modified
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct ShowArgs {
    /// A name[:tag] in the store, a digest, or a file.
    model: String,
}

pub fn show(a: ShowArgs) -> Result<()> {
    let r = resolve(&a.model)?;
    if let Some(n) = &r.name {
        println!("name          {n}");
    }
    if let Some(d) = &r.digest {
        println!("digest        {d}");
    }
    if let Some(m) = &r.manifest {
        println!(
            "size          {} ({} blobs)",
            human_size(m.total_size()),
            m.layers.len()
        );
        if let Some(s) = &m.source {
            println!("source        {} {} @ {}", s.endpoint, s.repo, s.revision);
        }
        for l in &m.layers {
            println!(
                "  layer       {} {} {}{}",
                l.media_type,
                l.digest,
                human_size(l.size),
                l.filename
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            );
        }
    }
    if r.format == ModelFormat::Gguf {
        let m = Model::load(&r.path)?;
        let hp = &m.hparams;
        println!("architecture  {}", m.info.arch);
        println!("parameters    {:.2} M", m.info.n_params as f64 / 1e6);
        println!("tensor types  {}", crate::commands::tensor_types(&m));
        println!("context       {}", hp.n_ctx_train);
        match mori_engine::chat::ChatTemplate::from_model(&m)? {
            Some(t) => println!("template      {} ({} bytes)", t.name(), t.source().len()),
            None => println!("template      none (a base model: text is continued)"),
        }
        if let Ok(Some(l)) = m.file().get_str("general.license") {
            println!("license       {l}");
        }
    } else {
        println!("format        safetensors (directory {})", r.path.display());
    }
    if let Some(rc) = &r.recipe {
        if let Some(f) = &rc.from {
            println!("from          {f}");
        }
        if let Some(s) = &rc.system {
            println!("system        {s}");
        }
        let params = serde_json::to_string(&rc.parameters)?;
        if params != "{}" {
            println!("parameters    {params}");
        }
        for m in &rc.messages {
            println!("message       {}: {}", m.role, m.content);
        }
        if rc.template.is_some() {
            println!("template      the recipe's own");
        }
        for ad in &rc.adapters {
            println!(
                "adapter       {} ({:?}, stored and pinned; not applied yet)",
                ad.digest, ad.format
            );
        }
        for l in &rc.licenses {
            println!("license       {}", l.lines().next().unwrap_or(""));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct RmArgs {
    /// Names to remove (their blobs go when nothing else uses them).
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn rm(a: RmArgs) -> Result<()> {
    let store = Store::from_env()?;
    for n in &a.names {
        let r = store.rm(n)?;
        println!(
            "deleted {} ({} blobs, {} freed)",
            r.removed,
            r.gc.removed.len(),
            human_size(r.gc.freed_bytes)
        );
        if let Some(why) = r.gc.deferred {
            println!("unused blobs are kept for now: {why}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct CpArgs {
    /// The model to copy (name[:tag] or digest).
    src: String,
    /// The new name[:tag]; the blobs are shared, not copied.
    dst: String,
}

pub fn cp(a: CpArgs) -> Result<()> {
    let store = Store::from_env()?;
    let m = store.cp(&a.src, &a.dst)?;
    println!("copied {} to {}:{}", a.src, m.name, m.tag);
    Ok(())
}

#[derive(Args)]
pub struct VerifyArgs {}

pub fn verify(_: VerifyArgs) -> Result<()> {
    let store = Store::from_env()?;
    let report = store.verify()?;
    for p in &report.problems {
        println!("{p}");
    }
    for (path, why) in &report.bad_manifests {
        println!("unreadable manifest {}: {why}", path.display());
    }
    if report.is_ok() {
        println!("{} blobs verified, all intact", report.checked_blobs);
        Ok(())
    } else {
        bail!(
            "{} of {} blobs are corrupt or missing, {} manifests unreadable",
            report.problems.len(),
            report.checked_blobs,
            report.bad_manifests.len()
        )
    }
}

#[derive(Args)]
pub struct PullArgs {
    /// ORG/REPO[:FILE_OR_QUANT]: a Hugging Face–style repository, optionally one
    /// file of it or a quantization (Q4_K_M, q8_0, ...) to pick among its GGUF files.
    repo: String,
    /// Branch, tag or commit (default: main); the commit it resolves to is pinned.
    #[arg(long)]
    revision: Option<String>,
    /// The hub (default: $HF_ENDPOINT, else https://huggingface.co), e.g. a mirror.
    #[arg(long)]
    endpoint: Option<String>,
    /// Store it under this name[:tag] instead of the repository's.
    #[arg(long)]
    name: Option<String>,
}

pub fn pull(a: PullArgs) -> Result<()> {
    let store = Store::from_env()?;
    let (repo, selector) = match a.repo.split_once(':') {
        Some((r, s)) if !s.is_empty() => (r.to_string(), Some(s.to_string())),
        _ => (a.repo.clone(), None),
    };
    let mut req = PullRequest::from_env(repo);
    req.selector = selector;
    req.revision = a.revision.clone();
    if let Some(e) = &a.endpoint {
        req.endpoint = e.clone();
    }
    req.name = a.name.clone();
    let bars = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template(
        "{msg:30!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
    )
    .expect("progress template");
    let mut current: Option<(String, indicatif::ProgressBar)> = None;
    let outcome = store.pull(&req, &mut |p| {
        if current.as_ref().is_none_or(|(f, _)| *f != p.file) {
            if let Some((_, b)) = current.take() {
                b.finish();
            }
            let b = bars.add(indicatif::ProgressBar::new(p.total.unwrap_or(0)));
            b.set_style(style.clone());
            b.set_message(p.file.clone());
            current = Some((p.file.clone(), b));
        }
        if let Some((_, b)) = &current {
            if let Some(t) = p.total {
                b.set_length(t);
            }
            b.set_position(p.done);
        }
    })?;
    if let Some((_, b)) = current.take() {
        b.finish();
    }
    let source = outcome.manifest.source.as_ref();
    println!(
        "pulled {} ({}, {} of {} files downloaded, {}){}",
        outcome.name,
        outcome.manifest.model_digest(),
        outcome.downloaded.len(),
        outcome.manifest.layers.len(),
        human_size(outcome.manifest.total_size()),
        source
            .map(|s| format!(", pinned at {} {}", s.repo, s.revision))
            .unwrap_or_default()
    );
    Ok(())
}

#[derive(Args)]
pub struct ImportArgs {
    /// A GGUF file, or a directory of safetensors + config.json + tokenizer.json.
    path: PathBuf,
    /// The name[:tag] to store it under.
    name: String,
}

pub fn import(a: ImportArgs) -> Result<()> {
    let store = Store::from_env()?;
    let m = store.import(&a.path, &a.name)?;
    println!(
        "imported {} as {}:{} ({})",
        a.path.display(),
        m.name,
        m.tag,
        m.model_digest()
    );
    Ok(())
}

#[derive(Args)]
pub struct CreateArgs {
    /// The name[:tag] of the new model.
    name: String,
    /// The recipe: FROM, PARAMETER, SYSTEM, TEMPLATE, MESSAGE, ADAPTER, LICENSE.
    #[arg(short = 'f', long = "file", default_value = "Morifile")]
    file: PathBuf,
}

pub fn create(a: CreateArgs) -> Result<()> {
    let store = Store::from_env()?;
    let m = store.create(&a.name, &a.file)?;
    println!(
        "created {}:{} from {} ({})",
        m.name,
        m.tag,
        a.file.display(),
        m.model_digest()
    );
    Ok(())
}
