//! Staging: everything one batch of the manager's work hands a connection is collected
//! here and given to its outbox at the end of the batch in one lock, with one wake.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::stats::Stats;
use crate::manager::outbox::{Delivery, OutItem, Outbox};

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
    bytes: usize,
    overflow: bool,
}

/// Items collected for each connection during one manager batch.
#[derive(Default)]
pub struct Stager {
    batch: u64,
    slots: Vec<Slot>,
    /// Emptied item vectors kept for the next batch, so staging does not allocate.
    spare: Vec<Vec<OutItem>>,
}

impl Stager {
    /// Stages `item` (about `size` bytes) for `outbox`, checking the bound against what is
    /// queued plus what is staged.
    pub fn stage(&mut self, outbox: &Arc<Outbox>, item: OutItem, size: usize) -> Staged {
        let idx = self.slot(outbox);
        let slot = &mut self.slots[idx];
        if slot.overflow || outbox.is_closed() {
            return Staged::Dropped;
        }
        let queued = outbox.queued_bytes() + slot.bytes + size;
        if queued > outbox.limit() {
            slot.overflow = true;
            slot.items.clear();
            return Staged::Dropped;
        }
        slot.items.push(item);
        slot.bytes += size;
        Staged::Queued {
            crowded: queued * 2 > outbox.limit(),
        }
    }

    /// This batch's slot for `outbox`, found through the tag the outbox carries.
    fn slot(&mut self, outbox: &Arc<Outbox>) -> usize {
        let tag = outbox.stage.load(Ordering::Relaxed);
        let idx = (tag & 0xffff_ffff) as usize;
        if tag >> 32 == self.batch
            && idx < self.slots.len()
            && Arc::ptr_eq(&self.slots[idx].outbox, outbox)
        {
            return idx;
        }
        let idx = self.slots.len();
        self.slots.push(Slot {
            outbox: outbox.clone(),
            items: self.spare.pop().unwrap_or_default(),
            bytes: 0,
            overflow: false,
        });
        outbox
            .stage
            .store((self.batch << 32) | idx as u64, Ordering::Relaxed);
        idx
    }

    /// Hands every connection what was staged for it, and wakes it.
    pub fn flush(&mut self, stats: &Stats) {
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
                if let Delivery::Queued { wake: true } =
                    slot.outbox.push_batch(&mut slot.items, slot.bytes)
                {
                    slot.outbox.wake();
                }
            }
            slot.items.clear();
            if self.spare.len() < 64 {
                self.spare.push(slot.items);
            }
        }
        // Tags are 32-bit batch numbers; wrapping only risks a stale tag matching, which
        // the pointer check above rules out.
        self.batch = (self.batch + 1) & 0xffff_ffff;
    }
}
