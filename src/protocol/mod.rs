//! The wire, the house's ground floor, free of I/O: a request line becomes an
//! [`Envelope`] (format, id, verb, raw arguments) that the application layer's command
//! parsers read through the argument cursors of [`args`]; [`Reply`] and [`Push`]
//! values are encoded for a client's [`Format`] (see `reply.rs`, `push.rs`). It knows
//! nothing of commands, the store, the manager or connections.

pub mod args;
pub mod digits;
pub mod json;
pub mod push;
pub mod reply;
pub mod subject;
pub mod value;

use std::borrow::Cow;

use serde_json::Value;

pub use push::{Message, MessageKind, Push};
pub use reply::{ErrorReply, Item, Reply};

/// How a client speaks: each reply is encoded in the format of its request, and pushes
/// in the format of the connection's most recent request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Line-based text commands (`PUB news hello`).
    Text,
    /// One JSON object per line (`{"op":"pub",...}`).
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

/// What `FORMAT` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatChoice {
    /// Always this format.
    Fixed(Format),
    /// The format of the latest request (the default).
    Auto,
}

/// The data carried by a publish or a direct message.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// The rest of a text command line.
    Text(String),
    /// Any JSON value from a JSON request's `data` field.
    Json(Value),
}

impl Payload {
    /// Appends the payload as text receivers see it: text as is, a JSON string without
    /// line breaks as its bare text, any other JSON value compact.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Text(s) => out.extend_from_slice(s.as_bytes()),
            Payload::Json(Value::String(s)) if !s.contains(['\n', '\r']) => {
                out.extend_from_slice(s.as_bytes())
            }
            Payload::Json(v) => write_json_value(out, v),
        }
    }

    /// Appends the payload as JSON receivers see it: text becomes a JSON string.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Text(s) => write_json_str(out, s),
            Payload::Json(v) => write_json_value(out, v),
        }
    }

    /// The payload as a JSON value: text becomes a JSON string.
    pub fn to_json(&self) -> Value {
        match self {
            Payload::Text(s) => Value::String(s.clone()),
            Payload::Json(v) => v.clone(),
        }
    }

    /// Approximate encoded size, used to account outbox bytes.
    pub fn approx_len(&self) -> usize {
        match self {
            Payload::Text(s) => s.len(),
            Payload::Json(Value::String(s)) => s.len() + 2,
            Payload::Json(_) => 64,
        }
    }
}

pub(crate) fn write_json_value(out: &mut Vec<u8>, v: &Value) {
    // Writing a Value into a Vec cannot fail: Vec's Write is infallible and Value
    // has only string keys.
    let _ = serde_json::to_writer(&mut *out, v);
}

pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Limits the parser enforces before doing any expensive work.
#[derive(Clone, Copy, Debug)]
pub struct ParseLimits {
    /// Deepest JSON nesting accepted; deeper requests get `bad_json` before serde_json
    /// sees them, so a hostile line cannot overflow a coroutine stack.
    pub max_json_depth: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits { max_json_depth: 32 }
    }
}

/// The format a line appears to be in: JSON when its first non-space byte is `{`.
pub fn guess_format(line: &[u8]) -> Format {
    match line.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Format::Json,
        _ => Format::Text,
    }
}

/// A request line as the wire sees it, before any command is known: its format, the
/// JSON `id` to echo, and its verb with raw arguments, or what is wrong with the line.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub format: Format,
    pub id: Option<Value>,
    pub body: Result<Body<'a>, ErrorReply>,
}

/// A request's verb (a text line's first word, a JSON request's `op`) and its arguments.
#[derive(Debug)]
pub struct Body<'a> {
    pub verb: Cow<'a, str>,
    pub args: RawArgs<'a>,
}

/// A request's arguments as they came, for the command's own parser (through
/// [`args::Args`] or [`args::JsonArgs`]).
#[derive(Debug)]
pub enum RawArgs<'a> {
    /// The rest of a text line after the verb.
    Text(&'a str),
    /// A JSON request's fields other than `op` and `id`.
    Json(serde_json::Map<String, Value>),
}

/// Parses one line (without its `\n`) into its envelope. Returns `None` for an empty
/// line, which is ignored.
pub fn parse_envelope<'a>(line: &'a [u8], limits: &ParseLimits) -> Option<Envelope<'a>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => {
            return Some(Envelope {
                format: guess_format(line),
                id: None,
                body: Err(ErrorReply::new(
                    "bad_encoding",
                    format!(
                        "line is not valid UTF-8 (bad byte at offset {})",
                        e.valid_up_to()
                    ),
                )),
            })
        }
    };
    let trimmed = text.trim_start();
    if trimmed.trim_end().is_empty() {
        return None;
    }
    if trimmed.starts_with('{') {
        return Some(json::parse(trimmed, limits));
    }
    let (verb, rest) = match trimmed.find(char::is_whitespace) {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, ""),
    };
    Some(Envelope {
        format: Format::Text,
        id: None,
        body: Ok(Body {
            verb: Cow::Borrowed(verb),
            args: RawArgs::Text(rest),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Envelope<'_> {
        parse_envelope(s.as_bytes(), &ParseLimits::default()).expect("not empty")
    }

    #[test]
    fn empty_and_blank_lines_are_ignored() {
        assert!(parse_envelope(b"", &ParseLimits::default()).is_none());
        assert!(parse_envelope(b"  \r", &ParseLimits::default()).is_none());
    }

    #[test]
    fn a_text_line_is_its_verb_and_the_rest() {
        let e = parse("pub news hello  world\r");
        assert_eq!(e.format, Format::Text);
        let body = e.body.unwrap();
        assert_eq!(body.verb, "pub");
        assert!(matches!(body.args, RawArgs::Text(" news hello  world")));
    }

    #[test]
    fn invalid_utf8_is_bad_encoding_in_the_lines_format() {
        let r = parse_envelope(b"PUB news \xff\xfe", &ParseLimits::default()).unwrap();
        assert_eq!(r.body.unwrap_err().code, "bad_encoding");
        let r = parse_envelope(b"{\"op\":\"\xff\"}", &ParseLimits::default()).unwrap();
        assert_eq!(r.format, Format::Json);
    }
    #[test]
    fn payload_text_rendering_follows_the_contract() {
        let mut out = Vec::new();
        Payload::Json(Value::String("yo".into())).write_text(&mut out);
        assert_eq!(out, b"yo");
        out.clear();
        Payload::Json(Value::String("a\nb".into())).write_text(&mut out);
        assert_eq!(out, br#""a\nb""#);
        out.clear();
        Payload::Json(serde_json::json!({"x": 1})).write_text(&mut out);
        assert_eq!(out, br#"{"x":1}"#);
        out.clear();
        Payload::Text("hi there".into()).write_json(&mut out);
        assert_eq!(out, br#""hi there""#);
    }
}
