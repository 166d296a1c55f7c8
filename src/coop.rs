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

/// Gives the operating system back the pages of this coroutine's stack below the
/// caller's frame. A call that once went deep (a request's parsing and handling) leaves
/// its pages resident for the life of the connection; an idle connection needs only
/// the frames it waits in. Does nothing outside a coroutine.
#[inline(never)]
pub fn release_stack() {
    let Some((low, high)) = generator::current_stack() else {
        return;
    };
    let sp = stack_pointer();
    if !(low..high).contains(&sp) {
        return;
    }
    const PAGE: usize = 4096;
    // Room below the stack pointer for madvise's own call (its return address); a
    // signal handler's frame may land on pages given back: they are dead, and come
    // back as zeros.
    let end = sp.saturating_sub(256) & !(PAGE - 1);
    let start = (low + PAGE - 1) & !(PAGE - 1);
    if end > start {
        // SAFETY: [start, end) lies inside this coroutine's own stack, wholly below
        // the live frames (the stack grows down from `high`); its contents are dead,
        // and a page given back reads as zeros when touched again.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// The stack pointer: everything below it is dead (this function's caller holds no data
/// there, and no red zone is kept across a call). Where it cannot be read, an address
/// in this frame less a margin no frame here comes near.
#[inline(always)]
fn stack_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let sp: usize;
        // SAFETY: reads a register.
        unsafe {
            std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
        };
        sp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let sp: usize;
        // SAFETY: reads a register.
        unsafe {
            std::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
        };
        sp
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let here = 0u8;
        (std::hint::black_box(std::ptr::addr_of!(here)) as usize).saturating_sub(4096)
    }
}

/// Gives a connection's stack pages back when it goes idle: at each of its first few
/// waits (a connection that subscribes and then only listens, most of them, is done
/// by then), then at most once a second. Each release costs a system call, a TLB flush
/// on every core the process runs on and the page faults of going deep again; given
/// back at every wait, a busy server measured a third more CPU per message.
#[derive(Default)]
pub struct StackReleaser {
    waits: u32,
    last: Option<Instant>,
}

impl StackReleaser {
    const FIRST_WAITS: u32 = 8;
    const EVERY: Duration = Duration::from_secs(1);

    /// The connection is about to wait for its socket.
    pub fn idle(&mut self) {
        if self.waits < Self::FIRST_WAITS {
            self.waits += 1;
        } else {
            let now = Instant::now();
            if self
                .last
                .is_some_and(|t| now.duration_since(t) < Self::EVERY)
            {
                return;
            }
            self.last = Some(now);
        }
        release_stack();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of `[low, high)` resident now.
    fn resident(low: usize, high: usize) -> usize {
        let pages = (high - low) / 4096;
        let mut vec = vec![0u8; pages];
        // SAFETY: a query of this process's own mapping into a buffer of one byte a page.
        let r = unsafe { libc::mincore(low as *mut libc::c_void, pages * 4096, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore");
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    /// Touches about `n` KiB of stack; returns a sum that needs all of it.
    #[inline(never)]
    fn deep(n: usize) -> usize {
        let buf = std::hint::black_box([n as u8; 1024]);
        if n == 0 {
            0
        } else {
            deep(n - 1) + buf[n % 1024] as usize
        }
    }

    #[test]
    fn an_idle_coroutine_gives_back_the_pages_a_deep_call_touched() {
        let builder = may::coroutine::Builder::new().stack_size(0x4000);
        let handle = may::go!(builder, || {
            let (low, high) = generator::current_stack().expect("a coroutine's stack");
            let expect: usize = (1..=48).sum();
            assert_eq!(deep(48), expect);
            let before = resident(low & !4095, high);
            release_stack();
            let after = resident(low & !4095, high);
            assert!(
                after + 10 <= before && after <= 4,
                "{before} pages resident before, {after} after"
            );
            // What lives above the frame is intact, and going deep again works.
            assert_eq!(deep(48), expect);
            (before, after)
        })
        .expect("a coroutine");
        let (before, after) = handle.join().expect("the coroutine ran");
        assert!(before > after);
        // Outside a coroutine it does nothing.
        release_stack();
    }
}
