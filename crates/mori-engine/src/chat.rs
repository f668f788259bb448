//! Chat templates: turn a conversation into the prompt text a model was trained on.
//!
//! Models carry their template as Jinja source (`tokenizer.chat_template` in GGUF,
//! `chat_template` in Hugging Face's `tokenizer_config.json`). Hugging Face renders it
//! with Python's Jinja2 in a particular environment, and a prompt that differs by one
//! newline from what the model saw in training makes it answer worse, so this module
//! reproduces that environment on top of `minijinja`:
//!
//! * `trim_blocks` and `lstrip_blocks` on, loop controls (`break`, `continue`) on;
//! * Python's string and dict methods (`.strip()`, `.split()`, `.items()`, …);
//! * `raise_exception(msg)`, which aborts rendering with the template's own message;
//! * `strftime_now(fmt)`, the current local time formatted with C's `strftime` codes;
//! * a `tojson` filter that writes JSON the way Python's `json.dumps` does
//!   (`", "` and `": "` separators, `indent`, `sort_keys`, no HTML escaping);
//! * the `{% generation %}` block that some templates use to mark training targets
//!   renders its body unchanged;
//! * the variables `messages`, `tools`, `documents`, `add_generation_prompt`, the
//!   special tokens (`bos_token`, `eos_token`, …) and any extra keyword arguments.

use std::fmt::Write as _;
use std::sync::Arc;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, Value};
use mori_model::{Model, Tokenizer};
use serde::Serialize;

/// Why a template could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the chat template does not parse: {0}")]
    Syntax(String),
    /// The template called `raise_exception`, usually because the conversation has a
    /// shape the model does not support (a system message, roles out of order).
    #[error("the chat template refused this conversation: {0}")]
    Raised(String),
    #[error("the chat template failed while rendering: {0}")]
    Render(String),
    #[error("unknown built-in chat template {0:?} (known: {known})", known = BUILTIN_NAMES.join(", "))]
    UnknownBuiltin(String),
}

pub type Result<T> = std::result::Result<T, TemplateError>;

/// The special tokens a template may print, as Hugging Face passes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub unk_token: Option<String>,
    pub pad_token: Option<String>,
}

impl SpecialTokens {
    /// The texts of the tokenizer's BOS, EOS, UNK and padding tokens.
    pub fn from_tokenizer(tok: &Tokenizer) -> Self {
        let text = |id: Option<u32>| id.map(|id| tok.decode(&[id], true));
        let v = tok.vocab();
        SpecialTokens {
            bos_token: text(tok.bos()),
            eos_token: text(tok.eos()),
            unk_token: text(v.unk),
            pad_token: text(v.pad),
        }
    }
}

/// Everything besides the messages that a render depends on.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// End the prompt with the header of an assistant turn, so the model answers.
    pub add_generation_prompt: bool,
    /// Tool (function) definitions in OpenAI's JSON shape, or `None`.
    pub tools: Option<serde_json::Value>,
    /// Documents for retrieval-augmented templates, or `None`.
    pub documents: Option<serde_json::Value>,
    /// Further variables (`enable_thinking`, `date_string`, …), as keyword arguments
    /// to Hugging Face's `apply_chat_template` are.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The time `strftime_now` reports; the local clock when `None`.
    pub now: Option<chrono::NaiveDateTime>,
}

/// Names accepted by [`ChatTemplate::builtin`].
pub const BUILTIN_NAMES: &[&str] = &["chatml", "transcript", "ernie4_5", "pangu-embedded"];

/// ERNIE 4.5's template as its Hugging Face tokenizer ships it (`User: `/`Assistant: `
/// turns after `<|begin_of_sentence|>`, answers closed by `<|end_of_sentence|>`).
/// llama.cpp has no format of its own for it.
const ERNIE4_5: &str = include_str!("templates/ernie4_5.jinja");

/// openPangu-Embedded's template as its Hugging Face tokenizer ships it
/// (`[unused9]系统：…[unused10]`, `用户`, `助手`, `工具`, `方法` turns); it renders as
/// llama.cpp's `pangu-embedded` format does.
const PANGU_EMBEDDED: &str = include_str!("templates/pangu-embedded.jinja");

