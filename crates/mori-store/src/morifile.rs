//! The `Morifile` parser: Ollama's Modelfile syntax for building a recipe on a base model.
//!
//! ```text
//! # comment
//! FROM ../../assets/default-model/mori-fortunes.gguf
//! PARAMETER temperature 0.3
//! PARAMETER stop "<|im_end|>"
//! SYSTEM """You are a careful assistant.
//! Answer briefly."""
//! MESSAGE user Hello
//! MESSAGE assistant Hello! How can I help?
//! ADAPTER ./lora.gguf
//! LICENSE """Apache-2.0 …"""
//! ```
//!
//! Instructions are case-insensitive; `SYSTEM`, `TEMPLATE`, `LICENSE` and `MESSAGE` contents
//! may be a single line, a `"quoted"` line, or `"""triple-quoted"""` text over several lines.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Sampling and context parameters a recipe sets; `None` leaves the engine's default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens the repeat penalty looks at (-1: the whole context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_last_n: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<u32>,
    /// The most tokens to generate (-1: until a stop or the context is full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<i32>,
    /// Stop sequences, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

/// The parameter keys a Morifile may set.
pub const PARAMETER_KEYS: &[&str] = &[
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "seed",
    "num_ctx",
    "num_predict",
    "stop",
];

impl Parameters {
    /// Whether no parameter is set.
    pub fn is_empty(&self) -> bool {
        *self == Parameters::default()
    }

    /// These parameters with every value `over` sets taken from `over` (its stop list, if not
    /// empty, replaces this one's).
    pub fn overlaid(&self, over: &Parameters) -> Parameters {
        Parameters {
            temperature: over.temperature.or(self.temperature),
            top_k: over.top_k.or(self.top_k),
            top_p: over.top_p.or(self.top_p),
            min_p: over.min_p.or(self.min_p),
            repeat_penalty: over.repeat_penalty.or(self.repeat_penalty),
            repeat_last_n: over.repeat_last_n.or(self.repeat_last_n),
            seed: over.seed.or(self.seed),
            num_ctx: over.num_ctx.or(self.num_ctx),
            num_predict: over.num_predict.or(self.num_predict),
            stop: if over.stop.is_empty() {
                self.stop.clone()
            } else {
                over.stop.clone()
            },
        }
    }

