//! Chat templates: the Hugging Face Jinja template stored in the GGUF (`tokenizer.chat_template`)
//! or given in a file, rendered with minijinja the way transformers' `apply_chat_template` does it.
//!
//! What transformers sets up and templates rely on: `trim_blocks` and `lstrip_blocks`; the
//! functions `raise_exception` and `strftime_now`; a `tojson` filter that does not escape HTML
//! (Python's `json.dumps` spacing); Python string/dict methods (`.strip()`, `.items()`…); the
//! variables `messages`, `bos_token`, `eos_token`, `add_generation_prompt`, `tools`, and
//! `date_string` when the caller fixes the date. A template error is returned with its line,
//! never replaced by a built-in fallback (the classic silent-ChatML bug).

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

use crate::gguf::{keys, GgufFile};

/// Instruction budget for one rendering: far above any real template (a long conversation
/// renders in a few thousand steps), low enough that a hostile loop stops within a second.
const RENDER_FUEL: u64 = 50_000_000;
/// Rendered prompts longer than this are refused (a hostile template can double a string in a
/// loop within the fuel budget).
const MAX_RENDERED_BYTES: usize = 16 << 20;
/// Template sources longer than this are refused before parsing.
const MAX_TEMPLATE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("chat template from {origin}: {message}")]
    Template { origin: String, message: String },
    #[error("chat template from {origin} is {len} bytes, more than the {max} allowed")]
    TooLong {
        origin: String,
        len: usize,
        max: usize,
    },
    #[error("chat template from {origin} rendered more than {max} bytes")]
    OutputTooLong { origin: String, max: usize },
}

/// One part of a message whose content is a list (Llama 3.2 Vision's image/text parts).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ContentPart {
    Text { text: String },
    Image,
}

/// A message's content: a plain string, or a list of parts.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Content,
}

impl ChatMessage {
    pub fn text(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: Content::Text(content.to_string()),
        }
    }
}

/// Options of one rendering.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// Append the assistant header so the model answers next.
    pub add_generation_prompt: bool,
    /// Fixes `date_string` (Llama 3.x templates otherwise call `strftime_now("%d %b %Y")`).
    pub date_string: Option<String>,
    /// OpenAI-style tool definitions, passed to the template as `tools` (Qwen2.5, Llama 3.x
    /// and SmolLM2 templates render them into the prompt).
    pub tools: Option<serde_json::Value>,
}

