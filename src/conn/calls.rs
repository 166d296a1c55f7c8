//! A connection's work that may wait (action calls, logins that wait for password
//! hashing): run one after another by a coroutine of the connection's own, started
//! when the first arrives and ended when none is left, so a pipelined batch costs one
//! coroutine, not one each. Work that waits holds up this connection's later such
//! work only (their answers would wait for its answer anyway, in request order), never
//! another connection's.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::manager::outbox::Outbox;
use crate::protocol::push::ByeReason;
use crate::protocol::Reply;

/// What a piece of work answers, and whether the connection must then close (after
/// the answer, with `BYE <reason>`).
pub(super) type Work = Box<dyn FnOnce() -> (Reply, Option<ByeReason>) + Send>;

/// One piece of work waiting to run, and the token its answer goes back with.
pub(super) struct Call {
    pub token: u64,
    pub work: Work,
}

#[derive(Default)]
struct Queue {
    calls: VecDeque<Call>,
    /// A runner is on it.
    running: bool,
}

/// The calls of one connection not yet run (nothing allocated before its first).
#[derive(Default)]
pub(super) struct Calls {
    queue: Option<Arc<Mutex<Queue>>>,
}

impl Calls {
    /// Queues `call`, starting the runner if none is running. Each answer goes to
    /// `outbox` as `OutItem::Answer` with the call's token.
    pub fn run(&mut self, call: Call, outbox: &Arc<Outbox>) {
        let queue = self.queue.get_or_insert_with(Arc::default);
        let mut q = queue.lock();
        q.calls.push_back(call);
        if q.running {
            return;
        }
        q.running = true;
        drop(q);
        let (queue, outbox) = (queue.clone(), outbox.clone());
        may::go!(move || loop {
            let next = {
                let mut q = queue.lock();
                let next = q.calls.pop_front();
                // Cleared under the same lock that `run` checks it under, so a call
                // queued now starts a new runner.
                q.running = next.is_some();
                next
            };
            let Some(c) = next else { break };
            let (reply, close) = (c.work)();
            outbox.answer(c.token, reply);
            if let Some(reason) = close {
                if outbox.close(reason) {
                    outbox.wake();
                }
            }
        });
    }
}