/// The built-in template for models of GGUF architecture `arch` that carry no
/// `tokenizer.chat_template`, for the architectures whose chat format is fixed.
pub fn builtin_for_arch(arch: &str) -> Option<&'static str> {
    match arch {
        "ernie4_5" => Some("ernie4_5"),
        "pangu-embedded" => Some("pangu-embedded"),
        _ => None,
    }
}

/// ChatML, the format of Qwen and many fine-tunes; llama.cpp's and Mori's choice for
/// `--template chatml`.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A plain transcript for base models that have no template of their own: the system
/// text as a preamble, then `User:` and `Assistant:` lines. It uses no special tokens,
/// so it works with any vocabulary.
const TRANSCRIPT: &str = "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + '\\n' }}{% else %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: Arc<str>,
    name: String,
    /// Text that ends an assistant turn when the model has no token for it.
    stops: Vec<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.name)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles Jinja source; `name` says where it came from in messages.
    pub fn new(name: impl Into<String>, source: &str) -> Result<Self> {
        let source: Arc<str> = Arc::from(source);
        let mut env = hf_environment();
        env.add_template_owned("chat", rewrite_generation_blocks(&source))
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source,
            name: name.into(),
            stops: Vec::new(),
        })
    }

    /// One of Mori's own templates ([`BUILTIN_NAMES`]).
    pub fn builtin(name: &str) -> Result<Self> {
        // A model that was not trained on the format has no end-of-turn token for
        // it, so the text that opens the next turn ends the answer.
        let (source, stops) = match name {
            "chatml" => (CHATML, vec!["<|im_end|>", "<|im_start|>"]),
            "transcript" => (TRANSCRIPT, vec!["\nUser:"]),
            // These models were trained on their format; the texts that close an
            // answer also stop one whose closing token is not marked end-of-generation.
            "ernie4_5" => (ERNIE4_5, vec!["<|end_of_sentence|>"]),
            "pangu-embedded" => (PANGU_EMBEDDED, vec!["[unused10]"]),
            _ => return Err(TemplateError::UnknownBuiltin(name.to_string())),
        };
        let mut t = ChatTemplate::new(format!("built-in {name}"), source)?;
        t.stops = stops.into_iter().map(String::from).collect();
        Ok(t)
    }

    /// The template a model file carries (`tokenizer.chat_template`), if any; else
    /// the built-in format of its architecture ([`builtin_for_arch`]), if it has one.
    pub fn from_model(model: &Model) -> Result<Option<Self>> {
        match model.file().get_str("tokenizer.chat_template") {
            Ok(Some(src)) => {
                ChatTemplate::new("the model's tokenizer.chat_template", src).map(Some)
            }
            Ok(None) => builtin_for_arch(&model.info.arch)
                .map(ChatTemplate::builtin)
                .transpose(),
            Err(e) => Err(TemplateError::Syntax(e.to_string())),
        }
    }

    /// The Jinja source as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Stop sequences that go with this template (for the built-in ones).
    pub fn stop_strings(&self) -> &[String] {
        &self.stops
    }

    /// Where the template came from, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders `messages` (each a map with at least `role` and `content`).
    pub fn render<M: Serialize>(
        &self,
        messages: &[M],
        special: &SpecialTokens,
        opts: &RenderOptions,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        // Later entries win, as in Hugging Face: special tokens, then keyword
        // arguments, then the named parameters.
        let mut ctx: Vec<(String, Value)> = Vec::new();
        let mut set = |k: &str, v: Value| {
            ctx.retain(|(key, _)| key != k);
            ctx.push((k.to_string(), v));
        };
        for (k, v) in [
            ("bos_token", &special.bos_token),
            ("eos_token", &special.eos_token),
            ("unk_token", &special.unk_token),
            ("pad_token", &special.pad_token),
        ] {
            if let Some(v) = v {
                set(k, Value::from(v.as_str()));
            }
        }
        for (k, v) in &opts.extra {
            set(k, Value::from(minijinja::value::Serde(v)));
        }
        set(
            "messages",
            Value::from(minijinja::value::Serde(normalize_messages(messages)?)),
        );
        set("tools", Value::from(minijinja::value::Serde(&opts.tools)));
        set(
            "documents",
            Value::from(minijinja::value::Serde(&opts.documents)),
        );
        set(
            "add_generation_prompt",
            Value::from(opts.add_generation_prompt),
        );
        let now = opts
            .now
            .unwrap_or_else(|| chrono::Local::now().naive_local());
        set(
            "strftime_now",
            Value::from_function(
                move |format: &str| -> std::result::Result<String, minijinja::Error> {
                    strftime(&now, format)
                },
            ),
        );
        let ctx = Value::from_pairs(ctx);
        tmpl.render(ctx).map_err(classify)
    }
}

