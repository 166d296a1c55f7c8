//! Replies: built once as values by whoever applies a command, encoded for the
//! requester's format at the connection's edge.

use std::borrow::Cow;

use serde_json::Value;

use super::digits::push_u64;
use super::{write_json_str, write_json_value, Format};

/// An error reply: a stable snake_case `code` and a message for people. The code is
/// usually the server's own word; a service's `FAIL` passes its provider's through.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorReply {
    pub code: Cow<'static, str>,
    /// A boxed str, not a String: replies travel through every outbox, and this keeps
    /// them small.
    pub message: Box<str>,
}

impl ErrorReply {
    pub fn new(code: impl Into<Cow<'static, str>>, message: String) -> Self {
        ErrorReply {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorReply {}

/// One item of a list reply, with its text line (after `* `) and its JSON form.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub text: String,
    pub json: Value,
}

/// The final answer to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+PONG [text]` / `{"ok":true,"pong":"text"}`.
    Pong(Option<String>),
    /// `+OK [text]` / `{"ok":true}` (with `"message"` when there is text).
    Done(Option<String>),
    /// `+OK <n>` / `{"ok":true,"<key>":n}`.
    Count { key: &'static str, n: u64 },
    /// `+OK k=v k=v` / `{"ok":true,"<key>":{"k":v,...}}` (nested so that a field named
    /// `id` cannot clash with the echoed request id).
    Record {
        key: &'static str,
        fields: Vec<(&'static str, Value)>,
    },
    /// Items as `* ...` lines then `+OK <n>` / `{"ok":true,"count":n,"<key>":[...]}`.
    List { key: &'static str, items: Vec<Item> },
    /// A list with fields after it: items as `* ...` lines, then `+OK <n> k=v k=v` /
    /// `{"ok":true,"count":n,"<key>":[...],"k":v,...}`. Boxed: it is rare and large.
    Page(Box<Page>),
    /// Table rows, encoded only in the format asked for. With `one`: the row then a bare
    /// `+OK` / `{"ok":true,"<key>":{...}}`; else like `List`.
    Rows(Box<RowsReply>),
    /// A value as its answer: `+OK <value>`, written as a push payload is (bare text for
    /// a string without line breaks, compact JSON otherwise, nothing for null) /
    /// `{"ok":true,"<key>":<value>}`. Boxed: a JSON value is large.
    Value(&'static str, Box<super::Payload>),
    /// `-ERR <code> <message>` / `{"ok":false,"error":{"code":...,"message":...}}`.
    Error(ErrorReply),
}

/// What [`Reply::Page`] holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub key: &'static str,
    pub items: Vec<Item>,
    pub fields: Vec<(&'static str, Value)>,
}

/// Rows of a table with their column names.
#[derive(Clone, Debug, PartialEq)]
pub struct RowsReply {
    pub key: &'static str,
    pub one: bool,
    pub columns: std::sync::Arc<[String]>,
    pub rows: Vec<Vec<super::value::Value>>,
}

impl RowsReply {
    fn text(&self, out: &mut Vec<u8>) {
        for row in &self.rows {
            row_text(out, &self.columns, row);
        }
        if self.one {
            out.extend_from_slice(b"+OK\n");
        } else {
            out.extend_from_slice(b"+OK ");
            push_u64(out, self.rows.len() as u64);
            out.push(b'\n');
        }
    }

    fn json(&self, out: &mut Vec<u8>) {
        if !self.one {
            out.extend_from_slice(b",\"count\":");
            push_u64(out, self.rows.len() as u64);
        }
        field_key(out, self.key);
        if !self.one {
            out.push(b'[');
        }
        for (r, row) in self.rows.iter().enumerate() {
            if r > 0 {
                out.push(b',');
            }
            row_json(out, &self.columns, row);
        }
        if !self.one {
            out.push(b']');
        }
    }
}

/// `* name=value …` and its newline.
fn row_text(out: &mut Vec<u8>, columns: &[String], row: &[super::value::Value]) {
    out.extend_from_slice(b"* ");
    for (i, (name, v)) in columns.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        v.write_text_bytes(out);
    }
    out.push(b'\n');
}

/// `{"name":value,…}`.
fn row_json(out: &mut Vec<u8>, columns: &[String], row: &[super::value::Value]) {
    out.push(b'{');
    for (i, (name, v)) in columns.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, name);
        out.push(b':');
        v.write_json(out);
    }
    out.push(b'}');
}

/// `{"ok":true` and the echoed id: how a streamed JSON reply begins.
fn ok_head(id: Option<&Value>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"ok\":true");
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        write_json_value(out, id);
    }
}