    /// Sets `key` from its text; the error is the message (without the line).
    fn set(&mut self, key: &str, value: &str) -> std::result::Result<(), String> {
        fn num<T: std::str::FromStr>(
            key: &str,
            value: &str,
            what: &str,
        ) -> std::result::Result<T, String> {
            value
                .parse()
                .map_err(|_| format!("PARAMETER {key}: '{value}' is not {what}"))
        }
        fn unit(key: &str, v: f32) -> std::result::Result<f32, String> {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(format!("PARAMETER {key}: {v} is outside 0..1"))
            }
        }
        fn non_negative(key: &str, v: f32) -> std::result::Result<f32, String> {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(format!("PARAMETER {key}: {v} must be a number at least 0"))
            }
        }
        match key {
            "temperature" => {
                self.temperature = Some(non_negative(key, num(key, value, "a number")?)?)
            }
            "top_k" => self.top_k = Some(num(key, value, "a whole number at least 0")?),
            "top_p" => self.top_p = Some(unit(key, num(key, value, "a number")?)?),
            "min_p" => self.min_p = Some(unit(key, num(key, value, "a number")?)?),
            "repeat_penalty" => {
                self.repeat_penalty = Some(non_negative(key, num(key, value, "a number")?)?)
            }
            "repeat_last_n" => self.repeat_last_n = Some(num(key, value, "a whole number")?),
            "seed" => self.seed = Some(num(key, value, "a whole number at least 0")?),
            "num_ctx" => {
                let n: u32 = num(key, value, "a whole number at least 1")?;
                if n == 0 {
                    return Err("PARAMETER num_ctx: must be at least 1".into());
                }
                self.num_ctx = Some(n)
            }
            "num_predict" => self.num_predict = Some(num(key, value, "a whole number")?),
            "stop" => {
                if value.is_empty() {
                    return Err("PARAMETER stop: the stop sequence is empty".into());
                }
                self.stop.push(value.to_string())
            }
            _ => {
                return Err(format!(
                    "unknown parameter '{key}'; known parameters are {}",
                    PARAMETER_KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }
}

/// One example message of a recipe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// A parsed `Morifile`, before anything it names is looked up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Morifile {
    /// What `FROM` names: a model name, a digest or a path (relative to the Morifile).
    pub from: String,
    pub parameters: Parameters,
    pub system: Option<String>,
    pub template: Option<String>,
    pub messages: Vec<Message>,
    /// `ADAPTER` paths as written.
    pub adapters: Vec<String>,
    /// `LICENSE` texts, in order.
    pub licenses: Vec<String>,
}

impl Morifile {
    /// Parses Morifile text; `file` names it in errors (a path, or `Morifile`).
    pub fn parse(text: &str, file: &str) -> Result<Morifile> {
        let err = |line: usize, message: String| Error::Morifile {
            file: file.to_string(),
            line,
            message,
        };
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Morifile::default();
        let mut from_line: Option<usize> = None;
        let mut system_line: Option<usize> = None;
        let mut template_line: Option<usize> = None;
        let mut i = 0;
        while i < lines.len() {
            let line_no = i + 1;
            let line = lines[i].trim();
            i += 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (word, rest) = split_word(line);
            let instruction = word.to_ascii_uppercase();
            match instruction.as_str() {
                "FROM" => {
                    if let Some(first) = from_line {
                        return Err(err(line_no, format!("FROM given twice (first on line {first})")));
                    }
                    let value = unquote(rest).map_err(|m| err(line_no, m))?;
                    if value.is_empty() {
                        return Err(err(line_no, "FROM needs a model name, digest or path".into()));
                    }
                    out.from = value;
                    from_line = Some(line_no);
                }
                "PARAMETER" => {
                    let (key, value) = split_word(rest);
                    if key.is_empty() {
                        return Err(err(line_no, "PARAMETER needs a name and a value".into()));
                    }
                    let key = key.to_ascii_lowercase();
                    if value.is_empty() && PARAMETER_KEYS.contains(&key.as_str()) {
                        return Err(err(line_no, format!("PARAMETER {key} needs a value")));
                    }
                    let value = unquote(value).map_err(|m| err(line_no, m))?;
                    out.parameters.set(&key, &value).map_err(|m| err(line_no, m))?;
                }
                "SYSTEM" | "TEMPLATE" | "LICENSE" => {
                    let text = read_text(rest, &lines, &mut i, line_no).map_err(|m| err(line_no, m))?;
                    match instruction.as_str() {
                        "SYSTEM" => {
                            if let Some(first) = system_line.replace(line_no) {
                                return Err(err(line_no, format!("SYSTEM given twice (first on line {first})")));
                            }
                            out.system = Some(text);
                        }
                        "TEMPLATE" => {
                            if let Some(first) = template_line.replace(line_no) {
                                return Err(err(line_no, format!("TEMPLATE given twice (first on line {first})")));
                            }
                            out.template = Some(text);
                        }
                        _ => out.licenses.push(text),
                    }
                }
                "MESSAGE" => {
                    let (role, content) = split_word(rest);
                    let role = role.to_ascii_lowercase();
                    if !matches!(role.as_str(), "system" | "user" | "assistant") {
                        return Err(err(
                            line_no,
                            format!("MESSAGE role '{role}' is not one of system, user, assistant"),
                        ));
                    }
                    let content = read_text(content, &lines, &mut i, line_no).map_err(|m| err(line_no, m))?;
                    out.messages.push(Message { role, content });
                }
                "ADAPTER" => {
                    let value = unquote(rest).map_err(|m| err(line_no, m))?;
                    if value.is_empty() {
                        return Err(err(line_no, "ADAPTER needs a path".into()));
                    }
                    out.adapters.push(value);
                }
                _ => {
                    return Err(err(
                        line_no,
                        format!(
                            "unknown instruction '{word}'; expected FROM, PARAMETER, SYSTEM, TEMPLATE, MESSAGE, ADAPTER or LICENSE"
                        ),
                    ))
                }
            }
        }
        if from_line.is_none() {
            return Err(err(
                0,
                "no FROM instruction; a Morifile must name its base model".into(),
            ));
        }
        Ok(out)
    }
}

/// Splits off the first whitespace-delimited word; the rest is trimmed.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.find(char::is_whitespace) {
        Some(at) => (&s[..at], s[at..].trim()),
        None => (s, ""),
    }
}

/// A single-line value: `"quoted"` (with `\"` and `\\` escapes) or taken as written.
fn unquote(s: &str) -> std::result::Result<String, String> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('"') {
        let Some(inner) = inner.strip_suffix('"') else {
            return Err(format!("the quoted value {s} has no closing '\"'"));
        };
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some(other) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        Ok(out)
    } else {
        Ok(s.to_string())
    }
}

