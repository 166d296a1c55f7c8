//! The control link: who is connected where, and which names are taken, kept in Redis
//! by the `cluster-control` thread with a connection of its own.
//!
//! - **Clients and services**: each node keeps its directory in the hash
//!   `<prefix>:directory:<node>` (client id → [`ClientEntry`] as JSON, `svc:<service>` →
//!   how many of its clients serve it, `p:<id>:<channel>` → a [`MemberEntry`] of a
//!   presence channel, and `_seq`, the number of its last change) and
//!   tells the others of each change on `<prefix>:ctl` ([`Ctl`]), in one transaction
//!   with the hash. The others apply the changes as they come and read the hash after
//!   a gap (the node is new to them, their link was down, or every [`FULL_READ`]): the
//!   numbers say which is newer.
//! - **Liveness**: the node's key `<prefix>:node:<node>` and its directory expire
//!   [`NODE_TTL`] after the last refresh, done every [`BEAT`]; each beat also lists the
//!   nodes whose keys exist, and a node whose key is gone is forgotten (its clients
//!   leave `CLIENTS`, its claims on names are freed).
//! - **Names**: `NAME` claims its name in the hash `<prefix>:names` (name → `<node>/<id>`)
//!   with a script that grants it when nobody holds it or its holder's node is gone.
//! - **Channels**: `CREATE` registers its channel in the hash `<prefix>:channels` (name
//!   → [`ChannelDef`]) with `HSETNX` before the channel is made, so a second `CREATE`
//!   anywhere is `channel_exists`; the others make it when told on `<prefix>:ctl`, and
//!   a node joining (or back from an outage) registers the channels it holds and makes
//!   those it lacks. `DROP` unregisters it and tells the others.
//!
//! While Redis is away the thread keeps what changed here, and when it is back it
//! writes it all again and claims its names again (re-announcing the node), then reads
//! the other nodes afresh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::frame::{ChannelDef, Ctl, CtlEvent};
use super::{connect, Backoff, Shared, BATCH, BEAT, NODE_TTL, POLL};
use crate::collections::{Map, Set};
use crate::manager::backplane::{ClientEntry, ClusterEvent, MemberEntry};
use crate::store::{ChannelOptions, TableStore};

/// How often every other node's clients are read again, whatever the events said.
pub const FULL_READ: Duration = Duration::from_secs(10);

/// Grants ARGV[1] to holder ARGV[2] when it is free, already its, or held by a client
/// of a node whose key (ARGV[3] .. node) is gone; else answers the holder.
const CLAIM: &str = r"
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner then
  local node = string.match(owner, '^([^/]+)/')
  if owner ~= ARGV[2] and node and redis.call('EXISTS', ARGV[3] .. node) == 1 then
    return owner
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Frees ARGV[1] if holder ARGV[2] holds it.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// Unregisters channel ARGV[1] if holder ARGV[2] registered it.
const RELEASE_CHANNEL: &str = r"
local def = redis.call('HGET', KEYS[1], ARGV[1])
if def and cjson.decode(def).by == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// Frees every name held by a client of node ARGV[1] (given as `<node>/`).
const FORGET: &str = r"
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  if string.sub(all[i + 1], 1, #ARGV[1]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    n = n + 1
  end
end
return n
";

/// What the manager and the receiving link ask of the control thread.
pub enum Control {
    /// A client here connected or was renamed.
    Client(ClientEntry),
    /// Client `id` here left.
    Left(u64),
    /// `providers` clients here serve `service` now.
    Serves { service: Arc<str>, providers: u32 },
    /// Client `id` here is a member of presence channel `channel`, or no longer one.
    Member {
        channel: Arc<str>,
        id: u64,
        member: Option<MemberEntry>,
    },
    /// Claim `name` for client `holder` here; the answer goes to `done`.
    Claim {
        name: Arc<str>,
        holder: u64,
        done: may::sync::mpsc::Sender<Claimed>,
    },
    /// Client `holder` gives up its claim on `name`.
    Release { name: Arc<str>, holder: u64 },
    /// Register channel `name` for client `holder` here; the answer goes to `done`.
    ClaimChannel {
        name: Arc<str>,
        options: ChannelOptions,
        holder: u64,
        done: may::sync::mpsc::Sender<Claimed>,
    },
    /// Channel `name` was made here (after its registration): tell the others.
    ChannelCreated {
        name: Arc<str>,
        options: ChannelOptions,
    },
    /// Take back `holder`'s registration of channel `name`.
    ReleaseChannel { name: Arc<str>, holder: u64 },
    /// Channel `name` was dropped here: unregister it and tell the others.
    ChannelDropped { name: Arc<str> },
    /// Read this node's clients again (it said hello).
    Read(Arc<str>),
    /// Read every node's clients again (the receiving link was down).
    ReadAll,
}

/// The answer to a claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Claimed {
    Granted,
    /// Held by a client of another node.
    Taken,
    /// Redis cannot be asked now.
    Down,
}

