//! Long work inside a `may` coroutine, giving way to the others on its worker.
//!
//! may is patched (`vendor/may/PATCHES.md`): its worker polls for I/O after a bounded
//! run even while coroutines are ready, and a sleeper resumes on a worker, not on the
//! timer thread. With that, a `yield_now` is enough to let another connection's
//! `PING` be read and answered; without it, connections that kept yielding hid every
//! other socket on their worker.

use std::time::{Duration, Instant};

/// Sleeps for `d` without blocking the worker. Outside a coroutine, a plain thread
/// sleep.
pub fn nap(d: Duration) {
    if may::coroutine::is_coroutine() {
        may::coroutine::sleep(d);
    } else {
        std::thread::sleep(d);
    }
}

/// Longest a coroutine runs before it gives way: a few of these back to back are still
/// well inside another connection's 10 ms latency goal.
pub const SLICE: Duration = Duration::from_micros(250);

/// A coroutine's running time since it last gave way.
pub struct Slice {
    since: Instant,
    len: Duration,
}

impl Default for Slice {
    fn default() -> Self {
        Slice::new()
    }
}

impl Slice {
    /// Starts timing now, for slices of [`SLICE`].
    pub fn new() -> Slice {
        Slice::of(SLICE)
    }

    /// Starts timing now, for slices of `len`.
    pub fn of(len: Duration) -> Slice {
        Slice {
            since: Instant::now(),
            len,
        }
    }

    /// Yields to the other coroutines on this worker once this one has run for its
    /// slice. Called between steps of long work: a scan's chunks, the passes of a
    /// connection that always has input.
    pub fn give_way(&mut self) {
        if self.since.elapsed() >= self.len {
            if may::coroutine::is_coroutine() {
                may::coroutine::yield_now();
            }
            self.since = Instant::now();
        }
    }

    /// Whether this coroutine has used up its slice: work made of many steps (the lines
    /// or frames a read brought) stops taking more, so that [`Slice::give_way`] is
    /// reached soon.
    pub fn is_due(&self) -> bool {
        self.since.elapsed() >= self.len
    }

    /// The coroutine has just woken from blocking (on its socket, say): a new slice
    /// starts now.
    pub fn restart(&mut self) {
        self.since = Instant::now();
    }
}
