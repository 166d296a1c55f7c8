//! Noticing clients that are gone without saying so, on the manager's clock: a `PING`
//! push to a client silent for the ping interval, and the connection cut after
//! `max_pings_out` such pings went unanswered (as NATS does); a line left incomplete
//! longer than the line timeout (one byte a second forever) is cut too.

use std::time::Duration;

use super::Manager;
use crate::manager::outbox::now_ms;
use crate::protocol::push::ByeReason;
use crate::protocol::Push;

/// The liveness settings (`None` turns a check off).
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    /// Silence after which a client gets a `PING`, and between further ones.
    pub ping_interval: Option<Duration>,
    /// Unanswered `PING`s after which the connection is cut as stale.
    pub max_pings_out: u32,
    /// The longest a line may stay incomplete.
    pub line_timeout: Option<Duration>,
}

impl Liveness {
    /// How often the manager looks: often enough to keep each limit within about a
    /// quarter of itself, and never more than 4 times a second.
    pub fn tick(&self) -> Option<Duration> {
        let shortest = match (self.ping_interval, self.line_timeout) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        Some((shortest / 4).clamp(Duration::from_millis(250), Duration::from_secs(5)))
    }
}

/// What the manager remembers of a client's liveness.
#[derive(Default)]
pub struct Seen {
    /// The client's last input as of the previous check.
    last_input: u64,
    /// `PING`s sent since it last sent anything.
    pings_out: u32,
}

impl Manager {
    /// Pings silent clients and cuts stale ones and those with a line left incomplete
    /// too long. Called on the manager's tick.
    pub(super) fn check_liveness(&mut self) {
        let now = now_ms();
        let live = self.liveness;
        let mut pings = Vec::new();
        for c in self.clients.values_mut() {
            let outbox = &c.outbox;
            if outbox.is_closed() {
                continue;
            }
            if let (Some(limit), Some(since)) = (live.line_timeout, outbox.partial_since()) {
                if now.saturating_sub(since) > limit.as_millis() as u64 {
                    log::info!(
                        "connection {} ({}): a line stayed incomplete over {} s; disconnecting it",
                        outbox.id,
                        c.addr,
                        limit.as_secs()
                    );
                    if outbox.cut(ByeReason::LineTimeout) {
                        outbox.wake();
                    }
                    continue;
                }
            }
            let Some(every) = live.ping_interval else {
                continue;
            };
            let last = outbox.last_input();
            if last != c.seen.last_input {
                c.seen = Seen {
                    last_input: last,
                    pings_out: 0,
                };
            }
            let silent = now.saturating_sub(last);
            let every = every.as_millis() as u64;
            if silent < every * (c.seen.pings_out as u64 + 1) {
                continue;
            }
            if c.seen.pings_out >= live.max_pings_out {
                log::info!(
                    "connection {} ({}): silent for {} s, {} pings unanswered; disconnecting it",
                    outbox.id,
                    c.addr,
                    silent / 1000,
                    c.seen.pings_out
                );
                if outbox.cut(ByeReason::StaleConnection) {
                    outbox.wake();
                }
            } else {
                c.seen.pings_out += 1;
                pings.push(outbox.clone());
            }
        }
        for outbox in pings {
            self.push(&outbox, Push::Ping);
        }
    }
}
