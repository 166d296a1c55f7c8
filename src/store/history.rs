//! A channel's history: its last messages, each numbered by an offset within the
//! channel's epoch (DESIGN section 11). Kept in memory, bounded by count and age,
//! saved with each snapshot.
//!
//! Offsets are given under the history's lock by whoever hands a message over to its
//! receivers (a publishing connection, or the channel manager), and the hand-over
//! happens under the same lock: every receiver gets a channel's messages in offset
//! order, so a client that saw offset `n` has seen everything before it, and can
//! resume from `n` after a reconnect.
//!
//! A resuming subscriber is given the messages it missed from here, then receives the
//! channel live. Publishers may still hold a route from before it subscribed; what
//! they hand over after the missed messages were read is given to it here too (a
//! *late* delivery), so nothing falls between the two.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use super::expr::Expr;
use crate::protocol::push::{Epoch, Message};
use crate::protocol::Payload;

/// What a channel keeps and tells, chosen at `CREATE` and saved with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelOptions {
    /// Messages kept (0: no history).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub history: usize,
    /// Seconds a kept message lives (`None`: until pushed out by newer ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Whether subscribers are told who joins and leaves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub presence: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A kept message.
#[derive(Clone)]
pub struct Entry {
    pub offset: u64,
    /// When it was handed over, in milliseconds since the Unix epoch.
    pub at: u64,
    pub msg: Arc<Message>,
}

impl Entry {
    /// When it was handed over.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.at)
    }
}

/// Someone who takes the messages it would otherwise miss while it resumes (a
/// connection's outbox, above this floor).
pub trait LateReceiver: Send + Sync {
    fn take_late(&self, msg: &Arc<Message>);
}

struct Late {
    /// Its join number: routes built before it (fewer joins) do not reach it.
    no: u64,
    id: u64,
    receiver: Arc<dyn LateReceiver>,
    filter: Option<Arc<Expr>>,
    /// The route current when it joined: once nobody holds it, no publisher can hand
    /// over without it any more. Weak: the manager waits for replaced routes to be let
    /// go, and this must not count.
    before: Option<Weak<dyn Any + Send + Sync>>,
}

struct State {
    entries: VecDeque<Entry>,
    /// The offset the next message gets.
    next: u64,
    late: Vec<Late>,
}

/// One channel's history.
pub struct History {
    /// Chosen when the history starts; a new one means the history was lost.
    pub epoch: Epoch,
    keep: usize,
    /// 0: no age limit.
    ttl_ms: u64,
    /// Resuming subscribers so far (written by the channel manager only).
    joins: AtomicU64,
    state: Mutex<State>,
}

/// What a resume found.
pub struct Resume {
    /// Whether every message after the client's offset is here, in its epoch.
    pub recovered: bool,
    /// The missed messages (only when recovered).
    pub missed: Vec<Entry>,
    /// The offset of the newest message (0: none yet).
    pub top: u64,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl History {
    /// An empty history of a new epoch, keeping `options.history` messages.
    pub fn new(options: &ChannelOptions) -> History {
        History::restore(options, Epoch::random(), 1, Vec::new())
    }

    /// A history as saved: its epoch, the next offset and its entries (oldest first).
    pub fn restore(
        options: &ChannelOptions,
        epoch: Epoch,
        next: u64,
        entries: Vec<Entry>,
    ) -> History {
        let h = History {
            epoch,
            keep: options.history.max(1),
            ttl_ms: options.ttl.map_or(0, |s| s.saturating_mul(1000)),
            joins: AtomicU64::new(0),
            state: Mutex::new(State {
                entries: entries.into(),
                next: next.max(1),
                late: Vec::new(),
            }),
        };
        h.lock().trim(unix_ms());
        h
    }

    /// Takes the lock under which offsets are given and messages handed over.
    pub fn lock(&self) -> Sequencer<'_> {
        Sequencer {
            history: self,
            state: self.state.lock(),
        }
    }

    /// Resuming subscribers so far: a route built now reaches all of them.
    pub fn joins(&self) -> u64 {
        self.joins.load(Ordering::Acquire)
    }

    /// How many messages it keeps at most.
    pub fn keep(&self) -> usize {
        self.keep
    }
}

/// The history, locked.
pub struct Sequencer<'a> {
    history: &'a History,
    state: MutexGuard<'a, State>,
}

