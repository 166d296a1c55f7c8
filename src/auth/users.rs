//! Accounts: user name → password hash and role, in `users.json` in the data folder
//! (readable by the server's user only; never a table, so `SELECT` cannot read it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::disk::{read_json, Disk};

/// One account.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Account {
    /// A salted argon2id hash (PHC string); never the password.
    pub hash: String,
    pub role: String,
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    users: BTreeMap<String, Account>,
}

/// The accounts, saved on every change.
pub struct Users {
    path: Option<PathBuf>,
    accounts: Mutex<BTreeMap<String, Account>>,
    disk: Disk,
}

impl Users {
    /// Loads `users.json` from `dir` (none yet: no accounts); `None` keeps them in
    /// memory only.
    pub fn load(dir: Option<&Path>, disk: Disk) -> Result<Users, String> {
        let path = dir.map(|d| d.join("users.json"));
        let accounts = read_json::<File>(path.as_deref())?.users;
        Ok(Users {
            path,
            accounts: Mutex::new(accounts),
            disk,
        })
    }

    pub fn get(&self, user: &str) -> Option<Account> {
        self.accounts.lock().get(user).cloned()
    }

    pub fn exists(&self, user: &str) -> bool {
        self.accounts.lock().contains_key(user)
    }

    /// Adds or replaces an account, and saves.
    pub fn put(&self, user: &str, account: Account) -> Result<(), String> {
        let mut accounts = self.accounts.lock();
        let old = accounts.insert(user.to_string(), account);
        if let Err(e) = self.save(&accounts) {
            match old {
                Some(a) => accounts.insert(user.to_string(), a),
                None => accounts.remove(user),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Removes an account, and saves; `Ok(false)` when there was none.
    pub fn remove(&self, user: &str) -> Result<bool, String> {
        let mut accounts = self.accounts.lock();
        let Some(old) = accounts.remove(user) else {
            return Ok(false);
        };
        if let Err(e) = self.save(&accounts) {
            accounts.insert(user.to_string(), old);
            return Err(e);
        }
        Ok(true)
    }

    /// Every user and its role, by name.
    pub fn list(&self) -> Vec<(String, String)> {
        self.accounts
            .lock()
            .iter()
            .map(|(u, a)| (u.clone(), a.role.clone()))
            .collect()
    }

    /// Writes the accounts on the disk thread and waits for it (an account change is
    /// answered only once it is on disk).
    fn save(&self, accounts: &BTreeMap<String, Account>) -> Result<(), String> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let file = File {
            users: accounts.clone(),
        };
        let mut text = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        text.push(b'\n');
        self.disk
            .run(move || {
                crate::store::persist::write_private(&path, &text)
                    .map_err(|e| format!("cannot save {}: {e}", path.display()))
            })
            .unwrap_or_else(|| Err("the thread that writes account files is gone".into()))
    }
}
