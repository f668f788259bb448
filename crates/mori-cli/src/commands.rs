//! One function per subcommand; each turns arguments into library calls and
//! prints the result.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use mori_engine::Session;
use mori_kernels::ThreadPool;
use mori_model::random::{write_random_model, FileType, MoeSpec, RandomSpec};
use mori_model::random_hf::{write_random_hf, HfDtype};
use mori_model::{Logits, Model};

pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[derive(Args)]
pub struct TokenizeArgs {
    /// A .gguf file, a name[:tag] in the store, or a digest.
    model: String,
    /// The text to tokenize.
    text: String,
    /// Do not add BOS/EOS even where the model asks for them.
    #[arg(long)]
    no_special: bool,
    /// Treat special-token text such as `<|im_start|>` as plain text.
    #[arg(long)]
    no_parse_special: bool,
}

pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let r = crate::store::resolve(&a.model)?;
    let tok = if r.format == mori_store::ModelFormat::Gguf {
        let f = mori_formats::GgufFile::open(&r.path)?;
        mori_model::Tokenizer::from_gguf(&f).with_context(|| format!("{}: tokenizer", a.model))?
    } else {
        Model::load(&r.path)?.tokenizer
    };
    let ids = tok.encode(&a.text, !a.no_special, !a.no_parse_special);
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

