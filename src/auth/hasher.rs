//! Password hashing off the connection workers: argon2id is memory-hard on purpose (a
//! login costs tens of milliseconds), so it runs on threads of its own and a
//! connection waits for it without blocking its worker.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};

/// The cost of one hash: memory in KiB and passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub passes: u32,
}

impl Default for HashCost {
    /// About 20–40 ms a hash on a current core (argon2's own default).
    fn default() -> Self {
        HashCost {
            memory_kib: Params::DEFAULT_M_COST,
            passes: Params::DEFAULT_T_COST,
        }
    }
}

enum Job {
    Hash(String, may::sync::mpsc::Sender<Result<String, String>>),
    Verify(String, String, may::sync::mpsc::Sender<bool>),
}

/// Hashes and verifies passwords on its own threads.
pub struct Hasher {
    jobs: crossbeam_channel::Sender<Job>,
}

impl Hasher {
    /// Starts `threads` hashing threads.
    pub fn start(threads: usize, cost: HashCost) -> Hasher {
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-hasher-{i}"))
                .spawn(move || {
                    let argon = argon2(cost);
                    // Verified for unknown users, so that a wrong user name takes as
                    // long as a wrong password: the hash of 32 random bytes nobody
                    // knows, made the first time it is needed (a hash costs tens of
                    // MiB for a moment: no server pays it at start).
                    let mut dummy = String::new();
                    for job in rx {
                        match job {
                            Job::Hash(password, done) => {
                                let salt = SaltString::generate(&mut OsRng);
                                let hash = argon
                                    .hash_password(password.as_bytes(), &salt)
                                    .map(|h| h.to_string())
                                    .map_err(|e| e.to_string());
                                let _ = done.send(hash);
                            }
                            Job::Verify(hash, password, done) => {
                                if hash.is_empty() && dummy.is_empty() {
                                    let mut secret = [0u8; 32];
                                    let _ = getrandom::getrandom(&mut secret);
                                    let salt = SaltString::generate(&mut OsRng);
                                    dummy = argon
                                        .hash_password(&secret, &salt)
                                        .map(|h| h.to_string())
                                        .unwrap_or_default();
                                }
                                let hash = if hash.is_empty() { &dummy } else { &hash };
                                let ok = match PasswordHash::new(hash) {
                                    // Constant time in the password (argon2's verify).
                                    Ok(h) => argon.verify_password(password.as_bytes(), &h).is_ok(),
                                    Err(_) => false,
                                };
                                let _ = done.send(ok);
                            }
                        }
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start a password-hashing thread: {e}");
            }
        }
        Hasher { jobs }
    }

    /// A salted argon2id hash of `password` (a PHC string).
    pub fn hash(&self, password: &str) -> Result<String, String> {
        let (tx, rx) = may::sync::mpsc::channel();
        self.jobs
            .send(Job::Hash(password.to_string(), tx))
            .map_err(|_| "the password hasher is gone".to_string())?;
        rx.recv()
            .map_err(|_| "the password hasher is gone".to_string())?
    }

    /// Whether `password` matches `hash`; `None` as the hash checks against a hash
    /// nothing matches, taking as long.
    pub fn verify(&self, hash: Option<&str>, password: &str) -> bool {
        let (tx, rx) = may::sync::mpsc::channel();
        let job = Job::Verify(hash.unwrap_or("").to_string(), password.to_string(), tx);
        if self.jobs.send(job).is_err() {
            return false;
        }
        rx.recv().unwrap_or(false) && hash.is_some()
    }
}

fn argon2(cost: HashCost) -> Argon2<'static> {
    let params = Params::new(cost.memory_kib, cost.passes, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_argon2id_and_verify() {
        let h = Hasher::start(
            1,
            HashCost {
                memory_kib: 1024,
                passes: 1,
            },
        );
        let a = h.hash("secret").unwrap();
        let b = h.hash("secret").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(!a.contains("secret"));
        assert!(h.verify(Some(&a), "secret"));
        assert!(!h.verify(Some(&a), "Secret"));
        assert!(!h.verify(None, "secret"));
        assert!(!h.verify(Some("not a hash"), "secret"));
    }
}
