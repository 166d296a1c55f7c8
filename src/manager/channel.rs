//! A channel and the connections it delivers to.

use std::sync::Arc;
use std::time::SystemTime;

use crate::collections::Map;
use crate::manager::outbox::{ConnId, Outbox};
use crate::manager::route::{Route, Routes};
use crate::store::expr::Expr;
use crate::store::{History, StoredChannel};

/// A subscription's `WHERE` filter on JSON messages.
pub type Filter = Arc<Expr>;

/// A channel's receivers. A connection receives each message once, however many of its
/// subscriptions (the channel itself, patterns) lead here. One with any unfiltered
/// subscription is on the plain fan-out list; one with only filtered subscriptions is
/// on the filtered list and gets a message when any of its filters matches.
pub struct Channel {
    pub name: Arc<str>,
    members: Map<ConnId, Member>,
    fanout: Vec<Arc<Outbox>>,
    filtered: Vec<Arc<Outbox>>,
    /// Where publishers find this channel's receivers; told of every change.
    routes: Arc<Routes>,
    /// Whether a change waits for the next route.
    marked: bool,
    /// Its last messages, when it keeps them.
    pub history: Option<Arc<History>>,
    /// Whether its receivers are told who joins and leaves.
    pub presence: bool,
    /// Who started (`true`) or stopped receiving it since the manager last told its
    /// receivers (presence channels only).
    comings: Vec<(Arc<Outbox>, bool)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Fanout(usize),
    Filtered(usize),
    Nowhere,
}

struct Member {
    unfiltered: u32,
    filters: Vec<Filter>,
    slot: Slot,
    /// Since when it receives the channel.
    since: SystemTime,
}

impl Channel {
    /// A channel without receivers, as `stored` says (its options and history); its
    /// route is published with the manager's next batch.
    pub fn new(name: Arc<str>, routes: Arc<Routes>, stored: &StoredChannel) -> Self {
        routes.mark(&name);
        Channel {
            name,
            members: Map::default(),
            fanout: Vec::new(),
            filtered: Vec::new(),
            routes,
            marked: true,
            history: stored.history.clone(),
            presence: stored.options.presence,
            comings: Vec::new(),
        }
    }

    /// This channel's receivers now, for publishers.
    pub fn route(&mut self) -> Route {
        self.marked = false;
        Route {
            name: self.name.clone(),
            history: self.history.clone(),
            joins: self.history.as_ref().map_or(0, |h| h.joins()),
            fanout: self.fanout.clone(),
            filtered: self
                .filtered
                .iter()
                .map(|o| {
                    let filters = self
                        .members
                        .get(&o.id)
                        .map_or(Vec::new(), |m| m.filters.clone());
                    (o.clone(), filters)
                })
                .collect(),
        }
    }

    fn changed(&mut self) {
        if !self.marked {
            self.marked = true;
            self.routes.mark(&self.name);
        }
    }

    /// One more subscription of `outbox`'s connection leads here.
    pub fn add_ref(&mut self, outbox: &Arc<Outbox>, filter: Option<&Filter>) {
        let m = self.members.entry(outbox.id).or_insert_with(|| Member {
            unfiltered: 0,
            filters: Vec::new(),
            slot: Slot::Nowhere,
            since: SystemTime::now(),
        });
        match filter {
            None => m.unfiltered += 1,
            Some(f) => m.filters.push(f.clone()),
        }
        self.changed();
        self.place(outbox);
    }

    /// One subscription of connection `id` (with this filter) no longer leads here.
    pub fn release(&mut self, outbox: &Arc<Outbox>, filter: Option<&Filter>) {
        let Some(m) = self.members.get_mut(&outbox.id) else {
            return;
        };
        match filter {
            None => m.unfiltered = m.unfiltered.saturating_sub(1),
            Some(f) => {
                if let Some(i) = m.filters.iter().position(|g| Arc::ptr_eq(g, f)) {
                    m.filters.swap_remove(i);
                }
            }
        }
        self.changed();
        self.place(outbox);
    }

    /// Moves a member to the list its subscriptions call for.
    fn place(&mut self, outbox: &Arc<Outbox>) {
        let Some(m) = self.members.get(&outbox.id) else {
            return;
        };
        let want_fanout = m.unfiltered > 0;
        let want_filtered = !want_fanout && !m.filters.is_empty();
        let current = m.slot;
        let ok = matches!(
            (current, want_fanout, want_filtered),
            (Slot::Fanout(_), true, _)
                | (Slot::Filtered(_), false, true)
                | (Slot::Nowhere, false, false)
        );
        if !ok {
            match current {
                Slot::Fanout(i) => self.take(true, i),
                Slot::Filtered(i) => self.take(false, i),
                Slot::Nowhere => {}
            }
            let slot = if want_fanout {
                self.fanout.push(outbox.clone());
                Slot::Fanout(self.fanout.len() - 1)
            } else if want_filtered {
                self.filtered.push(outbox.clone());
                Slot::Filtered(self.filtered.len() - 1)
            } else {
                Slot::Nowhere
            };
            if let Some(m) = self.members.get_mut(&outbox.id) {
                m.slot = slot;
            }
            if self.presence && (current == Slot::Nowhere || slot == Slot::Nowhere) {
                self.comings.push((outbox.clone(), slot != Slot::Nowhere));
            }
        }
        if !want_fanout && !want_filtered {
            self.members.remove(&outbox.id);
        }
    }

    /// Whether connection `id` receives this channel (through any subscription).
    pub fn has_member(&self, id: ConnId) -> bool {
        self.members.contains_key(&id)
    }

    /// Since when connection `id` receives this channel, if it does.
    pub fn member_since(&self, id: ConnId) -> Option<SystemTime> {
        self.members.get(&id).map(|m| m.since)
    }

    /// Those who receive this channel and since when.
    pub fn members(&self) -> impl Iterator<Item = (&Arc<Outbox>, SystemTime)> {
        self.fanout.iter().chain(&self.filtered).map(|o| {
            let since = self
                .members
                .get(&o.id)
                .map_or(SystemTime::UNIX_EPOCH, |m| m.since);
            (o, since)
        })
    }

    /// Who started (`true`) or stopped receiving it since the last call.
    pub fn take_comings(&mut self) -> Vec<(Arc<Outbox>, bool)> {
        std::mem::take(&mut self.comings)
    }

    /// Whether someone came or went since [`Channel::take_comings`].
    pub fn has_comings(&self) -> bool {
        !self.comings.is_empty()
    }

    /// Removes entry `i` of a list, fixing the index of the entry moved into its place.
    fn take(&mut self, fanout: bool, i: usize) {
        let list = if fanout {
            &mut self.fanout
        } else {
            &mut self.filtered
        };
        list.swap_remove(i);
        if let Some(moved) = list.get(i) {
            if let Some(mm) = self.members.get_mut(&moved.id) {
                mm.slot = if fanout {
                    Slot::Fanout(i)
                } else {
                    Slot::Filtered(i)
                };
            }
        }
    }

    /// Everyone who receives every message.
    pub fn receivers(&self) -> &[Arc<Outbox>] {
        &self.fanout
    }

    /// Those who receive only messages matching one of their filters, with the filters.
    pub fn filtered_receivers(&self) -> impl Iterator<Item = (&Arc<Outbox>, &[Filter])> {
        self.filtered.iter().map(|o| {
            let filters = self.members.get(&o.id).map_or(&[][..], |m| &m.filters[..]);
            (o, filters)
        })
    }

    /// How many connections receive this channel's messages (filtered or not).
    pub fn subscriber_count(&self) -> usize {
        self.fanout.len() + self.filtered.len()
    }
}