#[derive(Args)]
pub struct LogitsArgs {
    /// A .gguf file, a name[:tag] in the store, or a digest.
    model: String,
    /// Comma-separated token ids, e.g. `1,2,3`.
    #[arg(long, value_delimiter = ',', required = true)]
    tokens: Vec<u32>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

pub fn logits(a: LogitsArgs) -> Result<()> {
    let model = Model::load(crate::store::model_path(&a.model)?)?;
    let pool = ThreadPool::new(a.threads.unwrap_or_else(default_threads).max(1));
    let mut cache = model.new_cache(a.tokens.len());
    let all = model.forward(&pool, &mut cache, &a.tokens, Logits::All)?;
    let n_vocab = model.hparams.n_vocab;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (pos, row) in all.chunks(n_vocab).enumerate() {
        let line = serde_json::json!({ "pos": pos, "logits": row });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

#[derive(Args)]
pub struct InfoArgs {
    /// A .gguf file, a name[:tag] in the store, or a digest.
    model: String,
}

pub fn info(a: InfoArgs) -> Result<()> {
    let m = Model::load(crate::store::model_path(&a.model)?)?;
    let hp = &m.hparams;
    println!("file          {}", m.info.path);
    if let Some(name) = &m.info.name {
        println!("name          {name}");
    }
    println!("architecture  {}", m.info.arch);
    println!("parameters    {:.2} M", m.info.n_params as f64 / 1e6);
    println!(
        "file size     {:.2} MiB",
        m.info.file_size as f64 / (1 << 20) as f64
    );
    println!("tensor types  {}", tensor_types(&m));
    println!("vocabulary    {}", hp.n_vocab);
    println!("context       {}", hp.n_ctx_train);
    println!(
        "shape         {} layers, hidden {}, {} heads ({} kv) of {}, ffn {}",
        hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_ff
    );
    Ok(())
}

/// `Q4_K x112, F32 x33, ...`: how many tensors of each type, most common first.
pub fn tensor_types(m: &Model) -> String {
    let types: Vec<String> = m
        .info
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{t} x{n}"))
        .collect();
    types.join(", ")
}

#[derive(Args)]
pub struct DemoArgs {
    /// Text to feed the model.
    #[arg(default_value = "the quick brown fox")]
    text: String,
    /// Architecture of the random model.
    #[arg(long, default_value = "llama")]
    arch: String,
    /// Tensor type of the random model (F32, F16, BF16, Q8_0, Q4_0, Q4_K_M, ...).
    #[arg(long = "type", default_value = "Q8_0")]
    ty: String,
    /// Tokens to generate greedily.
    #[arg(short = 'n', long, default_value_t = 16)]
    n_predict: usize,
}

pub fn demo(a: DemoArgs) -> Result<()> {
    let Some(ft) = FileType::parse(&a.ty) else {
        bail!("unknown tensor type '{}'", a.ty)
    };
    let dir = std::env::temp_dir().join(format!("mori-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("random-{}-{}.gguf", a.arch, ft.name()));
    let spec = RandomSpec::tiny(&a.arch, ft);
    write_random_model(&spec, &path)?;
    let result = run_demo(&path, &a);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_demo(path: &std::path::Path, a: &DemoArgs) -> Result<()> {
    let model = Model::load(path)?;
    println!(
        "Wrote a random-weight {} model ({}, {:.1} MiB) to {}",
        model.info.arch,
        a.ty,
        model.info.file_size as f64 / (1 << 20) as f64,
        path.display()
    );
    println!("(No real model is bundled yet: its output is random text, but every kernel, the tokenizer and the forward pass ran.)");
    let ids = model.tokenizer.encode(&a.text, true, true);
    println!("text    {:?}", a.text);
    println!("tokens  {}", serde_json::to_string(&ids)?);
    let mut session = Session::new(&model, 512, default_threads());
    let logits = session.feed(&ids)?.to_vec();
    let mut top: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
    top.sort_by(|x, y| y.1.total_cmp(&x.1));
    println!("top next-token logits after the prompt:");
    for (id, l) in top.iter().take(5) {
        let piece =
            String::from_utf8_lossy(&model.tokenizer.token_to_piece(*id as u32, true)).into_owned();
        println!("  {id:>5} {piece:<8?} {l:>8.3}");
    }
    let t0 = std::time::Instant::now();
    let gen = session.generate_greedy(a.n_predict)?;
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "greedy continuation: {:?}",
        model.tokenizer.decode(&gen, false)
    );
    println!("({} tokens in {:.3} s)", gen.len(), dt);
    Ok(())
}

#[derive(Subcommand)]
pub enum DevCommand {
    /// Write a random-weight model of a supported architecture.
    RandomModel(RandomModelArgs),
    /// Write a random-weight Hugging Face checkpoint (config.json, model.safetensors,
    /// tokenizer.json, or tokenizer.model for ernie4_5, ernie4_5-moe and pangu-embedded,
    /// both for mistral and for gemma3, which also needs --sliding-window) into the
    /// directory OUT; --arch is llama, mistral, qwen2, qwen3, qwen3moe, ernie4_5,
    /// ernie4_5-moe, pangu-embedded or gemma3; --type is F32, F16 or BF16.
    RandomHf(RandomModelArgs),
    /// Measure memory read bandwidth: each of THREADS threads sums its own
    /// array of MIB MiB, best of 5; prints GB/s (the limit generation speed
    /// is held to: bandwidth / bytes of weights read per token).
    Bandwidth {
        #[arg(short = 't', long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 512)]
        mib: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct RandomModelArgs {
    /// Output .gguf path.
    out: PathBuf,
    #[arg(long, default_value = "llama")]
    arch: String,
    /// F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q4_K_M or Q5_K_M.
    #[arg(long = "type", default_value = "F32")]
    ty: String,
    #[arg(long, default_value_t = 384)]
    vocab: usize,
    #[arg(long, default_value_t = 256)]
    embd: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    #[arg(long, default_value_t = 512)]
    ff: usize,
    #[arg(long, default_value_t = 2048)]
    ctx: usize,
    #[arg(long, default_value_t = 10000.0)]
    rope_base: f32,
    /// Reuse the token embedding as the output matrix.
    #[arg(long)]
    tied: bool,
    /// Positions a sliding-window layer sees (gemma3: five layers in six); 0 for none.
    #[arg(long, default_value_t = 0)]
    sliding_window: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Routed experts per MoE layer (qwen3moe, ernie4_5-moe); 0: the arch's default set.
    #[arg(long, default_value_t = 0)]
    experts: usize,
    /// Experts each token is routed to.
    #[arg(long, default_value_t = 2)]
    experts_used: usize,
    /// Hidden width of one expert.
    #[arg(long, default_value_t = 256)]
    expert_ff: usize,
    /// Shared experts every token also goes through (ERNIE).
    #[arg(long, default_value_t = 0)]
    shared_experts: usize,
    /// Leading layers with a dense feed-forward (ERNIE).
    #[arg(long, default_value_t = 0)]
    dense_lead: usize,
}

impl RandomModelArgs {
    fn spec(&self, file_type: FileType) -> RandomSpec {
        RandomSpec {
            arch: self.arch.clone(),
            n_vocab: self.vocab,
            n_embd: self.embd,
            n_layer: self.layers,
            n_head: self.heads,
            n_head_kv: self.kv_heads,
            head_dim: self.head_dim,
            n_ff: self.ff,
            n_ctx_train: self.ctx,
            rope_base: self.rope_base,
            rms_eps: 1e-5,
            tied_output: self.tied,
            sliding_window: self.sliding_window,
            file_type,
            seed: self.seed,
            moe: match self.experts {
                0 => MoeSpec::default_for(&self.arch),
                n_expert => Some(MoeSpec {
                    n_expert,
                    n_expert_used: self.experts_used,
                    n_ff_exp: self.expert_ff,
                    n_expert_shared: self.shared_experts,
                    n_layer_dense_lead: self.dense_lead,
                }),
            },
        }
    }
}

pub fn dev(c: DevCommand) -> Result<()> {
    match c {
        DevCommand::RandomModel(a) => {
            let Some(file_type) = FileType::parse(&a.ty) else {
                bail!("unknown tensor type '{}'", a.ty)
            };
            write_random_model(&a.spec(file_type), &a.out)?;
            eprintln!("wrote {}", a.out.display());
            Ok(())
        }
        DevCommand::RandomHf(a) => {
            let Some(dtype) = HfDtype::parse(&a.ty) else {
                bail!("a checkpoint stores F32, F16 or BF16, not '{}'", a.ty)
            };
            write_random_hf(
                &a.spec(FileType::Uniform(mori_kernels::GgmlType::F32)),
                dtype,
                &a.out,
            )?;
            eprintln!("wrote {}", a.out.display());
            Ok(())
        }
        DevCommand::Bandwidth { threads, mib, json } => {
            let gbs = crate::bench::read_bandwidth(threads.max(1), mib.max(1));
            if json {
                println!(
                    "{}",
                    serde_json::json!({"threads": threads, "mib": mib, "read_gbs": gbs})
                );
            } else {
                println!(
                    "read bandwidth: {gbs:.1} GB/s ({threads} threads, {mib} MiB each, best of 5)"
                );
            }
            Ok(())
        }
    }
}

#[derive(Args)]
pub struct ConvertArgs {
    /// Hugging Face model directory: config.json, model.safetensors (or shards), tokenizer.json
    /// (or a SentencePiece tokenizer.model for ERNIE 4.5, ERNIE-4.5-MoE and openPangu-Embedded,
    /// and where there is one for Llama 2, Mistral and Gemma 3, read first as llama.cpp does).
    dir: PathBuf,
    /// Output .gguf path.
    out: PathBuf,
    /// Storage of the matrices: F32, F16, BF16, Q8_0, Q4_0, Q4_K_M, ... (norms stay F32).
    #[arg(long = "type", default_value = "F16")]
    ty: String,
}

pub fn convert(a: ConvertArgs) -> Result<()> {
    let ft = FileType::parse(&a.ty).with_context(|| format!("unknown --type {:?}", a.ty))?;
    let done = mori_model::convert::convert_hf_dir(&a.dir, &a.out, ft)?;
    println!(
        "wrote {}: {} ({} tensors, {} parameters, vocabulary {}) as {}",
        a.out.display(),
        done.arch,
        done.n_tensors,
        done.n_params,
        done.n_vocab,
        ft.name()
    );
    for (name, ty) in &done.fallbacks {
        println!(
            "  {name}: rows do not divide into {} blocks, stored as {ty}",
            ft.name()
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct PerplexityArgs {
    /// A .gguf file, a name[:tag] in the store, or a digest.
    model: String,
    /// UTF-8 text file to score (special tokens written in it count as such).
    file: PathBuf,
    /// Tokens per window; each window is scored from a fresh context.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

pub fn perplexity(a: PerplexityArgs) -> Result<()> {
    let model = Model::load(crate::store::model_path(&a.model)?)?;
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let tokens = model.tokenizer.encode(&text, false, true);
    let mut session = Session::new(
        &model,
        a.ctx.max(2),
        a.threads.unwrap_or_else(default_threads).max(1),
    );
    let t = std::time::Instant::now();
    let p = mori_engine::perplexity::perplexity(&mut session, &tokens, a.ctx)?;
    let secs = t.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"perplexity": p.perplexity, "n_scored": p.n_scored, "n_windows": p.n_windows, "n_tokens": tokens.len(), "ctx": a.ctx, "seconds": secs})
        );
    } else {
        println!(
            "perplexity {:.4} over {} tokens ({} windows of up to {}; {:.0} tokens/s)",
            p.perplexity,
            p.n_scored,
            p.n_windows,
            a.ctx,
            tokens.len() as f64 / secs
        );
    }
    Ok(())
}
