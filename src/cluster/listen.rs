//! The receiving link: the `cluster-receive` thread holds one connection subscribed to
//! every channel's publications (the pattern `<prefix>:msg:*`), to the control channel
//! `<prefix>:ctl` and to this node's own `<prefix>:to:<node>` (direct messages), and
//! hands what arrives to the manager in arrival order: publications in batches of
//! what has arrived already (up to [`BATCH`]), so the manager wakes each receiver
//! once per batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::control::Control;
use super::frame::{self, Ctl, CtlEvent, ToNode};
use super::{receive, Backoff, Shared, BATCH, IO_TIMEOUT, POLL};
use crate::manager::backplane::{ClusterEvent, RemoteMessage};
use crate::manager::route::Routes;
use crate::protocol::{ErrorReply, Payload};

/// Where what arrives goes.
pub struct Sinks<'a> {
    pub deliver: &'a dyn Fn(ClusterEvent),
    pub control: Sender<Control>,
    /// Says when a receiver here is crowded by what this link hands over.
    pub routes: Arc<Routes>,
}

/// The receiving thread: runs until the node stops.
pub fn receive_loop(shared: &Shared, client: &redis::Client, sinks: &Sinks<'_>) {
    let pattern = format!("{}:msg:*", shared.prefix);
    let ctl = format!("{}:ctl", shared.prefix);
    let mine = format!("{}:to:{}", shared.prefix, shared.node);
    let skip = pattern.len() - 1;
    let mut backoff = Backoff::new();
    let mut batch = Vec::new();
    while !shared.stopping() {
        let wait = backoff.next.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait.min(POLL));
            continue;
        }
        let info = client.get_connection_info();
        let channels = [ctl.as_str(), mine.as_str()];
        let mut sub = match receive::Subscriber::connect(info, &pattern, &channels, IO_TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                backoff.failed();
                shared.link(&shared.receiving_up, "receiving", false, Some(&e));
                continue;
            }
        };
        backoff.succeeded();
        shared.link(&shared.receiving_up, "receiving", true, None);
        // What the others said while this link was down is read from Redis.
        let _ = sinks.control.send(Control::ReadAll);
        while !shared.stopping() {
            if !sub.readable(POLL) {
                continue;
            }
            match sub.next_published() {
                Ok(Some(p)) if p.channel.starts_with(&pattern.as_bytes()[..skip]) => {
                    remote(shared, skip, p, &mut batch)
                }
                Ok(Some(p)) => {
                    // In arrival order: what came before goes first.
                    hand_over(shared, sinks, &mut batch);
                    if p.channel == ctl.as_bytes() {
                        control(shared, &p.payload, sinks);
                    } else if p.channel == mine.as_bytes() {
                        direct(shared, &p.payload, sinks.deliver);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    backoff.failed();
                    shared.link(&shared.receiving_up, "receiving", false, Some(&e));
                    break;
                }
            }
            if batch.len() >= BATCH || !sub.readable(Duration::ZERO) {
                hand_over(shared, sinks, &mut batch);
            }
        }
        // What arrived before the link broke still goes out.
        hand_over(shared, sinks, &mut batch);
    }
}

/// Hands `batch` to the manager, paced to what the receivers here read
/// (`manager/pacing.rs`): a subscriber that reads slower than another node publishes
/// is paced, not cut as a slow consumer.
fn hand_over(shared: &Shared, sinks: &Sinks<'_>, batch: &mut Vec<RemoteMessage>) {
    if batch.is_empty() {
        return;
    }
    sinks.routes.remote.before_hand_over();
    let n = batch.len() as u64;
    shared
        .stats
        .cluster
        .received
        .fetch_add(n, Ordering::Relaxed);
    (sinks.deliver)(ClusterEvent::Messages(std::mem::take(batch)));
}