/// Encodes a list reply a piece at a time, exactly as [`Reply::List`] is encoded
/// whole: [`ListEncoder::start`], each item, then [`ListEncoder::finish`].
pub struct ListEncoder {
    format: Format,
    count: usize,
    written: usize,
}

impl ListEncoder {
    pub fn start(
        format: Format,
        id: Option<&Value>,
        key: &str,
        count: usize,
        out: &mut Vec<u8>,
    ) -> ListEncoder {
        if format == Format::Json {
            ok_head(id, out);
            out.extend_from_slice(b",\"count\":");
            push_u64(out, count as u64);
            field_key(out, key);
            out.push(b'[');
        }
        ListEncoder {
            format,
            count,
            written: 0,
        }
    }

    pub fn item(&mut self, item: &Item, out: &mut Vec<u8>) {
        match self.format {
            Format::Text => line(out, &["* ", &item.text]),
            Format::Json => {
                if self.written > 0 {
                    out.push(b',');
                }
                write_json_value(out, &item.json);
            }
        }
        self.written += 1;
    }

    pub fn finish(self, out: &mut Vec<u8>) {
        match self.format {
            Format::Text => {
                out.extend_from_slice(b"+OK ");
                push_u64(out, self.count as u64);
                out.push(b'\n');
            }
            Format::Json => out.extend_from_slice(b"]}\n"),
        }
    }
}

/// Encodes a rows reply a piece at a time, for replies produced as the client reads:
/// [`RowsEncoder::start`], any number of [`RowsEncoder::row`], then
/// [`RowsEncoder::finish`]. The text form is the same as [`Reply::Rows`]'s; the JSON
/// form carries `"count"` after the rows (`{"ok":true,"rows":[…],"count":n}`).
pub struct RowsEncoder {
    format: Format,
    columns: std::sync::Arc<[String]>,
    count: u64,
}

impl RowsEncoder {
    /// Writes what comes before the rows.
    pub fn start(
        format: Format,
        id: Option<&Value>,
        columns: std::sync::Arc<[String]>,
        out: &mut Vec<u8>,
    ) -> RowsEncoder {
        if format == Format::Json {
            ok_head(id, out);
            out.extend_from_slice(b",\"rows\":[");
        }
        RowsEncoder {
            format,
            columns,
            count: 0,
        }
    }

    pub fn row(&mut self, row: &[super::value::Value], out: &mut Vec<u8>) {
        match self.format {
            Format::Text => row_text(out, &self.columns, row),
            Format::Json => {
                if self.count > 0 {
                    out.push(b',');
                }
                row_json(out, &self.columns, row);
            }
        }
        self.count += 1;
    }

    /// Writes the end: `+OK <n>`, or the JSON array's end and the count.
    pub fn finish(self, out: &mut Vec<u8>) {
        match self.format {
            Format::Text => out.extend_from_slice(b"+OK "),
            Format::Json => out.extend_from_slice(b"],\"count\":"),
        }
        push_u64(out, self.count);
        out.extend_from_slice(if self.format == Format::Json {
            b"}\n"
        } else {
            b"\n"
        });
    }
}

impl From<ErrorReply> for Reply {
    fn from(e: ErrorReply) -> Self {
        Reply::Error(e)
    }
}

