//! The journal: an append-only log of table changes since the last snapshot, one
//! numbered, checksummed JSON line per change ([`super::record`]), written by its own
//! OS thread (group commit).
//!
//! Connections append records into a shared buffer (a short mutex hold, no I/O). The
//! journal thread writes the buffer out and, by the fsync policy, syncs it. A
//! connection does not write its replies until the journal holds its last record
//! (written to the OS; under `always`, synced); the journal thread wakes it when it
//! does. So no coroutine ever waits on the disk on a worker thread.
//!
//! When the disk fails (full, read-only, I/O errors), the journal cuts its segment back
//! to the last whole record, keeps what it could not write, and tries again every half
//! second; if the cut itself fails, it goes on in a new segment. Meanwhile
//! [`Journal::failure`] says why, so new writes can be refused and waiting ones told;
//! once a write succeeds again everything kept is written, in order, and writes resume.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

pub use super::record::Record;
use super::record::{self as line};

/// When the journal is flushed to disk, like Redis's `appendfsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before a write is acknowledged: an `+OK` survives `kill -9` and power loss.
    Always,
    /// About once a second: a crash of the machine loses at most about a second.
    EverySec,
    /// Left to the operating system.
    No,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "no" => Ok(FsyncPolicy::No),
            _ => Err(format!("'{s}': use always, everysec or no")),
        }
    }
}

/// Something to wake when a record becomes durable (a connection's outbox).
pub trait Waiter: Send + Sync {
    fn wake(&self);
}

/// Journal segment file name for segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("journal-{n:06}.log")
}

