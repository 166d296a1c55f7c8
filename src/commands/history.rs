//! Channel history and presence (DESIGN section 11), applied on the channel manager's
//! thread: `CREATE`'s `HISTORY`/`TTL`/`PRESENCE` options, `REPLAY`, `PRESENCE`, and
//! `SUB … SINCE … EPOCH …` (resume). The history itself and why resuming loses
//! nothing: `store/history.rs`.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::channels::{no_such_channel, ChannelCommand};
use super::{ok, CommandSpec};
use crate::manager::channel::Filter;
use crate::manager::outbox::{ConnId, Delivery, OutItem};
use crate::manager::Manager;
use crate::protocol::args::{clip, type_name, Args, JsonArgs};
use crate::protocol::push::{Epoch, MessageRun};
use crate::protocol::reply::Page;
use crate::protocol::{ErrorReply, Item, Message, Push, Reply};
use crate::store::{ChannelOptions, Entry, History};

/// Most messages one channel may keep.
pub const MAX_HISTORY: u64 = 100_000;
/// Longest a kept message may live: a year.
const MAX_TTL: u64 = 366 * 24 * 3600;

/// Where a resuming subscriber left off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeFrom {
    pub since: u64,
    pub epoch: String,
}

pub static SPECS: &[CommandSpec] = &[
    CommandSpec {
        name: "REPLAY",
        usage: "REPLAY <channel> [SINCE <offset>] [LAST <n>]",
        json: r#"{"op":"replay","channel":"news","since":10,"last":50}"#,
        summary: "list a history channel's kept messages (after an offset, the last n): * <offset> <time> <from> <message>",
        parse_text: |mut a| {
            let channel = a.required("channel")?.to_string();
            let (mut since, mut last) = (None, None);
            while let Some(w) = a.next_word() {
                if w.eq_ignore_ascii_case("SINCE") && since.is_none() {
                    since = Some(a.required_count("offset")?);
                } else if w.eq_ignore_ascii_case("LAST") && last.is_none() {
                    last = Some(a.required_count("count")? as usize);
                } else {
                    return Err(a.error(format!("unexpected argument '{}'", clip(w))));
                }
            }
            ok(ChannelCommand::Replay {
                channel,
                since,
                last,
            })
        },
        parse_json: |mut a| {
            let channel = a.required_str("channel")?;
            let since = a.optional_count("since")?;
            let last = a.optional_count("last")?.map(|n| n as usize);
            a.finish()?;
            ok(ChannelCommand::Replay {
                channel,
                since,
                last,
            })
        },
    },
    CommandSpec {
        name: "PRESENCE",
        usage: "PRESENCE <channel>",
        json: r#"{"op":"presence","channel":"room"}"#,
        summary: "list who receives a channel created with PRESENCE: * <name> [user=<user>] since=<time>",
        parse_text: |mut a| {
            let channel = a.required("channel")?.to_string();
            a.finish()?;
            ok(ChannelCommand::Presence(channel))
        },
        parse_json: |mut a| {
            let channel = a.required_str("channel")?;
            a.finish()?;
            ok(ChannelCommand::Presence(channel))
        },
    },
];

/// `[HISTORY <n>] [TTL <seconds>] [PRESENCE]` after `CREATE <channel>`, in any order.
pub fn text_options(a: &mut Args) -> Result<ChannelOptions, ErrorReply> {
    let mut o = ChannelOptions::default();
    let (mut history, mut ttl) = (None, None);
    while let Some(w) = a.next_word() {
        if w.eq_ignore_ascii_case("HISTORY") && history.is_none() {
            history = Some(a.required_count("history size")?);
        } else if w.eq_ignore_ascii_case("TTL") && ttl.is_none() {
            ttl = Some(a.required_count("seconds")?);
        } else if w.eq_ignore_ascii_case("PRESENCE") && !o.presence {
            o.presence = true;
        } else {
            return Err(a.error(format!("unexpected argument '{}'", clip(w))));
        }
    }
    check_options(o, history, ttl).map_err(|e| a.error(e))
}

/// `"history"`, `"ttl"` and `"presence"` of a JSON `create`.
pub fn json_options(a: &mut JsonArgs) -> Result<ChannelOptions, ErrorReply> {
    let history = a.optional_count("history")?;
    let ttl = a.optional_count("ttl")?;
    let presence = match a.take("presence") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(v) => {
            return Err(a.error(format!(
                "'presence' must be true or false, got {}",
                type_name(&v)
            )))
        }
    };
    let o = ChannelOptions {
        presence,
        ..ChannelOptions::default()
    };
    check_options(o, history, ttl).map_err(|e| a.error(e))
}

