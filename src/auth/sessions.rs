//! Sessions: `LOGIN` gives a random token (256 bits); only its SHA-256 hash is kept, in
//! `sessions.json` in the data folder, with the user, when it expires, and the
//! subscriptions to restore on `RESUME`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::disk::{read_json, Disk};

/// What a session keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Session {
    pub user: String,
    /// Seconds since the Unix epoch.
    pub expires: u64,
    /// Channels and patterns the session was subscribed to.
    #[serde(default)]
    pub subs: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    /// By the hash of the token.
    sessions: HashMap<String, Session>,
}

/// Every live session.
pub struct Sessions {
    path: Option<PathBuf>,
    disk: Disk,
    ttl: Duration,
    by_hash: Mutex<HashMap<String, Session>>,
}

/// The hash a token is kept as.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sessions {
    /// Loads `sessions.json` from `dir` (expired ones dropped); `None` keeps them in
    /// memory only.
    pub fn load(dir: Option<&Path>, ttl: Duration, disk: Disk) -> Result<Sessions, String> {
        let path = dir.map(|d| d.join("sessions.json"));
        let mut by_hash = read_json::<File>(path.as_deref())?.sessions;
        let t = now();
        by_hash.retain(|_, s| s.expires > t);
        Ok(Sessions {
            path,
            disk,
            ttl,
            by_hash: Mutex::new(by_hash),
        })
    }

    /// Opens a session for `user`; returns its token (given once, never stored) and
    /// the token's hash.
    pub fn open(&self, user: &str) -> Result<(String, String), String> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
        let token = hex(&bytes);
        let hash = token_hash(&token);
        let session = Session {
            user: user.to_string(),
            expires: now() + self.ttl.as_secs(),
            subs: Vec::new(),
        };
        let mut all = self.by_hash.lock();
        all.insert(hash.clone(), session);
        self.save(&all);
        Ok((token, hash))
    }

    /// The live session a token opens, and the token's hash.
    pub fn find(&self, token: &str) -> Option<(String, Session)> {
        let hash = token_hash(token);
        let all = self.by_hash.lock();
        let s = all.get(&hash).filter(|s| s.expires > now())?.clone();
        Some((hash, s))
    }

    /// Ends every session of `user` (`LOGOUT` ends the session everywhere).
    pub fn end_user(&self, user: &str) {
        let mut all = self.by_hash.lock();
        all.retain(|_, s| s.user != user);
        self.save(&all);
    }

    /// Records what session `hash` is subscribed to, for its next `RESUME`.
    pub fn set_subs(&self, hash: &str, subs: Vec<String>) {
        let mut all = self.by_hash.lock();
        match all.get_mut(hash) {
            Some(s) if s.subs != subs => s.subs = subs,
            _ => return,
        }
        self.save(&all);
    }

    /// Writes the sessions on the disk thread, in the order of the changes; a failure
    /// is logged (the sessions live on in memory).
    fn save(&self, all: &HashMap<String, Session>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let t = now();
        let file = File {
            sessions: all
                .iter()
                .filter(|(_, s)| s.expires > t)
                .map(|(h, s)| (h.clone(), s.clone()))
                .collect(),
        };
        self.disk.spawn(move || {
            let written =
                serde_json::to_vec_pretty(&file)
                    .map_err(io_error)
                    .and_then(|mut text| {
                        text.push(b'\n');
                        crate::store::persist::write_private(&path, &text)
                    });
            if let Err(e) = written {
                log::warn!("cannot save {}: {e}", path.display());
            }
        });
    }

    /// Waits until every change so far is on disk (tests, shutdown).
    pub fn flush(&self) {
        self.disk.run(|| ());
    }
}

fn io_error(e: serde_json::Error) -> std::io::Error {
    std::io::Error::other(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_kept_as_hashes_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::start();
        let s = Sessions::load(Some(dir.path()), Duration::from_secs(60), disk.clone()).unwrap();
        let (t1, h1) = s.open("ann").unwrap();
        let (t2, _) = s.open("ann").unwrap();
        assert_ne!(t1, t2);
        assert_eq!(t1.len(), 64, "256 bits");
        s.flush();
        let file = std::fs::read_to_string(dir.path().join("sessions.json")).unwrap();
        assert!(!file.contains(&t1) && file.contains(&h1));
        s.set_subs(&h1, vec!["news".into()]);
        s.flush();
        let s = Sessions::load(Some(dir.path()), Duration::from_secs(60), disk).unwrap();
        let (hash, found) = s.find(&t1).unwrap();
        assert_eq!(
            (hash, found.user.as_str(), found.subs.clone()),
            (h1, "ann", vec!["news".to_string()])
        );
        assert!(s.find("0000").is_none());
        s.end_user("ann");
        assert!(s.find(&t1).is_none() && s.find(&t2).is_none());
    }
}
