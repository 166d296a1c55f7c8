//! Sleeping inside a `may` coroutine, safely.
//!
//! may resumes a coroutine whose sleep has ended on its timer thread, not on a worker,
//! and runs it there until it next blocks. I/O with a timeout registers in the worker's
//! timer list, which only the worker may touch: done from the timer thread, it corrupted
//! the heap (a test aborted in `malloc` about half the time). So every sleep here is
//! followed by a yield, which puts the coroutine back on a worker's queue.

use std::time::{Duration, Instant};

/// Sleeps for `d` without blocking the worker, and resumes on a worker thread. Outside a
/// coroutine, a plain thread sleep.
pub fn nap(d: Duration) {
    if !may::coroutine::is_coroutine() {
        return std::thread::sleep(d);
    }
    may::coroutine::sleep(d);
    may::coroutine::yield_now();
}

/// Longest a long task (a scan, a stream) runs before it lets the others run.
const SLICE: Duration = Duration::from_millis(1);

/// Lets other coroutines on this worker run, and their sockets be polled, once this one
/// has run for [`SLICE`] since `since`. A `yield_now` is not enough: may's worker runs
/// every ready coroutine before it polls for I/O, so a coroutine that only yields keeps
/// the others' sockets unread; a short sleep leaves the run queue.
pub fn let_others_run(since: &mut Instant) {
    if may::coroutine::is_coroutine() && since.elapsed() >= SLICE {
        nap(Duration::from_micros(20));
        *since = Instant::now();
    }
}
