//! `mori quantize`: writes a smaller copy of a GGUF model, tensor types chosen
//! as llama.cpp's `llama-quantize` chooses them.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use mori_model::quantize::{quantize as run_quantize, Event, QuantType};

use crate::commands::default_threads;

#[derive(Args)]
pub struct QuantizeArgs {
    /// Input model: a .gguf file, a store name[:tag] or a digest (F32, F16 or BF16
    /// weights; quantized ones are requantized with a warning).
    input: String,
    /// Output .gguf path (must differ from the input).
    output: PathBuf,
    /// Q8_0, Q4_0, Q4_K_M, Q5_K_M or Q6_K.
    #[arg(value_name = "TYPE")]
    ty: String,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Print one line per tensor: name, shape, type before -> after.
    #[arg(short, long)]
    verbose: bool,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn quantize(a: QuantizeArgs) -> Result<()> {
    let qt = QuantType::parse(&a.ty)?;
    let threads = a.threads.unwrap_or_else(default_threads).max(1);
    let verbose = a.verbose;
    let input = crate::store::gguf(&a.input)?;
    let report = run_quantize(&input, &a.output, qt, threads, |e| match e {
        Event::Warning(w) => eprintln!("warning: {w}"),
        Event::Tensor(t) if verbose => {
            let p = t.plan;
            let shape: Vec<String> = p.dims.iter().map(|d| d.to_string()).collect();
            let note = match p.wanted {
                Some(w) => format!(" (rows of {} do not fit {w})", p.dims[0]),
                None if p.from == p.to => " (copied)".to_string(),
                None => String::new(),
            };
            println!(
                "[{:>4}/{}] {:<32} [{}] {} -> {}{note}",
                t.idx,
                t.n_tensors,
                p.name,
                shape.join(", "),
                p.from,
                p.to
            );
        }
        Event::Tensor(_) => {}
    })?;
    println!(
        "wrote {} as {}: {:.2} MiB -> {:.2} MiB ({} of {} tensors quantized{}) in {:.2} s",
        a.output.display(),
        qt.name(),
        mib(report.input_bytes),
        mib(report.output_bytes),
        report.n_quantized,
        report.n_tensors,
        if report.n_fallback > 0 {
            format!(
                ", {} in a fallback type for their row length",
                report.n_fallback
            )
        } else {
            String::new()
        },
        report.seconds
    );
    Ok(())
}
