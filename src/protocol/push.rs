//! Pushes: lines the server sends when something happens, not in answer to a request.
//! A published message is encoded at most once per format, lazily, and shared by every
//! receiver through an `Arc`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::{write_json_str, Format, Payload};

/// Whether a message came through a channel or directly from another client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// `MSG <channel> <from> <payload>`.
    Channel,
    /// `DM <from> <payload>`.
    Direct,
}

/// A message with its encodings, computed on first use by whichever receiver needs
/// them and then shared.
#[derive(Debug)]
pub struct Message {
    pub kind: MessageKind,
    /// The channel for `MSG`; empty for `DM`.
    pub channel: Arc<str>,
    pub from: Arc<str>,
    pub data: Payload,
    /// Its place in the channel's history, for a channel that keeps one (0: none):
    /// given when the message is handed over, before anyone encodes it. Plain numbers,
    /// not a shared string: they are written for every message of a history channel.
    offset: AtomicU64,
    epoch: AtomicU64,
    encodings: Encodings,
}

/// Lines encoded once per format, on first use, for every receiver.
#[derive(Debug, Default)]
struct Encodings {
    text: OnceLock<Box<[u8]>>,
    json: OnceLock<Box<[u8]>>,
}

impl Encodings {
    /// The `format` encoding, written by `write` the first time.
    fn get(&self, format: Format, write: impl FnOnce(&mut Vec<u8>)) -> &[u8] {
        let cell = match format {
            Format::Text => &self.text,
            Format::Json => &self.json,
        };
        cell.get_or_init(|| {
            let mut out = Vec::new();
            write(&mut out);
            out.into_boxed_slice()
        })
    }
}

impl Message {
    pub fn new(kind: MessageKind, channel: Arc<str>, from: Arc<str>, data: Payload) -> Self {
        Message {
            kind,
            channel,
            from,
            data,
            offset: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            encodings: Encodings::default(),
        }
    }

    /// Gives the message its offset in its channel's history, of epoch `epoch`, before
    /// it is handed to anyone (the hand-over publishes the stores).
    pub fn set_seq(&self, offset: u64, epoch: Epoch) {
        self.epoch.store(epoch.0, Ordering::Relaxed);
        self.offset.store(offset, Ordering::Relaxed);
    }

    /// Its offset and epoch, if its channel keeps a history.
    pub fn seq(&self) -> Option<(u64, Epoch)> {
        match self.offset.load(Ordering::Relaxed) {
            0 => None,
            o => Some((o, Epoch(self.epoch.load(Ordering::Relaxed)))),
        }
    }

    /// The encoded line, `\n` included.
    pub fn encoded(&self, format: Format) -> &[u8] {
        self.encodings.get(format, |out| {
            // JSON exceeds the text line by a few dozen bytes.
            out.reserve(self.approx_len() + 48);
            self.write(format, out);
        })
    }

    /// Approximate size of one encoding, for outbox accounting: the text line's size
    /// (`MSG `, two spaces, `\n`), which JSON exceeds by a few dozen bytes.
    pub fn approx_len(&self) -> usize {
        self.channel.len() + self.from.len() + self.data.approx_len() + 8
    }

    fn write(&self, format: Format, out: &mut Vec<u8>) {
        match format {
            Format::Text => self.write_text(out),
            Format::Json => self.write_json(out),
        }
    }