impl Reply {
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the reply's lines (each ending in `\n`) in `format`, echoing `id` in JSON.
    pub fn encode(&self, format: Format, id: Option<&Value>, out: &mut Vec<u8>) {
        match format {
            Format::Text => self.encode_text(out),
            Format::Json => self.encode_json(id, out),
        }
    }

    fn encode_text(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Pong(None) => out.extend_from_slice(b"+PONG\n"),
            Reply::Pong(Some(t)) => line(out, &["+PONG ", t]),
            Reply::Done(None) => out.extend_from_slice(b"+OK\n"),
            Reply::Done(Some(t)) => line(out, &["+OK ", t]),
            Reply::Count { n, .. } => {
                out.extend_from_slice(b"+OK ");
                push_u64(out, *n);
                out.push(b'\n');
            }
            Reply::Record { fields, .. } => {
                out.extend_from_slice(b"+OK");
                for (k, v) in fields {
                    out.push(b' ');
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'=');
                    write_text_value(out, v);
                }
                out.push(b'\n');
            }
            Reply::List { items, .. } => {
                for item in items {
                    line(out, &["* ", &item.text]);
                }
                out.extend_from_slice(b"+OK ");
                push_u64(out, items.len() as u64);
                out.push(b'\n');
            }
            Reply::Page(p) => {
                for item in &p.items {
                    line(out, &["* ", &item.text]);
                }
                out.extend_from_slice(b"+OK ");
                push_u64(out, p.items.len() as u64);
                for (k, v) in &p.fields {
                    out.push(b' ');
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'=');
                    write_text_value(out, v);
                }
                out.push(b'\n');
            }
            Reply::Rows(r) => r.text(out),
            Reply::Value(_, v) => {
                out.extend_from_slice(b"+OK");
                if !matches!(**v, super::Payload::Json(Value::Null)) {
                    out.push(b' ');
                    v.write_text(out);
                }
                out.push(b'\n');
            }
            Reply::Error(e) => line(out, &["-ERR ", &e.code, " ", &one_line(&e.message)]),
        }
    }

    fn encode_json(&self, id: Option<&Value>, out: &mut Vec<u8>) {
        let ok = !self.is_error();
        out.extend_from_slice(if ok {
            b"{\"ok\":true"
        } else {
            b"{\"ok\":false"
        });
        if let Some(id) = id {
            out.extend_from_slice(b",\"id\":");
            write_json_value(out, id);
        }
        match self {
            Reply::Pong(t) => {
                out.extend_from_slice(b",\"pong\":");
                write_json_str(out, t.as_deref().unwrap_or(""));
            }
            Reply::Done(None) => {}
            Reply::Done(Some(t)) => {
                out.extend_from_slice(b",\"message\":");
                write_json_str(out, t);
            }
            Reply::Count { key, n } => {
                field_key(out, key);
                push_u64(out, *n);
            }
            Reply::Record { key, fields } => {
                field_key(out, key);
                out.push(b'{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_str(out, k);
                    out.push(b':');
                    write_json_value(out, v);
                }
                out.push(b'}');
            }
            Reply::List { key, items } => {
                out.extend_from_slice(b",\"count\":");
                push_u64(out, items.len() as u64);
                field_key(out, key);
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_value(out, &item.json);
                }
                out.push(b']');
            }
            Reply::Page(p) => {
                out.extend_from_slice(b",\"count\":");
                push_u64(out, p.items.len() as u64);
                field_key(out, p.key);
                out.push(b'[');
                for (i, item) in p.items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_value(out, &item.json);
                }
                out.push(b']');
                for (k, v) in &p.fields {
                    field_key(out, k);
                    write_json_value(out, v);
                }
            }
            Reply::Rows(r) => r.json(out),
            Reply::Value(key, v) => {
                field_key(out, key);
                v.write_json(out);
            }
            Reply::Error(e) => {
                out.extend_from_slice(b",\"error\":{\"code\":");
                write_json_str(out, &e.code);
                out.extend_from_slice(b",\"message\":");
                write_json_str(out, &e.message);
                out.push(b'}');
            }
        }
        out.extend_from_slice(b"}\n");
    }
}

