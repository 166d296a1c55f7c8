//! `PUB` in one hop: the publishing connection hands a message to its subscribers'
//! outboxes itself, from the channel's routing snapshot (`manager/route.rs`), instead
//! of sending it through the manager thread. Messages are staged per receiver and
//! handed over every [`FLUSH_AT`] messages, before any other command, before the
//! connection pauses for a crowded receiver and before it sleeps: one push and one
//! wake per receiving connection for many messages.
//!
//! A run on a channel that keeps a history is handed over as soon as it ends, under
//! the history's lock, where its messages get their offsets: every receiver then gets
//! the channel's messages in offset order, whoever published them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::commands::channels::{bad_name, no_such_channel};
use crate::manager::backplane::{Backplane, PayloadRef};
use crate::manager::outbox::{OutItem, Outbox};
use crate::manager::requests::{Placed, ServiceRoute};
use crate::manager::route::{Route, Routes};
use crate::manager::stage::{Staged, Stager};
use crate::manager::stats::Stats;
use crate::protocol::push::{Message, MessageKind, MessageRun, TextLines};
use crate::protocol::{subject, Payload, Push, Reply};

/// A connection's own publishing.
#[derive(Default)]
pub struct Publisher {
    stager: Stager,
    /// Routes used since the last flush: the manager waits for them to be let go
    /// before it says a receiver is gone, so nothing reaches it after that.
    held: Vec<Arc<Route>>,
    /// The messages published one after another to one channel, not yet staged.
    run: Option<Run>,
    /// A `PUB` of this connection went through the manager: until that batch of the
    /// manager's is out, later ones go the same way, to keep their order.
    through_manager: bool,
    published: u64,
    delivered: u64,
    /// The routes of service requests staged since the last flush (`stage_request`):
    /// held, like `held`, until they are handed over.
    requests: Vec<Arc<ServiceRoute>>,
    /// Messages (and requests) and deliveries staged since the last flush.
    staged: u64,
    staged_deliveries: u64,
}

/// Consecutive messages to one route, handed to each of its unfiltered receivers as one
/// [`OutItem::Run`] when the run ends (another channel, or a flush).
struct Run {
    route: Arc<Route>,
    /// The routes' version `route` was read at.
    version: u64,
    /// The publisher's name when the run began (a rename ends the run: it is another
    /// command, and a publisher flushes before any other command).
    from: Arc<str>,
    /// The stager's slots for `route.fanout`, this batch.
    slots: Vec<usize>,
    /// On a channel without history or filters, text messages as their lines (the
    /// common case: no message object, no payload string per message).
    lines: Option<TextLines>,
    /// The rest (a run's messages are its lines, then these).
    messages: Vec<Arc<Message>>,
    /// The cluster's backplane, handed every message too.
    backplane: Option<Arc<dyn Backplane>>,
}

/// What a `PUB` carries: a payload already made, or the text of a line being read.
enum Body<'a> {
    Payload(Payload),
    Text(&'a str),
}

impl Body<'_> {
    fn text(&self) -> Option<&str> {
        match self {
            Body::Text(s) => Some(s),
            Body::Payload(Payload::Text(s)) => Some(s),
            Body::Payload(Payload::Json(_)) => None,
        }
    }

    fn as_ref(&self) -> PayloadRef<'_> {
        match self {
            Body::Text(s) => PayloadRef::Text(s),
            Body::Payload(p) => p.into(),
        }
    }

    fn into_payload(self) -> Payload {
        match self {
            Body::Payload(p) => p,
            Body::Text(s) => Payload::Text(s.to_string()),
        }
    }
}