    fn write_text(&self, out: &mut Vec<u8>) {
        match self.kind {
            MessageKind::Channel => {
                out.extend_from_slice(b"MSG ");
                out.extend_from_slice(self.channel.as_bytes());
                out.push(b' ');
            }
            MessageKind::Direct => out.extend_from_slice(b"DM "),
        }
        out.extend_from_slice(self.from.as_bytes());
        out.push(b' ');
        self.data.write_text(out);
        out.push(b'\n');
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        match self.kind {
            MessageKind::Channel => {
                out.extend_from_slice(b"{\"event\":\"msg\",\"channel\":");
                write_json_str(out, &self.channel);
                out.extend_from_slice(b",\"from\":");
            }
            MessageKind::Direct => out.extend_from_slice(b"{\"event\":\"dm\",\"from\":"),
        }
        write_json_str(out, &self.from);
        out.extend_from_slice(b",\"data\":");
        self.data.write_json(out);
        if let Some((offset, epoch)) = self.seq() {
            out.extend_from_slice(b",\"offset\":");
            super::digits::push_u64(out, offset);
            out.extend_from_slice(b",\"epoch\":\"");
            epoch.write(out);
            out.push(b'"');
        }
        out.extend_from_slice(b"}\n");
    }
}

/// A channel history's epoch: 48 random bits, chosen when the history starts, written
/// as 12 hexadecimal digits. Another epoch means the history was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch(pub u64);

impl Epoch {
    /// A new random epoch.
    pub fn random() -> Epoch {
        let mut bytes = [0u8; 8];
        if getrandom::getrandom(&mut bytes[..6]).is_err() {
            // No randomness: the clock still tells one start from another.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            bytes = nanos.to_le_bytes();
        }
        Epoch(u64::from_le_bytes(bytes) & 0xffff_ffff_ffff)
    }

    /// An epoch as written (12 hexadecimal digits), if `s` is one.
    pub fn parse(s: &str) -> Option<Epoch> {
        if s.len() != 12 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Epoch)
    }

    /// Appends its 12 digits.
    pub fn write(self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.extend(
            (0..12)
                .rev()
                .map(|i| HEX[(self.0 >> (i * 4)) as usize & 0xf]),
        );
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:012x}", self.0)
    }
}

/// Consecutive messages of one publisher to one channel, handed to every receiver of
/// the channel as one item: one reference count per receiver per run instead of per
/// message (receivers on other cores made each message's count bounce between
/// caches), and the run encoded once per format for all receivers.
#[derive(Debug)]
pub struct MessageRun {
    body: RunBody,
    encodings: Encodings,
}

#[derive(Debug)]
enum RunBody {
    Messages(Vec<Arc<Message>>),
    /// Text messages on a channel without history or filters, as their text lines.
    Lines(TextLines),
}

impl MessageRun {
    pub fn new(messages: Vec<Arc<Message>>) -> MessageRun {
        MessageRun {
            body: RunBody::Messages(messages),
            encodings: Encodings::default(),
        }
    }

    /// A run of text messages written as their lines while they were published.
    pub fn lines(lines: TextLines) -> MessageRun {
        MessageRun {
            body: RunBody::Lines(lines),
            encodings: Encodings::default(),
        }
    }

    /// Every message's line, in order.
    pub fn encoded(&self, format: Format) -> &[u8] {
        match (&self.body, format) {
            (RunBody::Lines(lines), Format::Text) => &lines.text,
            (RunBody::Lines(lines), Format::Json) => {
                self.encodings.get(format, |out| lines.write_json(out))
            }
            (RunBody::Messages(messages), _) => self.encodings.get(format, |out| {
                let size: usize = messages.iter().map(|m| m.approx_len()).sum();
                out.reserve(size + size / 2);
                for m in messages {
                    m.write(format, out);
                }
            }),
        }
    }
}

/// Text messages one publisher sends one after another to one channel (no history,
/// no filters: what most publishing is), kept as the `MSG` lines text receivers get,
/// written once as each `PUB` is read: no message object, no payload string, no
/// reference count per message. JSON receivers get lines made from the same bytes.
#[derive(Debug)]
pub struct TextLines {
    channel: Arc<str>,
    from: Arc<str>,
    text: Vec<u8>,
    /// Where each payload lies in `text`.
    spans: Vec<(usize, usize)>,
}

