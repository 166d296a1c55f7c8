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

/// Threads that run blocking work (disk I/O: a file's chunk, an fsync, a rename) for
/// coroutines, so that a slow disk never stalls a worker and the other connections on
/// it. Started when first needed.
static BLOCKING: std::sync::LazyLock<Option<crossbeam_channel::Sender<Job>>> =
    std::sync::LazyLock::new(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let mut started = 0;
        for i in 0..BLOCKING_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("blocking-io-{i}"))
                .spawn(move || {
                    for job in rx {
                        // A panicking job drops its answer's sender: its caller gets
                        // `None`, and this thread goes on serving.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            started += usize::from(spawned.is_ok());
        }
        (started > 0).then_some(tx)
    });

type Job = Box<dyn FnOnce() + Send>;

/// How many threads [`blocking`] runs its work on: enough for a few transfers' disk
/// calls to overlap; each call is one chunk, so none holds a thread for long.
const BLOCKING_THREADS: usize = 4;

/// Runs `f` on one of the blocking-work threads and waits for it without blocking this
/// coroutine's worker; outside a coroutine, runs it here. `None` if `f` panicked (or
/// no thread could be started).
pub fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if !may::coroutine::is_coroutine() {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    }
    Pending::start(f).wait()
}

/// Blocking work started on the blocking-work threads, to be waited for later: a
/// transfer reads its next chunk from the socket while the last one is written.
pub struct Pending<T>(Option<may::sync::mpsc::Receiver<T>>);

impl<T: Send + 'static> Pending<T> {
    /// Starts `f`; outside a coroutine it runs at once, here.
    pub fn start(f: impl FnOnce() -> T + Send + 'static) -> Pending<T> {
        let (tx, rx) = may::sync::mpsc::channel();
        if !may::coroutine::is_coroutine() {
            if let Ok(v) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let _ = tx.send(v);
            }
            return Pending(Some(rx));
        }
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let sent = BLOCKING.as_ref().is_some_and(|pool| pool.send(job).is_ok());
        Pending(sent.then_some(rx))
    }

    /// Waits for it without blocking the worker. `None` if it panicked (or never ran).
    pub fn wait(self) -> Option<T> {
        self.0?.recv().ok()
    }
}
