//! A connection's outbox: the bounded queue through which the channel manager hands
//! replies and pushes to the connection's coroutine, and wakes it once per batch.
//!
//! The manager stages everything one batch of its work produces for a connection and
//! hands it over with [`Outbox::push_batch`]: one lock and at most one wake per
//! connection per batch, whatever the number of messages.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use may::io::WaitIoWaker;
use parking_lot::Mutex;

use super::requests::Desk;
use crate::auth::Identity;
use crate::protocol::push::{ByeReason, MessageRun};
use crate::protocol::{Push, Reply};

/// A connection's id, unique for the server's lifetime.
pub type ConnId = u64;

/// What a connection is handed to write.
#[derive(Debug)]
pub enum OutItem {
    /// The answer to this connection's oldest request still waiting on the manager,
    /// and the journal record it must wait for (a channel created or dropped).
    Reply(Reply, Option<u64>),
    /// Something that happened.
    Push(Push),
    /// The answer to a request the connection handed elsewhere (an action running in
    /// its own coroutine), by the token the connection gave it; it takes its place
    /// among the replies in request order.
    Answer(u64, Reply),
    /// Messages published one after another to a channel (`conn/publish.rs`).
    Run(Arc<MessageRun>),
    /// What a publisher writing to the socket itself could not write (the rest of a
    /// run, encoded): written next.
    Bytes(Vec<u8>),
}

/// Whether a batch of `bytes` for each of `receivers` connections is written by its
/// sender to the sockets of receivers waiting idle, rather than handed to their
/// coroutines. Writing at once saves a hop, which is what a sparse flow's latency is
/// made of; but it does the writing on the sender's thread, one send after another,
/// where handing over lets every receiver's worker write in parallel and lets a busy
/// receiver gather several batches into one send. Measured (`cargo bench --bench
/// pubsub`): writing every batch at once cut 1 -> 100 fan-out from 48.8 M to 18.3 M
/// deliveries/s and 1 -> 1 by a sixth, while the latency at 20k msgs/s (one message a
/// batch) needs it. So only small batches to a few receivers go straight out.
pub fn direct_write(receivers: usize, bytes: usize) -> bool {
    receivers <= DIRECT_MAX_RECEIVERS && bytes <= DIRECT_MAX_BYTES
}

/// See [`direct_write`]: a few sends add little to the sender's batch...
const DIRECT_MAX_RECEIVERS: usize = 4;
/// ...and a few small messages are what a batch of a flow that is not saturated holds.
const DIRECT_MAX_BYTES: usize = 4096;

/// How often a stalled sender looks at the receiver it waits for.
const STALL: Duration = Duration::from_millis(1);
/// The longest a sender waits for one crowded receiver.
const STALL_MAX: Duration = Duration::from_secs(2);
/// A receiver that makes no progress (see [`Outbox::progress`]) this long is not reading.
const STALL_NO_PROGRESS: Duration = Duration::from_millis(250);

/// What became of a batch given to [`Outbox::push_batch`].
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Queued; `wake` says whether the caller must wake the connection.
    Queued { wake: bool },
    /// The connection is closing and takes nothing more.
    Refused,
}

struct Queue {
    items: VecDeque<OutItem>,
    closed: bool,
    /// Set while the connection waits idle with nothing to write: whoever hands it
    /// messages writes them to its socket at once, under this lock (one hop, no wake).
    lent: Option<Lent>,
}

/// The socket an idle connection lends, and the format its messages go out in.
#[derive(Clone, Copy, Debug)]
struct Lent {
    fd: std::os::fd::RawFd,
    format: crate::protocol::Format,
}

