//! Storage faults against the real binary: a full disk, a folder that turns read-only,
//! and files damaged while the server was down. Whatever happens, every acknowledged
//! write is there after `kill -9` and a restart, and damage stops the start instead of
//! being snapshotted over.

mod common;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, ServerProcess};

/// Skips a test that needs root (to mount a small tmpfs, or to run the server as
/// another user), saying so; under CI a missing capability fails the test instead.
fn root_or_skip(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let msg = format!("{what} needs root (run the tests as root, as CI does)");
    assert!(std::env::var("CI").is_err(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    false
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        if !root_or_skip("the full-disk test") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        fs::create_dir(&path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        if !out.status.success() {
            let msg = format!(
                "cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            assert!(std::env::var("CI").is_err(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        Some(SmallDisk { _dir: dir, path })
    }

    /// Fills the disk to the last byte; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        let mut chunk = block.len();
        // Bounded: a 64 MiB disk fills in about a thousand writes.
        for _ in 0..100_000 {
            match f.write(&block[..chunk]) {
                Ok(_) => {}
                Err(_) if chunk > 1 => chunk /= 2,
                Err(_) => break,
            }
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Connections inserting rows as fast as they are answered, recording every
/// acknowledged id and every refusal.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    refusals: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    fn start(addr: std::net::SocketAddr, count: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..count)
            .map(|w| {
                let (stop, acked, refusals) = (stop.clone(), acked.clone(), refusals.clone());
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    let deadline = Instant::now() + Duration::from_secs(120);
                    for batch in 0..1_000_000u64 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            return;
                        }
                        let mut lines = String::new();
                        for i in 0..20 {
                            lines.push_str(&format!(
                                "INSERT t w={w} payload=row-{batch}-{i}-{}\n",
                                "x".repeat(100)
                            ));
                        }
                        c.send_raw(lines.as_bytes());
                        let mut refused = false;
                        for _ in 0..20 {
                            let Some(l) = c.line_or_eof() else { return };
                            if let Some(id) = l.strip_prefix("+OK ") {
                                acked.lock().unwrap().push(id.parse().unwrap());
                            } else {
                                refused = true;
                                refusals.lock().unwrap().push(l);
                            }
                        }
                        if refused {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                })
            })
            .collect();
        Writers {
            stop,
            acked,
            refusals,
            threads,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn refusals(&self) -> usize {
        self.refusals.lock().unwrap().len()
    }

    /// Waits (bounded) until `ready` holds.
    fn wait_until(&self, what: &str, limit: Duration, ready: impl Fn(&Writers) -> bool) {
        let deadline = Instant::now() + limit;
        while !ready(self) {
            assert!(Instant::now() < deadline, "{what} within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self) -> (Vec<u64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let acked = self.acked.lock().unwrap().clone();
        let refusals = self.refusals.lock().unwrap().clone();
        (acked, refusals)
    }
}

/// Restarts a server on `dir` and returns the acknowledged ids it does not have.
fn lost_after_restart(dir: &Path, acked: &[u64], uid: Option<u32>) -> Vec<u64> {
    let s = ServerProcess::start_as(dir, &[], uid).expect("the server starts again");
    let mut c = Client::connect(s.addr);
    let (rows, _) = c.request("SELECT t");
    let present: HashSet<u64> = rows
        .iter()
        .filter_map(|r| r.strip_prefix("* id=")?.split(' ').next()?.parse().ok())
        .collect();
    acked
        .iter()
        .filter(|id| !present.contains(id))
        .copied()
        .collect()
}

fn full_disk(fsync: &str) {
    let Some(disk) = SmallDisk::mount(24) else {
        return;
    };
    let s = ServerProcess::start(&disk.path, &["--fsync", fsync, "--snapshot-secs", "0"])
        .expect("starts on the small disk");
    let mut admin = Client::connect(s.addr);
    admin.ok("DEFINE t w:int payload:str");
    let writers = Writers::start(s.addr, 3);
    writers.wait_until("writes flow", Duration::from_secs(20), |w| w.acked() > 500);

    let filler = disk.fill();
    let full_at = writers.acked();
    writers.wait_until(
        "writers are told the disk is full",
        Duration::from_secs(10),
        |w| w.refusals() > 0,
    );
    let refusal = writers.refusals.lock().unwrap()[0].clone();
    assert!(
        refusal.starts_with("-ERR unavailable ") && refusal.contains("No space left"),
        "{refusal}"
    );
    // A SAVE in the outage fails and takes nothing with it.
    let save = admin.ok("SAVE");
    assert!(save.starts_with("-ERR "), "{save}");
    assert!(admin.ok("COUNT t").starts_with("+OK "), "reads go on");
    // Channels are saved too: creating one is refused alike.
    let create = admin.ok("CREATE during.outage");
    assert!(create.starts_with("-ERR unavailable "), "{create}");

    fs::remove_file(filler).unwrap();
    let freed_at = writers.acked();
    writers.wait_until(
        "writes resume by themselves",
        Duration::from_secs(20),
        |w| w.acked() > freed_at + 2000,
    );
    let refused = writers.refusals();
    eprintln!(
        "acked before the disk filled {full_at}, when it was freed {freed_at}, refused {refused}"
    );
    assert!(admin.ok("SAVE").starts_with("+OK saved"));
    // More writes after the save, only in the journal.
    let after_save = writers.acked();
    writers.wait_until("writes go on", Duration::from_secs(20), |w| {
        w.acked() > after_save + 500
    });
    drop(s); // kill -9 mid-stream
    assert_eq!(
        writers.refusals(),
        refused,
        "no refusals once the disk has room"
    );
    let (acked, refusals) = writers.finish();
    let lost = lost_after_restart(&disk.path, &acked, None);
    eprintln!(
        "full disk, --fsync {fsync}: {} acknowledged, {} refused, {} lost",
        acked.len(),
        refusals.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged rows lost: {:?}",
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn a_full_disk_refuses_writes_loses_nothing_and_recovers_under_fsync_always() {
    full_disk("always");
}

#[test]
fn a_full_disk_refuses_writes_loses_nothing_and_recovers_under_fsync_everysec() {
    full_disk("everysec");
}

/// A folder that turns read-only (no new files: segments, snapshots) while writes go
/// on, with a `SAVE` in the outage, then `kill -9`.
#[test]
fn a_read_only_folder_fails_save_but_loses_no_acknowledged_write() {
    if !root_or_skip("the read-only folder test (it runs the server as nobody)") {
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    for p in [dir.path(), data.as_path()] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let s = ServerProcess::start_as(dir.path(), &["--fsync", "always"], Some(NOBODY))
        .expect("starts as nobody");
    let mut admin = Client::connect(s.addr);
    admin.ok("DEFINE t w:int payload:str");
    let writers = Writers::start(s.addr, 2);
    writers.wait_until("writes flow", Duration::from_secs(20), |w| w.acked() > 500);

    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&data, fs::Permissions::from_mode(0o555)).unwrap();
    let save = admin.ok("SAVE");
    assert!(save.starts_with("-ERR save_failed"), "{save}");
    let during = writers.acked();
    writers.wait_until(
        "writes go on into the open segment",
        Duration::from_secs(20),
        |w| w.acked() > during + 500,
    );
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(admin.ok("SAVE").starts_with("+OK saved"));
    let after = writers.acked();
    writers.wait_until("writes go on", Duration::from_secs(20), |w| {
        w.acked() > after + 500
    });
    drop(s);
    let (acked, refusals) = writers.finish();
    assert!(
        refusals.is_empty(),
        "{:?}",
        &refusals[..refusals.len().min(3)]
    );
    let lost = lost_after_restart(dir.path(), &acked, Some(NOBODY));
    eprintln!(
        "read-only folder: {} acknowledged, {} lost",
        acked.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged rows lost: {:?}",
        &lost[..lost.len().min(10)]
    );
}
