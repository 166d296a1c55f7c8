//! What this node knows of the other nodes of its cluster: their clients, by node and
//! by name, kept from the backplane's [`ClusterEvent`]s. Each node numbers its
//! changes; a snapshot of a node (read from Redis after a gap) replaces what was known
//! of it unless newer changes were applied already, and a change no newer than what
//! is known is skipped, so events and snapshots may arrive in either order.

use std::sync::Arc;

use super::backplane::{ClientEntry, ClusterEvent};
use super::Manager;
use crate::collections::Map;
use crate::protocol::push::{Message, MessageKind};
use crate::protocol::Push;
use crate::store::ChannelOptions;

/// One other node, as last heard of.
#[derive(Default)]
struct NodeView {
    /// The number of its last change applied here.
    seq: u64,
    clients: Map<u64, ClientEntry>,
    /// Services its clients serve, with how many serve each.
    services: Map<Arc<str>, u32>,
}

/// The other nodes' clients and services, and the requests sent to them.
#[derive(Default)]
pub struct Remote {
    nodes: Map<Arc<str>, NodeView>,
    /// Name → node and id (the last one heard of, when a user is on several nodes).
    names: Map<Arc<str>, (Arc<str>, u64)>,
    /// Requests sent to other nodes' providers, waiting for their answers.
    pub(super) requests: super::remote_services::Outstanding,
    /// Members of presence channels on other nodes.
    pub members: super::remote_presence::RemoteMembers,
}

impl Remote {
    /// The node a client named `name` is connected to, if another.
    pub fn node_of(&self, name: &str) -> Option<&Arc<str>> {
        self.names.get(name).map(|(node, _)| node)
    }

    /// Every other node's clients, by node.
    pub fn clients(&self) -> impl Iterator<Item = (&Arc<str>, &ClientEntry)> {
        self.nodes
            .iter()
            .flat_map(|(node, v)| v.clients.values().map(move |c| (node, c)))
    }

    /// The other nodes serving `service`, with how many providers each.
    pub fn providers_of<'a>(
        &'a self,
        service: &'a str,
    ) -> impl Iterator<Item = (&'a Arc<str>, u32)> + 'a {
        self.nodes
            .iter()
            .filter_map(move |(node, v)| Some((node, *v.services.get(service)?)))
    }

    /// Every service other nodes serve, with how many providers in all.
    pub fn services(&self) -> Map<Arc<str>, u32> {
        let mut all: Map<Arc<str>, u32> = Map::default();
        for v in self.nodes.values() {
            for (s, n) in &v.services {
                *all.entry(s.clone()).or_default() += n;
            }
        }
        all
    }

    fn set_serving(&mut self, node: &Arc<str>, service: Arc<str>, providers: u32) {
        let view = self.nodes.entry(node.clone()).or_default();
        if providers == 0 {
            view.services.remove(&service);
        } else {
            view.services.insert(service, providers);
        }
    }

    fn add(&mut self, node: &Arc<str>, client: ClientEntry) {
        let view = self.nodes.entry(node.clone()).or_default();
        if let Some(old) = view.clients.insert(client.id, client.clone()) {
            unindex(&mut self.names, node, &old);
        }
        self.names
            .insert(client.name.clone(), (node.clone(), client.id));
    }

    fn remove(&mut self, node: &Arc<str>, id: u64) {
        if let Some(old) = self.nodes.get_mut(node).and_then(|v| v.clients.remove(&id)) {
            unindex(&mut self.names, node, &old);
        }
    }

    fn forget(&mut self, node: &Arc<str>) {
        if let Some(view) = self.nodes.remove(node) {
            for c in view.clients.values() {
                unindex(&mut self.names, node, c);
            }
        }
    }

    /// Whether a change numbered `seq` of `node` is new here (and now the last).
    fn fresh(&mut self, node: &Arc<str>, seq: u64) -> bool {
        let view = self.nodes.entry(node.clone()).or_default();
        if seq <= view.seq {
            return false;
        }
        view.seq = seq;
        true
    }
}

/// Drops the name index entry of `client` of `node`, if it still points there.
fn unindex(names: &mut Map<Arc<str>, (Arc<str>, u64)>, node: &Arc<str>, client: &ClientEntry) {
    if names
        .get(&client.name)
        .is_some_and(|(n, id)| n == node && *id == client.id)
    {
        names.remove(&client.name);
    }
}