impl TextLines {
    pub fn new(channel: Arc<str>, from: Arc<str>) -> TextLines {
        TextLines {
            channel,
            from,
            text: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// Adds a message; returns its line's length (for the outbox's accounting).
    pub fn push(&mut self, payload: &str) -> usize {
        let before = self.text.len();
        self.text.extend_from_slice(b"MSG ");
        self.text.extend_from_slice(self.channel.as_bytes());
        self.text.push(b' ');
        self.text.extend_from_slice(self.from.as_bytes());
        self.text.push(b' ');
        let start = self.text.len();
        self.text.extend_from_slice(payload.as_bytes());
        self.spans.push((start, self.text.len()));
        self.text.push(b'\n');
        self.text.len() - before
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The lines as `Message::write_json` writes a text message.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.reserve(self.text.len() + self.spans.len() * 48);
        let mut head = b"{\"event\":\"msg\",\"channel\":".to_vec();
        write_json_str(&mut head, &self.channel);
        head.extend_from_slice(b",\"from\":");
        write_json_str(&mut head, &self.from);
        head.extend_from_slice(b",\"data\":");
        for &(start, end) in &self.spans {
            out.extend_from_slice(&head);
            // Whole lines of valid UTF-8 went in, cut at their spans' ends.
            let payload = std::str::from_utf8(&self.text[start..end]).unwrap_or_default();
            write_json_str(out, payload);
            out.extend_from_slice(b"}\n");
        }
    }
}

/// Why the server is closing a connection, sent as `BYE <reason>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByeReason {
    Shutdown,
    /// Its outbox overflowed: it does not read what it is sent.
    SlowConsumer,
    /// It answered none of the server's `PING`s for too long.
    StaleConnection,
    /// A line stayed incomplete longer than the line timeout.
    LineTimeout,
    /// The server's input budget was spent, and it held one of the largest partial lines.
    InputBudget,
    /// Too many failed logins on this connection.
    Unauthorized,
    /// The server's operator closed it (`kick` on the server console).
    Kicked,
}

impl ByeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ByeReason::Shutdown => "shutdown",
            ByeReason::SlowConsumer => "slow_consumer",
            ByeReason::StaleConnection => "stale_connection",
            ByeReason::LineTimeout => "line_timeout",
            ByeReason::InputBudget => "input_budget",
            ByeReason::Unauthorized => "unauthorized",
            ByeReason::Kicked => "kicked",
        }
    }

    /// Every reason, for code that stores one as a number.
    pub const ALL: [ByeReason; 7] = [
        ByeReason::Shutdown,
        ByeReason::SlowConsumer,
        ByeReason::StaleConnection,
        ByeReason::LineTimeout,
        ByeReason::InputBudget,
        ByeReason::Unauthorized,
        ByeReason::Kicked,
    ];
}

/// Everything the server pushes.
#[derive(Clone, Debug)]
pub enum Push {
    /// `MSG` or `DM`, shared by all receivers.
    Message(Arc<Message>),
    /// `DROPPED <channel>`: a channel you were subscribed to was removed.
    Dropped(Arc<str>),
    /// `BYE <reason>`.
    Bye(ByeReason),
    /// `ROW <table> <change> <row>`: a watched table changed.
    Row(Arc<RowEvent>),
    /// `PING`: the client has been silent; any request (`PONG` is meant for this) shows
    /// it is still there.
    Ping,
    /// `REQ <req-id> <service> <from> [payload]`: a request for a service this client
    /// offers, to answer with `REPLY` or `FAIL`.
    Request(Arc<ServiceRequest>),
    /// `JOIN <channel> <name>` / `LEAVE <channel> <name>`: someone started or stopped
    /// receiving a channel created with `PRESENCE`.
    Presence(Arc<PresenceEvent>),
}

/// A client starting or stopping to receive a presence channel.
#[derive(Debug)]
pub struct PresenceEvent {
    pub joined: bool,
    pub channel: Arc<str>,
    pub name: Arc<str>,
    /// The user it is logged in as, if any.
    pub user: Option<Arc<str>>,
}

