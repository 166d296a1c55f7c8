//! The channel manager: one OS thread that owns client names, channels and
//! subscriptions, spoken to only through [`ChannelOp`] messages, so none of that state
//! needs a lock. It drains many ops per wake and wakes each touched connection once.

pub mod channel;
pub mod subject;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::Receiver;

use crate::commands;
use crate::conn::outbox::{ConnId, Delivery, OutItem, Outbox};
use crate::protocol::push::ByeReason;
use crate::protocol::{Command, Push, Reply};
use crate::server::Stats;
use channel::Channel;

/// Most ops handled before the wakes they caused are sent.
const BATCH: usize = 1024;

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

/// Messages to the channel manager.
pub enum ChannelOp {
    /// A connection is ready for commands (greeted or handshaken).
    Connect {
        outbox: Arc<Outbox>,
        name: Arc<str>,
        addr: SocketAddr,
        transport: Transport,
    },
    /// Apply a command for a connection; the reply goes to its outbox, in order.
    Apply { id: ConnId, command: Command },
    /// The connection is gone.
    Disconnect { id: ConnId },
    /// Tell every client `BYE shutdown` and stop.
    Shutdown,
}

/// A connected client as the manager knows it.
pub struct Client {
    pub outbox: Arc<Outbox>,
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub since: SystemTime,
    pub transport: Transport,
    /// Channels subscribed to by exact name.
    pub channels: HashSet<Arc<str>>,
    /// Patterns subscribed to.
    pub patterns: HashSet<Arc<str>>,
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
    pub clients: HashMap<ConnId, Client>,
    pub names: HashMap<Arc<str>, ConnId>,
    pub channels: HashMap<Arc<str>, Channel>,
    /// Pattern → subscribed connections.
    pub patterns: HashMap<Arc<str>, HashSet<ConnId>>,
    pub history: VecDeque<PastClient>,
    pub history_limit: usize,
    pub stats: Arc<Stats>,
    wake: Vec<Arc<Outbox>>,
}

impl Manager {
    pub fn new(stats: Arc<Stats>, history_limit: usize) -> Self {
        Manager {
            clients: HashMap::new(),
            names: HashMap::new(),
            channels: HashMap::new(),
            patterns: HashMap::new(),
            history: VecDeque::new(),
            history_limit,
            stats,
            wake: Vec::new(),
        }
    }

    /// Runs until a `Shutdown` op or until every sender is gone.
    pub fn run(mut self, ops: Receiver<ChannelOp>) {
        while let Ok(op) = ops.recv() {
            let mut stop = self.handle(op);
            for op in ops.try_iter().take(BATCH) {
                if stop {
                    break;
                }
                stop = self.handle(op);
            }
            self.send_wakes();
            if stop {
                break;
            }
        }
        log::debug!("channel manager stopped");
    }

    /// Returns true when the manager must stop.
    fn handle(&mut self, op: ChannelOp) -> bool {
        match op {
            ChannelOp::Connect {
                outbox,
                name,
                addr,
                transport,
            } => {
                self.names.insert(name.clone(), outbox.id);
                self.clients.insert(
                    outbox.id,
                    Client {
                        outbox,
                        name,
                        addr,
                        since: SystemTime::now(),
                        transport,
                        channels: HashSet::new(),
                        patterns: HashSet::new(),
                    },
                );
            }
            ChannelOp::Apply { id, command } => {
                let reply = self.apply(id, command);
                self.reply(id, reply);
            }
            ChannelOp::Disconnect { id } => self.disconnect(id),
            ChannelOp::Shutdown => {
                for c in self.clients.values() {
                    if c.outbox.close(ByeReason::Shutdown) {
                        self.wake.push(c.outbox.clone());
                    }
                }
                return true;
            }
        }
        false
    }

    fn apply(&mut self, id: ConnId, command: Command) -> Reply {
        if !self.clients.contains_key(&id) {
            return Reply::Done(None);
        }
        match command {
            Command::Name(_) | Command::Whoami | Command::Clients | Command::History => {
                commands::session::apply(self, id, command)
            }
            other => commands::channels::apply(self, id, other),
        }
    }

    /// Queues the answer to connection `id`'s oldest pending request.
    pub fn reply(&mut self, id: ConnId, reply: Reply) {
        if let Some(c) = self.clients.get(&id) {
            let outbox = c.outbox.clone();
            self.deliver(&outbox, OutItem::Reply(reply), 64);
        }
    }

    /// Queues a push for one connection.
    pub fn push(&mut self, outbox: &Arc<Outbox>, push: Push) {
        let size = push.approx_len();
        self.deliver(outbox, OutItem::Push(push), size);
    }

    fn deliver(&mut self, outbox: &Arc<Outbox>, item: OutItem, size: usize) {
        deliver(&mut self.wake, &self.stats, outbox, item, size);
    }

    fn send_wakes(&mut self) {
        for o in self.wake.drain(..) {
            o.wake();
        }
    }

    fn disconnect(&mut self, id: ConnId) {
        let Some(c) = self.clients.remove(&id) else {
            return;
        };
        if self.names.get(&c.name) == Some(&id) {
            self.names.remove(&c.name);
        }
        for ch in &c.channels {
            if let Some(chan) = self.channels.get_mut(ch) {
                chan.release(id);
            }
        }
        for p in &c.patterns {
            self.unsubscribe_pattern(id, p);
        }
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

    /// Removes connection `id` from pattern `p` and from every channel it matches.
    pub fn unsubscribe_pattern(&mut self, id: ConnId, p: &str) {
        if let Some(subs) = self.patterns.get_mut(p) {
            subs.remove(&id);
            if subs.is_empty() {
                self.patterns.remove(p);
            }
        }
        for chan in self.channels.values_mut() {
            if subject::matches(p, &chan.name) {
                chan.release(id);
            }
        }
    }

    /// Hands `push` to every receiver of `channel`. Returns how many took it, and
    /// whether any of them has a crowded outbox (the publisher should pause).
    pub fn fan_out(&mut self, channel: &str, push: Push) -> (u64, bool) {
        let Some(chan) = self.channels.get(channel) else {
            return (0, false);
        };
        let size = push.approx_len();
        let mut n = 0;
        let mut crowded = false;
        for outbox in chan.receivers() {
            let item = OutItem::Push(push.clone());
            if let Some(c) = deliver(&mut self.wake, &self.stats, outbox, item, size) {
                n += 1;
                crowded |= c;
            }
        }
        (n, crowded)
    }
}

/// Queues one item, recording who needs a wake. `Some(crowded)` when it was queued,
/// `crowded` saying the outbox is more than half full.
fn deliver(
    wake: &mut Vec<Arc<Outbox>>,
    stats: &Stats,
    outbox: &Arc<Outbox>,
    item: OutItem,
    size: usize,
) -> Option<bool> {
    match outbox.push(item, size) {
        Delivery::Queued { wake: w, crowded } => {
            if w {
                wake.push(outbox.clone());
            }
            Some(crowded)
        }
        Delivery::Refused => None,
        Delivery::Overflow => {
            stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "connection {} is a slow consumer: its outbox overflowed; disconnecting it",
                outbox.id
            );
            wake.push(outbox.clone());
            None
        }
    }
}