/// Shared between one connection's coroutine (the only consumer) and the threads that
/// hand it things (the channel manager).
pub struct Outbox {
    pub id: ConnId,
    queue: Mutex<Queue>,
    /// Estimated bytes queued, readable without the lock.
    queued_bytes: AtomicUsize,
    /// Mirrors `Queue::closed`, readable without the lock.
    closed: AtomicBool,
    /// Set (to 1 + the reason's index in [`ByeReason::ALL`]) when the connection was cut:
    /// it must close at once, whatever it still holds to write.
    cut: AtomicU8,
    /// When the client last sent anything ([`now_ms`]), for the idle check.
    last_input: AtomicU64,
    /// Who the client is (a user or a guest) and its role: set by the manager when it
    /// logs in or out, read by its connection (and the manager) for every check.
    identity: Mutex<Arc<Identity>>,
    /// Grows at every change of `identity`, so the connection knows to read it again.
    identity_version: AtomicU64,
    /// Since when a line has been incomplete ([`now_ms`]; 0: none), for the line timeout.
    partial_since: AtomicU64,
    /// Bytes of the incomplete line buffered, for the server's input budget.
    pub(crate) partial_bytes: AtomicUsize,
    wake_pending: AtomicBool,
    /// Set when this connection published to someone whose outbox is crowded.
    stall: AtomicBool,
    /// That someone (the latest of them).
    stall_on: Mutex<Option<Weak<Outbox>>>,
    /// Grows as the consumer takes what was queued and writes it out: a sender
    /// waiting for it sees that it reads.
    progress: AtomicU64,
    /// Bytes written to the lent socket by others since the connection took it back.
    sent_direct: AtomicU64,
    waker: WaitIoWaker,
    limit: usize,
    /// The staging slot the last stager to stage here gave this outbox:
    /// `(stager id << 40) | (batch number << 32) | index` (see `stage.rs`).
    pub(crate) stage: AtomicU64,
    /// The client's name, for messages it publishes itself (set by the manager).
    name: Mutex<Arc<str>>,
    /// What it serves and the requests it holds, once it served something
    /// (`requests.rs`); boxed, since most connections never serve.
    desk: OnceLock<Box<Desk>>,
}

