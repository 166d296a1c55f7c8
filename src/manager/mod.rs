//! The channel manager: one OS thread that owns client names, channels and
//! subscriptions, spoken to only through [`ChannelOp`] messages, so none of that state
//! needs a lock. It drains many ops per wake and wakes each touched connection once.

pub mod backplane;
pub mod channel;
pub mod liveness;
pub mod outbox;
pub mod pacing;
pub mod remote;
mod remote_presence;
mod remote_services;
pub mod requests;
pub mod route;
pub mod services;
pub mod stage;
pub mod stats;
pub mod watch;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::auth::{Auth, AuthMode, Identity, Right, Role, Roles};
use crate::collections::{Map, Set};
use crate::protocol::push::PresenceEvent;
use crate::protocol::push::{ByeReason, MessageKind};
use crate::protocol::{Message, Push, Reply};
use crate::store::expr::Predicate;
use crate::store::History;
use crate::store::{ChangeNote, ChannelOptions, StoredChannel, TableStore};
use channel::{Channel, Filter};
use outbox::{ConnId, OutItem, Outbox};
use stage::{Staged, Stager};
use stats::Stats;

/// Most commands applied before what they produced is handed to the connections.
const BATCH_COMMANDS: usize = 4096;

/// How a client reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    WebSocket,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "ws",
        }
    }
}

/// Messages to the channel manager; `C` is the application layer's command type.
pub enum ChannelOp<C> {
    /// A connection is ready for commands (greeted or handshaken).
    Connect {
        outbox: Arc<Outbox>,
        name: Arc<str>,
        addr: SocketAddr,
        transport: Transport,
    },
    /// Apply commands for a connection, in order; each reply goes to its outbox.
    Apply { id: ConnId, commands: Vec<C> },
    /// Apply one command for connection `id` (or for the server itself, [`SERVER_ID`])
    /// and hand its reply, and the journal record it waits for, to `done` instead of
    /// the outbox: how actions and tasks act on channels.
    Direct {
        id: ConnId,
        command: Box<C>,
        done: Box<dyn FnOnce(Reply, Option<u64>) + Send>,
    },
    /// A service request from an action or task on behalf of connection `from`: to one
    /// provider of `service`, or to the client named `to` (a reverse request); `done`
    /// gets the answer.
    Request(Box<ServiceAsk>),
    /// Tell `done` what the manager knows of connection `id` (`None` once it is gone).
    Inspect {
        id: ConnId,
        done: Box<dyn FnOnce(Option<ClientInfo>) + Send>,
    },
    /// Close connection `id` at once with `BYE <reason>`; `done` says whether there was
    /// such a connection.
    Cut {
        id: ConnId,
        reason: ByeReason,
        done: Box<dyn FnOnce(bool) + Send>,
    },
    /// The connection is gone.
    Disconnect { id: ConnId },
    /// A service request was sent that times out before any the manager knew of: it
    /// looks at its clock again (it sleeps until the earliest deadline it knows).
    Deadline,
    /// A watched table changed (sent by the writer, in the table's order).
    TableChange(ChangeNote),
    /// The roles were reloaded; these were in force before.
    RolesChanged(Arc<Roles>),
    /// What the cluster's backplane heard from the other nodes, in its order.
    Cluster(Box<backplane::ClusterEvent>),
    /// Tell every client `BYE shutdown` and stop.
    Shutdown,
}

/// What the manager thread applies for connections: the application layer's commands
/// that touch names, channels and subscriptions. The routing layer knows only this
/// trait, handed to [`Manager::run`], so it never imports the layer above it.
pub trait Handler {
    /// One request, as the application layer parsed it.
    type Command: Send;
    /// Applies connection `id`'s command to the manager's state and returns the reply,
    /// which the manager queues in request order. A command whose change was journaled
    /// sets [`Manager::durable`], and its reply waits for that record.
    /// `None` when the answer comes later through the outbox (a service request).
    fn apply(&self, manager: &mut Manager, id: ConnId, command: Self::Command) -> Option<Reply>;
}

/// The manager's own settings (the assembly layer fills them in from its `Config`).
#[derive(Clone, Copy, Debug)]
pub struct ManagerSettings {
    /// Disconnected clients remembered for `HISTORY`.
    pub history_limit: usize,
    pub liveness: liveness::Liveness,
    /// Channels the server may hold.
    pub max_channels: usize,
    /// Channels one connection may create.
    pub max_channels_per_client: usize,
    /// Subscriptions (channels, patterns) and watches one connection may hold.
    pub max_subscriptions: usize,
}

