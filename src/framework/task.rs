//! Tasks: at startup (before the port opens), at shutdown (before the final snapshot),
//! and on an interval that is fixed or recomputed by the task after each run. A run
//! still going when the next is due is skipped and counted, never overlapped; failures
//! and panics are logged and counted, and never stop the server.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::{ActionError, Ctx};
use crate::protocol::Item;

/// What a task does; `Ok(Some(d))` from an interval task sets the wait before its
/// next run.
pub(crate) type TaskFn =
    Arc<dyn Fn(&mut Ctx) -> Result<Option<Duration>, ActionError> + Send + Sync>;

/// When a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Once, before the port opens; a failure stops the start.
    Startup,
    /// Once, at shutdown, before the final snapshot.
    Shutdown,
    /// Every so often.
    Every {
        /// The wait before the first run (and every run, unless recomputed).
        first: Duration,
        /// The task returns the wait before its next run after each run.
        recomputed: bool,
    },
}

/// A registered task and how it has run.
pub(crate) struct Task {
    pub name: String,
    pub schedule: Schedule,
    pub run: TaskFn,
    runs: AtomicU64,
    skipped: AtomicU64,
    failures: AtomicU64,
    running: AtomicBool,
    times: Mutex<Times>,
}

#[derive(Default)]
struct Times {
    last: Option<SystemTime>,
    next: Option<SystemTime>,
}

impl Task {
    pub fn new(name: &str, schedule: Schedule, run: TaskFn) -> Task {
        Task {
            name: name.to_string(),
            schedule,
            run,
            runs: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            running: AtomicBool::new(false),
            times: Mutex::new(Times::default()),
        }
    }

    /// Runs the task once in `ctx`, counting the run and any failure (a panic is one).
    /// Returns the error, and the next wait an interval task asked for.
    pub fn run_once(&self, ctx: &mut Ctx) -> Result<Option<Duration>, ActionError> {
        self.times.lock().last = Some(SystemTime::now());
        self.runs.fetch_add(1, Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| (self.run)(ctx))).unwrap_or_else(|p| {
            Err(ActionError::new(
                "task_failed",
                format!("panicked: {}", super::panic_text(&p)),
            ))
        });
        if let Err(e) = &outcome {
            self.failures.fetch_add(1, Ordering::Relaxed);
            log::warn!("task {} failed: {e}", self.name);
        }
        outcome
    }

    /// `* <name> <schedule> runs=… skipped=… failures=… last=… next=…`.
    pub fn item(&self) -> Item {
        let schedule = match self.schedule {
            Schedule::Startup => "startup".to_string(),
            Schedule::Shutdown => "shutdown".to_string(),
            Schedule::Every { first, recomputed } => format!(
                "every={}{}",
                humantime::format_duration(first),
                if recomputed { ",recomputed" } else { "" }
            ),
        };
        let (runs, skipped, failures) = (
            self.runs.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        );
        let times = self.times.lock();
        let show = |t: Option<SystemTime>| {
            t.map_or("-".to_string(), |t| {
                humantime::format_rfc3339_seconds(t).to_string()
            })
        };
        let (last, next) = (show(times.last), show(times.next));
        Item {
            text: format!(
                "{} {schedule} runs={runs} skipped={skipped} failures={failures} last={last} next={next}",
                self.name
            ),
            json: serde_json::json!({
                "name": self.name, "schedule": schedule, "runs": runs, "skipped": skipped,
                "failures": failures,
                "last": (last != "-").then_some(&last), "next": (next != "-").then_some(&next),
            }),
        }
    }
}

/// Runs interval task `task` until `stop`: a coroutine that sleeps until the task is
/// due, starts the run in a coroutine of its own, and skips (and counts) a due run
/// while the previous one is still going.
///
/// A fixed interval counts from each due time, so a slow run makes the next ones
/// skipped; a recomputed one counts from the end of each run, with the wait the run
/// returned.
pub(crate) fn run_every(task: Arc<Task>, new_ctx: impl Fn() -> Ctx, stop: Arc<AtomicBool>) {
    let Schedule::Every { first, recomputed } = task.schedule else {
        return;
    };
    // A zero interval would spin: the shortest wait is a millisecond.
    let first = first.max(Duration::from_millis(1));
    let wait = Arc::new(Mutex::new(first));
    let mut due = Instant::now() + first;
    loop {
        task.times.lock().next =
            Some(SystemTime::now() + due.saturating_duration_since(Instant::now()));
        // Short naps, so a stop is noticed at once.
        while Instant::now() < due {
            if stop.load(Ordering::Acquire) {
                task.times.lock().next = None;
                return;
            }
            crate::coop::nap((due - Instant::now()).min(Duration::from_millis(50)));
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        if task.running.swap(true, Ordering::AcqRel) {
            task.skipped.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "task {}: still running when due again; this run is skipped",
                task.name
            );
        } else {
            let (task, wait) = (task.clone(), wait.clone());
            let mut ctx = new_ctx();
            may::go!(move || {
                if let Ok(Some(next)) = task.run_once(&mut ctx) {
                    *wait.lock() = next.max(Duration::from_millis(1));
                }
                task.running.store(false, Ordering::Release);
            });
        }
        if recomputed {
            while task.running.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
                crate::coop::nap(Duration::from_millis(5));
            }
            due = Instant::now() + *wait.lock();
        } else {
            due += first;
            let now = Instant::now();
            if due < now {
                due = now + first;
            }
        }
    }
}
