//! A connection's action calls: run one after another by a coroutine of the
//! connection's own, started when the first call arrives and ended when none is left,
//! so a pipelined batch of calls costs one coroutine, not one each. An action that
//! waits holds up this connection's later calls only (their answers would wait for
//! its answer anyway, in request order), never another connection's.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::framework::{Ctx, Framework};
use crate::manager::outbox::Outbox;
use crate::protocol::Payload;

/// One call waiting to run.
pub(super) struct Call {
    pub token: u64,
    pub ctx: Ctx,
    pub action: String,
    pub data: Payload,
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
    pub fn run(&mut self, call: Call, framework: &Arc<Framework>, outbox: &Arc<Outbox>) {
        let queue = self.queue.get_or_insert_with(Arc::default);
        let mut q = queue.lock();
        q.calls.push_back(call);
        if q.running {
            return;
        }
        q.running = true;
        drop(q);
        let (queue, framework, outbox) = (queue.clone(), framework.clone(), outbox.clone());
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
            let reply = framework.call(c.ctx, &c.action, c.data);
            outbox.answer(c.token, reply);
        });
    }
}
