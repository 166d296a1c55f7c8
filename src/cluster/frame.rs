//! How publications cross Redis. One Redis message carries a run of publications a
//! node made one after another on one channel (the channel is the Redis channel's
//! name): a header line `L2 <node>`, then per publication an entry line
//! `<t|j> <length> <from>` and that many bytes of payload (text, or JSON text).
//!
//! Runs, because Redis's cost is per `PUBLISH`: one message per publication held a
//! node in a cluster to 0.46 M msgs/s (1 -> 1, where alone it did 2.9 M).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::manager::backplane::{ClientEntry, MemberEntry, PayloadRef};
use crate::protocol::Payload;
use crate::store::ChannelOptions;

/// A node's news on the control channel (`<prefix>:ctl`), as one JSON object: its
/// `seq`-th change, or a greeting.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Ctl {
    pub node: Arc<str>,
    pub seq: u64,
    #[serde(flatten)]
    pub event: CtlEvent,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
pub enum CtlEvent {
    /// A client connected or was renamed.
    Client { client: ClientEntry },
    /// A client left.
    Left { id: u64 },
    /// A channel was made (registered in `<prefix>:channels` first).
    Channel {
        name: Arc<str>,
        options: ChannelOptions,
    },
    /// A channel was dropped.
    Dropped { name: Arc<str> },
    /// `providers` clients serve `service` now (0: none).
    Serves { service: Arc<str>, providers: u32 },
    /// Client `id` is a member of presence channel `channel` now, or no longer one.
    Member {
        channel: Arc<str>,
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member: Option<MemberEntry>,
    },
    /// The node (re)joined: read its clients.
    Hello,
    /// The node is leaving.
    Bye,
}

/// A service request or its answer, sent to one node on its own channel
/// (`<prefix>:to:<node>`) as one JSON object; `node` is the sender.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ToNode {
    Request {
        node: Arc<str>,
        req: u64,
        service: Arc<str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Arc<str>>,
        from: Arc<str>,
        data: WirePayload,
        timeout_ms: u64,
    },
    Answer {
        node: Arc<str>,
        req: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<WirePayload>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<WireError>,
    },
}

/// A payload in a [`ToNode`] message: `{"text": "…"}` or `{"json": …}`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WirePayload {
    Text(String),
    Json(serde_json::Value),
}

impl From<PayloadRef<'_>> for WirePayload {
    fn from(p: PayloadRef<'_>) -> Self {
        match p {
            PayloadRef::Text(s) => WirePayload::Text(s.to_string()),
            PayloadRef::Json(v) => WirePayload::Json(v.clone()),
        }
    }
}

impl From<WirePayload> for Payload {
    fn from(p: WirePayload) -> Self {
        match p {
            WirePayload::Text(s) => Payload::Text(s),
            WirePayload::Json(v) => Payload::Json(v),
        }
    }
}

/// An error answer in a [`ToNode`] message.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    pub message: String,
}

/// A channel as `<prefix>:channels` registers it: its options, and who registered it
/// (`<node>/<id>`, so that a registration refused where it was made is taken back by
/// that node only).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelDef {
    pub by: String,
    #[serde(flatten)]
    pub options: ChannelOptions,
}

/// The entry of a direct message to the client named `to` (it goes to the receiver's
/// node's own channel, `<prefix>:to:<node>`). Names hold no spaces.
pub fn direct_entry(to: &str, from: &str, payload: PayloadRef<'_>) -> Vec<u8> {
    entry(&format!("{to} {from}"), payload)
}

/// The receiver and the sender of a direct message's entry.
pub fn direct_parts<'a>(e: &Entry<'a>) -> Option<(&'a str, &'a str)> {
    e.from.split_once(' ')
}

/// One publication as it arrives.
#[derive(Debug, PartialEq)]
pub struct Entry<'a> {
    pub from: &'a str,
    pub payload: Payload,
}

/// The entry of one publication, to go after [`header`] (in any number).
pub fn entry(from: &str, payload: PayloadRef<'_>) -> Vec<u8> {
    let (kind, body) = match payload {
        PayloadRef::Text(s) => ('t', std::borrow::Cow::Borrowed(s)),
        PayloadRef::Json(v) => ('j', std::borrow::Cow::Owned(v.to_string())),
    };
    let mut out = Vec::with_capacity(from.len() + body.len() + 16);
    out.push(kind as u8);
    out.push(b' ');
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(from.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body.as_bytes());
    out
}

/// The header of a frame `node` sends.
pub fn header(node: &str) -> Vec<u8> {
    format!("L2 {node}\n").into_bytes()
}

/// Whether the frame in `bytes` was sent by `node`, read without decoding it (a node
/// receives all its own publications back, and skips them).
pub fn is_from(bytes: &[u8], node: &str) -> bool {
    bytes
        .strip_prefix(b"L2 ")
        .and_then(|rest| rest.strip_prefix(node.as_bytes()))
        .is_some_and(|rest| rest.first() == Some(&b'\n'))
}