/// A parsed chat template with the special tokens it may print.
pub struct ChatTemplate {
    origin: String,
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Parses `source`; `origin` names where it came from in errors (a file path, or
    /// "FILE.gguf (tokenizer.chat_template)").
    pub fn new(
        origin: &str,
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, ChatTemplateError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(ChatTemplateError::TooLong {
                origin: origin.to_string(),
                len: source.len(),
                max: MAX_TEMPLATE_BYTES,
            });
        }
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| template_error(origin, &e))?;
        Ok(Self {
            origin: origin.to_string(),
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The template stored in a GGUF file, if it has one. `bos`/`eos` are the token texts.
    pub fn from_gguf(
        file: &GgufFile,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Option<Self>, ChatTemplateError> {
        let Ok(source) = file.metadata().get_str(keys::TOKENIZER_CHAT_TEMPLATE) else {
            return Ok(None);
        };
        let origin = format!(
            "{} ({})",
            file.path().display(),
            keys::TOKENIZER_CHAT_TEMPLATE
        );
        Self::new(&origin, source, bos_token, eos_token).map(Some)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders `messages` to the prompt text (special tokens as text, to be tokenized with
    /// special-token parsing and without adding another BOS).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        opts: &RenderOptions,
    ) -> Result<String, ChatTemplateError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| template_error(&self.origin, &e))?;
        let mut ctx = std::collections::BTreeMap::new();
        ctx.insert("messages", Value::from_serialize(messages));
        ctx.insert("bos_token", Value::from(self.bos_token.as_str()));
        ctx.insert("eos_token", Value::from(self.eos_token.as_str()));
        ctx.insert(
            "add_generation_prompt",
            Value::from(opts.add_generation_prompt),
        );
        if let Some(date) = &opts.date_string {
            ctx.insert("date_string", Value::from(date.as_str()));
        }
        if let Some(tools) = &opts.tools {
            ctx.insert("tools", Value::from_serialize(tools));
        }
        let out = tmpl
            .render(ctx)
            .map_err(|e| template_error(&self.origin, &e))?;
        if out.len() > MAX_RENDERED_BYTES {
            return Err(ChatTemplateError::OutputTooLong {
                origin: self.origin.clone(),
                max: MAX_RENDERED_BYTES,
            });
        }
        Ok(out)
    }
}

/// A chat's history: an optional system prompt and the user/assistant turns so far.
#[derive(Clone, Debug, Default)]
pub struct Conversation {
    pub system: Option<String>,
    pub turns: Vec<ChatMessage>,
}

/// The prompt for the next answer, after dropping whatever history did not fit.
#[derive(Clone, Debug, PartialEq)]
pub struct FittedPrompt {
    pub ids: Vec<u32>,
    /// Oldest user turns (with their answers) removed to fit.
    pub dropped_turns: usize,
}

impl Conversation {
    /// Every message in template order: system (if any) first.
    pub fn messages(&self) -> Vec<ChatMessage> {
        let system = self.system.iter().map(|s| ChatMessage::text("system", s));
        system.chain(self.turns.iter().cloned()).collect()
    }

    /// Forgets the turns, keeps the system prompt.
    pub fn clear(&mut self) {
        self.turns.clear();
    }

    /// Removes the oldest user message and everything up to the next user message (its
    /// answer). False when there is no earlier turn to drop (only the newest user message).
    fn drop_oldest_turn(&mut self) -> bool {
        let next_user = self
            .turns
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, m)| m.role == "user")
            .map(|(i, _)| i);
        match next_user {
            Some(i) => {
                self.turns.drain(..i);
                true
            }
            None => false,
        }
    }

    /// Renders the conversation with the generation prompt and tokenizes it, dropping the
    /// oldest turns until it leaves room for `reserve` new tokens in a context of `n_ctx`.
    /// `encode` turns rendered text into ids (special tokens parsed, no BOS added: the
    /// template writes its own, so a second one would be the classic double-BOS bug).
    pub fn fit(
        &mut self,
        template: &ChatTemplate,
        opts: &RenderOptions,
        n_ctx: usize,
        reserve: usize,
        encode: &mut dyn FnMut(&str) -> anyhow::Result<Vec<u32>>,
    ) -> anyhow::Result<FittedPrompt> {
        let budget = n_ctx.saturating_sub(reserve);
        let mut dropped_turns = 0;
        loop {
            let text = template.render(&self.messages(), opts)?;
            let ids = encode(&text)?;
            if ids.len() <= budget {
                return Ok(FittedPrompt { ids, dropped_turns });
            }
            if !self.drop_oldest_turn() {
                anyhow::bail!(
                    "the message needs {} tokens but the context of {n_ctx} leaves {budget} \
                     for the prompt (raise -c or shorten the message)",
                    ids.len()
                );
            }
            dropped_turns += 1;
        }
    }
}

fn template_error(origin: &str, e: &Error) -> ChatTemplateError {
    // minijinja's Display carries the kind and detail; the line is in `line()`.
    let mut message = e.to_string();
    if let Some(line) = e.line() {
        if !message.contains("line") {
            let _ = write!(message, " (line {line})");
        }
    }
    ChatTemplateError::Template {
        origin: origin.to_string(),
        message,
    }
}

/// `raise_exception(msg)`: templates call it to refuse a conversation (e.g. bad role order).
fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("the template raised: {msg}"),
    ))
}