/// The message list as `transformers` hands it to a template: keys whose value is
/// null are dropped (many templates print "None" or fail on them but handle a missing
/// key), and a message's reasoning, under any of the names clients use for it, is
/// visible as both `reasoning_content` and `thinking`.
fn normalize_messages<M: Serialize>(messages: &[M]) -> Result<Vec<serde_json::Value>> {
    const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let v = serde_json::to_value(m)
            .map_err(|e| TemplateError::Render(format!("message {i}: {e}")))?;
        let serde_json::Value::Object(map) = v else {
            return Err(TemplateError::Render(format!(
                "message {i} is not an object with a role and content"
            )));
        };
        let mut map: serde_json::Map<String, serde_json::Value> =
            map.into_iter().filter(|(_, v)| !v.is_null()).collect();
        let reasoning = REASONING_FIELDS.iter().find_map(|k| map.get(*k).cloned());
        if let Some(r) = reasoning {
            if !map.contains_key("thinking") {
                // Python builds `{"thinking": r, **message, ...}`: the new key comes first.
                let mut front = serde_json::Map::new();
                front.insert("thinking".into(), r.clone());
                front.extend(map);
                map = front;
            }
            map.insert("reasoning_content".into(), r);
        }
        out.push(serde_json::Value::Object(map));
    }
    Ok(out)
}

/// An environment that behaves like the one `transformers` renders templates in.
fn hf_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<Value, minijinja::Error> {
            Err(
                minijinja::Error::new(ErrorKind::InvalidOperation, "raise_exception")
                    .with_source(Raised(msg)),
            )
        },
    );
    env.add_filter("tojson", tojson_filter);
    env
}

/// The message a template passed to `raise_exception`.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn classify(e: minijinja::Error) -> TemplateError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Raised>() {
            return TemplateError::Raised(r.0.clone());
        }
        cur = err.source();
    }
    TemplateError::Render(describe(&e))
}

/// The error with its line, which minijinja keeps out of `Display`.
fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("{e} (line {line})"),
        None => e.to_string(),
    }
}

/// `{% generation %}…{% endgeneration %}` (Hugging Face's marker for the tokens a
/// trainer should learn) has no meaning when rendering a prompt; it becomes an `if`
/// that is always true, keeping any whitespace control on its delimiters.
fn rewrite_generation_blocks(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (lead, body, trail) = split_ws_control(inner);
        match body.trim() {
            "generation" => write!(out, "{{%{lead} if true {trail}%}}").unwrap(),
            "endgeneration" => write!(out, "{{%{lead} endif {trail}%}}").unwrap(),
            _ => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Splits the inside of a block tag into its leading and trailing `-`/`+` markers and body.
fn split_ws_control(inner: &str) -> (&str, &str, &str) {
    let lead = if inner.starts_with(['-', '+']) {
        &inner[..1]
    } else {
        ""
    };
    let inner = &inner[lead.len()..];
    let trail = if inner.ends_with(['-', '+']) {
        &inner[inner.len() - 1..]
    } else {
        ""
    };
    (lead, &inner[..inner.len() - trail.len()], trail)
}

/// C `strftime` formatting of `now`, the codes Python supports on Linux.
fn strftime(
    now: &chrono::NaiveDateTime,
    format: &str,
) -> std::result::Result<String, minijinja::Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format {format:?}"),
        ));
    }
    Ok(now.format_with_items(items.into_iter()).to_string())
}

