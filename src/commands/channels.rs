//! Channel commands, applied on the channel-manager thread: `CREATE`, `DROP`,
//! `CHANNELS`, `SUB`, `UNSUB`, `PUB`, `SEND`.

use std::sync::Arc;

use serde_json::json;

use super::history::{self, ResumeFrom};
use super::CommandSpec;
use super::{ok, Command};
use crate::manager::channel::{Channel, Filter};
use crate::manager::outbox::ConnId;
use crate::manager::outbox::Outbox;
use crate::manager::pattern_reaches;
use crate::manager::Manager;
use crate::protocol::args::clip;
use crate::protocol::subject::{self, Target};
use crate::protocol::{ErrorReply, Format, Item, Message, MessageKind, Payload, Push, Reply};
use crate::store::expr::Expr;
use crate::store::ChannelOptions;

/// The channel family: channels, subscriptions, publishing, direct messages. Applied
/// by the channel manager.
#[derive(Clone, Debug, PartialEq)]
pub enum ChannelCommand {
    Create(String, ChannelOptions),
    Drop(String),
    Channels,
    /// Subscribe to a channel or pattern; with a filter, only JSON messages matching it.
    Sub {
        target: String,
        filter: Option<Box<Expr>>,
        /// `SINCE … EPOCH …`: resume a history channel.
        resume: Option<Box<ResumeFrom>>,
    },
    Unsub(String),
    Pub {
        channel: String,
        data: Payload,
    },
    Send {
        to: String,
        data: Payload,
    },
    Replay {
        channel: String,
        since: Option<u64>,
        last: Option<usize>,
    },
    Presence(String),
}

impl From<ChannelCommand> for Command {
    fn from(c: ChannelCommand) -> Command {
        Command::Channel(c)
    }
}

pub static SPECS: &[CommandSpec] = &[
    CommandSpec {
        name: "CREATE",
        usage: "CREATE <channel> [HISTORY <n>] [TTL <seconds>] [PRESENCE]",
        json: r#"{"op":"create","channel":"news","history":100,"ttl":3600,"presence":true}"#,
        summary: "create a channel (dot-separated tokens of [A-Za-z0-9_-]); HISTORY keeps its last n messages (TTL: for so long at most), PRESENCE tells its subscribers who joins and leaves",
        parse_text: |mut a| {
            let c = a.required("channel")?.to_string();
            let options = history::text_options(&mut a)?;
            ok(ChannelCommand::Create(c, options))
        },
        parse_json: |mut a| {
            let c = a.required_str("channel")?;
            let options = history::json_options(&mut a)?;
            a.finish()?;
            ok(ChannelCommand::Create(c, options))
        },
    },
    CommandSpec {
        name: "DROP",
        usage: "DROP <channel>",
        json: r#"{"op":"drop","channel":"news"}"#,
        summary: "remove a channel; its subscribers get DROPPED <channel>",
        parse_text: |mut a| {
            let c = a.required("channel")?.to_string();
            a.finish()?;
            ok(ChannelCommand::Drop(c))
        },
        parse_json: |mut a| {
            let c = a.required_str("channel")?;
            a.finish()?;
            ok(ChannelCommand::Drop(c))
        },
    },
    CommandSpec {
        name: "CHANNELS",
        usage: "CHANNELS",
        json: r#"{"op":"channels"}"#,
        summary: "list channels with their subscriber counts",
        parse_text: |a| a.finish().map(|_| Command::Channel(ChannelCommand::Channels)),
        parse_json: |a| a.finish().map(|_| Command::Channel(ChannelCommand::Channels)),
    },
    CommandSpec {
        name: "SUB",
        usage: "SUB <channel or pattern> [SINCE <offset> EPOCH <epoch>] [WHERE <expr>]",
        json: r#"{"op":"sub","channel":"prices.*","where":"price > 10"}"#,
        summary: "subscribe to a channel or a pattern ('*' = one token, final '>' = the rest); with WHERE, only JSON messages whose fields match; SINCE resumes a history channel, pushing what you missed first",
        parse_text: |mut a| {
            let target = a.required("channel or pattern")?.to_string();
            let resume = history::text_resume(&mut a)?;
            let filter = super::tables::text_where(&mut a)?;
            ok(ChannelCommand::Sub {
                target,
                filter: filter.map(Box::new),
                resume,
            })
        },
        parse_json: |mut a| {
            let target = a.required_str("channel")?;
            let filter = super::tables::json_where(&mut a)?;
            let resume = history::json_resume(&mut a)?;
            a.finish()?;
            ok(ChannelCommand::Sub {
                target,
                filter: filter.map(Box::new),
                resume,
            })
        },
    },
    CommandSpec {
        name: "UNSUB",
        usage: "UNSUB <channel or pattern>",
        json: r#"{"op":"unsub","channel":"news.*"}"#,
        summary: "stop a subscription made with SUB",
        parse_text: |mut a| {
            let c = a.required("channel or pattern")?.to_string();
            a.finish()?;
            ok(ChannelCommand::Unsub(c))
        },
        parse_json: |mut a| {
            let c = a.required_str("channel")?;
            a.finish()?;
            ok(ChannelCommand::Unsub(c))
        },
    },
    CommandSpec {
        name: "PUB",
        usage: "PUB <channel> <message...>",
        json: r#"{"op":"pub","channel":"news","data":{"any":"json"}}"#,
        summary: "publish the rest of the line; answered +OK <receivers>",
        parse_text: |mut a| {
            let channel = a.required("channel")?.to_string();
            let data = Payload::Text(a.required_rest("message")?.to_string());
            ok(ChannelCommand::Pub { channel, data })
        },
        parse_json: |mut a| {
            let channel = a.required_str("channel")?;
            let data = Payload::Json(a.required_value("data")?);
            a.finish()?;
            ok(ChannelCommand::Pub { channel, data })
        },
    },
    CommandSpec {
        name: "SEND",
        usage: "SEND <name> <message...>",
        json: r#"{"op":"send","to":"bob","data":"hi"}"#,
        summary: "send a direct message to one client, who gets DM <from> <message>",
        parse_text: |mut a| {
            let to = a.required("name")?.to_string();
            let data = Payload::Text(a.required_rest("message")?.to_string());
            ok(ChannelCommand::Send { to, data })
        },
        parse_json: |mut a| {
            let to = a.required_str("to")?;
            let data = Payload::Json(a.required_value("data")?);
            a.finish()?;
            ok(ChannelCommand::Send { to, data })
        },
    },
];

