//! The cluster's backplane over Redis (DESIGN section 5, `docs/CLUSTER.md`): several
//! servermain nodes given `--redis redis://HOST:PORT` share their publications through
//! Redis pub/sub, as Centrifugo and Socket.IO's Redis adapter do.
//!
//! Three OS threads per node, never a coroutine: the `redis` crate's API blocks.
//! - **publishing**: takes what local publishers hand the [`Backplane`] seam from a
//!   bounded queue and sends it as pipelined `PUBLISH`es, up to [`BATCH`] per round
//!   trip; it also refreshes the node's expiring key every second.
//! - **receiving**: one connection with one pattern subscription, `<prefix>:msg:*`,
//!   handing each publication of another node to the manager, which fans it out here.
//!   Its own publications come back on it too and are skipped by node id (as the
//!   Socket.IO adapter does by its uid), so a node never delivers its own twice.
//!
//! Per publisher, order holds end to end: one publishing connection per node keeps
//! Redis's order, one receiving connection per node keeps it on the way in, and the
//! manager fans out in arrival order. While Redis is down, local traffic goes on and
//! what would have crossed is dropped and counted (`leviathan_cluster_dropped_total`):
//! a `PUB` is answered with its local receivers, it does not wait for other nodes.
//! While Redis is up but behind, publishers wait for room in the queue instead.
//! Both links reconnect by themselves, 100 ms to 2 s apart.

mod frame;
mod receive;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::manager::backplane::{Backplane, PayloadRef, RemoteMessage};
use crate::manager::stats::Stats;

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

/// One publication on its way out: its channel and its frame entry.
struct Outgoing {
    channel: Box<str>,
    entry: Vec<u8>,
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
    /// Said once that Redis could not be reached before it ever was.
    warned: AtomicBool,
}

impl Shared {
    /// A link came up or went down: logged and counted on change only.
    fn link(&self, which: &AtomicBool, name: &str, up: bool, why: Option<&dyn std::fmt::Display>) {
        let was = which.swap(up, Ordering::AcqRel);
        let both =
            self.publishing_up.load(Ordering::Acquire) && self.receiving_up.load(Ordering::Acquire);
        self.stats.cluster.up.store(both, Ordering::Release);
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
    threads: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

impl Cluster {
    /// Joins the cluster whose Redis `settings` names; publications of other nodes go
    /// to `deliver`. A bad URL is an error; an unreachable Redis is not (the node
    /// serves locally and joins when Redis answers).
    pub fn start(
        settings: &ClusterSettings,
        stats: Arc<Stats>,
        deliver: Box<dyn Fn(Vec<RemoteMessage>) + Send>,
    ) -> Result<Arc<Cluster>, String> {
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
            warned: AtomicBool::new(false),
        });
        shared.stats.cluster.enabled.store(true, Ordering::Release);
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let mut threads = Vec::new();
        let (s, c) = (shared.clone(), client.clone());
        threads.push(
            std::thread::Builder::new()
                .name("cluster-publish".into())
                .spawn(move || publish_loop(&s, &c, &rx))
                .map_err(|e| format!("cannot start the cluster's publishing thread: {e}"))?,
        );
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("cluster-receive".into())
                .spawn(move || receive_loop(&s, &client, &*deliver))
                .map_err(|e| format!("cannot start the cluster's receiving thread: {e}"))?,
        );
        log::info!(
            "cluster: node {} joining through Redis at {} (prefix '{}')",
            shared.node,
            shared.shown,
            shared.prefix
        );
        Ok(Arc::new(Cluster {
            shared,
            tx,
            threads: parking_lot::Mutex::new(threads),
        }))
    }

    /// This node's id in the cluster.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Leaves the cluster: the threads end (within a fraction of a second) and the
    /// node's key is deleted.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
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
            channel: channel.into(),
            entry: frame::entry(from, payload),
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

/// The publishing thread: batches of `PUBLISH`, and the node's key every [`BEAT`].
fn publish_loop(shared: &Shared, client: &redis::Client, rx: &Receiver<Outgoing>) {
    let mut con: Option<redis::Connection> = None;
    let mut backoff = Backoff::new();
    let mut next_beat = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    while !shared.stopping() {
        let now = Instant::now();
        if con.is_none() && now >= backoff.next {
            match connect(client) {
                Ok(c) => {
                    backoff.succeeded();
                    con = Some(c);
                    shared.link(&shared.publishing_up, "publishing", true, None);
                    next_beat = now;
                }
                Err(e) => {
                    backoff.failed();
                    shared.link(&shared.publishing_up, "publishing", false, Some(&e));
                }
            }
        }
        if let Some(c) = con.as_mut().filter(|_| Instant::now() >= next_beat) {
            next_beat = Instant::now() + BEAT;
            if let Err(e) = beat(shared, c) {
                con = None;
                shared.link(&shared.publishing_up, "publishing", false, Some(&e));
            }
        }
        let until = if con.is_some() {
            next_beat
        } else {
            backoff.next
        };
        let wait = until.saturating_duration_since(Instant::now()).min(POLL);
        match rx.recv_timeout(wait) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let sent = match con.as_mut() {
            Some(c) => {
                let mut pipe = redis::pipe();
                for (channel, frame) in runs(shared, &batch) {
                    pipe.cmd("PUBLISH").arg(channel).arg(frame).ignore();
                }
                match pipe.query::<()>(c) {
                    Ok(()) => true,
                    Err(e) => {
                        con = None;
                        backoff.failed();
                        shared.link(&shared.publishing_up, "publishing", false, Some(&e));
                        false
                    }
                }
            }
            None => false,
        };
        let counter = if sent {
            &shared.stats.cluster.sent
        } else {
            &shared.stats.cluster.dropped
        };
        counter.fetch_add(n, Ordering::Relaxed);
        batch.clear();
    }
    // Leaving on purpose: the others need not wait for the key to expire.
    if let Some(c) = con.as_mut() {
        let _ = redis::cmd("DEL").arg(shared.node_key()).query::<()>(c);
    }
}

