//! Routing snapshots: what a publishing connection needs to deliver a message itself,
//! without the manager thread (one hop: publisher to subscriber outboxes).
//!
//! The manager stays the only writer of channels and subscriptions. After each batch
//! of its work it builds an immutable [`Route`] for every channel that changed and
//! swaps it into [`Routes`] before the batch's replies go out, so a `+OK` to `SUB`
//! means the next `PUB` from anyone reaches the subscriber. A publisher holds the
//! routes it used until it has handed its messages over; the manager waits for a
//! replaced route to be let go before it answers, so `UNSUB`'s `+OK` (or `DROPPED`)
//! means nothing more arrives from it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::backplane::Backplane;
use super::channel::Filter;
use super::outbox::{OutItem, Outbox};
use super::pacing::RemotePacing;
use super::requests::ServiceRoutes;
use super::stage::{Staged, Stager};
use crate::collections::Map;
use crate::protocol::push::Message;
use crate::protocol::{Payload, Push};
use crate::store::History;

/// Who receives a channel's messages, as of one moment.
pub struct Route {
    pub name: Arc<str>,
    /// The channel's history, when it keeps one: messages get their offsets there,
    /// and are handed over under its lock.
    pub history: Option<Arc<History>>,
    /// Resuming subscribers this route reaches (see `store/history.rs`).
    pub joins: u64,
    /// Those who receive every message.
    pub fanout: Vec<Arc<Outbox>>,
    /// Those who receive only JSON messages matching one of their filters.
    pub filtered: Vec<(Arc<Outbox>, Vec<Filter>)>,
}

/// Every channel's current route, read by publishers, written by the manager.
pub struct Routes {
    map: RwLock<Map<Arc<str>, Arc<Route>>>,
    /// Channels whose receivers changed since the manager last published routes.
    dirty: Mutex<Vec<Arc<str>>>,
    /// Bumped with every change of `map`: a publisher whose route was read at the
    /// current version may keep using it without taking the lock again.
    version: AtomicU64,
    /// Every service's providers, for requesters that send requests themselves.
    pub services: ServiceRoutes,
    /// The cluster's backplane, when this node is in one: every publication here is
    /// also handed to it (set once, at start).
    pub backplane: OnceLock<Arc<dyn Backplane>>,
    /// Other nodes' publications, paced to what the receivers here read.
    pub remote: RemotePacing,
}

/// Longest the manager waits for publishers to let go of a replaced route. They hold
/// one only while staging a batch of lines, so this is only reached when a publisher's
/// thread was descheduled mid-batch for that long.
pub(super) const RELEASE_WAIT: Duration = Duration::from_millis(100);

impl Routes {
    /// No channels or services yet; service requests wait `request_timeout` for their
    /// answers unless they say otherwise.
    pub fn new(request_timeout: Duration) -> Routes {
        Routes {
            map: RwLock::default(),
            dirty: Mutex::default(),
            version: AtomicU64::new(0),
            services: ServiceRoutes::new(request_timeout),
            backplane: OnceLock::new(),
            remote: RemotePacing::default(),
        }
    }

    /// The current route of `channel`, if it exists, and the version it was read at.
    pub fn get_versioned(&self, channel: &str) -> (Option<Arc<Route>>, u64) {
        let map = self.map.read();
        (
            map.get(channel).cloned(),
            self.version.load(Ordering::Acquire),
        )
    }

    /// The version now: equal to one a route was read at, that route is still current.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Notes that `channel`'s receivers changed (or that it was created or dropped).
    pub fn mark(&self, channel: &Arc<str>) {
        self.dirty.lock().push(channel.clone());
    }

    /// Whether any channel changed since the last [`Routes::publish`].
    pub fn has_changes(&self) -> bool {
        !self.dirty.lock().is_empty()
    }

    /// Swaps in a new route for every channel marked since the last call (`build`
    /// gives it; `None`: the channel is gone), then waits (bounded) until no publisher
    /// still holds a route it replaced.
    pub fn publish(&self, mut build: impl FnMut(&str) -> Option<Route>) {
        let dirty = std::mem::take(&mut *self.dirty.lock());
        if dirty.is_empty() {
            return;
        }
        let mut replaced = Vec::new();
        {
            let mut map = self.map.write();
            for name in dirty {
                let old = match build(&name) {
                    Some(route) => map.insert(name, Arc::new(route)),
                    None => map.remove(&name),
                };
                replaced.extend(old);
            }
            self.version.fetch_add(1, Ordering::Release);
        }
        let deadline = Instant::now() + RELEASE_WAIT;
        for old in replaced {
            if !await_release(&old, deadline) {
                log::debug!(
                    "a publisher still held channel '{}''s old route after {RELEASE_WAIT:?}",
                    old.name
                );
            }
        }
    }
}