/// `tojson` as `transformers` defines it: `json.dumps(x, ensure_ascii=False,
/// indent=indent, separators=separators, sort_keys=sort_keys)`.
fn tojson_filter(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.kind() {
            ValueKind::Number => {
                Some(" ".repeat(usize::try_from(v).map_err(|_| bad_arg("indent"))?))
            }
            ValueKind::String => Some(v.as_str().unwrap_or_default().to_string()),
            _ => return Err(bad_arg("indent")),
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let a: Vec<Value> = v.try_iter()?.collect();
            match (
                a.first().and_then(|x| x.as_str()),
                a.get(1).and_then(|x| x.as_str()),
                a.len(),
            ) {
                (Some(i), Some(k), 2) => (i.to_string(), k.to_string()),
                _ => return Err(bad_arg("separators")),
            }
        }
        // Python's defaults: no space before a newline when indenting.
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let mut w = PyJson {
        out: String::new(),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    w.value(&value, 0)?;
    Ok(Value::from_safe_string(w.out))
}

fn bad_arg(name: &str) -> minijinja::Error {
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("tojson: invalid {name}"),
    )
}

/// A JSON writer that formats like Python's `json.dumps`.
struct PyJson {
    out: String,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl PyJson {
    fn value(&mut self, v: &Value, depth: usize) -> std::result::Result<(), minijinja::Error> {
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self
                .out
                .push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number if v.is_integer() => {
                let i = i128::try_from(v.clone()).map_err(|_| bad_arg("number"))?;
                write!(self.out, "{i}").unwrap();
            }
            ValueKind::Number => {
                let f = f64::try_from(v.clone()).map_err(|_| bad_arg("number"))?;
                self.out.push_str(&python_float_repr(f));
            }
            ValueKind::String => self.string(v.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.container('[', ']', depth, items.len(), |w, i, d| {
                    w.value(&items[i], d)
                })?;
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort_by_key(|k| k.to_string());
                }
                let vals: Vec<Value> = keys
                    .iter()
                    .map(|k| v.get_item(k))
                    .collect::<std::result::Result<_, _>>()?;
                self.container('{', '}', depth, keys.len(), |w, i, d| {
                    match keys[i].as_str() {
                        Some(s) => w.string(s),
                        None => w.string(&keys[i].to_string()),
                    }
                    let sep = w.key_sep.clone();
                    w.out.push_str(&sep);
                    w.value(&vals[i], d)
                })?;
            }
            _ => self.string(&v.to_string()),
        }
        Ok(())
    }

    fn container(
        &mut self,
        open: char,
        close: char,
        depth: usize,
        n: usize,
        mut item: impl FnMut(&mut Self, usize, usize) -> std::result::Result<(), minijinja::Error>,
    ) -> std::result::Result<(), minijinja::Error> {
        self.out.push(open);
        if n == 0 {
            self.out.push(close);
            return Ok(());
        }
        for i in 0..n {
            if i > 0 {
                let sep = self.item_sep.clone();
                self.out.push_str(&sep);
            }
            self.newline(depth + 1);
            item(self, i, depth + 1)?;
        }
        self.newline(depth);
        self.out.push(close);
        Ok(())
    }

    fn newline(&mut self, depth: usize) {
        if let Some(ind) = &self.indent {
            self.out.push('\n');
            for _ in 0..depth {
                self.out.push_str(ind);
            }
        }
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && (c as u32) > 0x7e) => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        write!(self.out, "\\u{unit:04x}").unwrap();
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed notation when
/// the decimal exponent is in -4..16 and in `1e-05` style otherwise.
pub(crate) fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // `{:e}` gives the shortest round-trip digits, e.g. "1.5e-7" or "-1e16".
    let sci = format!("{f:e}");
    let (mant, exp) = sci
        .split_once('e')
        .expect("LowerExp always has an exponent");
    let exp: i32 = exp.parse().expect("LowerExp exponent is an integer");
    let (sign, mant) = match mant.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let s = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let (a, b) = digits.split_at((exp + 1) as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, messages: serde_json::Value, opts: &RenderOptions) -> Result<String> {
        let t = ChatTemplate::new("test", src)?;
        let msgs: Vec<serde_json::Value> = serde_json::from_value(messages).unwrap();
        t.render(&msgs, &SpecialTokens::default(), opts)
    }

    #[test]
    fn python_float_repr_matches_python() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (-2.5e-7, "-2.5e-07"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (0.0, "0.0"),
        ] {
            assert_eq!(python_float_repr(f), s, "{f}");
        }
    }

    #[test]
    fn tojson_formats_like_json_dumps() {
        let t = "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(sort_keys=true) }}";
        let out = render(
            &t.replace('x', "messages[0]"),
            json!([{"b": [1, 2.0, "é<>&\n"], "a": {"c": null, "d": true}, "e": []}]),
            &RenderOptions::default(),
        )
        .unwrap();
        let parts: Vec<&str> = out.split('|').collect();
        assert_eq!(
            parts[0],
            r#"{"b": [1, 2.0, "é<>&\n"], "a": {"c": null, "d": true}, "e": []}"#
        );
        assert_eq!(
            parts[1],
            "{\n  \"b\": [\n    1,\n    2.0,\n    \"é<>&\\n\"\n  ],\n  \"a\": {\n    \"c\": null,\n    \"d\": true\n  },\n  \"e\": []\n}"
        );
        assert_eq!(
            parts[2],
            r#"{"a": {"c": null, "d": true}, "b": [1, 2.0, "é<>&\n"], "e": []}"#
        );
    }

    #[test]
    fn raise_exception_carries_the_templates_message() {
        let e = render(
            "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}",
            json!([{"role": "system", "content": "x"}]),
            &RenderOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&e, TemplateError::Raised(m) if m == "System role not supported"),
            "{e}"
        );
    }

    #[test]
    fn strftime_now_uses_the_given_clock() {
        let now = chrono::NaiveDate::from_ymd_opt(2026, 11, 5)
            .unwrap()
            .and_hms_opt(9, 3, 0)
            .unwrap();
        let opts = RenderOptions {
            now: Some(now),
            ..Default::default()
        };
        assert_eq!(
            render("{{ strftime_now('%d %b %Y %H:%M') }}", json!([]), &opts).unwrap(),
            "05 Nov 2026 09:03"
        );
        assert!(render("{{ strftime_now('%Q') }}", json!([]), &opts).is_err());
    }

    #[test]
    fn whitespace_and_python_methods_follow_jinja2() {
        let src = "{% for m in messages %}\n  {{ m.content.strip().upper() }}\n{% endfor %}{% generation %}{{ 'g' }}{% endgeneration %}";
        let out = render(
            src,
            json!([{"role": "user", "content": "  hi "}]),
            &RenderOptions::default(),
        )
        .unwrap();
        assert_eq!(out, "  HI\ng");
    }

    #[test]
    fn syntax_errors_and_unknown_builtins_are_reported() {
        assert!(matches!(
            ChatTemplate::new("t", "{% for %}"),
            Err(TemplateError::Syntax(_))
        ));
        assert!(matches!(
            ChatTemplate::builtin("nope"),
            Err(TemplateError::UnknownBuiltin(_))
        ));
    }

    #[test]
    fn builtins_render() {
        let msgs = vec![
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "Hi"}),
        ];
        let opts = RenderOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        let chatml = ChatTemplate::builtin("chatml")
            .unwrap()
            .render(&msgs, &SpecialTokens::default(), &opts)
            .unwrap();
        assert_eq!(chatml, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        let plain = ChatTemplate::builtin("transcript")
            .unwrap()
            .render(&msgs, &SpecialTokens::default(), &opts)
            .unwrap();
        assert_eq!(plain, "Be brief.\n\nUser: Hi\nAssistant:");
    }
}
