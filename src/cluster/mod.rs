//! The cluster's backplane over Redis (DESIGN section 5, `docs/CLUSTER.md`): several
//! servermain nodes given `--redis redis://HOST:PORT` share their publications, their
//! clients' names and direct messages through Redis, as Centrifugo and Socket.IO's
//! Redis adapter do.
//!
//! Three OS threads per node, never a coroutine: the `redis` crate's API blocks.
//! - **publishing** (`publish.rs`): what local publishers hand the [`Backplane`] seam,
//!   from a bounded queue, as pipelined `PUBLISH`es.
//! - **receiving** (`listen.rs`): one subscribed connection, handing what other nodes
//!   published, said and sent to the manager. A node's own publications come back to
//!   it too and are skipped by node id (as the Socket.IO adapter does by its uid), so
//!   a node never delivers its own twice.
//! - **control** (`control.rs`): the node's key, its clients, the names it claimed,
//!   and which other nodes are there.
//!
//! Per publisher, order holds end to end: one publishing connection per node keeps
//! Redis's order, one receiving connection per node keeps it on the way in, and the
//! manager fans out in arrival order. While Redis is down, local traffic goes on and
//! what would have crossed is dropped and counted (`leviathan_cluster_dropped_total`):
//! a `PUB` is answered with its local receivers, it does not wait for other nodes.
//! While Redis is up but behind, publishers wait for room in the queue instead.
//! The links reconnect by themselves, 100 ms to 2 s apart.

mod control;
mod frame;
mod listen;
mod publish;
mod receive;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use crate::manager::backplane::{
    Backplane, ClientEntry, ClusterEvent, MemberEntry, PayloadRef, RemoteAsk,
};
use crate::manager::stats::Stats;
use crate::protocol::{ErrorReply, Payload};
use crate::store::{ChannelOptions, TableStore};
use control::{Claimed, Control};
use publish::Outgoing;

/// Publications sent in one round trip at most.
const BATCH: usize = 1024;
/// Publications waiting for the publishing thread at most; past it they are dropped
/// (Redis is too far behind), never waited for on a publisher's path.
const QUEUE: usize = 1 << 16;
/// A frame grows by whole publications past this size no more.
const MAX_FRAME: usize = 1 << 20;
/// How long a publisher waits for room in a full queue before the publication is
/// dropped, and how long it sleeps between looks.
const FULL_WAIT: Duration = Duration::from_secs(1);
const FULL_PAUSE: Duration = Duration::from_micros(500);
/// How often the node's key is refreshed, and how long it lives unrefreshed.
const BEAT: Duration = Duration::from_secs(1);
const NODE_TTL: Duration = Duration::from_secs(3);
/// Longest a connection attempt or a round trip to Redis may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a waiting thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(250);

/// Where the cluster's Redis is and what its keys are called.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Every key and channel starts with this and `:`.
    pub prefix: String,
}

/// What the threads share.
struct Shared {
    node: String,
    prefix: String,
    /// The URL without its password, for logs.
    shown: String,
    stats: Arc<Stats>,
    stop: AtomicBool,
    publishing_up: AtomicBool,
    receiving_up: AtomicBool,
    control_up: AtomicBool,
    /// Said once that Redis could not be reached before it ever was.
    warned: AtomicBool,
}