/// Waits until nobody but the caller holds `old` (a replaced route), or until
/// `deadline`. Returns whether it was let go.
pub(super) fn await_release<T>(old: &Arc<T>, deadline: Instant) -> bool {
    while Arc::strong_count(old) > 1 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    Arc::strong_count(old) == 1
}

/// How many receivers took a message, and one of them that is crowded, if any.
#[derive(Default)]
struct Tally<'a> {
    n: u64,
    // Borrowed until the end: cloned once, not per crowded receiver per message.
    crowded: Option<&'a Arc<Outbox>>,
}

impl<'a> Tally<'a> {
    fn add(&mut self, staged: Staged, outbox: &'a Arc<Outbox>) {
        if let Staged::Queued { crowded } = staged {
            self.n += 1;
            if crowded {
                self.crowded = Some(outbox);
            }
        }
    }

    fn result(self) -> (u64, Option<Arc<Outbox>>) {
        (self.n, self.crowded.cloned())
    }
}

/// Stages `push` for every receiver of a channel: `fanout` gets it, each of `filtered`
/// only when one of its filters matches the message's JSON. Returns how many took it,
/// and one of them whose outbox is crowded, if any (the publisher should pause).
pub fn fan_out<'a>(
    stager: &mut Stager,
    fanout: &'a [Arc<Outbox>],
    filtered: impl Iterator<Item = (&'a Arc<Outbox>, &'a [Filter])>,
    push: Push,
) -> (u64, Option<Arc<Outbox>>) {
    let size = push.approx_len();
    let mut tally = Tally::default();
    for outbox in fanout {
        let item = OutItem::Push(push.clone());
        tally.add(stager.stage(outbox, item, size), outbox);
    }
    let json = match &push {
        Push::Message(m) => match &m.data {
            Payload::Json(v) => Some(v),
            Payload::Text(_) => None,
        },
        _ => None,
    };
    if let Some(msg) = json {
        for (outbox, filters) in filtered {
            if !filters.iter().any(|f| f.matches_json(msg)) {
                continue;
            }
            let item = OutItem::Push(push.clone());
            tally.add(stager.stage(outbox, item, size), outbox);
        }
    }
    tally.result()
}

impl Route {
    /// Counts `msg` against the bound of each unfiltered receiver (`slots`: the
    /// stager's slots for [`Route::fanout`], this batch), to be handed over later as
    /// part of a run, and stages it now for each filtered receiver it matches. Returns
    /// how many receivers take it, and a crowded one if any.
    /// Reserves `size` bytes with each unfiltered receiver (a message staged for them
    /// in a run): how many, and the last crowded one.
    pub fn reserve_len(
        &self,
        stager: &mut Stager,
        slots: &[usize],
        size: usize,
    ) -> (u64, Option<Arc<Outbox>>) {
        let mut tally = Tally::default();
        for (&idx, outbox) in slots.iter().zip(&self.fanout) {
            tally.add(stager.reserve_at(idx, size), outbox);
        }
        tally.result()
    }

    pub fn reserve(
        &self,
        stager: &mut Stager,
        slots: &[usize],
        msg: &Arc<Message>,
    ) -> (u64, Option<Arc<Outbox>>) {
        let (n, crowded) = self.reserve_len(stager, slots, msg.approx_len());
        if self.filtered.is_empty() {
            return (n, crowded);
        }
        let filtered = self.filtered.iter().map(|(o, f)| (o, &f[..]));
        let (m, c) = fan_out(stager, &[], filtered, Push::Message(msg.clone()));
        (n + m, c.or(crowded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn empty(name: &str) -> Route {
        Route {
            name: name.into(),
            history: None,
            joins: 0,
            fanout: Vec::new(),
            filtered: Vec::new(),
        }
    }

    #[test]
    fn publishing_waits_until_no_publisher_holds_the_replaced_route() {
        let routes = Arc::new(Routes::new(Duration::from_secs(5)));
        let name: Arc<str> = "c".into();
        routes.mark(&name);
        routes.publish(|n| Some(empty(n)));
        let held = routes.get_versioned("c").0.expect("published");
        let released = Arc::new(AtomicBool::new(false));
        let holder = {
            let released = released.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                released.store(true, Ordering::SeqCst);
                drop(held);
            })
        };
        routes.mark(&name);
        routes.publish(|_| None);
        assert!(
            released.load(Ordering::SeqCst),
            "publish returned while a publisher still held the old route"
        );
        assert!(
            routes.get_versioned("c").0.is_none(),
            "the dropped channel has no route"
        );
        holder.join().unwrap();
    }
}