/// Adds the publications in `p` to `batch`, as this node delivers them: none when
/// this node sent them (every node gets back what it publishes) or when `p` is not a
/// leviathan frame.
fn remote(shared: &Shared, skip: usize, p: receive::Published, batch: &mut Vec<RemoteMessage>) {
    if frame::is_from(&p.payload, &shared.node) {
        return;
    }
    let Some(channel) = p
        .channel
        .get(skip..)
        .and_then(|c| std::str::from_utf8(c).ok())
    else {
        return;
    };
    match frame::decode(&p.payload) {
        Ok(entries) => {
            let channel: Arc<str> = channel.into();
            batch.extend(entries.into_iter().map(|e| RemoteMessage {
                channel: channel.clone(),
                from: e.from.into(),
                payload: e.payload,
            }));
        }
        Err(e) => log::debug!("cluster: skipped a message on '{channel}': {e}"),
    }
}

/// Another node's news: its clients' changes go to the manager, a greeting makes the
/// control link read its clients, a goodbye forgets it.
fn control(shared: &Shared, payload: &[u8], sinks: &Sinks<'_>) {
    let ctl = match serde_json::from_slice::<Ctl>(payload) {
        Ok(ctl) if *ctl.node != *shared.node => ctl,
        Ok(_) => return,
        Err(e) => return log::debug!("cluster: skipped a control message: {e}"),
    };
    let (node, seq) = (ctl.node, ctl.seq);
    match ctl.event {
        CtlEvent::Client { client } => (sinks.deliver)(ClusterEvent::Client { node, seq, client }),
        CtlEvent::Left { id } => (sinks.deliver)(ClusterEvent::Left { node, seq, id }),
        CtlEvent::Hello => {
            let _ = sinks.control.send(Control::Read(node));
        }
        CtlEvent::Bye => (sinks.deliver)(ClusterEvent::Gone { node }),
        CtlEvent::Channel { name, options } => {
            (sinks.deliver)(ClusterEvent::Channel { name, options })
        }
        CtlEvent::Dropped { name } => (sinks.deliver)(ClusterEvent::ChannelDropped { name }),
        CtlEvent::Member {
            channel,
            id,
            member,
        } => (sinks.deliver)(ClusterEvent::Member {
            node,
            seq,
            channel,
            id,
            member,
        }),
        CtlEvent::Serves { service, providers } => (sinks.deliver)(ClusterEvent::Serves {
            node,
            seq,
            service,
            providers,
        }),
    }
}

/// What other nodes sent to this one: direct messages to clients here (frames), and
/// service requests and answers (JSON objects).
fn direct(shared: &Shared, payload: &[u8], deliver: &dyn Fn(ClusterEvent)) {
    if payload.first() == Some(&b'{') {
        return to_node(payload, deliver);
    }
    if frame::is_from(payload, &shared.node) {
        return;
    }
    match frame::decode(payload) {
        Ok(entries) => {
            for e in entries {
                if let Some((to, from)) = frame::direct_parts(&e) {
                    let (to, from) = (to.into(), from.into());
                    deliver(ClusterEvent::Direct {
                        to,
                        from,
                        payload: e.payload,
                    });
                }
            }
        }
        Err(e) => log::debug!("cluster: skipped a direct message: {e}"),
    }
}

/// A service request for a provider here, or the answer to one this node sent.
fn to_node(payload: &[u8], deliver: &dyn Fn(ClusterEvent)) {
    let note = match serde_json::from_slice::<ToNode>(payload) {
        Ok(note) => note,
        Err(e) => return log::debug!("cluster: skipped a message to this node: {e}"),
    };
    deliver(match note {
        ToNode::Request {
            node,
            req,
            service,
            to,
            from,
            data,
            timeout_ms,
        } => ClusterEvent::Request {
            node,
            req,
            service,
            to,
            from,
            payload: data.into(),
            timeout: Duration::from_millis(timeout_ms),
        },
        ToNode::Answer {
            req, data, error, ..
        } => ClusterEvent::Answer {
            req,
            answer: match (data, error) {
                (_, Some(e)) => Err(ErrorReply::new(e.code, e.message)),
                (Some(data), None) => Ok(data.into()),
                (None, None) => Ok(Payload::Json(serde_json::Value::Null)),
            },
        },
    });
}
