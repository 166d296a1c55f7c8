//! Staging: everything one batch of the manager's work hands a connection is collected
//! here and given to its outbox at the end of the batch in one lock, with one wake.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::stats::Stats;
use crate::manager::outbox::{direct_write, Delivery, OutItem, Outbox};

/// What became of a staged item.
pub enum Staged {
    /// It will be delivered; `crowded` says the receiver's outbox is over half full
    /// (the sender should pause).
    Queued { crowded: bool },
    /// It will not: the receiver is closing, or has just overflowed.
    Dropped,
}

struct Slot {
    outbox: Arc<Outbox>,
    items: Vec<OutItem>,
    /// What the outbox held when this batch first staged for it: read once, not per
    /// item, since the receiver (often on another core) keeps writing that counter.
    /// Meanwhile the receiver only takes, and other stagers' batches (never counted
    /// before they are flushed, per item or not) can add at most one batch each.
    base: usize,
    bytes: usize,
    overflow: bool,
}

/// Items collected for each connection during one batch (of the manager's work, or of
/// a publishing connection's lines).
pub struct Stager {
    /// Tells this stager's tags on an outbox from other stagers' (24 bits).
    id: u64,
    /// Batch number (8 bits): a tag from an earlier batch never names a current slot.
    batch: u64,
    slots: Vec<Slot>,
    /// Emptied item vectors kept for the next batch, so staging does not allocate.
    spare: Vec<Vec<OutItem>>,
}

impl Default for Stager {
    fn default() -> Self {
        Stager::new()
    }
}

impl Stager {
    pub fn new() -> Stager {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Stager {
            id: NEXT.fetch_add(1, Ordering::Relaxed) & 0xff_ffff,
            batch: 0,
            slots: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Stages `item` (about `size` bytes) for `outbox`, checking the bound against what is
    /// queued plus what is staged.
    pub fn stage(&mut self, outbox: &Arc<Outbox>, item: OutItem, size: usize) -> Staged {
        let idx = self.slot(outbox);
        let staged = self.reserve_at(idx, size);
        if let Staged::Queued { .. } = staged {
            self.slots[idx].items.push(item);
        }
        staged
    }

    /// This batch's slot for each of `outboxes`, for [`Stager::reserve_at`] and
    /// [`Stager::push_at`]: a publisher staging many messages for the same receivers
    /// looks their slots up once.
    pub fn slots_for(&mut self, outboxes: &[Arc<Outbox>]) -> Vec<usize> {
        outboxes.iter().map(|o| self.slot(o)).collect()
    }

    /// Counts `size` more bytes for slot `idx` against its outbox's bound, for an item
    /// [`Stager::push_at`] adds later (a run of messages, added once it ends).
    pub fn reserve_at(&mut self, idx: usize, size: usize) -> Staged {
        let slot = &mut self.slots[idx];
        // Checked per item: a receiver that closes mid-batch stops being counted at once.
        if slot.overflow || slot.outbox.is_closed() {
            return Staged::Dropped;
        }
        let queued = slot.base + slot.bytes + size;
        let limit = slot.outbox.limit();
        if queued > limit {
            slot.overflow = true;
            slot.items.clear();
            return Staged::Dropped;
        }
        slot.bytes += size;
        Staged::Queued {
            crowded: queued * 2 > limit,
        }
    }

    /// Adds `item`, whose bytes [`Stager::reserve_at`] counted, to slot `idx` (unless
    /// the slot overflowed meanwhile: its receiver is being cut).
    pub fn push_at(&mut self, idx: usize, item: OutItem) {
        let slot = &mut self.slots[idx];
        if !slot.overflow {
            slot.items.push(item);
        }
    }

    /// This batch's slot for `outbox`, found through the tag the outbox carries.
    fn slot(&mut self, outbox: &Arc<Outbox>) -> usize {
        // Several stagers (the manager's, publishing connections') tag the same outbox;
        // a tag another one wrote only makes a second slot for the outbox, flushed
        // after the first, so the order of what is staged for it holds.
        let this = (self.id << 8) | self.batch;
        let tag = outbox.stage.load(Ordering::Relaxed);
        let idx = (tag & 0xffff_ffff) as usize;
        if tag >> 32 == this
            && idx < self.slots.len()
            && Arc::ptr_eq(&self.slots[idx].outbox, outbox)
        {
            return idx;
        }
        let idx = self.slots.len();
        self.slots.push(Slot {
            outbox: outbox.clone(),
            items: self.spare.pop().unwrap_or_default(),
            base: outbox.queued_bytes(),
            bytes: 0,
            overflow: false,
        });
        outbox
            .stage
            .store((this << 32) | idx as u64, Ordering::Relaxed);
        idx
    }

    /// Hands every connection what was staged for it, and wakes it.
    pub fn flush(&mut self, stats: &Stats) {
        let receivers = self.slots.len();
        for mut slot in self.slots.drain(..) {
            if slot.overflow {
                if slot.outbox.close_slow() {
                    stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "connection {} is a slow consumer: its outbox overflowed; disconnecting it",
                        slot.outbox.id
                    );
                }
                slot.outbox.wake();
            } else if !slot.items.is_empty() {
                let direct = direct_write(receivers, slot.bytes);
                if let Delivery::Queued { wake: true } =
                    slot.outbox.push_batch(&mut slot.items, slot.bytes, direct)
                {
                    slot.outbox.wake();
                }
            }
            slot.items.clear();
            if self.spare.len() < 64 {
                self.spare.push(slot.items);
            }
        }
        // Slots are emptied every batch, so a stale tag of this stager that matches
        // after the batch number wraps still fails the pointer check above.
        self.batch = (self.batch + 1) & 0xff;
    }
}
