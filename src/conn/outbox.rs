//! A connection's outbox: the bounded queue through which the channel manager hands
//! replies and pushes to the connection's coroutine, and wakes it once per batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use may::io::WaitIoWaker;
use parking_lot::Mutex;

use crate::protocol::push::ByeReason;
use crate::protocol::{Push, Reply};

/// A connection's id, unique for the server's lifetime.
pub type ConnId = u64;

/// What a connection is handed to write.
#[derive(Debug)]
pub enum OutItem {
    /// The answer to this connection's oldest request still waiting on the manager.
    Reply(Reply),
    /// Something that happened.
    Push(Push),
}

/// What became of an item given to [`Outbox::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Queued; `wake` says whether the caller must wake the connection (once per batch),
    /// `crowded` that the outbox is more than half full.
    Queued { wake: bool, crowded: bool },
    /// The connection is closing and takes nothing more.
    Refused,
    /// The item would overflow the bound: the connection is now closing as a slow
    /// consumer, and must be woken to say `BYE`.
    Overflow,
}

struct Queue {
    items: VecDeque<OutItem>,
    bytes: usize,
    closed: bool,
}

/// Shared between one connection's coroutine (the only consumer) and the threads that
/// hand it things (the channel manager).
pub struct Outbox {
    pub id: ConnId,
    queue: Mutex<Queue>,
    wake_pending: AtomicBool,
    /// Set when this connection published to someone whose outbox is crowded.
    stall: AtomicBool,
    waker: WaitIoWaker,
    limit: usize,
}

impl Outbox {
    /// `limit` bounds the bytes (as estimated by callers) waiting in the queue.
    pub fn new(id: ConnId, waker: WaitIoWaker, limit: usize) -> Self {
        Outbox {
            id,
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            wake_pending: AtomicBool::new(false),
            stall: AtomicBool::new(false),
            waker,
            limit,
        }
    }

    /// Queues an item of about `size` bytes. Never blocks on the consumer.
    pub fn push(&self, item: OutItem, size: usize) -> Delivery {
        let mut q = self.queue.lock();
        if q.closed {
            return Delivery::Refused;
        }
        if q.bytes + size > self.limit {
            // Drop what the consumer is not reading: keeping it helps nobody and holds
            // memory, and the connection is going away.
            q.items.clear();
            q.bytes = 0;
            q.items
                .push_back(OutItem::Push(Push::Bye(ByeReason::SlowConsumer)));
            q.closed = true;
            return Delivery::Overflow;
        }
        q.items.push_back(item);
        q.bytes += size;
        let crowded = q.bytes * 2 > self.limit;
        drop(q);
        Delivery::Queued {
            wake: !self.wake_pending.swap(true, Ordering::AcqRel),
            crowded,
        }
    }

    /// Asks this connection to pause before reading more requests: something it
    /// published is filling up a receiver's outbox.
    pub fn request_stall(&self) {
        self.stall.store(true, Ordering::Relaxed);
    }

    /// Whether a pause was requested since the last call.
    pub fn take_stall(&self) -> bool {
        self.stall.load(Ordering::Relaxed) && self.stall.swap(false, Ordering::Relaxed)
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
        true
    }

    /// Wakes the connection's coroutine out of `wait_io`.
    pub fn wake(&self) {
        self.waker.wakeup();
    }

    /// Moves everything queued into `dst` (which the consumer has emptied). The wake flag
    /// is cleared first, so anything queued after this call wakes the consumer again.
    pub fn take_all(&self, dst: &mut VecDeque<OutItem>) {
        self.wake_pending.store(false, Ordering::Release);
        let mut q = self.queue.lock();
        if !q.items.is_empty() {
            std::mem::swap(&mut q.items, dst);
            q.bytes = 0;
        }
    }

    /// Whether anything is waiting (a cheap check before sleeping).
    pub fn has_items(&self) -> bool {
        !self.queue.lock().items.is_empty()
    }
}