/// `strftime_now(fmt)`: today's local date/time in C strftime format.
fn strftime_now(fmt: String) -> Result<Value, Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item> = StrftimeItems::new(&fmt).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: bad format {fmt:?}"),
        ));
    }
    let now = chrono::Local::now();
    Ok(Value::from(
        now.format_with_items(items.into_iter()).to_string(),
    ))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)` — Python's
/// spacing (`", "`, `": "`), no HTML escaping, keys in insertion order.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    v: &Value,
    indent: Option<usize>,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&python_number(v)),
        ValueKind::String => write_json_string(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(item, indent, depth + 1, out)?;
            }
            if !items.is_empty() {
                newline(out, depth);
            }
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json_string(&key.to_string(), out);
                out.push_str(": ");
                write_json(&v.get_item(key)?, indent, depth + 1, out)?;
            }
            if !keys.is_empty() {
                newline(out, depth);
            }
            out.push('}');
        }
        _ => write_json_string(&v.to_string(), out),
    }
    Ok(())
}

/// Numbers as Python prints them in JSON: integers bare, floats with a fractional part.
fn python_number(v: &Value) -> String {
    if let Ok(i) = i64::try_from(v.clone()) {
        if v.as_i64().is_some() {
            return i.to_string();
        }
    }
    match f64::try_from(v.clone()) {
        Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.1}"),
        Ok(f) if f.is_finite() => format!("{f}"),
        Ok(f) if f.is_nan() => "NaN".into(),
        Ok(f) if f > 0.0 => "Infinity".into(),
        Ok(_) => "-Infinity".into(),
        Err(_) => v.to_string(),
    }
}

/// A JSON string with `ensure_ascii=False`: only quotes, backslashes and control characters
/// are escaped.
fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, msgs: &[ChatMessage]) -> Result<String, ChatTemplateError> {
        ChatTemplate::new("test", src, "<s>", "</s>")?.render(msgs, &RenderOptions::default())
    }

    #[test]
    fn a_template_that_raises_is_an_error_naming_the_message() {
        let err = render("{{ raise_exception('no system role') }}", &[]).unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
    }

    #[test]
    fn a_syntax_error_names_the_origin_and_line() {
        let err = ChatTemplate::new("my.jinja", "ok\n{% if %}", "", "")
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("my.jinja") && text.contains("line 2"),
            "{text}"
        );
    }

    #[test]
    fn an_endless_loop_runs_out_of_fuel() {
        let src =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let t = std::time::Instant::now();
        assert!(render(src, &[]).is_err());
        assert!(t.elapsed().as_secs() < 10);
    }

    #[test]
    fn tojson_uses_python_spacing_without_html_escaping() {
        let out = render(
            "{{ {'a': 1, 'b': [true, none, 'x<y'], 'c': 1.5} | tojson }}",
            &[],
        )
        .unwrap();
        assert_eq!(out, r#"{"a": 1, "b": [true, null, "x<y"], "c": 1.5}"#);
    }

    #[test]
    fn oldest_turns_are_dropped_until_the_prompt_fits() {
        let tmpl = ChatTemplate::new(
            "t",
            "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let mut conv = Conversation {
            system: Some("S".into()),
            turns: vec![
                ChatMessage::text("user", "aaaa"),
                ChatMessage::text("assistant", "bbbb"),
                ChatMessage::text("user", "cccc"),
                ChatMessage::text("assistant", "dddd"),
                ChatMessage::text("user", "eeee"),
            ],
        };
        // One "token" per byte.
        let mut encode = |t: &str| Ok(t.bytes().map(u32::from).collect());
        let opts = RenderOptions::default();
        let full = conv.fit(&tmpl, &opts, 1000, 0, &mut encode).unwrap();
        assert_eq!(full.dropped_turns, 0);
        let fitted = conv.fit(&tmpl, &opts, 50, 10, &mut encode).unwrap();
        assert_eq!(fitted.dropped_turns, 2);
        assert_eq!(
            String::from_utf8(fitted.ids.iter().map(|&b| b as u8).collect()).unwrap(),
            "[system:S][user:eeee]"
        );
        assert!(conv.fit(&tmpl, &opts, 15, 0, &mut encode).is_err());
    }

    #[test]
    fn python_string_methods_work() {
        let out = render(
            "{{ '  hi  '.strip() }}|{{ 'a,b'.split(',') | length }}",
            &[],
        )
        .unwrap();
        assert_eq!(out, "hi|2");
    }
}