fn check_options(
    mut o: ChannelOptions,
    history: Option<u64>,
    ttl: Option<u64>,
) -> Result<ChannelOptions, String> {
    match history {
        Some(0) => return Err("HISTORY must keep at least 1 message".into()),
        Some(n) if n > MAX_HISTORY => {
            return Err(format!("HISTORY keeps at most {MAX_HISTORY} messages"))
        }
        Some(n) => o.history = n as usize,
        None => {}
    }
    match ttl {
        Some(_) if history.is_none() => return Err("TTL needs HISTORY <n>".into()),
        Some(0) => return Err("TTL must be at least 1 second".into()),
        Some(s) if s > MAX_TTL => return Err(format!("TTL is at most {MAX_TTL} seconds")),
        s => o.ttl = s,
    }
    Ok(o)
}

/// `SINCE <offset> EPOCH <epoch>` after `SUB <channel>`, if there.
pub fn text_resume(a: &mut Args) -> Result<Option<Box<ResumeFrom>>, ErrorReply> {
    if !a.keyword("SINCE") {
        return Ok(None);
    }
    let since = a.required_count("offset")?;
    if !a.keyword("EPOCH") {
        return Err(a.error("SINCE <offset> needs EPOCH <epoch>".into()));
    }
    let epoch = a.required("epoch")?.to_string();
    Ok(Some(Box::new(ResumeFrom { since, epoch })))
}

/// `"since"` and `"epoch"` of a JSON `sub`, if there.
pub fn json_resume(a: &mut JsonArgs) -> Result<Option<Box<ResumeFrom>>, ErrorReply> {
    let since = a.optional_count("since")?;
    let epoch = a.optional_str("epoch")?;
    match (since, epoch) {
        (None, None) => Ok(None),
        (Some(since), Some(epoch)) => Ok(Some(Box::new(ResumeFrom { since, epoch }))),
        _ => Err(a.error("'since' and 'epoch' go together".into())),
    }
}

fn no_history(name: &str) -> ErrorReply {
    ErrorReply::new(
        "no_history",
        format!(
            "channel '{}' keeps no history (CREATE <channel> HISTORY <n>)",
            clip(name)
        ),
    )
}

/// The history of channel `name`, or why there is none.
fn history_of(m: &Manager, name: &str) -> Result<Arc<History>, ErrorReply> {
    let chan = m.channels.get(name).ok_or_else(|| no_such_channel(name))?;
    chan.history.clone().ok_or_else(|| no_history(name))
}

/// Ends the manager's batch early when it published messages to `history` that are
/// not numbered yet (they are numbered when handed over, at the end of a batch): a
/// read of the history must see them, and a subscriber starting now must not be
/// counted among their receivers.
pub fn settle_for(m: &mut Manager, history: &Arc<History>) {
    if m.sequenced.iter().any(|(h, _)| Arc::ptr_eq(h, history)) {
        m.settle();
    }
}

/// `REPLAY`.
pub fn replay(
    m: &mut Manager,
    channel: &str,
    since: Option<u64>,
    last: Option<usize>,
) -> Result<Reply, ErrorReply> {
    let history = history_of(m, channel)?;
    settle_for(m, &history);
    let (entries, top) = {
        let mut seq = history.lock();
        (seq.since(since, last), seq.top())
    };
    Ok(Reply::Page(Box::new(Page {
        key: "messages",
        items: entries.iter().map(item).collect(),
        fields: vec![
            ("offset", json!(top)),
            ("epoch", json!(history.epoch.to_string())),
        ],
    })))
}

fn item(e: &Entry) -> Item {
    let time = super::session::time(e.time());
    let mut text = Vec::new();
    e.msg.data.write_text(&mut text);
    let payload = String::from_utf8_lossy(&text);
    Item {
        text: format!("{} {time} {} {payload}", e.offset, e.msg.from),
        json: json!({
            "offset": e.offset,
            "time": time,
            "from": &*e.msg.from,
            "data": e.msg.data.to_json(),
        }),
    }
}