/// The id under which the server itself acts (an interval task publishing, say); its
/// messages come from [`SERVER_NAME`]. No connection has it.
pub const SERVER_ID: ConnId = 0;
/// The name the server's own messages come from; no client can take it.
pub const SERVER_NAME: &str = "server";

/// The name every client has until it sets one; names of this form are reserved.
pub fn default_name(id: ConnId) -> String {
    format!("client-{id}")
}

/// Whether pattern `p`, subscribed by a client who is `identity`, delivers `channel`:
/// the pattern matches it and the client's role may subscribe to it.
pub fn pattern_reaches(auth: &Auth, identity: &Identity, p: &str, channel: &str) -> bool {
    crate::protocol::subject::matches(p, channel) && auth.allows(identity, Right::Sub, channel)
}

/// Whether a subscription of a client in `role` may deliver `channel` (always, under
/// `--auth off`).
fn reaches(auth: &Auth, role: &Role, channel: &str) -> bool {
    auth.mode == AuthMode::Off || role.allows(Right::Sub, channel)
}

/// A service request from an action or task ([`ChannelOp::Request`]).
pub struct ServiceAsk {
    pub from: ConnId,
    pub service: String,
    pub to: Option<String>,
    pub data: crate::protocol::Payload,
    pub timeout: Option<std::time::Duration>,
    pub done: Box<dyn FnOnce(Reply) + Send>,
}

/// What the manager tells others of a connected client.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub since: SystemTime,
    pub transport: Transport,
    /// Channels it subscribed to by exact name.
    pub channels: Vec<Arc<str>>,
}

/// A connected client as the manager knows it.
pub struct Client {
    pub outbox: Arc<Outbox>,
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub since: SystemTime,
    pub transport: Transport,
    /// Channels subscribed to by exact name, with the subscription's filter.
    pub channels: Map<Arc<str>, Option<Filter>>,
    /// Patterns subscribed to, with the subscription's filter.
    pub patterns: Map<Arc<str>, Option<Filter>>,
    /// Tables watched.
    pub watching: Set<String>,
    /// Its liveness as last checked.
    pub seen: liveness::Seen,
    /// Channels it created (for its quota).
    pub created: usize,
}

impl Client {
    /// Subscriptions and watches it holds.
    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.watching.len()
    }
}

/// A connection watching a table.
pub struct Watcher {
    pub outbox: Arc<Outbox>,
    /// Checked against a row before and after each change.
    pub filter: Option<Predicate>,
    /// Changes up to this number were given to it when it started (or need not be):
    /// later ones only.
    pub from: u64,
}

/// A connection that has ended, for `HISTORY`.
pub struct PastClient {
    pub id: ConnId,
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub connected: SystemTime,
    pub disconnected: SystemTime,
    pub transport: Transport,
}

/// Everything the manager owns. Command families apply their commands to it.
pub struct Manager {
    pub clients: Map<ConnId, Client>,
    pub names: Map<Arc<str>, ConnId>,
    pub channels: Map<Arc<str>, Channel>,
    /// Pattern → subscribed connections.
    pub patterns: Map<Arc<str>, Set<ConnId>>,
    pub history: VecDeque<PastClient>,
    pub history_limit: usize,
    pub stats: Arc<Stats>,
    /// The table store, for compiling `WATCH` filters against a table's schema.
    pub store: Arc<TableStore>,
    /// Table → its watchers.
    pub watches: Map<String, Map<ConnId, Watcher>>,
    stager: Stager,
    liveness: liveness::Liveness,
    pub settings: ManagerSettings,
    /// When the manager started, for `INFO`'s uptime.
    pub started: Instant,
    /// Messages handled since start, for `INFO`.
    pub counts: Counts,
    /// Set by a command whose change was journaled: its reply waits for this record.
    pub durable: Option<u64>,
    /// Who may do what: names of users are theirs, and pattern subscriptions deliver
    /// only what a client's role may read.
    pub auth: Arc<Auth>,
    /// Who serves what, and the requests in flight.
    pub services: services::Services,
    /// Every channel's receivers, published for connections that publish themselves.
    pub routes: Arc<route::Routes>,
    /// Messages this batch published to channels that keep a history: they get their
    /// offsets when they are handed over, under their histories' locks.
    pub sequenced: Vec<(Arc<History>, Arc<Message>)>,
    /// Histories with subscribers still resuming (see `store/history.rs`).
    pub resuming: Vec<Arc<History>>,
    /// The other nodes' clients, when this node is in a cluster.
    pub remote: remote::Remote,
    /// Batches of other nodes' publications staged since the last hand-over.
    remote_batches: u64,
}

