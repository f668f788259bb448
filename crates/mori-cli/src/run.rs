//! `mori run MODEL [PROMPT]`: answer one prompt, or chat in the terminal.
//!
//! With a prompt (an argument or piped in) Mori answers once and exits. Without one,
//! on a terminal, it opens a chat: line editing and history, multi-line input between
//! `"""` lines or with a trailing `\\`, `/bye`, `/clear`, `/system`, and Ctrl-C stops
//! the answer being written, not the program.

use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use mori_engine::chat::ChatTemplate;
use mori_engine::conversation::{ChatError, Conversation, Message};
use mori_engine::generate::{Completion, FinishReason, GenerateOptions, Piece};
use mori_engine::sampling::{Sampler, SamplingParams};
use mori_engine::Session;
use mori_model::Model;

#[derive(Args)]
pub struct RunArgs {
    /// A .gguf file, a name[:tag] in the store, or a digest.
    model: String,
    /// The prompt; read from standard input when left out and input is piped.
    prompt: Option<String>,
    /// Randomness of the draw; 0 is greedy [default: the recipe's, else 0.8].
    #[arg(long, alias = "temp", allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Keep only the K most likely tokens (0: all) [default: the recipe's, else 40].
    #[arg(long)]
    top_k: Option<usize>,
    /// Keep the most likely tokens up to this probability (1: all) [default: the recipe's, else 0.95].
    #[arg(long)]
    top_p: Option<f32>,
    /// Drop tokens less likely than this fraction of the best one (0: none) [default: the recipe's, else 0.05].
    #[arg(long)]
    min_p: Option<f32>,
    /// Locally typical sampling mass (1: off).
    #[arg(long, default_value_t = 1.0)]
    typical_p: f32,
    /// Penalty on tokens seen in the last --repeat-last-n tokens (1: off) [default: the recipe's, else 1].
    #[arg(long)]
    repeat_penalty: Option<f32>,
    /// Subtracted once from the logit of every token seen in the window.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// Subtracted from a token's logit per time it was seen in the window.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// How many recent tokens the penalties look at (0: penalties off) [default: the recipe's, else 64].
    #[arg(long)]
    repeat_last_n: Option<usize>,
    /// Add BIAS to token ID's logit, as ID=BIAS (repeatable; BIAS may be -inf).
    #[arg(long, value_parser = parse_bias)]
    logit_bias: Vec<(u32, f32)>,
    /// Seed of the draw: the same seed and prompt give the same text (default: random, printed with --verbose).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many tokens.
    #[arg(short = 'n', long)]
    max_tokens: Option<usize>,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Context length in tokens (default: the model's, at most 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Chat template: a built-in name (chatml, transcript) or a Jinja file
    /// (default: the model's own; a model without one is completed as plain text,
    /// or chatted with through the plain `transcript` template).
    #[arg(long, conflicts_with = "raw")]
    template: Option<String>,
    /// Feed the prompt as plain text, without any chat template.
    #[arg(long)]
    raw: bool,
    /// System message for the chat template.
    #[arg(long)]
    system: Option<String>,
    /// Print the seed and prompt/generation speed to standard error after each answer.
    #[arg(short, long)]
    verbose: bool,
}

fn parse_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, b) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=BIAS, e.g. 42=-inf"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {id:?} is not a token id"))?;
    let b = match b.trim() {
        "-inf" => f32::NEG_INFINITY,
        x => x
            .parse()
            .map_err(|_| format!("{s:?}: {x:?} is not a number"))?,
    };
    Ok((id, b))
}

