//! Account and session files are written on a thread of their own: a write ends in
//! fsync, which must never hold a connection's worker or the channel manager.

type Job = Box<dyn FnOnce() + Send>;

/// Runs file writes, one at a time, in order.
#[derive(Clone)]
pub struct Disk {
    jobs: crossbeam_channel::Sender<Job>,
}

impl Disk {
    pub fn start() -> Disk {
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        let started = std::thread::Builder::new()
            .name("auth-files".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            });
        if let Err(e) = started {
            log::error!("cannot start the thread that writes account files: {e}");
        }
        Disk { jobs }
    }

    /// Runs `write` there and waits for its result (without blocking a worker when
    /// called from a coroutine).
    pub fn run<T: Send + 'static>(&self, write: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = may::sync::mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(write());
        });
        self.jobs.send(job).ok()?;
        rx.recv().ok()
    }

    /// Runs `write` there, without waiting.
    pub fn spawn(&self, write: impl FnOnce() + Send + 'static) {
        let _ = self.jobs.send(Box::new(write));
    }
}

/// The JSON file at `path` (absent: the default, as before the first save).
pub fn read_json<T: serde::de::DeserializeOwned + Default>(
    path: Option<&std::path::Path>,
) -> Result<T, String> {
    let Some(p) = path.filter(|p| p.exists()) else {
        return Ok(T::default());
    };
    let text =
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is damaged: {e}", p.display()))
}