/// Messages the manager has handled since start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// `PUB`s accepted.
    pub published: u64,
    /// Channel messages queued for subscribers (one per receiver).
    pub delivered: u64,
    /// Direct messages (`SEND`) queued.
    pub direct: u64,
}

impl Manager {
    /// Starts with the channels the store saved (from the data folder).
    pub fn new(
        stats: Arc<Stats>,
        store: Arc<TableStore>,
        settings: ManagerSettings,
        auth: Arc<Auth>,
        routes: Arc<route::Routes>,
    ) -> Self {
        let channels = store
            .channels()
            .into_iter()
            .map(|(name, stored)| {
                let name: Arc<str> = name.into();
                (name.clone(), Channel::new(name, routes.clone(), &stored))
            })
            .collect();
        Manager {
            clients: Map::default(),
            names: Map::default(),
            channels,
            patterns: Map::default(),
            history: VecDeque::new(),
            history_limit: settings.history_limit,
            stats,
            store,
            watches: Map::default(),
            stager: Stager::default(),
            liveness: settings.liveness,
            settings,
            started: Instant::now(),
            counts: Counts::default(),
            durable: None,
            auth,
            services: services::Services::default(),
            routes,
            sequenced: Vec::new(),
            resuming: Vec::new(),
            remote: remote::Remote::default(),
            remote_batches: 0,
        }
    }

