//! A table's recent row changes, so a watcher that lost its connection can resume
//! (`WATCH <table> SINCE <seq>`). Kept only for tables watched at least once since
//! start (others cost nothing), bounded by count and bytes, in memory: after a restart
//! a resume says it cannot recover, and the client reloads.
//!
//! Every change of a logged or watched table gets a sequence number from a store-wide
//! counter that starts at the start time in microseconds, so numbers grow across
//! restarts and one from an earlier run is never taken for a later change.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::table::row_bytes;
use super::value::Value;
use super::ChangeKind;

/// Most changes a table keeps for resuming watchers.
pub const KEEP_CHANGES: usize = 1000;
/// Most bytes of rows those changes hold, per table.
pub const KEEP_BYTES: usize = 1 << 20;

/// Hands out change sequence numbers.
pub struct ChangeSeq(AtomicU64);

impl Default for ChangeSeq {
    fn default() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        ChangeSeq(AtomicU64::new(micros))
    }
}

impl ChangeSeq {
    /// The next number (call it under the changed table's write lock, so a table's
    /// changes are numbered in the order they are made).
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The newest number given so far: every later change gets a larger one.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One change as kept.
pub struct LoggedChange {
    pub seq: u64,
    pub kind: ChangeKind,
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
}

impl LoggedChange {
    fn bytes(&self) -> usize {
        let b = self.before.as_deref().map_or(0, row_bytes);
        let a = self.after.as_deref().map_or(0, row_bytes);
        b + a + 48
    }
}

/// A table's recent changes.
#[derive(Default)]
pub struct ChangeLog {
    active: bool,
    /// Every change after this number is here.
    complete_after: u64,
    entries: VecDeque<LoggedChange>,
    bytes: usize,
}

impl ChangeLog {
    /// Whether changes are kept.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Starts keeping changes; every change after `now` will be here.
    pub fn activate(&mut self, now: u64) {
        if !self.active {
            self.active = true;
            self.complete_after = now;
        }
    }

    /// Keeps `change`, letting the oldest go past the bounds.
    pub fn push(&mut self, change: LoggedChange) {
        self.bytes += change.bytes();
        self.entries.push_back(change);
        while self.entries.len() > KEEP_CHANGES || self.bytes > KEEP_BYTES {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.bytes();
            self.complete_after = old.seq;
        }
    }

    /// The changes after `since`, if every one of them is still here.
    pub fn since(&self, since: u64) -> Option<impl Iterator<Item = &LoggedChange>> {
        (self.active && since >= self.complete_after)
            .then(|| self.entries.iter().filter(move |c| c.seq > since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64) -> LoggedChange {
        LoggedChange {
            seq,
            kind: ChangeKind::Insert,
            before: None,
            after: Some(vec![Value::Int(seq as i64)]),
        }
    }

    #[test]
    fn keeps_what_it_can_and_says_when_it_cannot() {
        let mut log = ChangeLog::default();
        assert!(log.since(0).is_none(), "not active");
        log.activate(10);
        for seq in 11..=(10 + KEEP_CHANGES as u64 + 5) {
            log.push(change(seq));
        }
        assert!(log.since(12).is_none(), "15 is gone");
        let seqs: Vec<u64> = log.since(1010).expect("kept").map(|c| c.seq).collect();
        assert_eq!(seqs, [1011, 1012, 1013, 1014, 1015]);
        assert_eq!(log.since(1015).map(|i| i.count()), Some(0));
    }
}