impl Shared {
    /// A link came up or went down: logged and counted on change only.
    fn link(&self, which: &AtomicBool, name: &str, up: bool, why: Option<&dyn std::fmt::Display>) {
        let was = which.swap(up, Ordering::AcqRel);
        let all = [&self.publishing_up, &self.receiving_up, &self.control_up]
            .iter()
            .all(|l| l.load(Ordering::Acquire));
        self.stats.cluster.up.store(all, Ordering::Release);
        let why = || why.map_or_else(|| "closed".to_string(), |e| e.to_string());
        match (was, up) {
            (false, true) => {
                self.warned.store(false, Ordering::Release);
                log::info!("cluster: {name} link to Redis at {} is up", self.shown)
            }
            (true, false) => {
                self.stats.cluster.outages.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "cluster: lost the {name} link to Redis at {}: {}; local traffic goes on, cross-node traffic is dropped until it is back",
                    self.shown,
                    why()
                );
            }
            (false, false) if !self.warned.swap(true, Ordering::AcqRel) => log::warn!(
                "cluster: cannot reach Redis at {} ({name} link): {}; serving locally, retrying",
                self.shown,
                why()
            ),
            _ => {}
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn node_key(&self) -> String {
        format!("{}:node:{}", self.prefix, self.node)
    }
}

/// The node's place in the cluster: the [`Backplane`] publishers hand their messages
/// to, and the threads that carry them.
pub struct Cluster {
    shared: Arc<Shared>,
    tx: Sender<Outgoing>,
    control: Sender<Control>,
    /// Where this node's connection ids start (see [`Cluster::first_id`]).
    first_id: u64,
    threads: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

/// What of the node the cluster's threads use.
pub struct NodeParts {
    pub stats: Arc<Stats>,
    /// The channels it holds, registered when it joins.
    pub store: Arc<TableStore>,
    /// Where the manager says a receiver is crowded by other nodes' publications.
    pub routes: Arc<crate::manager::route::Routes>,
}

/// Connection ids a node hands out before it reaches the next node's: a node's clients
/// are `client-<ordinal>000000001` and on, unique in the cluster.
const IDS_PER_NODE: u64 = 1_000_000_000;

impl Cluster {
    /// Joins the cluster whose Redis `settings` names; what other nodes publish, say
    /// and send goes to `deliver`. A bad URL is an error; an unreachable Redis is not
    /// (the node serves locally and joins when Redis answers).
    pub fn start(
        settings: &ClusterSettings,
        parts: NodeParts,
        deliver: Box<dyn Fn(ClusterEvent) + Send + Sync>,
    ) -> Result<Arc<Cluster>, String> {
        let NodeParts {
            stats,
            store,
            routes,
        } = parts;
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| format!("--redis {}: {e}", without_password(&settings.url)))?;
        if settings.prefix.is_empty() || settings.prefix.contains(['*', '?', '[', ' ']) {
            return Err(format!(
                "--redis-prefix '{}': give a non-empty prefix without spaces or * ? [",
                settings.prefix
            ));
        }
        let shared = Arc::new(Shared {
            node: node_id()?,
            prefix: settings.prefix.clone(),
            shown: without_password(&settings.url),
            stats,
            stop: AtomicBool::new(false),
            publishing_up: AtomicBool::new(false),
            receiving_up: AtomicBool::new(false),
            control_up: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        });
        shared.stats.cluster.enabled.store(true, Ordering::Release);
        let first_id = ordinal(&shared, &client) * IDS_PER_NODE + 1;
        let deliver: Arc<dyn Fn(ClusterEvent) + Send + Sync> = Arc::from(deliver);
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("cluster-{name}"))
                .spawn(f)
                .map_err(|e| format!("cannot start the cluster's {name} thread: {e}"))
        };
        let (s, c) = (shared.clone(), client.clone());
        threads.push(spawn(
            "publish",
            Box::new(move || publish::publish_loop(&s, &c, &rx)),
        )?);
        let (s, c, d, ctl) = (
            shared.clone(),
            client.clone(),
            deliver.clone(),
            control_tx.clone(),
        );
        threads.push(spawn(
            "receive",
            Box::new(move || {
                let sinks = listen::Sinks {
                    deliver: &*d,
                    control: ctl,
                    routes,
                };
                listen::receive_loop(&s, &c, &sinks)
            }),
        )?);
        let s = shared.clone();
        threads.push(spawn(
            "control",
            Box::new(move || control::control_loop(&s, &client, &store, &control_rx, &*deliver)),
        )?);
        log::info!(
            "cluster: node {} joining through Redis at {} (prefix '{}'); its clients are numbered from {first_id}",
            shared.node,
            shared.shown,
            shared.prefix
        );
        Ok(Arc::new(Cluster {
            shared,
            tx,
            control: control_tx,
            first_id,
            threads: parking_lot::Mutex::new(threads),
        }))
    }

    /// This node's id in the cluster.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// The first connection id this node gives: ids are unique in the cluster, so
    /// that default names (`client-<id>`) are.
    pub fn first_id(&self) -> u64 {
        self.first_id
    }

    /// Leaves the cluster: the threads end (within a fraction of a second), and the
    /// node's key, clients and claims are deleted.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