/// The batch as one frame per run of publications on one channel, with the Redis
/// channel each goes to. Only consecutive publications share a frame, so a receiver
/// of several channels still gets them in the order they were made.
fn runs<'a>(shared: &Shared, batch: &'a [Outgoing]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut last: Option<&'a str> = None;
    for m in batch {
        let same = last == Some(&*m.channel);
        match out.last_mut() {
            Some((_, frame)) if same && frame.len() < MAX_FRAME => frame.extend(&m.entry),
            _ => {
                let mut frame = frame::header(&shared.node);
                frame.extend(&m.entry);
                out.push((format!("{}:msg:{}", shared.prefix, m.channel), frame));
            }
        }
        last = Some(&m.channel);
    }
    out
}

/// Refreshes the node's key: it expires [`NODE_TTL`] after the last refresh.
fn beat(shared: &Shared, con: &mut redis::Connection) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(shared.node_key())
        .arg(&shared.node)
        .arg("PX")
        .arg(NODE_TTL.as_millis() as u64)
        .query(con)
}

/// The receiving thread: one pattern subscription for every channel; what other nodes
/// published is handed to `deliver` in batches of what has arrived already (up to
/// [`BATCH`]), so the manager wakes each receiver once per batch.
fn receive_loop(shared: &Shared, client: &redis::Client, deliver: &dyn Fn(Vec<RemoteMessage>)) {
    let pattern = format!("{}:msg:*", shared.prefix);
    let skip = pattern.len() - 1;
    let mut backoff = Backoff::new();
    let mut batch = Vec::new();
    while !shared.stopping() {
        let wait = backoff.next.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait.min(POLL));
            continue;
        }
        let info = client.get_connection_info();
        let mut sub = match receive::Subscriber::connect(info, &pattern, IO_TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                backoff.failed();
                shared.link(&shared.receiving_up, "receiving", false, Some(&e));
                continue;
            }
        };
        backoff.succeeded();
        shared.link(&shared.receiving_up, "receiving", true, None);
        while !shared.stopping() {
            if !sub.readable(POLL) {
                continue;
            }
            match sub.next_published() {
                Ok(Some(p)) => remote(shared, skip, p, &mut batch),
                Ok(None) => {}
                Err(e) => {
                    backoff.failed();
                    shared.link(&shared.receiving_up, "receiving", false, Some(&e));
                    break;
                }
            }
            if batch.len() >= BATCH || !sub.readable(Duration::ZERO) {
                hand_over(shared, deliver, &mut batch);
            }
        }
        // What arrived before the link broke still goes out.
        hand_over(shared, deliver, &mut batch);
    }
}

fn hand_over(
    shared: &Shared,
    deliver: &dyn Fn(Vec<RemoteMessage>),
    batch: &mut Vec<RemoteMessage>,
) {
    if !batch.is_empty() {
        let n = batch.len() as u64;
        shared
            .stats
            .cluster
            .received
            .fetch_add(n, Ordering::Relaxed);
        deliver(std::mem::take(batch));
    }
}

/// Adds the publications in `p` to `batch`, as this node delivers them: none when
/// this node sent them (every node gets back what it publishes) or when `p` is not a
/// leviathan frame.
fn remote(shared: &Shared, skip: usize, p: receive::Published, batch: &mut Vec<RemoteMessage>) {
    if frame::is_from(&p.payload, &shared.node) {
        return;
    }
    let Some(channel) = p
        .channel
        .get(skip..)
        .and_then(|c| std::str::from_utf8(c).ok())
    else {
        return;
    };
    match frame::decode(&p.payload) {
        Ok(entries) => {
            let channel: Arc<str> = channel.into();
            batch.extend(entries.into_iter().map(|e| RemoteMessage {
                channel: channel.clone(),
                from: e.from.into(),
                payload: e.payload,
            }));
        }
        Err(e) => log::debug!("cluster: skipped a message on '{channel}': {e}"),
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
