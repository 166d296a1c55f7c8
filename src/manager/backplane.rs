//! The seam where a cluster's backplane sits (DESIGN section 5): every local
//! publication is also handed to it, and what arrives from it is fanned out locally
//! like any publish ([`RemoteMessage`], through the manager). Who is connected where
//! crosses it too: the manager tells it of its clients ([`Backplane::client`]), and
//! hears of the other nodes' clients as [`ClusterEvent`]s, so that `CLIENTS` lists
//! everyone and `SEND` reaches a client on any node.
//!
//! The routing layer knows only this trait; the Redis backplane (`cluster/`) lives
//! beside it and is plugged in by the assembly layer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::{ErrorReply, Payload};
use crate::store::ChannelOptions;

/// A payload as the publisher holds it, lent for the moment of handing it over.
#[derive(Clone, Copy, Debug)]
pub enum PayloadRef<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl<'a> From<&'a Payload> for PayloadRef<'a> {
    fn from(p: &'a Payload) -> Self {
        match p {
            Payload::Text(s) => PayloadRef::Text(s),
            Payload::Json(v) => PayloadRef::Json(v),
        }
    }
}

/// Where a node hands its local publications for the other nodes, and what it tells
/// them of its clients. Every method but [`Backplane::claim`] returns at once.
pub trait Backplane: Send + Sync {
    /// `from` published `payload` on `channel` here. Never blocks: a publisher calls
    /// it on its hot path, in a coroutine.
    fn publish(&self, channel: &str, from: &str, payload: PayloadRef<'_>);

    /// This node's id in the cluster.
    fn node(&self) -> &str;

    /// Whether the node is linked to the others now.
    fn is_up(&self) -> bool;

    /// A client here connected, or was renamed: the other nodes list it.
    fn client(&self, client: ClientEntry);

    /// Client `id` here is gone (and any name it claimed is free).
    fn client_left(&self, id: u64);

    /// Claims `name` cluster-wide for client `holder` here, waiting for the answer in
    /// the caller's coroutine (never blocking its worker): `name_taken` when a client
    /// on another node holds it, `unavailable` while the cluster cannot be asked.
    fn claim(&self, name: &str, holder: u64) -> Result<(), ErrorReply>;

    /// Gives up `holder`'s claim on `name` (it was claimed, then refused here).
    fn release(&self, name: &str, holder: u64);

    /// Registers channel `name` cluster-wide for client `holder` here before it is
    /// made here, waiting as [`Backplane::claim`] does: `channel_exists` when another
    /// node has it, `unavailable` while the cluster cannot be asked.
    fn claim_channel(
        &self,
        name: &str,
        options: ChannelOptions,
        holder: u64,
    ) -> Result<(), ErrorReply>;

    /// Channel `name`, claimed by `holder`, was made here: the other nodes make it.
    fn channel_created(&self, name: &str, options: ChannelOptions);

    /// Gives up `holder`'s registration of channel `name` (it was refused here).
    fn release_channel(&self, name: &str, holder: u64);

    /// Channel `name` was dropped here: it is dropped on every node.
    fn channel_dropped(&self, name: &str);

    /// Sends a direct message to the client named `to` on `node`. False when it cannot
    /// go now (the link is down).
    fn direct(&self, node: &str, to: &str, from: &str, payload: PayloadRef<'_>) -> bool;

    /// Client `id` here is a member of presence channel `channel` as `member` says, or
    /// no longer one (`None`).
    fn member(&self, channel: &str, id: u64, member: Option<MemberEntry>);

    /// `providers` clients here serve `service` now (0: none does any more).
    fn serves(&self, service: &str, providers: usize);

    /// Sends request `req` for `service` from the client named `from` to `node`,
    /// which serves it, to be answered within `timeout`. False when it cannot go now.
    fn request(&self, node: &str, ask: RemoteAsk<'_>) -> bool;

    /// Sends the answer to request `req` back to `node`, which sent it.
    fn answer(&self, node: &str, req: u64, answer: Result<Payload, ErrorReply>);
}

/// A service request for another node.
#[derive(Clone, Copy, Debug)]
pub struct RemoteAsk<'a> {
    pub req: u64,
    pub service: &'a str,
    /// The client asked, for a reverse request (else any provider there).
    pub to: Option<&'a str>,
    pub from: &'a str,
    pub payload: PayloadRef<'a>,
    pub timeout: Duration,
}

/// A publication another node made, to fan out here.
#[derive(Debug)]
pub struct RemoteMessage {
    pub channel: Arc<str>,
    pub from: Arc<str>,
    pub payload: Payload,
}

/// A time as the cluster's entries carry it: milliseconds since the Unix epoch.
pub fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time an entry's milliseconds since the Unix epoch stand for.
pub fn from_epoch_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A connected client as the cluster lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientEntry {
    pub id: u64,
    pub name: Arc<str>,
    /// Connected at, in milliseconds since the Unix epoch.
    pub since: u64,
    pub via: Arc<str>,
    pub addr: Arc<str>,
}

/// A member of a presence channel, as the cluster lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub name: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Arc<str>>,
    /// Member since, in milliseconds since the Unix epoch.
    pub since: u64,
}

/// What the backplane tells the manager, in the order it learned it.
#[derive(Debug)]
pub enum ClusterEvent {
    /// Publications of other nodes, in their order.
    Messages(Vec<RemoteMessage>),
    /// A client of `node` connected or was renamed (its `seq`-th change).
    Client {
        node: Arc<str>,
        seq: u64,
        client: ClientEntry,
    },
    /// Client `id` of `node` left.
    Left { node: Arc<str>, seq: u64, id: u64 },
    /// All of `node`'s clients and services as of its `seq`-th change (read after a
    /// gap: a node joining, a link coming back).
    Snapshot {
        node: Arc<str>,
        seq: u64,
        clients: Vec<ClientEntry>,
        services: Vec<(Arc<str>, u32)>,
        /// Channel, client id, member.
        members: Vec<(Arc<str>, u64, MemberEntry)>,
    },
    /// Client `id` of `node` is a member of presence channel `channel` as `member`
    /// says, or no longer one (`None`): its `seq`-th change.
    Member {
        node: Arc<str>,
        seq: u64,
        channel: Arc<str>,
        id: u64,
        member: Option<MemberEntry>,
    },
    /// `providers` clients of `node` serve `service` now (its `seq`-th change).
    Serves {
        node: Arc<str>,
        seq: u64,
        service: Arc<str>,
        providers: u32,
    },
    /// A service request from a client of `node`, for a provider here.
    Request {
        node: Arc<str>,
        req: u64,
        service: Arc<str>,
        /// The client asked, for a reverse request.
        to: Option<Arc<str>>,
        from: Arc<str>,
        payload: Payload,
        timeout: Duration,
    },
    /// The answer to request `req` this node sent to another.
    Answer {
        req: u64,
        answer: Result<Payload, ErrorReply>,
    },
    /// `node` left the cluster or went silent: its clients are gone.
    Gone { node: Arc<str> },
    /// A direct message to the client named `to` here.
    Direct {
        to: Arc<str>,
        from: Arc<str>,
        payload: Payload,
    },
    /// Another node made channel `name`: it is made here too (unless it exists).
    Channel {
        name: Arc<str>,
        options: ChannelOptions,
    },
    /// Another node dropped channel `name`: it is dropped here too.
    ChannelDropped { name: Arc<str> },
    /// Every channel of the cluster, as registered in Redis: those missing here are
    /// made (a node joining, a link coming back).
    Channels(Vec<(Arc<str>, ChannelOptions)>),
    /// Client `id` here lost its claim on `name` to a client of another node (claimed
    /// there while this node could not reach the cluster): it takes its default name.
    NameLost { id: u64, name: Arc<str> },
}