/// `PRESENCE`.
pub fn presence(m: &Manager, channel: &str) -> Result<Reply, ErrorReply> {
    let chan = m
        .channels
        .get(channel)
        .ok_or_else(|| no_such_channel(channel))?;
    if !chan.presence {
        return Err(ErrorReply::new(
            "no_presence",
            format!(
                "channel '{}' does not tell presence (CREATE <channel> PRESENCE)",
                clip(channel)
            ),
        ));
    }
    // Everyone here, and in a cluster everyone on the other nodes.
    let mut members: Vec<(Arc<str>, Option<Arc<str>>, SystemTime)> = chan
        .members()
        .map(|(o, since)| (o.name(), o.identity().user.clone(), since))
        .collect();
    members.extend(m.remote.members.of(channel).map(|e| {
        let since = crate::manager::backplane::from_epoch_millis(e.since);
        (e.name.clone(), e.user.clone(), since)
    }));
    members.sort_by_key(|(_, _, since)| *since);
    let items = members
        .into_iter()
        .map(|(name, user, since)| {
            let since = super::session::time(since);
            let text = match &user {
                Some(u) => format!("{name} user={u} since={since}"),
                None => format!("{name} since={since}"),
            };
            Item {
                text,
                json: json!({"name": &*name, "user": user.as_deref(), "since": since}),
            }
        })
        .collect();
    Ok(Reply::List {
        key: "members",
        items,
    })
}

/// Checks a resume before anything changes: the channel keeps a history and the
/// connection does not receive it yet (what it received would come twice).
pub fn check_resume(m: &Manager, id: ConnId, channel: &str) -> Result<(), ErrorReply> {
    history_of(m, channel)?;
    if m.channels.get(channel).is_some_and(|c| c.has_member(id)) {
        return Err(ErrorReply::new(
            "bad_args",
            format!(
                "you already receive '{}'; SINCE resumes a channel you do not receive yet",
                clip(channel)
            ),
        ));
    }
    Ok(())
}

/// Starts connection `id`, just subscribed to `channel` with `filter`, after offset
/// `from` (a resume), or after the newest message: the missed messages are handed to
/// it now, and publishers still on an older route hand it what they publish from here
/// on (see `store/history.rs`). The caller settled what the manager's batch published
/// there before it subscribed ([`settle_for`]), so everything published before is
/// in the history.
pub fn resume(
    m: &mut Manager,
    id: ConnId,
    channel: &str,
    from: Option<&ResumeFrom>,
    filter: Option<&Filter>,
) -> Result<Reply, ErrorReply> {
    let history = history_of(m, channel)?;
    let outbox = m
        .clients
        .get(&id)
        .map(|c| c.outbox.clone())
        .ok_or_else(|| no_such_channel(channel))?;
    let before = m.routes.get_versioned(channel).0;
    let mut seq = history.lock();
    let (since, epoch) = match from {
        Some(f) => (f.since, Epoch::parse(&f.epoch)),
        None => (seq.top(), Some(history.epoch)),
    };
    let found = seq.resume(since, epoch, filter.map(|f| &**f));
    let bytes: usize = found.missed.iter().map(|e| e.msg.approx_len()).sum();
    // More than half its outbox would make it a slow consumer at once: it is told to
    // reload (REPLAY in parts) instead.
    let recovered = found.recovered && bytes * 2 <= outbox.limit();
    if recovered && !found.missed.is_empty() {
        let mut msgs: Vec<Arc<Message>> = found.missed.into_iter().map(|e| e.msg).collect();
        let item = if msgs.len() == 1 {
            OutItem::Push(Push::Message(msgs.swap_remove(0)))
        } else {
            OutItem::Run(Arc::new(MessageRun::new(msgs)))
        };
        if let Delivery::Queued { wake: true } = outbox.push_batch(&mut vec![item], bytes, false) {
            outbox.wake();
        }
    }
    // Recovered or not, it gets everything after the newest message from here on.
    let before = before.map(|r| {
        let any: Arc<dyn std::any::Any + Send + Sync> = r;
        Arc::downgrade(&any)
    });
    seq.join(id, outbox, filter.cloned(), before);
    drop(seq);
    if !m.resuming.iter().any(|h| Arc::ptr_eq(h, &history)) {
        m.resuming.push(history.clone());
    }
    let mut fields = vec![
        ("offset", json!(found.top)),
        ("epoch", json!(history.epoch.to_string())),
    ];
    if from.is_some() {
        fields.insert(0, ("recovered", json!(recovered)));
    }
    Ok(Reply::Record {
        key: "history",
        fields,
    })
}