/// The publications in a frame, in order.
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry<'_>>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let (head, mut rest) = text.split_once('\n').ok_or("no header line")?;
    if !head.starts_with("L2 ") {
        return Err(format!(
            "not a leviathan frame: '{}'",
            head.get(..40).unwrap_or(head)
        ));
    }
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (line, after) = rest.split_once('\n').ok_or("an entry without its line")?;
        let mut parts = line.splitn(3, ' ');
        let (Some(kind), Some(len), Some(from)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("an entry line '{line}'"));
        };
        let len: usize = len.parse().map_err(|_| format!("a length '{len}'"))?;
        let body = after.get(..len).ok_or("a payload cut short")?;
        rest = &after[len..];
        let payload = match kind {
            "t" => Payload::Text(body.to_string()),
            "j" => Payload::Json(serde_json::from_str(body).map_err(|e| format!("bad JSON: {e}"))?),
            other => return Err(format!("unknown payload kind '{other}'")),
        };
        entries.push(Entry { from, payload });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(node: &str, entries: &[(&str, PayloadRef<'_>)]) -> Vec<u8> {
        let mut f = header(node);
        for (from, p) in entries {
            f.extend(entry(from, *p));
        }
        f
    }

    #[test]
    fn frames_carry_runs_of_text_and_json_unchanged() {
        let text = "héllo  with spaces\tand\nmore";
        let v = json!({"n": 1, "s": "line\nbreak", "a": [true, null]});
        let f = frame(
            "ab12",
            &[
                ("alice", PayloadRef::Text(text)),
                ("bob", PayloadRef::Json(&v)),
                ("carol", PayloadRef::Text("")),
            ],
        );
        assert_eq!(
            decode(&f).unwrap(),
            vec![
                Entry {
                    from: "alice",
                    payload: Payload::Text(text.into())
                },
                Entry {
                    from: "bob",
                    payload: Payload::Json(v.clone())
                },
                Entry {
                    from: "carol",
                    payload: Payload::Text(String::new())
                },
            ]
        );
    }

    #[test]
    fn a_nodes_own_frames_are_told_without_decoding() {
        let f = frame("ab12", &[("alice", PayloadRef::Text("x"))]);
        assert!(is_from(&f, "ab12"));
        assert!(!is_from(&f, "ab1"));
        assert!(!is_from(&f, "ab123"));
        assert!(!is_from(b"L2 ab12", "ab12"));
    }

    #[test]
    fn direct_messages_name_receiver_and_sender() {
        let mut f = header("ab12");
        f.extend(direct_entry("bob", "alice", PayloadRef::Text("hi there")));
        let entries = decode(&f).unwrap();
        assert_eq!(direct_parts(&entries[0]), Some(("bob", "alice")));
        assert_eq!(entries[0].payload, Payload::Text("hi there".into()));
    }

    #[test]
    fn control_events_are_json_objects_that_read_back() {
        let client = ClientEntry {
            id: 1000000001,
            name: "alice".into(),
            since: 1_790_000_000_000,
            via: "ws".into(),
            addr: "127.0.0.1:5000".into(),
        };
        for event in [
            CtlEvent::Client { client },
            CtlEvent::Left { id: 7 },
            CtlEvent::Channel {
                name: "room.1".into(),
                options: ChannelOptions {
                    history: 10,
                    ttl: Some(60),
                    presence: true,
                },
            },
            CtlEvent::Dropped {
                name: "room.1".into(),
            },
            CtlEvent::Serves {
                service: "weather".into(),
                providers: 2,
            },
            CtlEvent::Member {
                channel: "room".into(),
                id: 4,
                member: Some(MemberEntry {
                    name: "bob".into(),
                    user: None,
                    since: 5,
                }),
            },
            CtlEvent::Member {
                channel: "room".into(),
                id: 4,
                member: None,
            },
            CtlEvent::Hello,
            CtlEvent::Bye,
        ] {
            let ctl = Ctl {
                node: "ab12".into(),
                seq: 3,
                event,
            };
            let text = serde_json::to_string(&ctl).unwrap();
            assert!(
                text.starts_with(r#"{"node":"ab12","seq":3,"ev":"#),
                "{text}"
            );
            assert_eq!(serde_json::from_str::<Ctl>(&text).unwrap(), ctl);
        }
        assert!(serde_json::from_str::<Ctl>(r#"{"node":"x","seq":1,"ev":"nope"}"#).is_err());
    }

    #[test]
    fn requests_and_answers_between_nodes_read_back() {
        let notes = [
            ToNode::Request {
                node: "ab12".into(),
                req: 9,
                service: "weather".into(),
                to: Some("bob".into()),
                from: "alice".into(),
                data: WirePayload::Text("oslo now".into()),
                timeout_ms: 2000,
            },
            ToNode::Answer {
                node: "cd34".into(),
                req: 9,
                data: Some(WirePayload::Json(json!({"temp": -3}))),
                error: None,
            },
            ToNode::Answer {
                node: "cd34".into(),
                req: 10,
                data: None,
                error: Some(WireError {
                    code: "no_city".into(),
                    message: "where?".into(),
                }),
            },
        ];
        for note in notes {
            let text = serde_json::to_string(&note).unwrap();
            assert!(text.starts_with(r#"{"kind":"#), "{text}");
            assert_eq!(serde_json::from_str::<ToNode>(&text).unwrap(), note);
        }
    }

    #[test]
    fn other_bytes_are_refused() {
        for bad in [
            &b"hello"[..],
            b"L1 n\nt 2 x\nhi",
            b"L2 n\nq 2 x\nhi",
            b"L2 n\nj 1 x\n{",
            b"L2 n\nt 5 x\nhi",
            b"L2 n\nt two x\nhi",
            b"L2 n\nt 2\nhi",
            b"\xff\n",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