pub fn run(a: RunArgs) -> Result<()> {
    let prompt = match &a.prompt {
        Some(p) => Some(p.clone()),
        None if !std::io::stdin().is_terminal() => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the prompt from standard input")?;
            Some(s)
        }
        None => None,
    };
    let resolved = crate::store::resolve(&a.model)?;
    let model = Model::load(&resolved.path)?;
    // A recipe's parameters fill in what the command line leaves out.
    let recipe = resolved.recipe.clone().unwrap_or_default();
    let rp = &recipe.parameters;
    let mut a = a;
    a.system = a.system.take().or(recipe.system.clone());
    a.max_tokens = a
        .max_tokens
        .or(rp.num_predict.and_then(|n| usize::try_from(n).ok()));
    a.ctx = a.ctx.or(rp.num_ctx.map(|n| n as usize));
    a.stop.extend(rp.stop.iter().cloned());
    let a = a;
    let n_ctx = a.ctx.unwrap_or(model.hparams.n_ctx_train.min(4096));
    if n_ctx == 0 {
        bail!("--ctx must be at least 1");
    }
    let seed = a.seed.or(rp.seed).unwrap_or_else(rand::random);
    let params = SamplingParams {
        temperature: a.temperature.or(rp.temperature).unwrap_or(0.8),
        top_k: a.top_k.or(rp.top_k.map(|k| k as usize)).unwrap_or(40),
        top_p: a.top_p.or(rp.top_p).unwrap_or(0.95),
        min_p: a.min_p.or(rp.min_p).unwrap_or(0.05),
        typical_p: a.typical_p,
        repeat_penalty: a.repeat_penalty.or(rp.repeat_penalty).unwrap_or(1.0),
        presence_penalty: a.presence_penalty,
        frequency_penalty: a.frequency_penalty,
        penalty_last_n: a
            .repeat_last_n
            .or(rp.repeat_last_n.and_then(|n| usize::try_from(n).ok()))
            .unwrap_or(64),
        logit_bias: a.logit_bias.clone(),
        seed,
    };
    let mut sampler = Sampler::new(params, model.hparams.n_vocab)?;
    let threads = a
        .threads
        .unwrap_or_else(crate::commands::default_threads)
        .max(1);
    let session = Session::new(&model, n_ctx, threads);
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        stop: a.stop.clone(),
        ..Default::default()
    };
    // Ctrl-C while an answer is being written stops that answer; the chat and the
    // one-shot run both end it cleanly instead of dying mid-line.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let template = choose_template(&a, &model, recipe.template.as_deref(), prompt.is_none())?;
    let history: Vec<Message> = recipe
        .messages
        .iter()
        .map(|m| Message::new(&m.role, m.content.clone()))
        .collect();
    let mut opts = opts;
    if let Some(t) = &template {
        opts.stop.extend(t.stop_strings().iter().cloned());
    }
    match prompt {
        Some(prompt) => one_shot(
            &a,
            session,
            template,
            &prompt,
            &mut sampler,
            &opts,
            &interrupted,
            seed,
            &history,
        ),
        None => {
            let template = template.expect("a chat always has a template");
            chat(
                &a,
                session,
                template,
                &mut sampler,
                &opts,
                &interrupted,
                seed,
                &history,
            )
        }
    }
}

/// The template to use: `--template`, else the model's own; a model without one
/// gets none for a one-shot prompt (a base model continues text) and the plain
/// transcript for a chat.
fn choose_template(
    a: &RunArgs,
    model: &Model,
    recipe_template: Option<&str>,
    chatting: bool,
) -> Result<Option<ChatTemplate>> {
    if a.raw {
        return Ok(None);
    }
    if let (None, Some(src)) = (&a.template, recipe_template) {
        return Ok(Some(ChatTemplate::new("the recipe's template", src)?));
    }
    if let Some(t) = &a.template {
        let path = Path::new(t);
        if path.exists() {
            let src = std::fs::read_to_string(path)
                .with_context(|| format!("reading the chat template {}", path.display()))?;
            return Ok(Some(ChatTemplate::new(path.display().to_string(), &src)?));
        }
        return Ok(Some(ChatTemplate::builtin(t).with_context(|| {
            format!("--template {t:?} is neither a file nor a built-in template")
        })?));
    }
    if let Some(t) = ChatTemplate::from_model(model)? {
        return Ok(Some(t));
    }
    Ok(chatting.then(|| ChatTemplate::builtin("transcript").expect("built-in")))
}

#[allow(clippy::too_many_arguments)]
fn one_shot(
    a: &RunArgs,
    mut session: Session<'_>,
    template: Option<ChatTemplate>,
    prompt: &str,
    sampler: &mut Sampler,
    opts: &GenerateOptions,
    interrupted: &AtomicBool,
    seed: u64,
    history: &[Message],
) -> Result<()> {
    let mut out = Output::new(interrupted);
    let done = match template {
        Some(t) => {
            let mut conv = Conversation::new(session, t);
            conv.set_system(a.system.clone());
            history.iter().for_each(|m| conv.push(m.clone()));
            conv.reply(prompt, sampler, opts, |p| out.piece(p))?
        }
        None => {
            let model = session.model();
            let mut text = String::new();
            if let Some(s) = &a.system {
                text.push_str(s);
                text.push_str("\n\n");
            }
            text.push_str(prompt);
            let tokens = model.tokenizer.encode(&text, true, true);
            if tokens.len() > session.n_ctx() {
                bail!(
                    "the prompt is {} tokens long but the context holds {}; pass a larger --ctx (the model was trained with {})",
                    tokens.len(),
                    session.n_ctx(),
                    model.hparams.n_ctx_train
                );
            }
            session.generate(&tokens, sampler, opts, |p| out.piece(p))?
        }
    };
    out.finish()?;
    if a.verbose {
        report(&done, seed);
    }
    Ok(())
}

const HELP: &str = "\
Commands:
  /bye, /exit        leave (Ctrl-D too)
  /clear             forget the conversation (the system message stays)
  /system [TEXT]     set the system message, or show it without TEXT
  /help, /?          this help
Write several lines between lines of \"\"\", or end a line with \\ to go on.
Ctrl-C stops an answer while it is being written.";