/// A request as its provider receives it.
#[derive(Debug)]
pub struct ServiceRequest {
    pub req: u64,
    pub service: Arc<str>,
    pub from: Arc<str>,
    pub data: Payload,
}

/// A row change as watchers receive it, shared by all of them.
#[derive(Debug)]
pub struct RowEvent {
    pub table: String,
    /// `insert`, `update`, `delete`, or `drop` (the table was removed; no row).
    pub change: &'static str,
    pub row: Option<super::Item>,
    /// The change's number, for a watcher that resumes (`WATCH … SINCE`); none for
    /// `drop`.
    pub seq: Option<u64>,
}

impl Push {
    /// Appends the push's line in `format`.
    pub fn encode(&self, format: Format, out: &mut Vec<u8>) {
        match (self, format) {
            (Push::Message(m), f) => out.extend_from_slice(m.encoded(f)),
            (Push::Dropped(c), Format::Text) => {
                out.extend_from_slice(b"DROPPED ");
                out.extend_from_slice(c.as_bytes());
                out.push(b'\n');
            }
            (Push::Dropped(c), Format::Json) => {
                out.extend_from_slice(b"{\"event\":\"dropped\",\"channel\":");
                write_json_str(out, c);
                out.extend_from_slice(b"}\n");
            }
            (Push::Bye(r), Format::Text) => {
                out.extend_from_slice(b"BYE ");
                out.extend_from_slice(r.as_str().as_bytes());
                out.push(b'\n');
            }
            (Push::Bye(r), Format::Json) => {
                out.extend_from_slice(b"{\"event\":\"bye\",\"reason\":\"");
                out.extend_from_slice(r.as_str().as_bytes());
                out.extend_from_slice(b"\"}\n");
            }
            (Push::Ping, Format::Text) => out.extend_from_slice(b"PING\n"),
            (Push::Ping, Format::Json) => out.extend_from_slice(b"{\"event\":\"ping\"}\n"),
            (Push::Request(r), Format::Text) => {
                out.extend_from_slice(b"REQ ");
                super::digits::push_u64(out, r.req);
                out.push(b' ');
                out.extend_from_slice(r.service.as_bytes());
                out.push(b' ');
                out.extend_from_slice(r.from.as_bytes());
                if !matches!(r.data, Payload::Json(serde_json::Value::Null)) {
                    out.push(b' ');
                    r.data.write_text(out);
                }
                out.push(b'\n');
            }
            (Push::Request(r), Format::Json) => {
                out.extend_from_slice(b"{\"event\":\"req\",\"req\":\"");
                super::digits::push_u64(out, r.req);
                out.extend_from_slice(b"\",\"service\":");
                write_json_str(out, &r.service);
                out.extend_from_slice(b",\"from\":");
                write_json_str(out, &r.from);
                out.extend_from_slice(b",\"data\":");
                r.data.write_json(out);
                out.extend_from_slice(b"}\n");
            }
            (Push::Presence(p), Format::Text) => {
                out.extend_from_slice(if p.joined { b"JOIN " } else { b"LEAVE " });
                out.extend_from_slice(p.channel.as_bytes());
                out.push(b' ');
                out.extend_from_slice(p.name.as_bytes());
                out.push(b'\n');
            }
            (Push::Presence(p), Format::Json) => {
                out.extend_from_slice(if p.joined {
                    b"{\"event\":\"join\",\"channel\":"
                } else {
                    b"{\"event\":\"leave\",\"channel\":"
                });
                write_json_str(out, &p.channel);
                out.extend_from_slice(b",\"name\":");
                write_json_str(out, &p.name);
                if let Some(user) = &p.user {
                    out.extend_from_slice(b",\"user\":");
                    write_json_str(out, user);
                }
                out.extend_from_slice(b"}\n");
            }
            (Push::Row(e), Format::Text) => {
                out.extend_from_slice(b"ROW ");
                out.extend_from_slice(e.table.as_bytes());
                out.push(b' ');
                out.extend_from_slice(e.change.as_bytes());
                if let Some(row) = &e.row {
                    out.push(b' ');
                    out.extend_from_slice(row.text.as_bytes());
                }
                out.push(b'\n');
            }
            (Push::Row(e), Format::Json) => {
                out.extend_from_slice(b"{\"event\":\"row\",\"table\":");
                write_json_str(out, &e.table);
                out.extend_from_slice(b",\"change\":\"");
                out.extend_from_slice(e.change.as_bytes());
                out.push(b'"');
                if let Some(row) = &e.row {
                    out.extend_from_slice(b",\"row\":");
                    super::write_json_value(out, &row.json);
                }
                if let Some(seq) = e.seq {
                    out.extend_from_slice(b",\"seq\":");
                    super::digits::push_u64(out, seq);
                }
                out.extend_from_slice(b"}\n");
            }
        }
    }