    /// Runs until a `Shutdown` op or until every sender is gone, applying commands
    /// through `handler`.
    pub fn run<H: Handler>(mut self, ops: Receiver<ChannelOp<H::Command>>, handler: H) {
        let tick = self.liveness.tick();
        let mut next_check = tick.map(|t| Instant::now() + t);
        loop {
            // Woken for the liveness check, or for the next request to time out.
            let wake = match (next_check, self.next_request_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = match wake {
                Some(at) => match ops.recv_deadline(at) {
                    Ok(op) => Some(op),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match ops.recv() {
                    Ok(op) => Some(op),
                    Err(_) => break,
                },
            };
            let mut stop = false;
            if let Some(op) = first {
                let mut done = 0;
                stop = self.handle(&handler, op, &mut done);
                while !stop && done < BATCH_COMMANDS {
                    let Ok(op) = ops.try_recv() else { break };
                    stop = self.handle(&handler, op, &mut done);
                }
            }
            if let (Some(at), Some(t)) = (next_check, tick) {
                if Instant::now() >= at {
                    self.check_liveness();
                    next_check = Some(Instant::now() + t);
                }
            }
            if self
                .next_request_deadline()
                .is_some_and(|d| d <= Instant::now())
            {
                self.expire_requests();
            }
            self.settle();
            if stop {
                self.close_all();
                break;
            }
        }
        log::debug!("channel manager stopped");
    }

    /// Ends a batch: publishes the routes it changed, then hands over what it staged.
    /// Also called mid-batch by a command that must see everything before it handed
    /// over (a history read).
    pub fn settle(&mut self) {
        // Routes first: what this batch answers is true for publishers when the
        // answers go out.
        self.publish_routes();
        self.stats.manager_flushing.store(true, Ordering::SeqCst);
        self.hand_over();
        self.stats.manager_flushing.store(false, Ordering::Release);
        if self.remote_batches > 0 {
            self.routes
                .remote
                .fanned_out(std::mem::take(&mut self.remote_batches));
        }
    }

    /// Hands what was staged to the connections. Messages to channels that keep a
    /// history get their offsets first, and are handed over under their histories'
    /// locks, so each receiver gets a channel's messages in offset order.
    fn hand_over(&mut self) {
        if self.sequenced.is_empty() {
            self.stager.flush(&self.stats);
        } else {
            let sequenced = std::mem::take(&mut self.sequenced);
            // Locked in one order (by address); publishers only ever hold one.
            let mut histories: Vec<&Arc<History>> = sequenced.iter().map(|(h, _)| h).collect();
            histories.sort_by_key(|h| Arc::as_ptr(h));
            histories.dedup_by(|a, b| Arc::ptr_eq(a, b));
            let mut locked: Vec<_> = histories.iter().map(|h| (*h, h.lock())).collect();
            for (h, msg) in &sequenced {
                if let Some((_, seq)) = locked.iter_mut().find(|(l, _)| Arc::ptr_eq(l, h)) {
                    seq.append(std::slice::from_ref(msg));
                }
            }
            self.stager.flush(&self.stats);
            drop(locked);
        }
        if !self.resuming.is_empty() {
            self.resuming.retain(|h| h.lock().prune());
        }
    }

    /// Swaps in the routes of channels whose receivers changed (see `route.rs`), and
    /// tells the receivers of presence channels who came and went.
    fn publish_routes(&mut self) {
        let channels = &mut self.channels;
        let mut comings = Vec::new();
        self.routes.publish(|name| {
            let chan = channels.get_mut(name)?;
            if chan.has_comings() {
                comings.push(chan.name.clone());
            }
            Some(chan.route())
        });
        for name in comings {
            self.tell_presence(&name);
        }
    }

    /// Client `id` was called `old` and has a new name: the receivers of every presence
    /// channel it receives are told (`LEAVE` under the old name, `JOIN` under the new).
    pub fn renamed(&mut self, id: ConnId, old: Arc<str>) {
        let Some(outbox) = self.clients.get(&id).map(|c| c.outbox.clone()) else {
            return;
        };
        let new = outbox.name();
        if new == old {
            return;
        }
        self.announce(id);
        let user = outbox.identity().user.clone();
        let mut told = Vec::new();
        for chan in self.channels.values() {
            if !chan.presence || !chan.has_member(id) {
                continue;
            }
            self.announce_member(&chan.name, &outbox, true);
            let receivers: Vec<Arc<Outbox>> = chan.members().map(|(o, _)| o.clone()).collect();
            for (joined, name) in [(false, &old), (true, &new)] {
                let event = Arc::new(PresenceEvent {
                    joined,
                    channel: chan.name.clone(),
                    name: name.clone(),
                    user: user.clone(),
                });
                told.extend(receivers.iter().map(|r| (r.clone(), event.clone())));
            }
        }
        for (r, event) in told {
            self.push(&r, Push::Presence(event));
        }
    }

    /// Sends `JOIN`/`LEAVE` for those who came to or left channel `name`.
    fn tell_presence(&mut self, name: &str) {
        let Some(chan) = self.channels.get_mut(name) else {
            return;
        };
        let comings = chan.take_comings();
        let receivers: Vec<Arc<Outbox>> = chan.members().map(|(o, _)| o.clone()).collect();
        let channel = chan.name.clone();
        for (outbox, joined) in comings {
            self.announce_member(&channel, &outbox, joined);
            let event = Arc::new(PresenceEvent {
                joined,
                channel: channel.clone(),
                name: outbox.name(),
                user: outbox.identity().user.clone(),
            });
            for r in &receivers {
                self.push(r, Push::Presence(event.clone()));
            }
        }
    }

    /// Applies one op, counting its commands in `done`. True when the manager must stop.
    fn handle<H: Handler>(
        &mut self,
        handler: &H,
        op: ChannelOp<H::Command>,
        done: &mut usize,
    ) -> bool {
        match op {
            ChannelOp::Connect {
                outbox,
                name,
                addr,
                transport,
            } => {
                let id = outbox.id;
                self.names.insert(name.clone(), id);
                outbox.set_name(name.clone());
                self.clients.insert(
                    id,
                    Client {
                        outbox,
                        name,
                        addr,
                        since: SystemTime::now(),
                        transport,
                        channels: Map::default(),
                        patterns: Map::default(),
                        watching: Set::default(),
                        seen: liveness::Seen::default(),
                        created: 0,
                    },
                );
                self.announce(id);
            }
            ChannelOp::Apply { id, commands } => {
                *done += commands.len();
                for command in commands {
                    let reply = if self.clients.contains_key(&id) {
                        handler.apply(self, id, command)
                    } else {
                        Some(Reply::Done(None))
                    };
                    let durable = self.durable.take();
                    if let Some(reply) = reply {
                        self.reply(id, reply, durable);
                    }
                }
            }
            ChannelOp::Direct {
                id,
                command,
                done: answer,
            } => {
                *done += 1;
                let reply = if id == SERVER_ID || self.clients.contains_key(&id) {
                    handler.apply(self, id, *command)
                } else {
                    None
                };
                // Answered now, not with the batch: what it changed must be true for
                // publishers first.
                self.publish_routes();
                answer(reply.unwrap_or(Reply::Done(None)), self.durable.take());
            }
            ChannelOp::Inspect { id, done: answer } => {
                answer(self.clients.get(&id).map(|c| ClientInfo {
                    name: c.name.clone(),
                    addr: c.addr,
                    since: c.since,
                    transport: c.transport,
                    channels: c.channels.keys().cloned().collect(),
                }));
            }
            ChannelOp::Request(ask) => {
                let ServiceAsk {
                    from,
                    service,
                    to,
                    data,
                    timeout,
                    done,
                } = *ask;
                let requester = requests::Requester::Callback(done);
                self.send_request(from, &service, to.as_deref(), data, timeout, requester);
            }
            ChannelOp::Cut { id, reason, done } => {
                let outbox = self.clients.get(&id).map(|c| c.outbox.clone());
                if let Some(o) = &outbox {
                    o.cut(reason);
                    o.wake();
                }
                done(outbox.is_some());
            }
            ChannelOp::Disconnect { id } => self.disconnect(id),
            ChannelOp::RolesChanged(old) => self.roles_changed(&old),
            ChannelOp::TableChange(note) => self.table_changed(note),
            ChannelOp::Cluster(event) => self.cluster_event(*event),
            ChannelOp::Shutdown => return true,
            // Woken: the loop reads the new earliest deadline.
            ChannelOp::Deadline => {}
        }
        false
    }

    /// Queues `BYE shutdown` for every client, after what they were already given.
    fn close_all(&mut self) {
        for c in self.clients.values() {
            if c.outbox.close(ByeReason::Shutdown) {
                c.outbox.wake();
            }
        }
    }

    /// The name messages from `id` come from: the client's, or [`SERVER_NAME`].
    pub fn name_of(&self, id: ConnId) -> Arc<str> {
        match self.clients.get(&id) {
            Some(c) => c.name.clone(),
            None if id == SERVER_ID => Arc::from(SERVER_NAME),
            None => Arc::from(""),
        }
    }

    /// Queues the answer to connection `id`'s oldest pending request.
    /// `durable`: the journal record the reply must wait for.
    pub fn reply(&mut self, id: ConnId, reply: Reply, durable: Option<u64>) {
        if let Some(c) = self.clients.get(&id) {
            let outbox = c.outbox.clone();
            self.deliver(&outbox, OutItem::Reply(reply, durable), 64);
        }
    }

    /// Queues a push for one connection. Returns whether its outbox is crowded.
    pub fn push(&mut self, outbox: &Arc<Outbox>, push: Push) -> bool {
        let size = push.approx_len();
        matches!(
            self.stager.stage(outbox, OutItem::Push(push), size),
            Staged::Queued { crowded: true }
        )
    }

    fn deliver(&mut self, outbox: &Arc<Outbox>, item: OutItem, size: usize) {
        self.stager.stage(outbox, item, size);
    }

    fn disconnect(&mut self, id: ConnId) {
        let Some(c) = self.clients.remove(&id) else {
            return;
        };
        if let Some(session) = &c.outbox.identity().session {
            // What a RESUME of this session subscribes to again.
            let subs = c.channels.keys().chain(c.patterns.keys());
            let subs = subs.map(|s| s.to_string()).collect();
            self.auth.sessions.set_subs(session, subs);
        }
        if self.names.get(&c.name) == Some(&id) {
            self.names.remove(&c.name);
        }
        if let Some(backplane) = self.routes.backplane.get() {
            backplane.client_left(id);
        }
        for (ch, filter) in &c.channels {
            if let Some(chan) = self.channels.get_mut(ch) {
                chan.release(&c.outbox, filter.as_ref());
            }
            self.forget_resume(id, ch);
        }
        for (p, filter) in &c.patterns {
            self.unsubscribe_pattern(&c.outbox, p, filter.as_ref());
        }
        for t in &c.watching {
            self.unwatch(id, t);
        }
        self.services_disconnect(id);
        self.history.push_back(PastClient {
            id,
            name: c.name,
            addr: c.addr,
            connected: c.since,
            disconnected: SystemTime::now(),
            transport: c.transport,
        });
        while self.history.len() > self.history_limit {
            self.history.pop_front();
        }
    }

    /// Client `id`'s role changed from `before` to `after` (it logged in or out, or the
    /// roles were reloaded): its pattern subscriptions are taken off the channels they
    /// reached and put on those they reach now, and its subscriptions to channels and
    /// watches of tables the new role may not read end.
    pub fn rewire(&mut self, id: ConnId, before: &Role, after: &Role) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let outbox = c.outbox.clone();
        let auth = self.auth.clone();
        let lost: Vec<Arc<str>> = c
            .channels
            .keys()
            .filter(|ch| !reaches(&auth, after, ch))
            .cloned()
            .collect();
        for ch in lost {
            if let Some(filter) = c.channels.remove(&ch) {
                if let Some(chan) = self.channels.get_mut(&ch) {
                    chan.release(&outbox, filter.as_ref());
                }
            }
        }
        let unwatched: Vec<String> = c
            .watching
            .iter()
            .filter(|t| auth.mode != AuthMode::Off && !after.allows(Right::Read, t))
            .cloned()
            .collect();
        for chan in self.channels.values_mut() {
            for (p, f) in &c.patterns {
                if !crate::protocol::subject::matches(p, &chan.name) {
                    continue;
                }
                let (was, is) = (
                    reaches(&auth, before, &chan.name),
                    reaches(&auth, after, &chan.name),
                );
                if was && !is {
                    chan.release(&outbox, f.as_ref());
                } else if is && !was {
                    chan.add_ref(&outbox, f.as_ref());
                }
            }
        }
        for table in unwatched {
            self.unwatch(id, &table);
        }
    }

    /// The roles were reloaded (`old` were in force before): every client is rewired.
    pub fn roles_changed(&mut self, old: &Roles) {
        let ids: Vec<ConnId> = self.clients.keys().copied().collect();
        for id in ids {
            let Some(role) = self
                .clients
                .get(&id)
                .map(|c| c.outbox.identity().role.clone())
            else {
                continue;
            };
            let before = old
                .get(&role)
                .unwrap_or_else(|| Arc::new(Role::new(&role, &[])));
            let after = self.auth.role(&role);
            if before != after {
                self.rewire(id, &before, &after);
            }
        }
    }

    /// Connection `id` stopped receiving `channel` (or left): nothing more is handed to
    /// it late (see `store/history.rs`).
    pub fn forget_resume(&self, id: ConnId, channel: &str) {
        if let Some(h) = self.channels.get(channel).and_then(|c| c.history.as_ref()) {
            if self.resuming.iter().any(|r| Arc::ptr_eq(r, h)) {
                h.lock().forget(id);
            }
        }
    }

    /// Removes `outbox`'s connection from pattern `p` (subscribed with `filter`) and
    /// from every channel it matches.
    pub fn unsubscribe_pattern(&mut self, outbox: &Arc<Outbox>, p: &str, filter: Option<&Filter>) {
        if let Some(subs) = self.patterns.get_mut(p) {
            subs.remove(&outbox.id);
            if subs.is_empty() {
                self.patterns.remove(p);
            }
        }
        let identity = outbox.identity();
        for chan in self.channels.values_mut() {
            if pattern_reaches(&self.auth, &identity, p, &chan.name) {
                chan.release(outbox, filter);
            }
        }
    }

    /// Makes channel `name` (which does not exist yet) and saves it with the tables:
    /// returns the journal record that holds it. Pattern subscriptions made earlier
    /// cover it, for those who may read it.
    pub fn make_channel(&mut self, name: Arc<str>, options: ChannelOptions) -> Option<u64> {
        let (history, durable) = self.store.channel_created(&name, options);
        let stored = StoredChannel { options, history };
        let mut chan = Channel::new(name.clone(), self.routes.clone(), &stored);
        for (pattern, subs) in &self.patterns {
            if !crate::protocol::subject::matches(pattern, &name) {
                continue;
            }
            for sub in subs {
                if let Some(c) = self.clients.get(sub) {
                    if !pattern_reaches(&self.auth, &c.outbox.identity(), pattern, &name) {
                        continue;
                    }
                    let filter = c.patterns.get(pattern).and_then(|f| f.as_ref());
                    chan.add_ref(&c.outbox, filter);
                }
            }
        }
        self.channels.insert(name, chan);
        durable
    }

    /// Removes channel `name`, if there is one, and tells its receivers
    /// (`DROPPED <channel>`): returns the journal record of its removal.
    pub fn remove_channel(&mut self, name: &str) -> Option<u64> {
        let chan = self.channels.remove(name)?;
        let durable = self.store.channel_dropped(name);
        // Its route goes with the batch, before anyone is told.
        self.routes.mark(&chan.name);
        let told: Vec<Arc<Outbox>> = chan
            .receivers()
            .iter()
            .chain(chan.filtered_receivers().map(|(o, _)| o))
            .cloned()
            .collect();
        for outbox in told {
            self.push(&outbox, Push::Dropped(chan.name.clone()));
            if let Some(c) = self.clients.get_mut(&outbox.id) {
                c.channels.remove(name);
            }
        }
        durable
    }

    /// Fans out publications other nodes made to this node's receivers of their
    /// channels (none where a channel does not exist here). Nobody here published
    /// them, so nobody is stalled for a crowded receiver, and they do not go back out.
    /// Consecutive ones on a plain channel (no history, no filters) go to each
    /// receiver as one run, as a local publisher's do.
    pub(super) fn deliver_remote(&mut self, batch: Vec<backplane::RemoteMessage>) {
        let mut run: Vec<Arc<Message>> = Vec::new();
        for remote in batch {
            let Some(chan) = self.channels.get(&*remote.channel) else {
                continue;
            };
            let plain = chan.history.is_none() && chan.filtered_receivers().next().is_none();
            let history = chan.history.clone();
            let msg = Arc::new(Message::new(
                MessageKind::Channel,
                chan.name.clone(),
                remote.from,
                remote.payload,
            ));
            if run.last().is_some_and(|m| m.channel != msg.channel) || !plain {
                self.fan_out_run(std::mem::take(&mut run));
            }
            if plain {
                run.push(msg);
                continue;
            }
            if let Some(h) = history {
                self.sequenced.push((h, msg.clone()));
            }
            self.fan_out_remote(msg);
        }
        self.fan_out_run(run);
    }

    /// Stages one message of another node's for each receiver of its channel, and
    /// tells the receiving link of a receiver it crowds (`pacing.rs`).
    fn fan_out_remote(&mut self, msg: Arc<Message>) {
        // Encoded once here, not by each receiver.
        msg.encoded(crate::protocol::Format::Text);
        let channel = msg.channel.clone();
        let (n, crowded) = self.fan_out(&channel, Push::Message(msg));
        self.counts.delivered += n;
        if let Some(o) = crowded {
            self.routes.remote.crowded(&o);
        }
    }

    /// Stages `run` (messages on one plain channel) for each receiver of the channel.
    fn fan_out_run(&mut self, mut run: Vec<Arc<Message>>) {
        let Some(chan) = run.first().and_then(|m| self.channels.get(&*m.channel)) else {
            return;
        };
        if run.len() == 1 {
            return self.fan_out_remote(run.swap_remove(0));
        }
        let size: usize = run.iter().map(|m| m.approx_len()).sum();
        let count = run.len() as u64;
        let run = Arc::new(crate::protocol::push::MessageRun::new(run));
        for outbox in chan.receivers() {
            let item = OutItem::Run(run.clone());
            if let Staged::Queued { crowded } = self.stager.stage(outbox, item, size) {
                self.counts.delivered += count;
                if crowded {
                    self.routes.remote.crowded(outbox);
                }
            }
        }
    }

    /// Hands `push` to every receiver of `channel`. Returns how many took it, and
    /// one of them whose outbox is crowded, if any (the publisher should pause).
    pub fn fan_out(&mut self, channel: &str, push: Push) -> (u64, Option<Arc<Outbox>>) {
        let Some(chan) = self.channels.get(channel) else {
            return (0, None);
        };
        let filtered = chan.filtered_receivers();
        route::fan_out(&mut self.stager, chan.receivers(), filtered, push)
    }
}
