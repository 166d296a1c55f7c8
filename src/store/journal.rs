//! The journal: an append-only log of table changes since the last snapshot, one JSON
//! record per line, written by its own OS thread (group commit).
//!
//! Connections append records into a shared buffer (a short mutex hold, no I/O). The
//! journal thread writes the buffer out and, by the fsync policy, syncs it. A
//! connection does not write its replies until the journal holds its last record
//! (written to the OS; under `always`, synced); the journal thread wakes it through its
//! outbox when it does. So no coroutine ever waits on the disk on a worker thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::conn::outbox::Outbox;

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

/// One change, as a journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Record {
    Define {
        t: String,
        columns: Vec<String>,
    },
    Undefine {
        t: String,
    },
    /// The whole row, id first.
    Insert {
        t: String,
        row: Vec<Json>,
    },
    /// The whole row after the change.
    Update {
        t: String,
        row: Vec<Json>,
    },
    Delete {
        t: String,
        id: i64,
    },
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
    synced: bool,
    last_sync: Instant,
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
    waiters: Mutex<Vec<(u64, Arc<Outbox>)>>,
    stop: AtomicBool,
}

impl Journal {
    /// Opens segment `number` (new) in `dir` and starts the journal thread.
    pub fn start(
        dir: &Path,
        number: u64,
        policy: FsyncPolicy,
    ) -> io::Result<(Arc<Journal>, std::thread::JoinHandle<()>)> {
        let file = create_segment(dir, number)?;
        let j = Arc::new(Journal {
            dir: dir.to_path_buf(),
            policy,
            buf: Mutex::new(Buffer {
                data: Vec::new(),
                next_seq: 1,
            }),
            more: Condvar::new(),
            segment: Mutex::new(Segment {
                file,
                number,
                synced: true,
                last_sync: Instant::now(),
            }),
            durable: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
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
        // Serializing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut b.data, record);
        b.data.push(b'\n');
        let seq = b.next_seq;
        b.next_seq += 1;
        drop(b);
        if wake {
            self.more.notify_one();
        }
        seq
    }

    /// Whether `seq` is durable by this journal's policy.
    pub fn is_durable(&self, seq: u64) -> bool {
        self.durable.load(Ordering::Acquire) >= seq
    }

    /// True if `seq` is durable; otherwise arranges for `outbox` to be woken when it
    /// is, and returns false.
    pub fn durable_or_wake(&self, seq: u64, outbox: &Arc<Outbox>) -> bool {
        let mut w = self.waiters.lock();
        if self.is_durable(seq) {
            return true;
        }
        w.push((seq, outbox.clone()));
        false
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
            if let Err(e) = self.write_pending(false) {
                // Keep what could not be written and try again: acknowledgements under
                // `always` wait, they are never given for data not on disk.
                log::error!("journal: cannot write {}: {e}", self.dir.display());
                std::thread::sleep(Duration::from_millis(500));
            }
            if stopping {
                let _ = self.write_pending(true);
                return;
            }
        }
    }

    /// Writes what is buffered to the current segment and syncs as the policy says
    /// (always when `force_sync`).
    fn write_pending(&self, force_sync: bool) -> io::Result<()> {
        let mut seg = self.segment.lock();
        let (data, last) = {
            let mut b = self.buf.lock();
            (std::mem::take(&mut b.data), b.next_seq - 1)
        };
        if !data.is_empty() {
            if let Err(e) = seg.file.write_all(&data) {
                // Put it back in front of anything appended since.
                let mut b = self.buf.lock();
                let later = std::mem::replace(&mut b.data, data);
                b.data.extend_from_slice(&later);
                return Err(e);
            }
            seg.synced = false;
        }
        let sync_now = !seg.synced
            && (force_sync
                || self.policy == FsyncPolicy::Always
                || (self.policy == FsyncPolicy::EverySec
                    && seg.last_sync.elapsed() >= Duration::from_secs(1)));
        if sync_now {
            seg.file.sync_data()?;
            seg.synced = true;
            seg.last_sync = Instant::now();
        }
        if self.policy != FsyncPolicy::Always || seg.synced {
            self.mark_durable(last);
        }
        Ok(())
    }

    fn mark_durable(&self, seq: u64) {
        if self.durable.fetch_max(seq, Ordering::AcqRel) >= seq {
            return;
        }
        let mut w = self.waiters.lock();
        w.retain(|(s, outbox)| {
            if *s <= seq {
                outbox.wake();
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
    /// new segment's number: every record before it is in older segments.
    pub fn rotate(&self) -> io::Result<u64> {
        let mut seg = self.segment.lock();
        let (data, last) = {
            let mut b = self.buf.lock();
            (std::mem::take(&mut b.data), b.next_seq - 1)
        };
        seg.file.write_all(&data)?;
        seg.file.sync_data()?;
        let number = seg.number + 1;
        seg.file = create_segment(&self.dir, number)?;
        seg.number = number;
        seg.synced = true;
        drop(seg);
        self.mark_durable(last);
        Ok(number)
    }

    /// Flushes, syncs and stops the journal thread (which the caller then joins).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.more.notify_all();
    }
}

fn create_segment(dir: &Path, number: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(segment_name(number)))?;
    sync_dir(dir)?;
    Ok(f)
}

/// Makes renames and new files in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_one_json_line_each() {
        let r = Record::Insert {
            t: "users".into(),
            row: vec![Json::from(1), Json::from("a\nb"), Json::Null],
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"insert","t":"users","row":[1,"a\nb",null]}"#);
        assert_eq!(serde_json::from_str::<Record>(&s).unwrap(), r);
        assert_eq!(segment_number(&segment_name(42)), Some(42));
        assert_eq!(segment_number("journal-x.log"), None);
    }
}