    /// Approximate encoded size, for outbox accounting.
    pub fn approx_len(&self) -> usize {
        match self {
            Push::Message(m) => m.approx_len(),
            Push::Dropped(c) => c.len() + 40,
            Push::Bye(_) | Push::Ping => 40,
            Push::Row(e) => e.table.len() + e.row.as_ref().map_or(0, |r| r.text.len()) + 24,
            Push::Request(r) => r.service.len() + r.from.len() + r.data.approx_len() + 48,
            Push::Presence(p) => p.channel.len() + p.name.len() + 40,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_run_of_lines_encodes_as_its_messages_would() {
        let payloads = [
            "hi",
            "with \"quotes\" and \\",
            "ünïcödé ✓",
            "tab\there",
            "{\"a\":1}",
            "x",
        ];
        let (channel, from): (Arc<str>, Arc<str>) = ("news.eu".into(), "ann-1".into());
        let mut lines = TextLines::new(channel.clone(), from.clone());
        let mut sizes = 0;
        for p in payloads {
            sizes += lines.push(p);
        }
        let messages: Vec<_> = payloads
            .iter()
            .map(|p| {
                Arc::new(Message::new(
                    MessageKind::Channel,
                    channel.clone(),
                    from.clone(),
                    Payload::Text(p.to_string()),
                ))
            })
            .collect();
        let approx: usize = messages.iter().map(|m| m.approx_len()).sum();
        let (a, b) = (MessageRun::lines(lines), MessageRun::new(messages));
        for format in [Format::Text, Format::Json] {
            assert_eq!(
                String::from_utf8_lossy(a.encoded(format)),
                String::from_utf8_lossy(b.encoded(format)),
                "{format:?}"
            );
        }
        assert_eq!(sizes, a.encoded(Format::Text).len());
        // The outbox counts a byte less a message than for a message object: a line's
        // exact length rather than the estimate.
        assert_eq!(sizes + payloads.len(), approx);
    }

    #[test]
    fn message_encodings() {
        let m = Message::new(
            MessageKind::Channel,
            "news".into(),
            "alice".into(),
            Payload::Json(json!({"x": 1})),
        );
        assert_eq!(m.encoded(Format::Text), b"MSG news alice {\"x\":1}\n");
        let v: serde_json::Value = serde_json::from_slice(m.encoded(Format::Json)).unwrap();
        assert_eq!(
            v,
            json!({"event":"msg","channel":"news","from":"alice","data":{"x":1}})
        );
        let d = Message::new(
            MessageKind::Direct,
            "".into(),
            "bob".into(),
            Payload::Text("yo".into()),
        );
        assert_eq!(d.encoded(Format::Text), b"DM bob yo\n");
        let v: serde_json::Value = serde_json::from_slice(d.encoded(Format::Json)).unwrap();
        assert_eq!(v, json!({"event":"dm","from":"bob","data":"yo"}));
    }
}
