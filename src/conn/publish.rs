//! `PUB` in one hop: the publishing connection hands a message to its subscribers'
//! outboxes itself, from the channel's routing snapshot (`manager/route.rs`), instead
//! of sending it through the manager thread. Messages are staged per receiver and
//! handed over every [`FLUSH_AT`] messages, before any other command, before the
//! connection pauses for a crowded receiver and before it sleeps: one push and one
//! wake per receiving connection for many messages.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::commands::channels::{bad_name, no_such_channel};
use crate::manager::outbox::Outbox;
use crate::manager::route::{Route, Routes};
use crate::manager::stage::Stager;
use crate::manager::stats::Stats;
use crate::protocol::push::{Message, MessageKind};
use crate::protocol::{subject, Payload, Push, Reply};

/// A connection's own publishing.
#[derive(Default)]
pub struct Publisher {
    stager: Stager,
    /// Routes used since the last flush: the manager waits for them to be let go
    /// before it says a receiver is gone, so nothing reaches it after that.
    held: Vec<Arc<Route>>,
    /// A `PUB` of this connection went through the manager: until that batch of the
    /// manager's is out, later ones go the same way, to keep their order.
    through_manager: bool,
    published: u64,
    delivered: u64,
    /// Messages and deliveries staged since the last flush.
    staged: u64,
    staged_deliveries: u64,
}

/// Messages a publisher stages before it hands them over even though it has more
/// lines to read: few enough to keep receivers busy, many enough that each receiver
/// is woken once for many messages (a wake and a write per receiver per flush).
const FLUSH_AT: u64 = 1024;
/// Deliveries staged before a flush in any case (a large fan-out), bounding the memory
/// and the time a route is held.
const FLUSH_DELIVERIES: u64 = 1 << 18;

impl Publisher {
    /// Whether the next `PUB` may be delivered here: nothing of this connection waits
    /// on the manager (a `SUB` sent before it must take effect first), and no earlier
    /// `PUB` of its is still being handed out by the manager.
    pub fn may_publish(&self, waiting_on_manager: bool, stats: &Stats) -> bool {
        let manager_still_delivering =
            self.through_manager && stats.manager_flushing.load(Ordering::SeqCst);
        !waiting_on_manager && !manager_still_delivering
    }

    /// Notes a `PUB` sent through the manager.
    pub fn sent_through_manager(&mut self) {
        self.through_manager = true;
    }

    /// Stages `data` for the receivers of `channel` and returns `PUB`'s reply.
    pub fn publish(&mut self, routes: &Routes, me: &Outbox, channel: &str, data: Payload) -> Reply {
        self.through_manager = false;
        let Some(route) = routes.get(channel) else {
            let e = match subject::check_channel(channel) {
                Err(e) => bad_name(e),
                Ok(()) => no_such_channel(channel),
            };
            return Reply::Error(e);
        };
        let msg = Message::new(MessageKind::Channel, route.name.clone(), me.name(), data);
        let (n, crowded) = route.fan_out(&mut self.stager, Push::Message(Arc::new(msg)));
        self.held.push(route);
        self.published += 1;
        self.delivered += n;
        self.staged += 1;
        self.staged_deliveries += n;
        if let Some(receiver) = crowded {
            // Pause before reading more, as for any publisher to a crowded subscriber.
            me.request_stall(&receiver);
        }
        Reply::Count {
            key: "receivers",
            n,
        }
    }

    /// Flushes once many deliveries are staged (the connection has more to read).
    pub fn flush_if_large(&mut self, stats: &Stats) {
        if self.staged >= FLUSH_AT || self.staged_deliveries >= FLUSH_DELIVERIES {
            self.flush(stats);
        }
    }

    /// Hands what was staged to the receivers, waking each once, and lets go of the
    /// routes it used.
    pub fn flush(&mut self, stats: &Stats) {
        if self.held.is_empty() {
            return;
        }
        self.staged = 0;
        self.staged_deliveries = 0;
        self.stager.flush(stats);
        self.held.clear();
        stats
            .published
            .fetch_add(std::mem::take(&mut self.published), Ordering::Relaxed);
        stats
            .delivered
            .fetch_add(std::mem::take(&mut self.delivered), Ordering::Relaxed);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // Whatever is staged was answered `+OK`: it goes out even if the connection ends
        // mid-batch.
        if !self.held.is_empty() {
            self.stager.flush(&Stats::default());
        }
    }
}