/// Applies a channel command for connection `id`.
pub fn apply(m: &mut Manager, id: ConnId, cmd: ChannelCommand) -> Reply {
    let result = match cmd {
        ChannelCommand::Create(name, options) => create(m, id, name, options),
        ChannelCommand::Drop(name) => drop_channel(m, &name),
        ChannelCommand::Channels => Ok(channels(m)),
        ChannelCommand::Sub {
            target,
            filter,
            resume,
        } => subscribe(m, id, target, filter.map(|f| *f), resume.as_deref()),
        ChannelCommand::Unsub(target) => unsubscribe(m, id, &target),
        ChannelCommand::Pub { channel, data } => publish(m, id, &channel, data),
        ChannelCommand::Send { to, data } => send(m, id, &to, data),
        ChannelCommand::Replay {
            channel,
            since,
            last,
        } => history::replay(m, &channel, since, last),
        ChannelCommand::Presence(channel) => history::presence(m, &channel),
    };
    result.unwrap_or_else(Reply::Error)
}

pub(crate) fn limit_reached(message: String) -> ErrorReply {
    ErrorReply::new("limit_reached", message)
}

pub(crate) fn bad_name(e: String) -> ErrorReply {
    ErrorReply::new("bad_args", e)
}

pub(crate) fn no_such_channel(name: &str) -> ErrorReply {
    ErrorReply::new(
        "no_such_channel",
        format!(
            "no channel named '{}' (CREATE it first; CHANNELS lists them)",
            clip(name)
        ),
    )
}

