//! Other nodes' publications paced to what this node's receivers read. A local
//! publisher pauses when it crowds a receiver (`conn/session.rs`); the cluster's
//! receiving thread does the same for what it hands the manager: it keeps at most
//! [`AHEAD`] batches in the manager's hands, so that a receiver they crowd is known
//! before many more are on their way to it, and then waits for that receiver as a
//! local publisher would. Meanwhile Redis holds what comes, up to its buffer's limit.

use std::sync::Weak;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::outbox::Outbox;

/// Batches handed to the manager and not yet fanned out, at most: enough to keep it
/// busy, few enough that a receiver they crowd is known before it overflows.
const AHEAD: u64 = 2;

/// Longest the receiving thread waits for the manager to fan out a batch (it is busy
/// with many other things, but never this long unless it is stuck).
const AHEAD_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct RemotePacing {
    /// Batches handed over and not yet fanned out.
    in_flight: Mutex<u64>,
    fanned_out: Condvar,
    /// A receiver other nodes' publications crowded, since the receiving thread last
    /// looked.
    crowded: Mutex<Option<Weak<Outbox>>>,
}

impl RemotePacing {
    /// The receiving thread: waits until fewer than [`AHEAD`] batches are in the
    /// manager's hands, then for the receiver they crowded, if any; counts the batch it
    /// now hands over.
    pub fn before_hand_over(&self) {
        let mut n = self.in_flight.lock();
        let deadline = Instant::now() + AHEAD_WAIT;
        while *n >= AHEAD {
            if self.fanned_out.wait_until(&mut n, deadline).timed_out() {
                break;
            }
        }
        *n += 1;
        drop(n);
        let crowded = self.crowded.lock().take().and_then(|w| w.upgrade());
        if let Some(receiver) = crowded {
            receiver.wait_while_crowded(std::thread::sleep);
        }
    }

    /// The manager: `batches` are fanned out and in their receivers' outboxes.
    pub fn fanned_out(&self, batches: u64) {
        let mut n = self.in_flight.lock();
        *n = n.saturating_sub(batches);
        self.fanned_out.notify_one();
    }

    /// The manager: other nodes' publications crowded `receiver`.
    pub fn crowded(&self, receiver: &std::sync::Arc<Outbox>) {
        *self.crowded.lock() = Some(std::sync::Arc::downgrade(receiver));
    }
}