/// Messages a publisher stages before it hands them over even though it has more
/// lines to read: few enough to keep receivers busy, many enough that each receiver
/// is woken once for many messages (a wake and a write per receiver per flush).
const FLUSH_AT: u64 = 1024;
/// Deliveries staged before a flush in any case (a large fan-out), bounding the memory
/// and the time a route is held.
const FLUSH_DELIVERIES: u64 = 1 << 18;
/// At most this many deliveries staged from what one read brought is a sparse flow,
/// whose latency is the hop: handed over before the replies go out. More is a busy
/// flow, which a flush per read would hand over in small batches (a lock and a wake per
/// receiver each): flushing every read measured 1 -> 100 fan-out at 18 M deliveries/s
/// instead of 48 M.
const SPARSE_DELIVERIES: u64 = 4;

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
    pub fn publish(
        &mut self,
        routes: &Routes,
        me: &Outbox,
        channel: &str,
        data: Payload,
        stats: &Stats,
    ) -> Reply {
        self.publish_body(routes, me, channel, Body::Payload(data), stats)
    }

    /// As [`Publisher::publish`], for a text `PUB` read straight from its line.
    pub fn publish_text(
        &mut self,
        routes: &Routes,
        me: &Outbox,
        channel: &str,
        text: &str,
        stats: &Stats,
    ) -> Reply {
        self.publish_body(routes, me, channel, Body::Text(text), stats)
    }

    fn publish_body(
        &mut self,
        routes: &Routes,
        me: &Outbox,
        channel: &str,
        data: Body,
        stats: &Stats,
    ) -> Reply {
        self.through_manager = false;
        // Publishing on to the same channel, whose route has not changed: no lookup.
        let current = self
            .run
            .as_ref()
            .is_some_and(|r| r.version == routes.version() && *r.route.name == *channel);
        if current {
            return self.publish_on(me, data);
        }
        let (route, version) = routes.get_versioned(channel);
        let Some(route) = route else {
            let e = match subject::check_channel(channel) {
                Err(e) => bad_name(e),
                Ok(()) => no_such_channel(channel),
            };
            return Reply::Error(e);
        };
        if !self
            .run
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(&r.route, &route))
        {
            self.end_run(stats);
            let slots = self.stager.slots_for(&route.fanout);
            self.held.push(route.clone());
            let from = me.name();
            let plain = route.history.is_none() && route.filtered.is_empty();
            let lines = plain.then(|| TextLines::new(route.name.clone(), from.clone()));
            self.run = Some(Run {
                route,
                version,
                from,
                slots,
                lines,
                messages: Vec::new(),
                backplane: routes.backplane.get().cloned(),
            });
        } else if let Some(run) = self.run.as_mut() {
            run.version = version;
        }
        self.publish_on(me, data)
    }

    /// Stages `data` on the current run's channel and returns `PUB`'s reply.
    fn publish_on(&mut self, me: &Outbox, data: Body) -> Reply {
        let Some(run) = self.run.as_mut() else {
            unreachable!("called with a run")
        };
        if let Some(backplane) = &run.backplane {
            backplane.publish(&run.route.name, &run.from, data.as_ref());
        }
        // A line while the run is all lines; anything after a JSON payload is a
        // message object, to stay behind it.
        let (n, crowded) = match (run.lines.as_mut(), data.text()) {
            (Some(lines), Some(text)) if run.messages.is_empty() => {
                let size = lines.push(text);
                run.route.reserve_len(&mut self.stager, &run.slots, size)
            }
            _ => {
                let msg = Arc::new(Message::new(
                    MessageKind::Channel,
                    run.route.name.clone(),
                    run.from.clone(),
                    data.into_payload(),
                ));
                let reserved = run.route.reserve(&mut self.stager, &run.slots, &msg);
                run.messages.push(msg);
                reserved
            }
        };
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

    /// Stages a service request for its provider, behind what this connection
    /// published before it. Returns whether the provider's outbox is crowded (the
    /// connection should pause).
    pub fn stage_request(&mut self, placed: Placed, stats: &Stats) -> bool {
        self.end_run(stats);
        if !self
            .requests
            .last()
            .is_some_and(|r| Arc::ptr_eq(r, &placed.route))
        {
            self.requests.push(placed.route);
        }
        self.staged += 1;
        let size = placed.push.approx_len();
        let item = OutItem::Push(placed.push);
        matches!(
            self.stager.stage(&placed.provider, item, size),
            Staged::Queued { crowded: true }
        )
    }

    /// Flushes a sparse flow's few deliveries at once (see [`Session::flush_sparse`]),
    /// and leaves a busy flow's to gather until [`FLUSH_AT`] or the connection waits.
    ///
    /// [`Session::flush_sparse`]: crate::conn::session::Session::flush_sparse
    pub fn flush_if_sparse(&mut self, stats: &Stats) {
        if self.staged_deliveries <= SPARSE_DELIVERIES {
            self.flush(stats);
        }
    }

    /// Flushes once many deliveries are staged (the connection has more to read).
    pub fn flush_if_large(&mut self, stats: &Stats) {
        if self.staged >= FLUSH_AT || self.staged_deliveries >= FLUSH_DELIVERIES {
            self.flush(stats);
        }
    }

    /// Stages the current run for its route's unfiltered receivers: one item each. A
    /// run on a history channel is numbered and handed over at once (with everything
    /// staged before it), under the history's lock.
    fn end_run(&mut self, stats: &Stats) {
        let Some(mut run) = self.run.take() else {
            return;
        };
        if let Some(lines) = run.lines.take().filter(|l| !l.is_empty()) {
            let shared = Arc::new(MessageRun::lines(lines));
            for &idx in &run.slots {
                self.stager.push_at(idx, OutItem::Run(shared.clone()));
            }
        }
        let Some(history) = run.route.history.clone() else {
            self.stage_run(&run.slots, run.messages);
            return;
        };
        let mut seq = history.lock();
        seq.append(&run.messages);
        let late = seq.has_late().then(|| run.messages.clone());
        self.stage_run(&run.slots, run.messages);
        self.stager.flush(stats);
        if let Some(msgs) = late {
            seq.deliver_late(&msgs, run.route.joins);
        }
    }

    fn stage_run(&mut self, slots: &[usize], mut messages: Vec<Arc<Message>>) {
        match messages.len() {
            0 => {}
            1 => {
                let msg = messages.swap_remove(0);
                for &idx in slots {
                    let item = OutItem::Push(Push::Message(msg.clone()));
                    self.stager.push_at(idx, item);
                }
            }
            _ => {
                let shared = Arc::new(MessageRun::new(messages));
                for &idx in slots {
                    self.stager.push_at(idx, OutItem::Run(shared.clone()));
                }
            }
        }
    }

    /// Hands what was staged to the receivers, waking each once, and lets go of the
    /// routes it used.
    pub fn flush(&mut self, stats: &Stats) {
        if self.held.is_empty() && self.requests.is_empty() {
            return;
        }
        self.end_run(stats);
        self.staged = 0;
        self.staged_deliveries = 0;
        self.stager.flush(stats);
        self.held.clear();
        self.requests.clear();
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
        if !self.held.is_empty() || !self.requests.is_empty() {
            let stats = Stats::default();
            self.end_run(&stats);
            self.stager.flush(&stats);
        }
    }
}