fn create(
    m: &mut Manager,
    id: ConnId,
    name: String,
    options: ChannelOptions,
) -> Result<Reply, ErrorReply> {
    subject::check_channel(&name).map_err(bad_name)?;
    if m.channels.contains_key(name.as_str()) {
        return Err(ErrorReply::new(
            "channel_exists",
            format!("channel '{name}' already exists"),
        ));
    }
    super::tables::writable(&m.store)?;
    if m.channels.len() >= m.settings.max_channels {
        return Err(limit_reached(format!(
            "the server holds its maximum of {} channels (--max-channels)",
            m.settings.max_channels
        )));
    }
    let quota = m.settings.max_channels_per_client;
    match m.clients.get_mut(&id) {
        Some(c) if c.created >= quota => {
            return Err(limit_reached(format!(
                "this connection has created its maximum of {quota} channels (--max-channels-per-client)"
            )))
        }
        Some(c) => c.created += 1,
        None => {}
    }
    // Saved with the tables: the +OK waits until the journal holds it.
    m.durable = m.make_channel(name.into(), options);
    Ok(Reply::Done(None))
}

fn drop_channel(m: &mut Manager, name: &str) -> Result<Reply, ErrorReply> {
    if !m.channels.contains_key(name) {
        return Err(no_such_channel(name));
    }
    super::tables::writable(&m.store)?;
    m.durable = m.remove_channel(name);
    Ok(Reply::Done(None))
}

fn channels(m: &Manager) -> Reply {
    let mut list: Vec<&Channel> = m.channels.values().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Reply::List {
        key: "channels",
        items: list
            .into_iter()
            .map(|c| {
                let n = c.subscriber_count();
                let mut json = json!({"name": &*c.name, "subscribers": n});
                if let Some(h) = &c.history {
                    json["history"] = json!(h.keep());
                }
                if c.presence {
                    json["presence"] = json!(true);
                }
                Item {
                    text: format!("{} {n}", c.name),
                    json,
                }
            })
            .collect(),
    }
}

/// Subscribes, or changes the filter of an existing subscription to the same target;
/// with `resume`, first hands over what the subscriber missed. A new subscriber of a
/// history channel is told the offset it starts after: it receives every message
/// after that one.
fn subscribe(
    m: &mut Manager,
    id: ConnId,
    target: String,
    filter: Option<Expr>,
    resume: Option<&ResumeFrom>,
) -> Result<Reply, ErrorReply> {
    let kind = subject::classify(&target).map_err(bad_name)?;
    let filter: Option<Filter> = filter.map(Arc::new);
    if resume.is_some() {
        if kind != Target::Channel {
            return Err(bad_name(
                "SINCE resumes one channel, not a pattern".to_string(),
            ));
        }
        history::check_resume(m, id, &target)?;
    }
    let history = m
        .channels
        .get(target.as_str())
        .filter(|c| kind == Target::Channel && !c.has_member(id))
        .and_then(|c| c.history.clone());
    if let Some(h) = history {
        history::settle_for(m, &h);
        subscribe_to(m, id, &target, kind, filter.clone())?;
        return history::resume(m, id, &target, resume, filter.as_ref());
    }
    subscribe_to(m, id, &target, kind, filter)
}

fn subscribe_to(
    m: &mut Manager,
    id: ConnId,
    target: &str,
    kind: Target,
    filter: Option<Filter>,
) -> Result<Reply, ErrorReply> {
    let Manager {
        clients,
        channels,
        patterns,
        auth,
        ..
    } = m;
    let Some(client) = clients.get_mut(&id) else {
        return Ok(Reply::Done(None));
    };
    let renewing = client.channels.contains_key(target) || client.patterns.contains_key(target);
    if !renewing && client.subscriptions() >= m.settings.max_subscriptions {
        return Err(limit_reached(format!(
            "this connection holds its maximum of {} subscriptions and watches (--max-subscriptions)",
            m.settings.max_subscriptions
        )));
    }
    match kind {
        Target::Channel => {
            let chan = channels
                .get_mut(target)
                .ok_or_else(|| no_such_channel(target))?;
            if let Some(old) = client.channels.insert(chan.name.clone(), filter.clone()) {
                chan.release(&client.outbox, old.as_ref());
            }
            chan.add_ref(&client.outbox, filter.as_ref());
        }
        Target::Pattern => {
            let p: Arc<str> = target.into();
            let old = client.patterns.insert(p.clone(), filter.clone());
            let identity = client.outbox.identity();
            for chan in channels.values_mut() {
                if pattern_reaches(auth, &identity, &p, &chan.name) {
                    if let Some(old) = &old {
                        chan.release(&client.outbox, old.as_ref());
                    }
                    chan.add_ref(&client.outbox, filter.as_ref());
                }
            }
            patterns.entry(p).or_default().insert(id);
        }
    }
    Ok(Reply::Done(None))
}