/// The node's number in the cluster, 1 to 999, counted in Redis; when Redis cannot be
/// reached at the start, one drawn at random from 1,000 up (its ids are as unlikely to
/// meet another node's as two random draws are to match).
fn ordinal(shared: &Shared, client: &redis::Client) -> u64 {
    let counted = connect(client).and_then(|mut c| {
        redis::cmd("INCR")
            .arg(format!("{}:nodes", shared.prefix))
            .query::<u64>(&mut c)
    });
    match counted {
        Ok(n) => (n.saturating_sub(1) % 999) + 1,
        Err(e) => {
            let mut bytes = [0u8; 8];
            let _ = getrandom::getrandom(&mut bytes);
            let n = 1_000 + u64::from_le_bytes(bytes) % 8_999_000;
            log::warn!(
                "cluster: cannot reach Redis at {} to number this node ({e}); it numbers its clients from {n} billion",
                shared.shown
            );
            n
        }
    }
}

/// Holds the node in its cluster: dropped, the node leaves ([`Cluster::stop`]).
pub struct Membership(pub Arc<Cluster>);

impl Drop for Membership {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Backplane for Cluster {
    fn publish(&self, channel: &str, from: &str, payload: PayloadRef<'_>) {
        let out = Outgoing {
            target: format!("{}:msg:{channel}", self.shared.prefix).into(),
            entry: frame::entry(from, payload),
            whole: false,
        };
        // A full queue with Redis up means Redis is behind: a publishing connection
        // waits for room (its coroutine sleeps), as it waits for a crowded subscriber,
        // rather than lose what it was told was published. Redis down, still behind
        // after FULL_WAIT, or the publisher the manager's thread (which every client
        // waits on), it is dropped and counted.
        let mut out = out;
        let mut waited = Duration::ZERO;
        loop {
            match self.tx.try_send(out) {
                Ok(()) => return,
                Err(TrySendError::Full(back))
                    if waited < FULL_WAIT
                        && may::coroutine::is_coroutine()
                        && self.shared.publishing_up.load(Ordering::Acquire) =>
                {
                    may::coroutine::sleep(FULL_PAUSE);
                    waited += FULL_PAUSE;
                    out = back;
                }
                Err(_) => {
                    self.shared
                        .stats
                        .cluster
                        .dropped
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    fn node(&self) -> &str {
        &self.shared.node
    }

    fn is_up(&self) -> bool {
        self.shared.stats.cluster.up.load(Ordering::Acquire)
    }

    fn client(&self, client: ClientEntry) {
        let _ = self.control.send(Control::Client(client));
    }

    fn client_left(&self, id: u64) {
        let _ = self.control.send(Control::Left(id));
    }

    fn claim(&self, name: &str, holder: u64) -> Result<(), ErrorReply> {
        let answer = self.ask(|done| Control::Claim {
            name: name.into(),
            holder,
            done,
        });
        answer.into_result("names are claimed", || {
            ErrorReply::new(
                "name_taken",
                format!("the name '{name}' is taken by a client on another node"),
            )
        })
    }

    fn claim_channel(
        &self,
        name: &str,
        options: ChannelOptions,
        holder: u64,
    ) -> Result<(), ErrorReply> {
        let answer = self.ask(|done| Control::ClaimChannel {
            name: name.into(),
            options,
            holder,
            done,
        });
        answer.into_result("channels are made", || {
            ErrorReply::new(
                "channel_exists",
                format!("channel '{name}' already exists in the cluster"),
            )
        })
    }

    fn channel_created(&self, name: &str, options: ChannelOptions) {
        let _ = self.control.send(Control::ChannelCreated {
            name: name.into(),
            options,
        });
    }

    fn release_channel(&self, name: &str, holder: u64) {
        let _ = self.control.send(Control::ReleaseChannel {
            name: name.into(),
            holder,
        });
    }

    fn channel_dropped(&self, name: &str) {
        let _ = self
            .control
            .send(Control::ChannelDropped { name: name.into() });
    }

    fn release(&self, name: &str, holder: u64) {
        let _ = self.control.send(Control::Release {
            name: name.into(),
            holder,
        });
    }

    fn direct(&self, node: &str, to: &str, from: &str, payload: PayloadRef<'_>) -> bool {
        if !self.shared.publishing_up.load(Ordering::Acquire) {
            return false;
        }
        let out = Outgoing {
            target: format!("{}:to:{node}", self.shared.prefix).into(),
            entry: frame::direct_entry(to, from, payload),
            whole: false,
        };
        self.tx.try_send(out).is_ok()
    }

    fn member(&self, channel: &str, id: u64, member: Option<MemberEntry>) {
        let _ = self.control.send(Control::Member {
            channel: channel.into(),
            id,
            member,
        });
    }

    fn serves(&self, service: &str, providers: usize) {
        let _ = self.control.send(Control::Serves {
            service: service.into(),
            providers: u32::try_from(providers).unwrap_or(u32::MAX),
        });
    }

    fn request(&self, node: &str, ask: RemoteAsk<'_>) -> bool {
        let note = frame::ToNode::Request {
            node: self.shared.node.as_str().into(),
            req: ask.req,
            service: ask.service.into(),
            to: ask.to.map(Arc::from),
            from: ask.from.into(),
            data: ask.payload.into(),
            timeout_ms: u64::try_from(ask.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        self.to_node(node, &note)
    }

    fn answer(&self, node: &str, req: u64, answer: Result<Payload, ErrorReply>) {
        let (data, error) = match answer {
            Ok(p) => (Some(PayloadRef::from(&p).into()), None),
            Err(e) => (
                None,
                Some(frame::WireError {
                    code: e.code.into_owned(),
                    message: e.message.into(),
                }),
            ),
        };
        let note = frame::ToNode::Answer {
            node: self.shared.node.as_str().into(),
            req,
            data,
            error,
        };
        if !self.to_node(node, &note) {
            self.shared
                .stats
                .cluster
                .dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Cluster {
    /// Sends `note` to `node` (after what this node published before it). False when
    /// the link is down or too far behind.
    fn to_node(&self, node: &str, note: &frame::ToNode) -> bool {
        if !self.shared.publishing_up.load(Ordering::Acquire) {
            return false;
        }
        let Ok(entry) = serde_json::to_vec(note) else {
            return false;
        };
        let out = Outgoing {
            target: format!("{}:to:{node}", self.shared.prefix).into(),
            entry,
            whole: true,
        };
        self.tx.try_send(out).is_ok()
    }

    /// Asks the control thread and waits for its answer, in the caller's coroutine
    /// (never blocking its worker); [`Claimed::Down`] when the control link is down or
    /// the answer takes longer than two round trips may.
    fn ask(&self, question: impl FnOnce(may::sync::mpsc::Sender<Claimed>) -> Control) -> Claimed {
        if !self.shared.control_up.load(Ordering::Acquire) {
            return Claimed::Down;
        }
        let (done, answer) = may::sync::mpsc::channel();
        if self.control.send(question(done)).is_err() {
            return Claimed::Down;
        }
        answer.recv_timeout(IO_TIMEOUT * 2).unwrap_or(Claimed::Down)
    }
}

impl Claimed {
    /// The answer for a client: `taken()` when another holds it, `unavailable` (saying
    /// `what` needs the cluster) when the cluster could not be asked.
    fn into_result(self, what: &str, taken: impl FnOnce() -> ErrorReply) -> Result<(), ErrorReply> {
        match self {
            Claimed::Granted => Ok(()),
            Claimed::Taken => Err(taken()),
            Claimed::Down => Err(ErrorReply::new(
                "unavailable",
                format!("{what} across the cluster, which this node cannot reach now; try again"),
            )),
        }
    }
}

/// A random node id, 16 hex digits.
fn node_id() -> Result<String, String> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness for a node id: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `url` with any password replaced, for logs and errors.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// A connection to Redis with bounded waits.
fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let con = client.get_connection_with_timeout(IO_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

/// Waits between reconnection attempts: 100 ms, doubling to 2 s.
struct Backoff {
    next: Instant,
    delay: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: Instant::now(),
            delay: Duration::from_millis(100),
        }
    }

    fn failed(&mut self) {
        self.next = Instant::now() + self.delay;
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
    }

    fn succeeded(&mut self) {
        self.delay = Duration::from_millis(100);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_what_is_shown() {
        assert_eq!(
            without_password("redis://user:secret@db.example:6379/2"),
            "redis://***@db.example:6379/2"
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