impl Sequencer<'_> {
    /// Gives each of `msgs` the next offset and keeps it. The caller hands them over
    /// before it lets go of the lock.
    pub fn append(&mut self, msgs: &[Arc<Message>]) {
        let now = unix_ms();
        let h = self.history;
        let s = &mut *self.state;
        for msg in msgs {
            let offset = s.next;
            s.next += 1;
            msg.set_seq(offset, h.epoch);
            s.entries.push_back(Entry {
                offset,
                at: now,
                msg: msg.clone(),
            });
        }
        self.trim(now);
    }

    /// Gives `msgs`, just handed over along a route that reached the first `joins`
    /// resuming subscribers, to those it did not reach.
    pub fn deliver_late(&self, msgs: &[Arc<Message>], joins: u64) {
        for late in self.state.late.iter().filter(|l| l.no > joins) {
            for msg in msgs {
                if passes(late.filter.as_deref(), msg) {
                    late.receiver.take_late(msg);
                }
            }
        }
    }

    /// Whether anyone is still resuming (a publisher then delivers late).
    pub fn has_late(&self) -> bool {
        !self.state.late.is_empty()
    }

    /// The offset of the newest message (0: none yet).
    pub fn top(&self) -> u64 {
        self.state.next - 1
    }

    /// Messages after `since` (all: `None`), the last `last` of them at most.
    pub fn since(&mut self, since: Option<u64>, last: Option<usize>) -> Vec<Entry> {
        self.trim(unix_ms());
        let after = since.unwrap_or(0);
        let s = &self.state;
        let first = s.entries.partition_point(|e| e.offset <= after);
        let mut skip = first;
        if let Some(n) = last {
            skip = skip.max(s.entries.len().saturating_sub(n));
        }
        s.entries.range(skip..).cloned().collect()
    }

    /// Whether a client that saw everything up to `since` in `epoch` can be given all
    /// it missed, and what that is.
    pub fn resume(&mut self, since: u64, epoch: Option<Epoch>, filter: Option<&Expr>) -> Resume {
        self.trim(unix_ms());
        let top = self.top();
        let first = self.state.entries.front().map_or(top + 1, |e| e.offset);
        let recovered = epoch == Some(self.history.epoch) && since <= top && since + 1 >= first;
        let missed = if recovered {
            let mut missed = self.since(Some(since), None);
            missed.retain(|e| passes(filter, &e.msg));
            missed
        } else {
            Vec::new()
        };
        Resume {
            recovered,
            missed,
            top,
        }
    }

    /// Registers connection `id` as resuming, with what it receives through `filter`;
    /// `before` is the channel's route now. Call it with the missed messages handed
    /// over, before the route that reaches it is built.
    pub fn join(
        &mut self,
        id: u64,
        receiver: Arc<dyn LateReceiver>,
        filter: Option<Arc<Expr>>,
        before: Option<Weak<dyn Any + Send + Sync>>,
    ) {
        let no = self.history.joins.fetch_add(1, Ordering::AcqRel) + 1;
        self.state.late.retain(|l| l.id != id);
        self.state.late.push(Late {
            no,
            id,
            receiver,
            filter,
            before,
        });
    }

    /// Connection `id` no longer receives the channel: nothing more late for it.
    pub fn forget(&mut self, id: u64) {
        self.state.late.retain(|l| l.id != id);
    }

    /// Lets go of resuming subscribers that every publisher now reaches. Returns
    /// whether some are left.
    pub fn prune(&mut self) -> bool {
        self.state
            .late
            .retain(|l| l.before.as_ref().is_some_and(|b| b.strong_count() > 0));
        !self.state.late.is_empty()
    }

    /// Everything kept, oldest first, and the next offset (for saving).
    pub fn saved(&self) -> (Vec<Entry>, u64) {
        (
            self.state.entries.iter().cloned().collect(),
            self.state.next,
        )
    }

    fn trim(&mut self, now: u64) {
        let keep = self.history.keep;
        let ttl = self.history.ttl_ms;
        let s = &mut *self.state;
        while s.entries.len() > keep {
            s.entries.pop_front();
        }
        if ttl > 0 {
            while s.entries.front().is_some_and(|e| e.at + ttl <= now) {
                s.entries.pop_front();
            }
        }
    }
}

/// Whether a subscription with `filter` takes `msg`: without one, everything; with
/// one, JSON messages that match it.
fn passes(filter: Option<&Expr>, msg: &Message) -> bool {
    match (filter, &msg.data) {
        (None, _) => true,
        (Some(f), Payload::Json(v)) => f.matches_json(v),
        (Some(_), Payload::Text(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MessageKind;

    fn msg(text: &str) -> Arc<Message> {
        Arc::new(Message::new(
            MessageKind::Channel,
            "c".into(),
            "p".into(),
            Payload::Text(text.into()),
        ))
    }

    fn options(history: usize) -> ChannelOptions {
        ChannelOptions {
            history,
            ..ChannelOptions::default()
        }
    }

    #[test]
    fn offsets_count_up_and_old_messages_go() {
        let h = History::new(&options(3));
        let mut s = h.lock();
        let msgs: Vec<_> = (0..5).map(|i| msg(&i.to_string())).collect();
        s.append(&msgs);
        assert_eq!(s.top(), 5);
        assert_eq!(msgs[4].seq().map(|(o, _)| o), Some(5));
        let kept: Vec<u64> = s.since(None, None).iter().map(|e| e.offset).collect();
        assert_eq!(kept, [3, 4, 5]);
        let last: Vec<u64> = s.since(Some(3), Some(1)).iter().map(|e| e.offset).collect();
        assert_eq!(last, [5]);
    }

    #[test]
    fn resume_needs_the_epoch_and_every_missed_message() {
        let h = History::new(&options(3));
        let mut s = h.lock();
        s.append(&(0..5).map(|i| msg(&i.to_string())).collect::<Vec<_>>());
        let epoch = Some(h.epoch);
        let r = s.resume(2, epoch, None);
        assert!(r.recovered);
        assert_eq!(r.missed.len(), 3);
        assert!(s.resume(5, epoch, None).recovered, "nothing missed");
        assert!(!s.resume(1, epoch, None).recovered, "offset 2 is gone");
        assert!(
            !s.resume(3, Some(Epoch(7)), None).recovered,
            "another epoch"
        );
        assert!(!s.resume(3, None, None).recovered, "no epoch");
        assert!(!s.resume(9, epoch, None).recovered, "from the future");
    }
}