impl Manager {
    /// Applies what the backplane heard.
    pub(super) fn cluster_event(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::Messages(batch) => {
                self.deliver_remote(batch);
                // Counted as fanned out once handed over (`settle`): only then does a
                // receiver's outbox show what it crowds.
                self.remote_batches += 1;
            }
            ClusterEvent::Client { node, seq, client } => {
                if self.remote.fresh(&node, seq) {
                    self.remote.add(&node, client);
                }
            }
            ClusterEvent::Left { node, seq, id } => {
                if self.remote.fresh(&node, seq) {
                    self.remote.remove(&node, id);
                }
            }
            ClusterEvent::Snapshot {
                node,
                seq,
                clients,
                services,
                members,
            } => {
                let known = self.remote.nodes.get(&node).map_or(0, |v| v.seq);
                if seq >= known {
                    self.remote.forget(&node);
                    let view = self.remote.nodes.entry(node.clone()).or_default();
                    view.seq = seq;
                    view.services = services.into_iter().collect();
                    for c in clients {
                        self.remote.add(&node, c);
                    }
                    self.remote_members(&node, members);
                }
            }
            ClusterEvent::Member {
                node,
                seq,
                channel,
                id,
                member,
            } => {
                if self.remote.fresh(&node, seq) {
                    self.remote_member(&node, channel, id, member);
                }
            }
            ClusterEvent::Serves {
                node,
                seq,
                service,
                providers,
            } => {
                if self.remote.fresh(&node, seq) {
                    self.remote.set_serving(&node, service, providers);
                }
            }
            ClusterEvent::Gone { node } => {
                if let Some(n) = self.remote.nodes.get(&node).map(|v| v.clients.len()) {
                    self.remote.forget(&node);
                    log::info!("cluster: node {node} left; forgot its {n} clients");
                }
                self.fail_requests_to(&node);
                self.remote_members(&node, Vec::new());
            }
            ClusterEvent::Request {
                node,
                req,
                service,
                to,
                from,
                payload,
                timeout,
            } => {
                let ask = (from, payload, timeout);
                self.request_from_remote(node, req, &service, to.as_deref(), ask)
            }
            ClusterEvent::Answer { req, answer } => self.remote_answer(req, answer),
            ClusterEvent::Direct { to, from, payload } => {
                self.direct_from_remote(&to, from, payload)
            }
            ClusterEvent::NameLost { id, name } => self.name_lost(id, &name),
            ClusterEvent::Channel { name, options } => self.remote_channel(name, options),
            ClusterEvent::Channels(all) => {
                for (name, options) in all {
                    self.remote_channel(name, options);
                }
            }
            ClusterEvent::ChannelDropped { name } => {
                self.remove_channel(&name);
            }
        }
    }

    /// Makes channel `name`, which another node made, unless it is here already (made
    /// here too, or before this node joined: then it keeps its own options) or this
    /// node holds its maximum of channels (said in the log).
    fn remote_channel(&mut self, name: Arc<str>, options: ChannelOptions) {
        if self.channels.contains_key(&name) {
            return;
        }
        if crate::protocol::subject::check_channel(&name).is_err() {
            return log::debug!("cluster: skipped a channel with a bad name '{name}'");
        }
        if self.channels.len() >= self.settings.max_channels {
            return log::warn!(
                "cluster: channel '{name}' exists on another node but not here: this node holds its maximum of {} channels (--max-channels)",
                self.settings.max_channels
            );
        }
        self.make_channel(name, options);
    }

    /// Tells the backplane of client `id` here as it is now.
    pub(super) fn announce(&self, id: u64) {
        let (Some(backplane), Some(c)) = (self.routes.backplane.get(), self.clients.get(&id))
        else {
            return;
        };
        backplane.client(ClientEntry {
            id,
            name: c.name.clone(),
            since: super::backplane::epoch_millis(c.since),
            via: c.transport.as_str().into(),
            addr: c.addr.to_string().into(),
        });
    }

    fn direct_from_remote(&mut self, to: &str, from: Arc<str>, payload: crate::protocol::Payload) {
        let Some(target) = self
            .names
            .get(to)
            .and_then(|id| self.clients.get(id))
            .map(|c| c.outbox.clone())
        else {
            log::debug!("cluster: a direct message for '{to}', who is not here (any more)");
            return;
        };
        let msg = Message::new(MessageKind::Direct, Arc::from(""), from, payload);
        self.counts.direct += 1;
        self.push(&target, Push::Message(Arc::new(msg)));
    }

    /// Client `id` lost `name` to another node: it takes its default name.
    fn name_lost(&mut self, id: u64, name: &str) {
        let Some(c) = self.clients.get_mut(&id).filter(|c| &*c.name == name) else {
            return;
        };
        let fresh: Arc<str> = super::default_name(id).into();
        log::warn!(
            "cluster: client {id} was '{name}' here while the cluster could not be reached; another node's client holds that name, so it is '{fresh}' now"
        );
        if self.names.get(name) == Some(&id) {
            self.names.remove(name);
        }
        let old = std::mem::replace(&mut c.name, fresh.clone());
        c.outbox.set_name(fresh.clone());
        self.names.insert(fresh, id);
        self.renamed(id, old);
    }
}