#[allow(clippy::too_many_arguments)]
fn chat(
    a: &RunArgs,
    session: Session<'_>,
    template: ChatTemplate,
    sampler: &mut Sampler,
    opts: &GenerateOptions,
    interrupted: &AtomicBool,
    seed: u64,
    history: &[Message],
) -> Result<()> {
    let model = session.model();
    let name = model
        .info
        .name
        .clone()
        .unwrap_or_else(|| a.model.to_string());
    let mut conv = Conversation::new(session, template);
    conv.set_system(a.system.clone());
    // A recipe's example messages open every conversation (and come back after /clear).
    history.iter().for_each(|m| conv.push(m.clone()));
    let mut rl = rustyline::DefaultEditor::new().context("opening the terminal")?;
    println!(
        "Chatting with {name} (template: {}). /? for help, /bye to leave.",
        conv.template().name()
    );
    loop {
        let Some(input) = read_message(&mut rl)? else {
            break;
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            continue;
        }
        let _ = rl.add_history_entry(trimmed);
        if let Some(cmd) = trimmed.strip_prefix('/') {
            let (cmd, arg) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
            match cmd {
                "bye" | "exit" | "quit" => break,
                "clear" => {
                    conv.clear();
                    history.iter().for_each(|m| conv.push(m.clone()));
                    println!("Cleared the conversation.");
                }
                "system" if arg.trim().is_empty() => match conv.system() {
                    Some(s) => println!("System message: {s}"),
                    None => println!("No system message."),
                },
                "system" => {
                    conv.set_system(Some(arg.trim().to_string()));
                    println!("System message set.");
                }
                "help" | "?" => println!("{HELP}"),
                _ => println!("Unknown command /{cmd}. /? lists the commands."),
            }
            continue;
        }
        interrupted.store(false, Ordering::SeqCst);
        let mut out = Output::new(interrupted);
        match conv.reply(&input, sampler, opts, |p| out.piece(p)) {
            Ok(done) => {
                out.finish()?;
                if done.finish == FinishReason::Cancelled {
                    println!("[stopped]");
                }
                if done.finish == FinishReason::ContextFull {
                    println!("[the context is full: /clear to start over]");
                }
                if a.verbose {
                    report(&done, seed);
                }
            }
            Err(e @ ChatError::ContextFull { .. }) => println!("{e}"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads one message: a line, lines joined by a trailing `\`, or a block between
/// `"""` lines. `None` at end of input (Ctrl-D).
fn read_message(rl: &mut rustyline::DefaultEditor) -> Result<Option<String>> {
    use rustyline::error::ReadlineError;
    let mut lines: Vec<String> = Vec::new();
    let mut in_block = false;
    loop {
        let prompt = if lines.is_empty() && !in_block {
            ">>> "
        } else {
            "... "
        };
        match rl.readline(prompt) {
            Ok(line) => {
                if in_block {
                    if let Some(head) = line.strip_suffix("\"\"\"") {
                        lines.push(head.to_string());
                        return Ok(Some(lines.join("\n")));
                    }
                    lines.push(line);
                } else if let Some(rest) = line.strip_prefix("\"\"\"") {
                    if let Some(one) = rest.strip_suffix("\"\"\"").filter(|_| rest.len() >= 3) {
                        return Ok(Some(one.to_string()));
                    }
                    in_block = true;
                    if !rest.is_empty() {
                        lines.push(rest.to_string());
                    }
                } else if let Some(head) = line.strip_suffix('\\') {
                    lines.push(head.to_string());
                } else {
                    lines.push(line);
                    return Ok(Some(lines.join("\n")));
                }
            }
            Err(ReadlineError::Interrupted) => {
                // Ctrl-C at the prompt drops what was typed, as in a shell.
                if lines.is_empty() && !in_block {
                    println!("(Ctrl-C stops an answer; /bye or Ctrl-D leaves)");
                }
                lines.clear();
                in_block = false;
            }
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(e).context("reading from the terminal"),
        }
    }
}

/// Streams pieces to standard output and stops on Ctrl-C or a closed pipe.
struct Output<'a> {
    out: std::io::StdoutLock<'static>,
    interrupted: &'a AtomicBool,
    error: Option<std::io::Error>,
}

impl<'a> Output<'a> {
    fn new(interrupted: &'a AtomicBool) -> Self {
        Output {
            out: std::io::stdout().lock(),
            interrupted,
            error: None,
        }
    }

    fn piece(&mut self, p: Piece<'_>) -> ControlFlow<()> {
        if let Err(e) = self
            .out
            .write_all(p.text.as_bytes())
            .and_then(|_| self.out.flush())
        {
            self.error = Some(e);
            return ControlFlow::Break(());
        }
        if self.interrupted.load(Ordering::SeqCst) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn finish(mut self) -> Result<()> {
        if let Some(e) = self.error.take() {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(e).context("writing to standard output");
            }
            return Ok(());
        }
        writeln!(self.out)?;
        self.out.flush()?;
        Ok(())
    }
}

fn report(done: &Completion, seed: u64) {
    let why = match done.finish {
        FinishReason::Stop => "stop",
        FinishReason::Length => "max tokens",
        FinishReason::ContextFull => "context full",
        FinishReason::Cancelled => "cancelled",
    };
    eprintln!(
        "seed {seed} | prompt {} tokens, {:.1} tokens/s | generated {} tokens, {:.1} tokens/s | ended by {why}",
        done.n_prompt,
        done.prompt_tokens_per_s(),
        done.tokens.len(),
        done.gen_tokens_per_s()
    );
}
