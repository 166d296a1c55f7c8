//! Presence across the nodes of a cluster: who receives each presence channel on the
//! other nodes, kept from their events and snapshots, so that `JOIN`/`LEAVE` reach the
//! members here whichever node someone joins on, `PRESENCE` lists everyone, and a node
//! that leaves (or goes silent) is seen leaving every channel.

use std::sync::Arc;
use std::time::SystemTime;

use super::backplane::{epoch_millis, MemberEntry};
use super::outbox::{ConnId, Outbox};
use super::Manager;
use crate::collections::Map;
use crate::protocol::push::PresenceEvent;
use crate::protocol::Push;

/// A client of another node: its node and its id there.
type Where = (Arc<str>, u64);

/// Members of presence channels on other nodes: channel → client → member.
#[derive(Default)]
pub struct RemoteMembers {
    by_channel: Map<Arc<str>, Map<Where, MemberEntry>>,
}

impl RemoteMembers {
    /// The members of `channel` on other nodes.
    pub fn of<'a>(&'a self, channel: &str) -> impl Iterator<Item = &'a MemberEntry> + 'a {
        self.by_channel
            .get(channel)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// Every membership of `node`: channel, client id, member.
    fn of_node(&self, node: &str) -> Vec<(Arc<str>, u64, MemberEntry)> {
        self.by_channel
            .iter()
            .flat_map(|(channel, m)| {
                m.iter()
                    .filter(|((n, _), _)| &**n == node)
                    .map(|((_, id), e)| (channel.clone(), *id, e.clone()))
            })
            .collect()
    }
}

impl Manager {
    /// Tells the backplane that `outbox`'s client joined presence channel `channel`
    /// (as it is named now), or left it.
    pub(super) fn announce_member(&self, channel: &str, outbox: &Outbox, joined: bool) {
        let Some(backplane) = self.routes.backplane.get() else {
            return;
        };
        let member = joined.then(|| {
            let since = self
                .channels
                .get(channel)
                .and_then(|c| c.member_since(outbox.id))
                .unwrap_or_else(SystemTime::now);
            MemberEntry {
                name: outbox.name(),
                user: outbox.identity().user.clone(),
                since: epoch_millis(since),
            }
        });
        backplane.member(channel, outbox.id, member);
    }

    /// Client `id` of `node` is `member` of `channel` now (`None`: it left): the
    /// members here are told who came and went.
    pub(super) fn remote_member(
        &mut self,
        node: &Arc<str>,
        channel: Arc<str>,
        id: ConnId,
        member: Option<MemberEntry>,
    ) {
        let members = self
            .remote
            .members
            .by_channel
            .entry(channel.clone())
            .or_default();
        let key = (node.clone(), id);
        let before = match &member {
            Some(m) => members.insert(key, m.clone()),
            None => members.remove(&key),
        };
        if members.is_empty() {
            self.remote.members.by_channel.remove(&channel);
        }
        let same = matches!((&before, &member), (Some(b), Some(m)) if b.name == m.name);
        if same {
            return;
        }
        if let Some(b) = before {
            self.tell_members(&channel, false, b);
        }
        if let Some(m) = member {
            self.tell_members(&channel, true, m);
        }
    }

    /// Replaces what is known of `node`'s memberships with `members`, telling the
    /// members here of every difference.
    pub(super) fn remote_members(
        &mut self,
        node: &Arc<str>,
        members: Vec<(Arc<str>, u64, MemberEntry)>,
    ) {
        let mut now: Map<(Arc<str>, u64), MemberEntry> = members
            .into_iter()
            .map(|(channel, id, m)| ((channel, id), m))
            .collect();
        for (channel, id, _) in self.remote.members.of_node(node) {
            let m = now.remove(&(channel.clone(), id));
            self.remote_member(node, channel, id, m);
        }
        for ((channel, id), m) in now {
            self.remote_member(node, channel, id, Some(m));
        }
    }

    /// `JOIN`/`LEAVE` of `member` for everyone here receiving presence channel
    /// `channel`.
    fn tell_members(&mut self, channel: &Arc<str>, joined: bool, member: MemberEntry) {
        let Some(chan) = self.channels.get(channel).filter(|c| c.presence) else {
            return;
        };
        let receivers: Vec<Arc<Outbox>> = chan.members().map(|(o, _)| o.clone()).collect();
        let event = Arc::new(PresenceEvent {
            joined,
            channel: chan.name.clone(),
            name: member.name,
            user: member.user,
        });
        for r in &receivers {
            self.push(r, Push::Presence(event.clone()));
        }
    }
}