impl Outbox {
    /// `limit` bounds the bytes (as estimated by callers) waiting in the queue.
    pub fn new(id: ConnId, waker: WaitIoWaker, limit: usize) -> Self {
        Outbox {
            id,
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                closed: false,
                lent: None,
            }),
            sent_direct: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            cut: AtomicU8::new(0),
            last_input: AtomicU64::new(now_ms()),
            identity: Mutex::new(Arc::new(Identity::guest())),
            identity_version: AtomicU64::new(0),
            partial_since: AtomicU64::new(0),
            partial_bytes: AtomicUsize::new(0),
            wake_pending: AtomicBool::new(false),
            stall: AtomicBool::new(false),
            stall_on: Mutex::new(None),
            progress: AtomicU64::new(0),
            waker,
            limit,
            stage: AtomicU64::new(u64::MAX),
            name: Mutex::new(Arc::from("")),
            desk: OnceLock::new(),
        }
    }

    /// Its desk, if it ever served anything.
    pub fn desk(&self) -> Option<&Desk> {
        self.desk.get().map(|d| &**d)
    }

    /// Its desk, opened now if it has none.
    pub(super) fn open_desk(&self) -> &Desk {
        self.desk.get_or_init(Box::default)
    }

    /// The client's name now.
    pub fn name(&self) -> Arc<str> {
        self.name.lock().clone()
    }

    /// Records the client's new name (the manager, which owns names, calls it).
    pub fn set_name(&self, name: Arc<str>) {
        *self.name.lock() = name;
    }

    /// The most bytes that may wait here.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes waiting now (an estimate, read without locking).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Whether the connection is closing (read without locking).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Why the connection was cut, if it was (read without locking).
    pub fn cut_reason(&self) -> Option<ByeReason> {
        match self.cut.load(Ordering::Acquire) {
            0 => None,
            n => ByeReason::ALL.get(n as usize - 1).copied(),
        }
    }

    /// Who the client is now.
    pub fn identity(&self) -> Arc<Identity> {
        self.identity.lock().clone()
    }

    /// Grows at every change of identity.
    pub fn identity_version(&self) -> u64 {
        self.identity_version.load(Ordering::Acquire)
    }

    /// Makes the client `identity` (it logged in, resumed or logged out).
    pub fn set_identity(&self, identity: Identity) {
        *self.identity.lock() = Arc::new(identity);
        self.identity_version.fetch_add(1, Ordering::AcqRel);
    }

    /// The client sent something now.
    pub fn note_input(&self) {
        self.last_input.store(now_ms(), Ordering::Relaxed);
    }

    /// When the client last sent anything ([`now_ms`]).
    pub fn last_input(&self) -> u64 {
        self.last_input.load(Ordering::Relaxed)
    }

    /// Records the incomplete line the connection holds: `bytes` of it (0: none).
    pub fn note_partial(&self, bytes: usize) {
        if bytes == 0 {
            self.partial_since.store(0, Ordering::Relaxed);
        } else if self.partial_since.load(Ordering::Relaxed) == 0 {
            self.partial_since.store(now_ms(), Ordering::Relaxed);
        }
        self.partial_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Since when a line has been incomplete ([`now_ms`]), if one is.
    pub fn partial_since(&self) -> Option<u64> {
        match self.partial_since.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Queues `items` (about `bytes` in all) after what is queued, in one lock. Never
    /// blocks on the consumer; the caller has checked the bound. `direct`: the caller
    /// may write them itself if the connection lends its socket ([`direct_write`]).
    pub fn push_batch(&self, items: &mut Vec<OutItem>, bytes: usize, direct: bool) -> Delivery {
        let mut q = self.queue.lock();
        if q.closed {
            items.clear();
            return Delivery::Refused;
        }
        if let Some(lent) = q.lent.take_if(|_| direct) {
            if q.items.is_empty() {
                match self.write_lent(lent, items) {
                    None => {
                        // All written: the connection sleeps on, still lending.
                        q.lent = Some(lent);
                        items.clear();
                        return Delivery::Queued { wake: false };
                    }
                    Some((at, rest)) => {
                        if !rest.is_empty() {
                            q.items.push_back(OutItem::Bytes(rest));
                        }
                        items.drain(..at);
                    }
                }
            }
        }
        q.items.extend(items.drain(..));
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        drop(q);
        Delivery::Queued {
            wake: !self.wake_pending.swap(true, Ordering::AcqRel),
        }
    }

    /// Writes `items` to the lent socket, in order, as far as it takes them without
    /// waiting. `None` when all went; else the index of the first item not wholly
    /// written, and the unwritten rest of the one before it when that went in part
    /// (it then counts as written: the rest is queued in its place).
    fn write_lent(&self, lent: Lent, items: &[OutItem]) -> Option<(usize, Vec<u8>)> {
        let mut sent = 0u64;
        let mut stop = None;
        for (i, item) in items.iter().enumerate() {
            let bytes = match item {
                OutItem::Run(run) => run.encoded(lent.format),
                OutItem::Push(Push::Message(m)) => m.encoded(lent.format),
                _ => {
                    stop = Some((i, Vec::new()));
                    break;
                }
            };
            let n = send_now(lent.fd, bytes);
            sent += n as u64;
            if n < bytes.len() {
                stop = Some(if n == 0 {
                    (i, Vec::new())
                } else {
                    (i + 1, bytes[n..].to_vec())
                });
                break;
            }
        }
        self.sent_direct.fetch_add(sent, Ordering::Relaxed);
        stop
    }

    /// The connection is about to wait idle with nothing queued or unwritten: until
    /// [`Outbox::take_back`], messages handed to it are written to `fd` at once by
    /// whoever hands them. Refused (false) when something is queued already.
    pub fn lend(&self, fd: std::os::fd::RawFd, format: crate::protocol::Format) -> bool {
        let mut q = self.queue.lock();
        if !q.items.is_empty() || q.closed {
            return false;
        }
        q.lent = Some(Lent { fd, format });
        true
    }

    /// The connection is awake: nobody else writes to its socket from now on. Bytes
    /// others wrote to it meanwhile.
    pub fn take_back(&self) -> u64 {
        self.queue.lock().lent = None;
        self.sent_direct.swap(0, Ordering::Relaxed)
    }

    /// Queues the answer for request `token` and wakes the connection. An answer is
    /// the reply to a request the client is waiting for, so it is never refused for
    /// size; only a closing connection drops it.
    pub fn answer(&self, token: u64, reply: Reply) {
        let mut q = self.queue.lock();
        if q.closed {
            return;
        }
        q.items.push_back(OutItem::Answer(token, reply));
        drop(q);
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.wake();
        }
    }

    /// Closes the connection as a slow consumer: what is queued is dropped (it is not
    /// being read and holds memory) and `BYE slow_consumer` is all that is left.
    /// Returns whether this call closed it.
    pub fn close_slow(&self) -> bool {
        self.cut(ByeReason::SlowConsumer)
    }

    /// Closes the connection at once for `reason`: what is queued is dropped and
    /// `BYE <reason>` is all that is left. Returns whether this call closed it; the
    /// caller wakes the connection.
    pub fn cut(&self, reason: ByeReason) -> bool {
        let mut q = self.queue.lock();
        if q.closed && self.cut.load(Ordering::Relaxed) != 0 {
            return false;
        }
        q.lent = None;
        q.items.clear();
        q.items.push_back(OutItem::Push(Push::Bye(reason)));
        q.closed = true;
        self.closed.store(true, Ordering::Relaxed);
        let code = ByeReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0)
            + 1;
        self.cut.store(code as u8, Ordering::Release);
        self.queued_bytes.store(0, Ordering::Relaxed);
        true
    }

    /// The connection has ended: nothing more is queued here, and publishers stop
    /// counting it as a receiver at once (before the manager hears it is gone).
    pub fn shut(&self) {
        let mut q = self.queue.lock();
        q.lent = None;
        q.closed = true;
        q.items.clear();
        self.closed.store(true, Ordering::Relaxed);
        self.queued_bytes.store(0, Ordering::Relaxed);
    }

    /// Queues `BYE <reason>` after what is already queued and refuses anything later.
    /// Returns whether the connection must be woken.
    pub fn close(&self, reason: ByeReason) -> bool {
        let mut q = self.queue.lock();
        if q.closed {
            return false;
        }
        q.items.push_back(OutItem::Push(Push::Bye(reason)));
        q.closed = true;
        self.closed.store(true, Ordering::Relaxed);
        true
    }

    /// Asks this connection to pause before reading more requests: something it
    /// published or sent is filling up `receiver`'s outbox.
    pub fn request_stall(&self, receiver: &Arc<Outbox>) {
        *self.stall_on.lock() = Some(Arc::downgrade(receiver));
        self.stall.store(true, Ordering::Release);
    }

    /// The crowded receiver, if a pause was requested since the last call.
    pub fn take_stall(&self) -> Option<Arc<Outbox>> {
        if !self.stall.load(Ordering::Relaxed) || !self.stall.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.stall_on.lock().take()?.upgrade()
    }

    /// Whether more than half the limit waits here.
    pub fn is_crowded(&self) -> bool {
        self.queued_bytes() * 2 > self.limit
    }

    /// Grows while the client reads (see [`Outbox::note_progress`]).
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// The consumer wrote some of what it took to its socket: a sender waiting for it
    /// is not waiting for a client that stopped reading, even while the consumer
    /// still holds much of what it took (it takes everything queued at once).
    pub fn note_progress(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// A sender that crowds this outbox waits here, napping with `nap` (a coroutine's
    /// or a thread's), while it stays crowded: [`STALL_MAX`] at most, and less if the
    /// connection makes no progress for [`STALL_NO_PROGRESS`] (it is not reading: the
    /// sender goes on, and the connection is cut once its outbox overflows).
    pub fn wait_while_crowded(&self, nap: impl Fn(Duration)) {
        let started = Instant::now();
        let (mut progress, mut progress_at) = (self.progress(), started);
        while self.is_crowded()
            && !self.is_closed()
            && started.elapsed() < STALL_MAX
            && progress_at.elapsed() < STALL_NO_PROGRESS
        {
            nap(STALL);
            if self.progress() != progress {
                progress = self.progress();
                progress_at = Instant::now();
            }
        }
    }

    /// Wakes the connection's coroutine out of `wait_io`.
    pub fn wake(&self) {
        self.waker.wakeup();
    }
}