/// The segment number of a journal file name.
pub fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("journal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

struct Buffer {
    data: Vec<u8>,
    next_seq: u64,
}

struct Segment {
    file: File,
    number: u64,
    /// Bytes of whole records (and the header) in the file.
    len: u64,
    /// The last sequence number in the file (whole records only).
    last_seq: u64,
    synced: bool,
    last_sync: Instant,
    /// The file may end in a partial write that could not be cut off: the next write
    /// goes to a new segment.
    broken: bool,
}

/// Why the journal cannot write, since when.
struct Failure {
    reason: String,
    since: Instant,
    last_logged: Instant,
}

/// The journal of one data folder.
pub struct Journal {
    dir: PathBuf,
    policy: FsyncPolicy,
    buf: Mutex<Buffer>,
    more: Condvar,
    /// The segment being written. Lock order: `segment`, then `buf`.
    segment: Mutex<Segment>,
    /// Every record with a sequence number up to this is written (and, under
    /// `always`, synced).
    durable: AtomicU64,
    /// Bytes written to the segment since its last fsync (for `/metrics`; kept under
    /// `--fsync no` too, where the OS decides when they reach the disk).
    unsynced: AtomicU64,
    waiters: Mutex<Vec<(u64, Arc<dyn Waiter>)>>,
    failing: AtomicBool,
    failure: Mutex<Option<Failure>>,
    stop: AtomicBool,
}

/// How long the journal waits before trying a failed write again.
const RETRY: Duration = Duration::from_millis(500);
/// How often a lasting failure is logged again.
const LOG_AGAIN: Duration = Duration::from_secs(30);

impl Journal {
    /// Opens segment `number` (new) in `dir`, whose first record will be `next_seq`,
    /// and starts the journal thread.
    pub fn start(
        dir: &Path,
        number: u64,
        next_seq: u64,
        policy: FsyncPolicy,
    ) -> io::Result<(Arc<Journal>, std::thread::JoinHandle<()>)> {
        let segment = Segment::create(dir, number, next_seq)?;
        let j = Arc::new(Journal {
            dir: dir.to_path_buf(),
            policy,
            buf: Mutex::new(Buffer {
                data: Vec::new(),
                next_seq,
            }),
            more: Condvar::new(),
            segment: Mutex::new(segment),
            durable: AtomicU64::new(next_seq - 1),
            unsynced: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
            failing: AtomicBool::new(false),
            failure: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let j = j.clone();
            std::thread::Builder::new()
                .name("journal".into())
                .spawn(move || j.run())?
        };
        Ok((j, thread))
    }

    /// Appends a record; returns its sequence number. Never does I/O.
    pub fn append(&self, record: &Record) -> u64 {
        let mut b = self.buf.lock();
        // The journal thread sleeps only on an empty buffer: only the append that
        // makes it non-empty needs to wake it (one wake per batch, not per record).
        let wake = b.data.is_empty();
        let seq = b.next_seq;
        line::encode(&mut b.data, Some(seq), record);
        b.next_seq += 1;
        drop(b);
        if wake {
            self.more.notify_one();
        }
        seq
    }

    /// Records appended that are not durable yet (written and synced, as the policy
    /// asks).
    pub fn pending_records(&self) -> u64 {
        let next = self.buf.lock().next_seq;
        (next - 1).saturating_sub(self.durable.load(Ordering::Acquire))
    }

    /// Bytes of changes not yet synced to disk: buffered, or written but not fsynced.
    pub fn unsynced_bytes(&self) -> u64 {
        let buffered = self.buf.lock().data.len() as u64;
        buffered + self.unsynced.load(Ordering::Relaxed)
    }

    /// Whether `seq` is durable by this journal's policy.
    pub fn is_durable(&self, seq: u64) -> bool {
        self.durable.load(Ordering::Acquire) >= seq
    }

    /// True if `seq` is durable; otherwise arranges for `waiter` to be woken when it
    /// is (or when the journal starts failing), and returns false.
    pub fn durable_or_wake(&self, seq: u64, waiter: &Arc<dyn Waiter>) -> bool {
        let mut w = self.waiters.lock();
        if self.is_durable(seq) {
            return true;
        }
        w.push((seq, waiter.clone()));
        false
    }

    /// Why the journal cannot write now, if it cannot. Cheap enough for every write.
    pub fn failure(&self) -> Option<String> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        self.failure.lock().as_ref().map(|f| f.reason.clone())
    }

    fn run(&self) {
        loop {
            {
                let mut b = self.buf.lock();
                if b.data.is_empty() && !self.stop.load(Ordering::Acquire) {
                    self.more.wait_for(&mut b, Duration::from_millis(250));
                }
            }
            let stopping = self.stop.load(Ordering::Acquire);
            if self.write_pending(false).is_err() && !stopping {
                std::thread::sleep(RETRY);
            }
            if stopping {
                if let Err(e) = self.write_pending(true) {
                    let left = self.buf.lock().data.len();
                    log::error!(
                        "journal: stopping with {left} bytes of changes that could not be written ({e}); none of them was acknowledged"
                    );
                }
                return;
            }
        }
    }

    /// Writes what is buffered to the current segment and syncs as the policy says
    /// (always when `force_sync`). On failure nothing is lost: what was not written
    /// whole goes back to the buffer, and the segment keeps only whole records.
    fn write_pending(&self, force_sync: bool) -> io::Result<()> {
        let mut seg = self.segment.lock();
        let result = self.write_locked(&mut seg, force_sync);
        drop(seg);
        match &result {
            Ok(()) => self.recovered(),
            Err(e) => self.failed(e),
        }
        result
    }

    fn write_locked(&self, seg: &mut Segment, force_sync: bool) -> io::Result<()> {
        if seg.broken {
            *seg = Segment::create(&self.dir, seg.number + 1, seg.last_seq + 1)?;
        }
        let (data, last) = {
            let mut b = self.buf.lock();
            (std::mem::take(&mut b.data), b.next_seq - 1)
        };
        let (before, before_seq) = (seg.len, seg.last_seq);
        if !data.is_empty() {
            if let Err(e) = seg.file.write_all(&data) {
                self.put_back(data);
                seg.cut_back(before);
                return Err(e);
            }
            seg.len += data.len() as u64;
            seg.last_seq = last;
            seg.synced = false;
            self.unsynced
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        let sync_now = !seg.synced
            && (force_sync
                || self.policy == FsyncPolicy::Always
                || (self.policy == FsyncPolicy::EverySec
                    && seg.last_sync.elapsed() >= Duration::from_secs(1)));
        if sync_now {
            if let Err(e) = seg.file.sync_data() {
                if self.policy == FsyncPolicy::Always && !data.is_empty() {
                    // Not acknowledged yet: keep it, to be written (and synced) again.
                    self.put_back(data);
                    seg.cut_back(before);
                    seg.last_seq = before_seq;
                }
                return Err(e);
            }
            seg.synced = true;
            seg.last_sync = Instant::now();
            self.unsynced.store(0, Ordering::Relaxed);
        }
        if self.policy != FsyncPolicy::Always || seg.synced {
            self.mark_durable(last);
        }
        Ok(())
    }

    /// Puts records that could not be written back in front of anything appended since.
    fn put_back(&self, data: Vec<u8>) {
        let mut b = self.buf.lock();
        let later = std::mem::replace(&mut b.data, data);
        b.data.extend_from_slice(&later);
    }

    fn failed(&self, e: &io::Error) {
        let now = Instant::now();
        let mut f = self.failure.lock();
        let reason = format!("cannot write the journal in {}: {e}", self.dir.display());
        match f.as_mut() {
            Some(f) if now.duration_since(f.last_logged) < LOG_AGAIN => f.reason = reason,
            Some(f) => {
                log::error!(
                    "journal: still failing after {} s: {e}",
                    now.duration_since(f.since).as_secs()
                );
                f.reason = reason;
                f.last_logged = now;
            }
            None => {
                log::error!("journal: {reason}; writes are refused until it can write again");
                *f = Some(Failure {
                    reason,
                    since: now,
                    last_logged: now,
                });
            }
        }
        drop(f);
        self.failing.store(true, Ordering::Release);
        // Whoever waits is told now rather than when the disk is back.
        for (_, w) in std::mem::take(&mut *self.waiters.lock()) {
            w.wake();
        }
    }

    fn recovered(&self) {
        if !self.failing.load(Ordering::Acquire) {
            return;
        }
        if let Some(f) = self.failure.lock().take() {
            log::warn!(
                "journal: writing again after {} ms; everything kept meanwhile is written",
                f.since.elapsed().as_millis()
            );
        }
        self.failing.store(false, Ordering::Release);
    }

    fn mark_durable(&self, seq: u64) {
        if self.durable.fetch_max(seq, Ordering::AcqRel) >= seq {
            return;
        }
        let mut w = self.waiters.lock();
        w.retain(|(s, waiter)| {
            if *s <= seq {
                waiter.wake();
                false
            } else {
                true
            }
        });
    }

    /// Writes and syncs everything buffered now.
    pub fn sync(&self) -> io::Result<()> {
        self.write_pending(true)
    }

    /// Writes and syncs everything buffered, then starts the next segment. Returns the
    /// new segment's number: every record before it is in older segments. On failure
    /// the current segment goes on, and nothing buffered is lost.
    pub fn rotate(&self) -> io::Result<u64> {
        let mut seg = self.segment.lock();
        let written = self.write_locked(&mut seg, true);
        if let Err(e) = written {
            drop(seg);
            self.failed(&e);
            return Err(e);
        }
        let next = Segment::create(&self.dir, seg.number + 1, seg.last_seq + 1)?;
        *seg = next;
        let number = seg.number;
        drop(seg);
        self.recovered();
        Ok(number)
    }

    /// Flushes, syncs and stops the journal thread (which the caller then joins).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.more.notify_all();
    }
}

impl Segment {
    /// Creates segment `number` in `dir` with its header, synced, and syncs the folder.
    fn create(dir: &Path, number: u64, first: u64) -> io::Result<Segment> {
        let path = dir.join(segment_name(number));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        let mut header = Vec::new();
        line::encode(&mut header, None, &Record::Segment { first });
        let written = file
            .write_all(&header)
            .and_then(|_| file.sync_data())
            .and_then(|_| sync_dir(dir));
        if let Err(e) = written {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Segment {
            file,
            number,
            len: header.len() as u64,
            last_seq: first - 1,
            synced: true,
            last_sync: Instant::now(),
            broken: false,
        })
    }

    /// Cuts the file back to `len` after a failed write; when even that fails, the
    /// next write goes to a new segment (the replay ignores a segment's torn last line).
    fn cut_back(&mut self, len: u64) {
        self.len = len;
        if let Err(e) = self.file.set_len(len) {
            log::warn!(
                "journal: cannot cut {} back to its last whole record ({e}); going on in a new segment",
                segment_name(self.number)
            );
            self.broken = true;
        }
    }
}

/// Makes renames and new files in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(segment_number(&segment_name(42)), Some(42));
        assert_eq!(segment_number("journal-x.log"), None);
    }

    #[test]
    fn a_rotation_carries_the_numbering_on_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (j, thread) = Journal::start(dir.path(), 3, 10, FsyncPolicy::Always).unwrap();
        let rec = |i: i64| Record::Delete {
            t: "t".into(),
            id: i,
        };
        assert_eq!(j.append(&rec(1)), 10);
        assert_eq!(j.append(&rec(2)), 11);
        assert_eq!(j.rotate().unwrap(), 4);
        assert!(j.is_durable(11));
        assert_eq!(j.append(&rec(3)), 12);
        j.stop();
        thread.join().unwrap();
        let read = |n: u64| -> Vec<line::Line> {
            std::fs::read(dir.path().join(segment_name(n)))
                .unwrap()
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| line::decode(l).unwrap())
                .collect()
        };
        let old = read(3);
        assert_eq!(old[0].record, Record::Segment { first: 10 });
        assert_eq!(old[1].seq, Some(10));
        assert_eq!(old[2].seq, Some(11));
        let new = read(4);
        assert_eq!(new[0].record, Record::Segment { first: 12 });
        assert_eq!((new[1].seq, &new[1].record), (Some(12), &rec(3)));
    }
}