fn field_key(out: &mut Vec<u8>, key: &str) {
    out.push(b',');
    write_json_str(out, key);
    out.push(b':');
}

fn line(out: &mut Vec<u8>, parts: &[&str]) {
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
    out.push(b'\n');
}

/// A text error must stay one line whatever it quotes, and must not drive the
/// terminal it is read on: line breaks become spaces, other control characters
/// (an arrow key's escape sequence, say) are shown escaped, `\x1b[A`.
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    fn is_control(c: char) -> bool {
        c.is_control() && c != '\t'
    }
    if !s.contains(is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            c if is_control(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_control(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

/// Writes a value for a `key=value` text field: bare when it is a plain word,
/// else as JSON (so a value with spaces stays one token, quoted).
pub fn write_text_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s)
            if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '"') =>
        {
            out.extend_from_slice(s.as_bytes())
        }
        Value::Null => out.push(b'-'),
        other => write_json_value(out, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(r: &Reply) -> String {
        let mut out = Vec::new();
        r.encode(Format::Text, None, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn js(r: &Reply, id: Option<Value>) -> Value {
        let mut out = Vec::new();
        r.encode(Format::Json, id.as_ref(), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn text_shapes() {
        assert_eq!(text(&Reply::Pong(None)), "+PONG\n");
        let value = |v| Reply::Value("result", Box::new(super::super::Payload::Json(v)));
        assert_eq!(text(&value(json!(null))), "+OK\n");
        assert_eq!(text(&value(json!("hi there"))), "+OK hi there\n");
        assert_eq!(text(&value(json!({"a": 1}))), "+OK {\"a\":1}\n");
        assert_eq!(text(&Reply::Pong(Some("hi".into()))), "+PONG hi\n");
        assert_eq!(
            text(&Reply::Count {
                key: "receivers",
                n: 120
            }),
            "+OK 120\n"
        );
        let r = Reply::Record {
            key: "client",
            fields: vec![("id", json!(3)), ("name", json!("a b")), ("x", Value::Null)],
        };
        assert_eq!(text(&r), "+OK id=3 name=\"a b\" x=-\n");
        let l = Reply::List {
            key: "channels",
            items: vec![Item {
                text: "news 2".into(),
                json: json!({}),
            }],
        };
        assert_eq!(text(&l), "* news 2\n+OK 1\n");
        let e = Reply::Error(ErrorReply::new("bad_args", "two\nlines".into()));
        assert_eq!(text(&e), "-ERR bad_args two lines\n");
        let e = Reply::Error(ErrorReply::new(
            "unknown_command",
            "unknown command '\x1b[A' \u{9b}2J\x07\tend".into(),
        ));
        assert_eq!(
            text(&e),
            "-ERR unknown_command unknown command '\\x1b[A' \\u{9b}2J\\x07\tend\n"
        );
    }

    #[test]
    fn json_shapes_echo_id() {
        assert_eq!(
            js(
                &Reply::Count {
                    key: "receivers",
                    n: 2
                },
                Some(json!("a"))
            ),
            json!({"ok":true,"id":"a","receivers":2})
        );
        assert_eq!(
            js(
                &Reply::Error(ErrorReply::new("no_such_channel", "x".into())),
                None
            ),
            json!({"ok":false,"error":{"code":"no_such_channel","message":"x"}})
        );
        let l = Reply::List {
            key: "channels",
            items: vec![Item {
                text: String::new(),
                json: json!({"name":"n"}),
            }],
        };
        assert_eq!(
            js(&l, None),
            json!({"ok":true,"count":1,"channels":[{"name":"n"}]})
        );
    }

    #[test]
    fn numbers() {
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        push_u64(&mut v, u64::MAX);
        assert_eq!(v, format!("0{}", u64::MAX).as_bytes());
    }
}
