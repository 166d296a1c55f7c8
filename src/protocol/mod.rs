//! The wire protocol, free of I/O: request lines become a [`Request`] holding one
//! [`Command`]; [`Reply`] and [`Push`] values are encoded for a client's [`Format`].
//!
//! Text and JSON parse into the same `Command`, so applying a command never depends
//! on how it arrived; encoding happens only at the edge (see `reply.rs`, `push.rs`).

pub mod args;
pub mod json;
pub mod push;
pub mod reply;

use serde_json::Value;

pub use push::{Message, MessageKind, Push};
pub use reply::{ErrorReply, Item, Reply};

use crate::commands;

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

/// Every command a client can send, whichever format it arrived in.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Ping(Option<String>),
    /// `FORMAT json|text|auto`: fix the format of pushes (`None`: show it; `auto`:
    /// follow each request again).
    Format(Option<FormatChoice>),
    /// The answer to the server's `PING` push: no reply.
    Pong,
    Help(Option<String>),
    Quit,
    Name(String),
    Whoami,
    /// Server figures: uptime, connections, channels, tables, messages, memory.
    Info,
    Clients,
    History,
    Create(String),
    Drop(String),
    Channels,
    /// Subscribe to a channel or pattern; with a filter, only JSON messages matching it.
    Sub {
        target: String,
        filter: Option<Box<crate::store::expr::Expr>>,
    },
    Unsub(String),
    /// Receive row changes of a table (those matching the filter).
    Watch {
        table: String,
        filter: Option<Box<crate::store::expr::Expr>>,
    },
    Unwatch {
        table: String,
    },
    Pub {
        channel: String,
        data: Payload,
    },
    Send {
        to: String,
        data: Payload,
    },
    /// A table command (see `commands::tables`). Boxed: it is large, and every command
    /// is moved through the manager's queue.
    Table(Box<commands::tables::TableCommand>),
}

impl Command {
    /// Commands whose reply lists everything of a kind (and so may be large): a
    /// connection sends one at a time, and writes its reply as its client reads.
    pub fn is_listing(&self) -> bool {
        matches!(
            self,
            Command::Channels | Command::Clients | Command::History
        )
    }

    /// Commands the connection answers itself; all others go to the channel manager.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            Command::Ping(_)
                | Command::Pong
                | Command::Format(_)
                | Command::Help(_)
                | Command::Quit
                | Command::Table(_)
        )
    }
}

/// One parsed request line: its format, the JSON request id to echo, and the command or
/// the error to answer with.
#[derive(Debug)]
pub struct Request {
    pub format: Format,
    pub id: Option<Value>,
    pub command: Result<Command, ErrorReply>,
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

/// Parses one line (without its `\n`). Returns `None` for an empty line, which is ignored.
pub fn parse_request(line: &[u8], limits: &ParseLimits) -> Option<Request> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => {
            return Some(Request {
                format: guess_format(line),
                id: None,
                command: Err(ErrorReply::new(
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
    Some(Request {
        format: Format::Text,
        id: None,
        command: commands::parse_text(verb, rest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Request {
        parse_request(s.as_bytes(), &ParseLimits::default()).expect("not empty")
    }

    #[test]
    fn empty_and_blank_lines_are_ignored() {
        assert!(parse_request(b"", &ParseLimits::default()).is_none());
        assert!(parse_request(b"  \r", &ParseLimits::default()).is_none());
    }

    #[test]
    fn text_and_json_give_the_same_command() {
        let t = parse("pub news hello  world\r");
        let j = parse(r#"{"op":"pub","channel":"news","data":"hello  world"}"#);
        assert_eq!(
            t.command,
            Ok(Command::Pub {
                channel: "news".into(),
                data: Payload::Text("hello  world".into())
            })
        );
        assert_eq!(
            j.command,
            Ok(Command::Pub {
                channel: "news".into(),
                data: Payload::Json(Value::String("hello  world".into()))
            })
        );
        assert_eq!(t.format, Format::Text);
        assert_eq!(j.format, Format::Json);
    }

    #[test]
    fn invalid_utf8_is_bad_encoding_in_the_lines_format() {
        let r = parse_request(b"PUB news \xff\xfe", &ParseLimits::default()).unwrap();
        assert_eq!(r.command.unwrap_err().code, "bad_encoding");
        let r = parse_request(b"{\"op\":\"\xff\"}", &ParseLimits::default()).unwrap();
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