/// Reads a text value starting at `rest` (the remainder of the instruction's line): triple-quoted
/// text may run over the following lines (`next` is advanced past them). A newline right after
/// the opening `"""` and right before a closing `"""` on its own line is dropped.
fn read_text(
    rest: &str,
    lines: &[&str],
    next: &mut usize,
    line_no: usize,
) -> std::result::Result<String, String> {
    let Some(after) = rest.strip_prefix("\"\"\"") else {
        let text = unquote(rest)?;
        if text.is_empty() {
            return Err("the text is empty".into());
        }
        return Ok(text);
    };
    if let Some(end) = after.find("\"\"\"") {
        let trailing = after[end + 3..].trim();
        if !trailing.is_empty() {
            return Err(format!("unexpected '{trailing}' after the closing \"\"\""));
        }
        return Ok(after[..end].to_string());
    }
    let mut text = String::from(after);
    loop {
        let Some(line) = lines.get(*next) else {
            return Err(format!(
                "the \"\"\" opened on line {line_no} is never closed"
            ));
        };
        *next += 1;
        text.push('\n');
        if let Some(end) = line.find("\"\"\"") {
            let trailing = line[end + 3..].trim();
            if !trailing.is_empty() {
                return Err(format!(
                    "unexpected '{trailing}' after the closing \"\"\" on line {}",
                    *next
                ));
            }
            text.push_str(&line[..end]);
            break;
        }
        text.push_str(line);
    }
    let text = text.strip_prefix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\n').unwrap_or(text);
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Morifile> {
        Morifile::parse(text, "Morifile")
    }

    fn error_of(text: &str) -> (usize, String) {
        match parse(text).unwrap_err() {
            Error::Morifile { line, message, .. } => (line, message),
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn parses_every_instruction() {
        let m = parse(
            r#"# A recipe
from  base:q4
PARAMETER temperature 0.25
parameter TOP_K 20
PARAMETER top_p 0.9
PARAMETER min_p 0.05
PARAMETER repeat_penalty 1.1
PARAMETER repeat_last_n -1
PARAMETER seed 42
PARAMETER num_ctx 2048
PARAMETER num_predict 128
PARAMETER stop "<|im_end|>"
PARAMETER stop User:
SYSTEM """
You are terse.
Very terse.
"""
TEMPLATE {{ .Prompt }}
MESSAGE user "Hi \"there\""
MESSAGE assistant """Hello.
Welcome."""
ADAPTER ./lora.gguf
LICENSE """MIT"""
"#,
        )
        .unwrap();
        assert_eq!(m.from, "base:q4");
        let p = &m.parameters;
        assert_eq!(p.temperature, Some(0.25));
        assert_eq!(p.top_k, Some(20));
        assert_eq!(p.top_p, Some(0.9));
        assert_eq!(p.min_p, Some(0.05));
        assert_eq!(p.repeat_penalty, Some(1.1));
        assert_eq!(p.repeat_last_n, Some(-1));
        assert_eq!(p.seed, Some(42));
        assert_eq!(p.num_ctx, Some(2048));
        assert_eq!(p.num_predict, Some(128));
        assert_eq!(p.stop, vec!["<|im_end|>".to_string(), "User:".to_string()]);
        assert_eq!(m.system.as_deref(), Some("You are terse.\nVery terse."));
        assert_eq!(m.template.as_deref(), Some("{{ .Prompt }}"));
        assert_eq!(
            m.messages,
            vec![
                Message {
                    role: "user".into(),
                    content: "Hi \"there\"".into()
                },
                Message {
                    role: "assistant".into(),
                    content: "Hello.\nWelcome.".into()
                },
            ]
        );
        assert_eq!(m.adapters, vec!["./lora.gguf".to_string()]);
        assert_eq!(m.licenses, vec!["MIT".to_string()]);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(error_of("FROM x\n\nPARAMETER temprature 1").0, 3);
        assert!(error_of("FROM x\nPARAMETER temprature 1")
            .1
            .contains("unknown parameter 'temprature'"));
        let (line, msg) = error_of("FROM x\nPARAMETER temperature hot");
        assert_eq!(line, 2);
        assert!(msg.contains("'hot' is not a number"), "{msg}");
        assert_eq!(error_of("FROM x\nPARAMETER top_p 1.5").0, 2);
        assert_eq!(error_of("FROM x\nPARAMETER num_ctx 0").0, 2);
        assert_eq!(error_of("FROM x\nPARAMETER seed").0, 2);
        let (line, msg) = error_of("FROM x\nMESSAGE robot hi");
        assert_eq!(line, 2);
        assert!(msg.contains("robot"), "{msg}");
        let (line, msg) = error_of("FROM x\n# c\nSYSTEM \"\"\"never\nclosed\n");
        assert_eq!(line, 3);
        assert!(msg.contains("never closed"), "{msg}");
        let (line, msg) = error_of("FROM x\nBANANA y");
        assert_eq!(line, 2);
        assert!(msg.contains("BANANA"), "{msg}");
        let (line, msg) = error_of("FROM x\nFROM y");
        assert_eq!(line, 2);
        assert!(msg.contains("line 1"), "{msg}");
        let (line, msg) = error_of("PARAMETER seed 1\n");
        assert_eq!(line, 0);
        assert!(msg.contains("no FROM"), "{msg}");
        assert_eq!(error_of("FROM x\nSYSTEM \"\"\"a\"\"\" junk").0, 2);
        assert_eq!(error_of("FROM x\nSYSTEM").0, 2);
        assert_eq!(error_of("FROM \"unterminated").0, 1);
        let shown = parse("FROM x\nPARAMETER foo 1").unwrap_err().to_string();
        assert!(
            shown.starts_with("Morifile:2: unknown parameter 'foo'"),
            "{shown}"
        );
    }
}