/// What this node has announced, kept to announce again.
#[derive(Default)]
struct Mine {
    /// The number of the last change.
    seq: u64,
    clients: Map<u64, ClientEntry>,
    /// Services served here, with how many providers each.
    services: Map<Arc<str>, u32>,
    /// Memberships of presence channels here: (channel, client id) → member.
    members: Map<(Arc<str>, u64), MemberEntry>,
    /// Names claimed in Redis, and for whom.
    claims: Map<Arc<str>, u64>,
    /// Claims given up that Redis has not been told of yet.
    unreleased: Vec<(Arc<str>, u64)>,
}

impl Mine {
    /// Client `id` gives up the names it claimed (all, or all but `keep`).
    fn give_up(&mut self, id: u64, keep: Option<&str>) {
        let held: Vec<Arc<str>> = self
            .claims
            .iter()
            .filter(|(n, h)| **h == id && keep != Some(&***n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in held {
            self.claims.remove(&n);
            self.unreleased.push((n, id));
        }
    }
}

/// The control thread's state.
struct State {
    mine: Mine,
    /// Other nodes whose keys were there at the last look.
    known: Set<Arc<str>>,
    /// Nodes to read before the next wait.
    to_read: Set<Arc<str>>,
}

/// Keys and channels, by name.
struct Keys {
    names: String,
    channels: String,
    directory: String,
    node: String,
    node_prefix: String,
    ctl: String,
    holder_prefix: String,
}

impl Keys {
    fn new(shared: &Shared) -> Keys {
        let p = &shared.prefix;
        Keys {
            names: format!("{p}:names"),
            channels: format!("{p}:channels"),
            directory: directory_key(p, &shared.node),
            node: shared.node_key(),
            node_prefix: format!("{p}:node:"),
            ctl: format!("{p}:ctl"),
            holder_prefix: format!("{}/", shared.node),
        }
    }

    fn holder(&self, id: u64) -> String {
        format!("{}{id}", self.holder_prefix)
    }

    /// Registers channel `name` for `holder` unless the cluster has it (answers
    /// whether it was registered now).
    fn registration(&self, name: &str, options: ChannelOptions, holder: u64) -> redis::Cmd {
        let def = ChannelDef {
            by: self.holder(holder),
            options,
        };
        let mut cmd = redis::cmd("HSETNX");
        cmd.arg(&self.channels).arg(name).arg(json(&def));
        cmd
    }
}

fn directory_key(prefix: &str, node: &str) -> String {
    format!("{prefix}:directory:{node}")
}

/// A service's field in a node's directory (clients' fields are their ids).
const SERVICE_FIELD: &str = "svc:";
/// A membership's field, `p:<id>:<channel>`.
const MEMBER_FIELD: &str = "p:";

type Link = Option<redis::Connection>;

/// The control thread: runs until the node stops, then leaves the cluster (deletes its
/// key, its clients and its claims, and says bye).
pub fn control_loop(
    shared: &Shared,
    client: &redis::Client,
    store: &TableStore,
    rx: &Receiver<Control>,
    deliver: &dyn Fn(ClusterEvent),
) {
    let keys = Keys::new(shared);
    let mut st = State {
        mine: Mine::default(),
        known: Set::default(),
        to_read: Set::default(),
    };
    let mut con: Link = None;
    let mut backoff = Backoff::new();
    let (mut next_beat, mut next_full) = (Instant::now(), Instant::now());
    let mut ops = Vec::with_capacity(BATCH);
    while !shared.stopping() {
        if con.is_none() && Instant::now() >= backoff.next {
            let result = connect(client).and_then(|mut c| {
                announce(shared, &keys, &mut st.mine, &mut c, deliver)?;
                register_channels(shared, &keys, store, &mut c)?;
                read_channels(&keys, &mut c, deliver)?;
                Ok(c)
            });
            match result {
                Ok(c) => {
                    backoff.succeeded();
                    con = Some(c);
                    shared.link(&shared.control_up, "control", true, None);
                    next_beat = Instant::now();
                    next_full = Instant::now();
                }
                Err(e) => {
                    backoff.failed();
                    shared.link(&shared.control_up, "control", false, Some(&e));
                }
            }
        }
        if con.is_some() && Instant::now() >= next_beat {
            next_beat = Instant::now() + BEAT;
            let full = Instant::now() >= next_full;
            if full {
                next_full = Instant::now() + FULL_READ;
            }
            let result = con.as_mut().map_or(Ok(()), |c| {
                beat(shared, &keys, &mut st, c, full, deliver)?;
                if full {
                    read_channels(&keys, c, deliver)?;
                }
                Ok(())
            });
            fail_on(shared, &mut con, &mut backoff, result);
        }
        let until = if con.is_some() {
            next_beat
        } else {
            backoff.next
        };
        let wait = until.saturating_duration_since(Instant::now()).min(POLL);
        match rx.recv_timeout(wait) {
            Ok(op) => ops.push(op),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while ops.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let result = apply(shared, &keys, &mut st, &mut con, &mut ops, deliver);
        fail_on(shared, &mut con, &mut backoff, result);
    }
    if let Some(c) = con.as_mut() {
        leave(shared, &keys, c);
    }
}

/// A failed round trip: the link is down until a reconnection (after a pause).
fn fail_on(shared: &Shared, con: &mut Link, backoff: &mut Backoff, result: redis::RedisResult<()>) {
    if let Err(e) = result {
        *con = None;
        backoff.failed();
        shared.link(&shared.control_up, "control", false, Some(&e));
    }
}

/// A question for Redis a client waits on: a name claim or a channel registration.
enum Question {
    Name {
        name: Arc<str>,
        holder: u64,
        done: may::sync::mpsc::Sender<Claimed>,
    },
    Channel {
        name: Arc<str>,
        options: ChannelOptions,
        holder: u64,
        done: may::sync::mpsc::Sender<Claimed>,
    },
}

/// Questions not answered yet: whatever is left when this is dropped (the link
/// failed, or there is none) is answered [`Claimed::Down`], so no client waits long.
#[derive(Default)]
struct Questions(std::collections::VecDeque<Question>);

impl Drop for Questions {
    fn drop(&mut self) {
        for q in self.0.drain(..) {
            let (Question::Name { done, .. } | Question::Channel { done, .. }) = q;
            let _ = done.send(Claimed::Down);
        }
    }
}

/// Applies what was asked: this node's changes go out in one transaction, then the
/// questions are answered and the nodes to read are read. Without a link, changes are
/// kept for the next announcement and questions are answered [`Claimed::Down`].
fn apply(
    shared: &Shared,
    keys: &Keys,
    st: &mut State,
    con: &mut Link,
    ops: &mut Vec<Control>,
    deliver: &dyn Fn(ClusterEvent),
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let mut changes = 0;
    let mut questions = Questions::default();
    let mut unregistered = Vec::new();
    for op in ops.drain(..) {
        let Some(event) = take(st, op, &mut questions, &mut unregistered) else {
            continue;
        };
        st.mine.seq += 1;
        stage(&mut pipe, shared, keys, st.mine.seq, event);
        changes += 1;
    }
    let Some(c) = con.as_mut() else {
        return Ok(());
    };
    if changes > 0 {
        pipe.cmd("PEXPIRE")
            .arg(&keys.directory)
            .arg(NODE_TTL.as_millis() as u64)
            .ignore();
        pipe.query::<()>(c)?;
    }
    for (name, holder) in unregistered {
        redis::cmd("EVAL")
            .arg(RELEASE_CHANNEL)
            .arg(1)
            .arg(&keys.channels)
            .arg(&*name)
            .arg(keys.holder(holder))
            .query::<()>(c)?;
    }
    release(keys, &mut st.mine, c)?;
    while let Some(q) = questions.0.front() {
        let answer = match q {
            Question::Name { name, holder, .. } => {
                let answer = claim(keys, &st.mine, c, name, *holder)?;
                if answer == Claimed::Granted {
                    if st.mine.clients.contains_key(holder) {
                        st.mine.claims.insert(name.clone(), *holder);
                    } else {
                        // It left while its claim was on its way.
                        st.mine.unreleased.push((name.clone(), *holder));
                    }
                }
                answer
            }
            Question::Channel {
                name,
                options,
                holder,
                ..
            } => register(keys, c, name, *options, *holder)?,
        };
        if let Some(Question::Name { done, .. } | Question::Channel { done, .. }) =
            questions.0.pop_front()
        {
            let _ = done.send(answer);
        }
    }
    for node in std::mem::take(&mut st.to_read) {
        read_node(shared, &node, c, deliver)?;
    }
    Ok(())
}

/// Takes in one op: what this node holds is kept up to date, questions and reads are
/// queued, and a change to tell the others is returned.
fn take(
    st: &mut State,
    op: Control,
    questions: &mut Questions,
    unregistered: &mut Vec<(Arc<str>, u64)>,
) -> Option<CtlEvent> {
    let mine = &mut st.mine;
    Some(match op {
        Control::Client(c) => {
            // A renamed client no longer holds the name it had.
            mine.give_up(c.id, Some(&c.name));
            mine.clients.insert(c.id, c.clone());
            CtlEvent::Client { client: c }
        }
        Control::Left(id) => {
            mine.clients.remove(&id);
            mine.give_up(id, None);
            CtlEvent::Left { id }
        }
        Control::Member {
            channel,
            id,
            member,
        } => {
            match &member {
                Some(m) => mine.members.insert((channel.clone(), id), m.clone()),
                None => mine.members.remove(&(channel.clone(), id)),
            };
            CtlEvent::Member {
                channel,
                id,
                member,
            }
        }
        Control::Serves { service, providers } => {
            if providers == 0 {
                mine.services.remove(&service);
            } else {
                mine.services.insert(service.clone(), providers);
            }
            CtlEvent::Serves { service, providers }
        }
        Control::ChannelCreated { name, options } => CtlEvent::Channel { name, options },
        Control::ChannelDropped { name } => CtlEvent::Dropped { name },
        Control::Release { name, holder } => {
            if mine.claims.get(&name) == Some(&holder) {
                mine.claims.remove(&name);
                mine.unreleased.push((name, holder));
            }
            return None;
        }
        Control::Claim { name, holder, done } => {
            questions.0.push_back(Question::Name { name, holder, done });
            return None;
        }
        Control::ClaimChannel {
            name,
            options,
            holder,
            done,
        } => {
            questions.0.push_back(Question::Channel {
                name,
                options,
                holder,
                done,
            });
            return None;
        }
        Control::ReleaseChannel { name, holder } => {
            unregistered.push((name, holder));
            return None;
        }
        Control::Read(node) => {
            st.to_read.insert(node);
            return None;
        }
        Control::ReadAll => {
            st.to_read.extend(st.known.iter().cloned());
            return None;
        }
    })
}

/// Adds the `seq`-th change of this node to `pipe`: its directory (or the channel
/// registry) as it now is, and the news for the others.
fn stage(pipe: &mut redis::Pipeline, shared: &Shared, keys: &Keys, seq: u64, event: CtlEvent) {
    let dir = &keys.directory;
    let mut set = |field: String, value: Option<String>| {
        match value {
            Some(v) => pipe.cmd("HSET").arg(dir).arg(field).arg(v),
            None => pipe.cmd("HDEL").arg(dir).arg(field),
        };
        pipe.ignore();
        pipe.cmd("HSET").arg(dir).arg("_seq").arg(seq).ignore();
    };
    match &event {
        CtlEvent::Client { client } => set(client.id.to_string(), Some(json(client))),
        CtlEvent::Left { id } => set(id.to_string(), None),
        CtlEvent::Member {
            channel,
            id,
            member,
        } => set(
            format!("{MEMBER_FIELD}{id}:{channel}"),
            member.as_ref().map(json),
        ),
        CtlEvent::Serves { service, providers } => set(
            format!("{SERVICE_FIELD}{service}"),
            (*providers > 0).then(|| providers.to_string()),
        ),
        CtlEvent::Dropped { name } => {
            pipe.cmd("HDEL").arg(&keys.channels).arg(&**name).ignore();
        }
        CtlEvent::Channel { .. } | CtlEvent::Hello | CtlEvent::Bye => {}
    }
    let ctl = Ctl {
        node: shared.node.as_str().into(),
        seq,
        event,
    };
    pipe.cmd("PUBLISH").arg(&keys.ctl).arg(json(&ctl)).ignore();
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Registers channel `name` for `holder` unless the cluster has it already.
fn register(
    keys: &Keys,
    c: &mut redis::Connection,
    name: &str,
    options: ChannelOptions,
    holder: u64,
) -> redis::RedisResult<Claimed> {
    let set: bool = keys.registration(name, options, holder).query(c)?;
    Ok(if set {
        Claimed::Granted
    } else {
        Claimed::Taken
    })
}

/// Registers every channel this node holds that the cluster lacks (made before it
/// joined, or while it could not reach the cluster, or lost with a Redis restart),
/// and tells the others of those.
fn register_channels(
    shared: &Shared,
    keys: &Keys,
    store: &TableStore,
    c: &mut redis::Connection,
) -> redis::RedisResult<()> {
    let held = store.channels();
    if held.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (name, stored) in &held {
        pipe.add_command(keys.registration(name, stored.options, 0));
    }
    let set: Vec<bool> = pipe.query(c)?;
    let mut news = redis::pipe();
    let mut any = false;
    for ((name, stored), _) in held.into_iter().zip(set).filter(|(_, new)| *new) {
        any = true;
        let ctl = Ctl {
            node: shared.node.as_str().into(),
            seq: 0,
            event: CtlEvent::Channel {
                name: name.into(),
                options: stored.options,
            },
        };
        news.cmd("PUBLISH").arg(&keys.ctl).arg(json(&ctl)).ignore();
    }
    if any {
        news.query::<()>(c)?;
    }
    Ok(())
}

/// Reads every channel registered in the cluster, for the manager to make those it
/// lacks.
fn read_channels(
    keys: &Keys,
    c: &mut redis::Connection,
    deliver: &dyn Fn(ClusterEvent),
) -> redis::RedisResult<()> {
    let all: Vec<(String, String)> = redis::cmd("HGETALL").arg(&keys.channels).query(c)?;
    let channels = all
        .into_iter()
        .filter_map(|(name, def)| {
            let def = serde_json::from_str::<ChannelDef>(&def).ok()?;
            Some((Arc::from(name), def.options))
        })
        .collect();
    deliver(ClusterEvent::Channels(channels));
    Ok(())
}

/// Claims `name` for `holder`: granted when free, when its holder's node is gone, or
/// when it is held here for a client that has left (a release Redis missed).
fn claim(
    keys: &Keys,
    mine: &Mine,
    c: &mut redis::Connection,
    name: &str,
    holder: u64,
) -> redis::RedisResult<Claimed> {
    let answer: redis::Value = redis::cmd("EVAL")
        .arg(CLAIM)
        .arg(1)
        .arg(&keys.names)
        .arg(name)
        .arg(keys.holder(holder))
        .arg(&keys.node_prefix)
        .query(c)?;
    let owner = match answer {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        _ => return Ok(Claimed::Granted),
    };
    let stale_here = owner
        .strip_prefix(&keys.holder_prefix)
        .and_then(|id| id.parse::<u64>().ok())
        .is_some_and(|id| !mine.clients.contains_key(&id) || mine.claims.get(name) != Some(&id));
    if stale_here {
        redis::cmd("HSET")
            .arg(&keys.names)
            .arg(name)
            .arg(keys.holder(holder))
            .query::<()>(c)?;
        return Ok(Claimed::Granted);
    }
    Ok(Claimed::Taken)
}

/// Tells Redis of the claims given up.
fn release(keys: &Keys, mine: &mut Mine, c: &mut redis::Connection) -> redis::RedisResult<()> {
    while let Some((name, holder)) = mine.unreleased.last() {
        redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(&keys.names)
            .arg(&**name)
            .arg(keys.holder(*holder))
            .query::<()>(c)?;
        mine.unreleased.pop();
    }
    Ok(())
}

/// Writes everything this node holds again (after a start or an outage: Redis may
/// have lost it, or the node's key expired meanwhile) and says hello; a name another
/// node's client claimed meanwhile is lost here ([`ClusterEvent::NameLost`]).
fn announce(
    shared: &Shared,
    keys: &Keys,
    mine: &mut Mine,
    c: &mut redis::Connection,
    deliver: &dyn Fn(ClusterEvent),
) -> redis::RedisResult<()> {
    mine.seq += 1;
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("DEL").arg(&keys.directory).ignore();
    let mut hset = redis::cmd("HSET");
    hset.arg(&keys.directory).arg("_seq").arg(mine.seq);
    for client in mine.clients.values() {
        hset.arg(client.id).arg(json(client));
    }
    for (service, n) in &mine.services {
        hset.arg(format!("{SERVICE_FIELD}{service}")).arg(n);
    }
    for ((channel, id), m) in &mine.members {
        hset.arg(format!("{MEMBER_FIELD}{id}:{channel}"))
            .arg(json(m));
    }
    pipe.add_command(hset).ignore();
    pipe.cmd("PEXPIRE")
        .arg(&keys.directory)
        .arg(NODE_TTL.as_millis() as u64)
        .ignore();
    pipe.cmd("SET")
        .arg(&keys.node)
        .arg(&shared.node)
        .arg("PX")
        .arg(NODE_TTL.as_millis() as u64)
        .ignore();
    pipe.query::<()>(c)?;
    release(keys, mine, c)?;
    let claims: Vec<(Arc<str>, u64)> = mine.claims.iter().map(|(n, h)| (n.clone(), *h)).collect();
    for (name, holder) in claims {
        if claim(keys, mine, c, &name, holder)? != Claimed::Granted {
            mine.claims.remove(&name);
            deliver(ClusterEvent::NameLost { id: holder, name });
        }
    }
    let hello = Ctl {
        node: shared.node.as_str().into(),
        seq: mine.seq,
        event: CtlEvent::Hello,
    };
    redis::cmd("PUBLISH")
        .arg(&keys.ctl)
        .arg(json(&hello))
        .query::<()>(c)
}

/// Refreshes the node's key and clients, then looks at which nodes are there: one
/// whose key is gone is forgotten, a new one is read (every one when `full`).
fn beat(
    shared: &Shared,
    keys: &Keys,
    st: &mut State,
    c: &mut redis::Connection,
    full: bool,
    deliver: &dyn Fn(ClusterEvent),
) -> redis::RedisResult<()> {
    let ttl = NODE_TTL.as_millis() as u64;
    redis::pipe()
        .cmd("SET")
        .arg(&keys.node)
        .arg(&shared.node)
        .arg("PX")
        .arg(ttl)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&keys.directory)
        .arg(ttl)
        .ignore()
        .query::<()>(c)?;
    let live = live_nodes(keys, &shared.node, c)?;
    let gone: Vec<Arc<str>> = st.known.difference(&live).cloned().collect();
    for node in gone {
        st.known.remove(&node);
        redis::cmd("EVAL")
            .arg(FORGET)
            .arg(1)
            .arg(&keys.names)
            .arg(format!("{node}/"))
            .query::<()>(c)?;
        deliver(ClusterEvent::Gone { node });
    }
    shared
        .stats
        .cluster
        .nodes
        .store(live.len() as u64, std::sync::atomic::Ordering::Relaxed);
    for node in live {
        if full || !st.known.contains(&node) {
            st.to_read.insert(node.clone());
        }
        st.known.insert(node);
    }
    for node in std::mem::take(&mut st.to_read) {
        read_node(shared, &node, c, deliver)?;
    }
    Ok(())
}

/// The other nodes whose keys exist.
fn live_nodes(
    keys: &Keys,
    me: &str,
    c: &mut redis::Connection,
) -> redis::RedisResult<Set<Arc<str>>> {
    let mut live = Set::default();
    let mut cursor = 0u64;
    // Bounded: a SCAN pass ends when the cursor comes back to 0.
    for _ in 0..10_000 {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", keys.node_prefix))
            .arg("COUNT")
            .arg(1000)
            .query(c)?;
        live.extend(
            found
                .iter()
                .filter_map(|k| k.strip_prefix(&keys.node_prefix))
                .filter(|n| *n != me)
                .map(Arc::from),
        );
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(live)
}

/// Reads `node`'s clients and hands them to the manager as a snapshot.
fn read_node(
    shared: &Shared,
    node: &Arc<str>,
    c: &mut redis::Connection,
    deliver: &dyn Fn(ClusterEvent),
) -> redis::RedisResult<()> {
    if **node == *shared.node {
        return Ok(());
    }
    let fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(directory_key(&shared.prefix, node))
        .query(c)?;
    let mut seq = 0;
    let mut clients = Vec::with_capacity(fields.len());
    let mut services = Vec::new();
    let mut members = Vec::new();
    for (field, value) in fields {
        if field == "_seq" {
            seq = value.parse().unwrap_or(0);
        } else if let Some(rest) = field.strip_prefix(MEMBER_FIELD) {
            let parsed = rest.split_once(':').and_then(|(id, channel)| {
                let member = serde_json::from_str::<MemberEntry>(&value).ok()?;
                Some((Arc::from(channel), id.parse().ok()?, member))
            });
            members.extend(parsed);
        } else if let Some(service) = field.strip_prefix(SERVICE_FIELD) {
            if let Ok(n) = value.parse::<u32>() {
                services.push((Arc::from(service), n));
            }
        } else if let Ok(client) = serde_json::from_str::<ClientEntry>(&value) {
            clients.push(client);
        } else {
            log::debug!("cluster: skipped client '{field}' of node {node}: not a client entry");
        }
    }
    deliver(ClusterEvent::Snapshot {
        node: node.clone(),
        seq,
        clients,
        services,
        members,
    });
    Ok(())
}

/// Leaves the cluster: the node's key, clients and claims go, and the others are told.
fn leave(shared: &Shared, keys: &Keys, c: &mut redis::Connection) {
    let bye = Ctl {
        node: shared.node.as_str().into(),
        seq: 0,
        event: CtlEvent::Bye,
    };
    let _ = redis::pipe()
        .cmd("DEL")
        .arg(&keys.node)
        .arg(&keys.directory)
        .ignore()
        .cmd("EVAL")
        .arg(FORGET)
        .arg(1)
        .arg(&keys.names)
        .arg(&keys.holder_prefix)
        .ignore()
        .cmd("PUBLISH")
        .arg(&keys.ctl)
        .arg(json(&bye))
        .ignore()
        .query::<()>(c);
}