impl crate::store::history::LateReceiver for Outbox {
    fn take_late(&self, msg: &Arc<crate::protocol::Message>) {
        let size = msg.approx_len();
        if self.queued_bytes() + size > self.limit {
            if self.close_slow() {
                log::warn!(
                    "connection {} is a slow consumer: its outbox overflowed while it resumed; disconnecting it",
                    self.id
                );
            }
            self.wake();
            return;
        }
        let mut items = vec![OutItem::Push(Push::Message(msg.clone()))];
        if let Delivery::Queued { wake: true } =
            self.push_batch(&mut items, size, direct_write(1, size))
        {
            self.wake();
        }
    }
}

impl crate::store::journal::Waiter for Outbox {
    fn wake(&self) {
        Outbox::wake(self);
    }
}

impl Outbox {
    /// Moves everything queued into `dst` (which the consumer has emptied). The wake flag
    /// is cleared first, so anything queued after this call wakes the consumer again.
    pub fn take_all(&self, dst: &mut VecDeque<OutItem>) {
        self.wake_pending.store(false, Ordering::Release);
        let mut q = self.queue.lock();
        if !q.items.is_empty() {
            std::mem::swap(&mut q.items, dst);
            self.queued_bytes.store(0, Ordering::Relaxed);
            self.note_progress();
        }
    }
}

/// Writes what `fd` takes of `bytes` now, without waiting: how many bytes. A full
/// socket, or any error, writes nothing more (the connection finds its error itself).
fn send_now(fd: std::os::fd::RawFd, bytes: &[u8]) -> usize {
    let mut done = 0;
    while done < bytes.len() {
        let rest = &bytes[done..];
        // SAFETY: `fd` is the lending connection's open socket (it takes it back, under
        // the queue lock held here, before it closes it); `rest` is a live buffer.
        let n = unsafe {
            libc::send(
                fd,
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match n {
            n if n > 0 => done += n as usize,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    done
}

/// Milliseconds since the process first asked (a monotonic clock cheap to store).
pub fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    // Never 0, so 0 can mean "none".
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}
