//! A channel and the connections it delivers to.

use std::sync::Arc;

use super::Map;
use crate::conn::outbox::{ConnId, Outbox};

/// A channel's receivers. A connection receives each message once, however many of its
/// subscriptions (the channel itself, patterns) lead here: `refs` counts them.
pub struct Channel {
    pub name: Arc<str>,
    members: Map<ConnId, Member>,
    /// The receivers as a flat list, because fan-out walks it for every message.
    fanout: Vec<Arc<Outbox>>,
}

struct Member {
    refs: u32,
    index: usize,
}

impl Channel {
    pub fn new(name: Arc<str>) -> Self {
        Channel {
            name,
            members: Map::default(),
            fanout: Vec::new(),
        }
    }

    /// One more subscription of `outbox`'s connection leads here.
    pub fn add_ref(&mut self, outbox: &Arc<Outbox>) {
        let index = self.fanout.len();
        let m = self
            .members
            .entry(outbox.id)
            .or_insert(Member { refs: 0, index });
        if m.refs == 0 {
            self.fanout.push(outbox.clone());
        }
        m.refs += 1;
    }

    /// One subscription of connection `id` no longer leads here.
    pub fn release(&mut self, id: ConnId) {
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        m.refs -= 1;
        if m.refs > 0 {
            return;
        }
        let index = m.index;
        self.members.remove(&id);
        self.fanout.swap_remove(index);
        if let Some(moved) = self.fanout.get(index) {
            if let Some(mm) = self.members.get_mut(&moved.id) {
                mm.index = index;
            }
        }
    }

    /// Everyone who receives this channel's messages.
    pub fn receivers(&self) -> &[Arc<Outbox>] {
        &self.fanout
    }
}
