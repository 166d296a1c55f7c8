//! The publishing link: the `cluster-publish` thread takes what local publishers (and
//! senders of direct messages to other nodes) handed the backplane from a bounded
//! queue and sends it as pipelined `PUBLISH`es, up to [`BATCH`] per round trip, each
//! run of publications on one Redis channel packed into one frame.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{connect, frame, Backoff, Shared, BATCH, BEAT, MAX_FRAME, POLL};

/// One publication on its way out: the Redis channel it goes to and its frame entry,
/// or (`whole`) a message of its own, sent as it is.
pub struct Outgoing {
    pub target: Box<str>,
    pub entry: Vec<u8>,
    pub whole: bool,
}

/// The publishing thread: runs until the node stops.
pub fn publish_loop(shared: &Shared, client: &redis::Client, rx: &Receiver<Outgoing>) {
    let mut con: Option<redis::Connection> = None;
    let mut backoff = Backoff::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_used = Instant::now();
    while !shared.stopping() {
        if con.is_none() && Instant::now() >= backoff.next {
            match connect(client) {
                Ok(c) => {
                    backoff.succeeded();
                    con = Some(c);
                    shared.link(&shared.publishing_up, "publishing", true, None);
                }
                Err(e) => {
                    backoff.failed();
                    shared.link(&shared.publishing_up, "publishing", false, Some(&e));
                }
            }
        }
        let wait = if con.is_some() {
            POLL
        } else {
            backoff
                .next
                .saturating_duration_since(Instant::now())
                .min(POLL)
        };
        match rx.recv_timeout(wait) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => {
                // An idle link is looked at every beat: one that broke while idle
                // would otherwise lose the next batch to find out.
                if let Some(c) = con.as_mut().filter(|_| last_used.elapsed() >= BEAT) {
                    last_used = Instant::now();
                    if let Err(e) = redis::cmd("PING").query::<()>(c) {
                        con = None;
                        backoff.failed();
                        shared.link(&shared.publishing_up, "publishing", false, Some(&e));
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        last_used = Instant::now();
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let sent = match con.as_mut() {
            Some(c) => {
                let mut pipe = redis::pipe();
                for (target, frame) in runs(shared, &batch) {
                    pipe.cmd("PUBLISH").arg(target).arg(&*frame).ignore();
                }
                match pipe.query::<()>(c) {
                    Ok(()) => true,
                    Err(e) => {
                        con = None;
                        backoff.failed();
                        shared.link(&shared.publishing_up, "publishing", false, Some(&e));
                        false
                    }
                }
            }
            None => false,
        };
        let counter = if sent {
            &shared.stats.cluster.sent
        } else {
            &shared.stats.cluster.dropped
        };
        counter.fetch_add(n, Ordering::Relaxed);
        batch.clear();
    }
}

/// The batch as one frame per run of publications to one Redis channel. Only
/// consecutive publications share a frame, so a receiver of several channels still
/// gets them in the order they were made.
fn runs<'a>(shared: &Shared, batch: &'a [Outgoing]) -> Vec<(&'a str, Cow<'a, [u8]>)> {
    let mut out: Vec<(&'a str, Cow<'a, [u8]>)> = Vec::new();
    let mut joinable = false;
    for m in batch {
        match out.last_mut() {
            Some((target, frame))
                if joinable && !m.whole && *target == &*m.target && frame.len() < MAX_FRAME =>
            {
                frame.to_mut().extend(&m.entry)
            }
            _ if m.whole => out.push((&m.target, Cow::Borrowed(&m.entry))),
            _ => {
                let mut frame = frame::header(&shared.node);
                frame.extend(&m.entry);
                out.push((&m.target, Cow::Owned(frame)));
            }
        }
        joinable = !m.whole;
    }
    out
}
