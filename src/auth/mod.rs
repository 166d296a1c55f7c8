//! Who a client is and what it may do: accounts (argon2id hashes), sessions (tokens
//! kept as hashes), roles with rights over channels, tables, actions and services,
//! and the `--auth` mode. Files live in the data folder beside the tables, never in a
//! table. It knows nothing of connections or commands: the layers above ask it.

mod disk;
mod hasher;
pub mod roles;
mod sessions;
mod users;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

pub use hasher::{HashCost, Hasher};
pub use roles::{AuthMode, Right, Role, Roles};
pub use sessions::{token_hash, Session, Sessions};
pub use users::{Account, Users};

/// The auth floor's own settings (the assembly fills them in from its `Config`).
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// Roles beyond (or over) the built-ins, in TOML.
    pub acl: Option<String>,
    /// A file to read them from instead (`--acl FILE`), read again on
    /// [`crate::ServerHandle::reload_acl`] (`SIGHUP`).
    pub acl_file: Option<std::path::PathBuf>,
    /// How long a session lasts.
    pub session_ttl: Duration,
    pub hash_cost: HashCost,
    /// Roles the embedding program defines ([`crate::App::role`]), over the built-ins;
    /// an ACL file's roles go over these.
    pub roles: Vec<Role>,
    /// Creates or resets the user `admin` at start; `None` reads
    /// `LEVIATHAN_ADMIN_PASSWORD` from the environment.
    pub admin_password: Option<String>,
}

/// Who a connection is: a user (with its session) or anonymous, and its role.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub user: Option<Arc<str>>,
    pub role: Arc<str>,
    /// The hash of the session token it logged in or resumed with.
    pub session: Option<String>,
}

impl Identity {
    /// An anonymous client.
    pub fn guest() -> Identity {
        Identity {
            user: None,
            role: Arc::from("guest"),
            session: None,
        }
    }
}

/// Failed logins per user name: each failure makes the next attempt wait longer.
#[derive(Default)]
struct Failures {
    by_user: HashMap<String, (u32, Instant)>,
}

/// Accounts, sessions, roles and the mode, shared by every layer that checks.
pub struct Auth {
    pub mode: AuthMode,
    /// The embedding program's roles, kept for reloads.
    program_roles: Vec<Role>,
    roles: RwLock<Arc<Roles>>,
    /// Grows at every ACL reload, so those who cache a role know to look again.
    version: AtomicU64,
    pub users: Users,
    pub sessions: Sessions,
    pub hasher: Hasher,
    failures: Mutex<Failures>,
}

impl Auth {
    /// Loads the accounts and sessions from `dir` (`None`: in memory only) and the
    /// roles; `LEVIATHAN_ADMIN_PASSWORD` (`admin_password`) creates or resets `admin`.
    pub fn open(
        settings: &AuthSettings,
        dir: Option<&Path>,
        admin_password: Option<&str>,
    ) -> Result<Auth, String> {
        let acl = match (&settings.acl_file, &settings.acl) {
            (Some(path), _) => Some(read_acl(path)?),
            (None, text) => text.clone(),
        };
        let roles = roles_of(settings.mode, &settings.roles, acl.as_deref())?;
        let ttl = if settings.session_ttl.is_zero() {
            Duration::from_secs(24 * 3600)
        } else {
            settings.session_ttl
        };
        let disk = disk::Disk::start();
        let auth = Auth {
            mode: settings.mode,
            program_roles: settings.roles.clone(),
            roles: RwLock::new(Arc::new(roles)),
            version: AtomicU64::new(1),
            users: Users::load(dir, disk.clone())?,
            sessions: Sessions::load(dir, ttl, disk)?,
            hasher: Hasher::start(2, settings.hash_cost),
            failures: Mutex::default(),
        };
        if let Some(password) = admin_password.filter(|p| !p.is_empty()) {
            let hash = auth.hasher.hash(password)?;
            let admin = Account {
                hash,
                role: "admin".into(),
            };
            auth.users.put("admin", admin)?;
            log::info!("user admin created or reset from LEVIATHAN_ADMIN_PASSWORD");
        }
        Ok(auth)
    }

    /// The role `name` as it is now (an unknown role grants nothing).
    pub fn role(&self, name: &str) -> Arc<Role> {
        self.roles
            .read()
            .get(name)
            .unwrap_or_else(|| Arc::new(Role::new(name, &[])))
    }

    /// Whether `role` exists.
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.read().get(name).is_some()
    }

    /// Bumped at every reload of the roles.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Replaces the roles (an ACL file read again); connections see it at their next
    /// command. Returns the roles that were in force.
    pub fn reload_roles(&self, roles: Roles) -> Arc<Roles> {
        let old = std::mem::replace(&mut *self.roles.write(), Arc::new(roles));
        self.version.fetch_add(1, Ordering::AcqRel);
        old
    }

    /// The mode's built-in roles with those of `acl` (TOML) over them.
    pub fn roles_from(&self, acl: Option<&str>) -> Result<Roles, String> {
        roles_of(self.mode, &self.program_roles, acl)
    }

    /// Whether `identity` may do `right` on `object`. Under `--auth off`, anything.
    pub fn allows(&self, identity: &Identity, right: Right, object: &str) -> bool {
        self.mode == AuthMode::Off || self.role(&identity.role).allows(right, object)
    }

    /// How long to make the next login for `user` wait, after its failures.
    pub fn login_delay(&self, user: &str) -> Duration {
        let f = self.failures.lock();
        match f.by_user.get(user) {
            // Forgotten after ten quiet minutes.
            Some((n, at)) if at.elapsed() < Duration::from_secs(600) => backoff(*n),
            _ => Duration::ZERO,
        }
    }

    /// Records a failed login for `user` (or its success, which forgets the failures).
    pub fn login_result(&self, user: &str, ok: bool) {
        let mut f = self.failures.lock();
        if ok {
            f.by_user.remove(user);
        } else {
            let e = f
                .by_user
                .entry(user.to_string())
                .or_insert((0, Instant::now()));
            e.0 += 1;
            e.1 = Instant::now();
            if f.by_user.len() > 100_000 {
                // Bounded: guessing at many names cannot grow this without end.
                f.by_user
                    .retain(|_, (_, at)| at.elapsed() < Duration::from_secs(600));
            }
        }
    }
}

/// The built-ins for `mode`, the program's roles over them, an ACL's over those.
fn roles_of(mode: AuthMode, program: &[Role], acl: Option<&str>) -> Result<Roles, String> {
    let mut roles = Roles::builtin(mode);
    for r in program {
        roles.insert(r.clone());
    }
    if let Some(text) = acl {
        for r in Roles::from_toml(mode, text)?.all() {
            roles.insert(r);
        }
    }
    Ok(roles)
}

/// An ACL file's text.
pub fn read_acl(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the ACL file {}: {e}", path.display()))
}

/// The wait after `n` failures: 250 ms doubling, at most 8 s.
pub fn backoff(n: u32) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(250 << (n - 1).min(5))
}
