//! One server per data folder: an exclusive `flock` on `<dir>/LOCK`, held for as long
//! as the server keeps the folder. Two servers on one folder would each delete journal
//! segments the other still needs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The lock file's name inside the data folder.
pub const LOCK_FILE: &str = "LOCK";

/// Holds the data folder's lock until dropped (or until the process ends, however it ends:
/// the kernel releases a `flock` with the last descriptor).
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

impl DataLock {
    /// Takes the lock on `dir` and writes this process's id into the lock file. `Err`
    /// says why, naming the folder and, when another server holds it, that server's pid.
    pub fn acquire(dir: &Path) -> Result<DataLock, String> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(format!("cannot lock {}: {err}", path.display()));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::from("another process"),
                pid => format!("another server (pid {pid})"),
            };
            return Err(format!(
                "the data folder {} is in use by {holder}; stop it, or give this server its own --data-dir",
                dir.display()
            ));
        }
        let pid = std::process::id().to_string();
        let written = file
            .set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()));
        if let Err(e) = written {
            // The lock is what matters; the pid is only for the message above.
            log::warn!("cannot write the pid into {}: {e}", path.display());
        }
        Ok(DataLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_folder_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataLock::acquire(dir.path()).unwrap();
        let err = DataLock::acquire(dir.path()).unwrap_err();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        DataLock::acquire(dir.path()).unwrap();
    }
}
