//! The `mori` command line: argument parsing and logging setup only; the
//! work happens in the library crates.

mod bench;
mod commands;
mod quantize;
mod run;
mod serve;
mod store;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mori",
    version,
    about = "Run open-weight language models on your own CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a small random-weight model, then show its tokens, logits and a greedy continuation.
    Demo(commands::DemoArgs),
    /// Answer a prompt with MODEL, streamed as it is written; without a prompt, chat.
    Run(run::RunArgs),
    /// Measure prompt processing (pp) and generation (tg) speed, like llama-bench.
    Bench(bench::BenchArgs),
    /// Serve models over OpenAI- and Ollama-compatible HTTP APIs.
    Serve(serve::ServeArgs),
    /// Print the token ids of TEXT as a JSON array.
    Tokenize(commands::TokenizeArgs),
    /// Run token ids through MODEL and print one JSON line of logits per position.
    Logits(commands::LogitsArgs),
    /// Describe a model file: architecture, shapes, tensor types.
    Info(commands::InfoArgs),
    /// Convert a Hugging Face model directory (safetensors, config.json, tokenizer.json or tokenizer.model) to GGUF.
    Convert(commands::ConvertArgs),
    /// Quantize a GGUF model to Q8_0, Q4_0, Q4_K_M, Q5_K_M or Q6_K, as llama.cpp does.
    Quantize(quantize::QuantizeArgs),
    /// Perplexity of MODEL on a text file: how well it predicts the text.
    Perplexity(commands::PerplexityArgs),
    /// List the models in the store (MORI_HOME, default ~/.mori).
    #[command(alias = "ls")]
    List(store::ListArgs),
    /// Describe a model: architecture, parameters, tensor types, context, licence, template, digests, size.
    Show(store::ShowArgs),
    /// Remove models from the store.
    Rm(store::RmArgs),
    /// Copy a model to a new name (sharing its blobs).
    Cp(store::CpArgs),
    /// Re-hash every blob of the store and name what is corrupt or missing.
    Verify(store::VerifyArgs),
    /// Download a model from a Hugging Face–compatible hub into the store, pinned to a commit.
    Pull(store::PullArgs),
    /// Put a GGUF file or a safetensors directory that is already on disk into the store.
    Import(store::ImportArgs),
    /// Build a domain model from a recipe (Morifile): base model, system prompt, parameters, adapter, licence.
    Create(store::CreateArgs),
    /// Developer tools.
    #[command(subcommand)]
    Dev(commands::DevCommand),
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MORI_LOG")
        .unwrap_or_else(|_| "warn,mori_server=info,tower_http=info".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // MORI_LOG_FORMAT=json gives one JSON object per line, for log collectors.
    if std::env::var("MORI_LOG_FORMAT").is_ok_and(|f| f == "json") {
        fmt.json().init();
    } else {
        fmt.init();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => commands::demo(a),
        Command::Run(a) => run::run(a),
        Command::Serve(a) => serve::serve(a),
        Command::Bench(a) => bench::bench(a),
        Command::Tokenize(a) => commands::tokenize(a),
        Command::Logits(a) => commands::logits(a),
        Command::Info(a) => commands::info(a),
        Command::Convert(a) => commands::convert(a),
        Command::Perplexity(a) => commands::perplexity(a),
        Command::List(a) => store::list(a),
        Command::Show(a) => store::show(a),
        Command::Rm(a) => store::rm(a),
        Command::Cp(a) => store::cp(a),
        Command::Verify(a) => store::verify(a),
        Command::Pull(a) => store::pull(a),
        Command::Import(a) => store::import(a),
        Command::Create(a) => store::create(a),
        Command::Quantize(a) => quantize::quantize(a),
        Command::Dev(c) => commands::dev(c),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