fn unsubscribe(m: &mut Manager, id: ConnId, target: &str) -> Result<Reply, ErrorReply> {
    let Some(client) = m.clients.get_mut(&id) else {
        return Ok(Reply::Done(None));
    };
    let outbox = client.outbox.clone();
    if let Some(filter) = client.channels.remove(target) {
        if let Some(chan) = m.channels.get_mut(target) {
            chan.release(&outbox, filter.as_ref());
        }
        m.forget_resume(id, target);
    } else if let Some(filter) = client.patterns.remove(target) {
        m.unsubscribe_pattern(&outbox, target, filter.as_ref());
    } else {
        return Err(ErrorReply::new(
            "not_subscribed",
            format!("you are not subscribed to '{}'", clip(target)),
        ));
    }
    Ok(Reply::Done(None))
}

fn publish(m: &mut Manager, id: ConnId, channel: &str, data: Payload) -> Result<Reply, ErrorReply> {
    let Some(chan) = m.channels.get(channel) else {
        if let Err(e) = subject::check_channel(channel) {
            return Err(bad_name(e));
        }
        return Err(no_such_channel(channel));
    };
    let from = m.name_of(id);
    if let Some(backplane) = m.routes.backplane.get() {
        backplane.publish(&chan.name, &from, (&data).into());
    }
    let history = chan.history.clone();
    let msg = Arc::new(Message::new(
        MessageKind::Channel,
        chan.name.clone(),
        from,
        data,
    ));
    // Encode the text line here: this thread has spare time, the receivers' workers
    // do not. JSON is encoded by the first JSON receiver (with the offset it gets).
    msg.encoded(Format::Text);
    if let Some(h) = history {
        m.sequenced.push((h, msg.clone()));
    }
    let (n, crowded) = m.fan_out(channel, Push::Message(msg));
    m.counts.published += 1;
    m.counts.delivered += n;
    if let Some(receiver) = crowded {
        stall(m, id, &receiver);
    }
    Ok(Reply::Count {
        key: "receivers",
        n,
    })
}

fn send(m: &mut Manager, id: ConnId, to: &str, data: Payload) -> Result<Reply, ErrorReply> {
    let target = m.names.get(to).and_then(|t| m.clients.get(t));
    let Some(target) = target.map(|c| c.outbox.clone()) else {
        return send_remote(m, id, to, &data);
    };
    let from = m.name_of(id);
    let msg = Message::new(MessageKind::Direct, Arc::from(""), from, data);
    m.counts.direct += 1;
    if m.push(&target, Push::Message(Arc::new(msg))) {
        stall(m, id, &target);
    }
    Ok(Reply::Done(None))
}

/// `SEND` to a client this node does not hold: through the backplane to the node that
/// does. Answered when it is handed over, not when it arrives.
fn send_remote(m: &mut Manager, id: ConnId, to: &str, data: &Payload) -> Result<Reply, ErrorReply> {
    let (Some(backplane), Some(node)) = (m.routes.backplane.get(), m.remote.node_of(to)) else {
        return Err(ErrorReply::new(
            "no_such_client",
            format!(
                "no connected client named '{}' (CLIENTS lists them)",
                clip(to)
            ),
        ));
    };
    let from = m.name_of(id);
    if !backplane.direct(node, to, &from, data.into()) {
        return Err(ErrorReply::new(
            "unavailable",
            format!(
                "'{}' is on node {node}, which cannot be reached while this node's link to the cluster is down; try again",
                clip(to)
            ),
        ));
    }
    m.counts.direct += 1;
    Ok(Reply::Done(None))
}

/// Asks sender `id` to pause until `receiver`, whose outbox is crowded, catches up.
fn stall(m: &Manager, id: ConnId, receiver: &Arc<Outbox>) {
    if let Some(c) = m.clients.get(&id) {
        c.outbox.request_stall(receiver);
    }
}
