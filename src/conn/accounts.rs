//! Carrying out the accounts family for a connection: run in its call runner, since a
//! login waits for password hashing (on the hasher's threads) and for the channel
//! manager to bind the connection to the user.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::auth::{backoff, Account, Auth, AuthMode, Identity};
use crate::commands::accounts::AccountCommand;
use crate::commands::channels::ChannelCommand;
use crate::commands::session::{check_name, SessionCommand};
use crate::commands::Command;
use crate::framework::Hub;
use crate::manager::outbox::{ConnId, Outbox};
use crate::protocol::push::ByeReason;
use crate::protocol::{ErrorReply, Item, Reply};

/// Failed logins (and resumes) after which a connection is closed.
const MAX_FAILURES: u32 = 5;
/// The shortest password accepted.
const MIN_PASSWORD: usize = 8;

/// What account work needs of its connection.
pub(super) struct AccountEnv {
    pub auth: Arc<Auth>,
    pub hub: Hub,
    pub id: ConnId,
    pub addr: SocketAddr,
    pub outbox: Arc<Outbox>,
    /// Failed logins on this connection.
    pub failures: Arc<AtomicU32>,
}

impl AccountEnv {
    /// Carries out `c`; the reply is the request's answer, and after too many failed
    /// logins the connection closes (`BYE unauthorized`) once it is written.
    pub fn run(self, c: AccountCommand) -> (Reply, Option<ByeReason>) {
        let reply = self.reply(c);
        let close = (self.failures.load(Ordering::Relaxed) >= MAX_FAILURES)
            .then_some(ByeReason::Unauthorized);
        (reply, close)
    }

    fn reply(&self, c: AccountCommand) -> Reply {
        if self.auth.mode == AuthMode::Off {
            return error(
                "unavailable",
                "accounts are off on this server (--auth off)".into(),
            );
        }
        let result = match c {
            AccountCommand::Login { user, password } => self.login(&user, &password),
            AccountCommand::Resume { token } => self.resume(&token),
            AccountCommand::Logout => self.logout(),
            AccountCommand::Passwd { old, new } => self.passwd(&old, &new),
            AccountCommand::UserAdd {
                user,
                password,
                role,
            } => self.user_add(&user, &password, role.as_deref().unwrap_or("user")),
            AccountCommand::UserDel { user } => self.user_del(&user),
            AccountCommand::UserRole { user, role } => self.user_role(&user, &role),
            AccountCommand::Users => Ok(self.users()),
        };
        result.unwrap_or_else(Reply::Error)
    }

    fn login(&self, user: &str, password: &str) -> Result<Reply, ErrorReply> {
        self.wait_after_failures(user);
        let account = self.auth.users.get(user);
        let ok = self
            .auth
            .hasher
            .verify(account.as_ref().map(|a| a.hash.as_str()), password);
        self.auth.login_result(user, ok);
        let Some(account) = account.filter(|_| ok) else {
            return Err(self.failed(&format!("login as '{}'", crate::protocol::args::clip(user))));
        };
        self.failures.store(0, Ordering::Relaxed);
        let (token, hash) = self.auth.sessions.open(user).map_err(unavailable)?;
        self.bind(Identity {
            user: Some(Arc::from(user)),
            role: Arc::from(account.role.as_str()),
            session: Some(hash),
        })?;
        log::info!(
            "connection {} from {}: logged in as {user}",
            self.id,
            self.addr
        );
        Ok(Reply::Record {
            key: "login",
            fields: vec![
                ("user", json!(user)),
                ("role", json!(account.role)),
                ("session", json!(token)),
            ],
        })
    }

    fn resume(&self, token: &str) -> Result<Reply, ErrorReply> {
        self.wait_after_failures("");
        let found = self.auth.sessions.find(token);
        let account = found
            .as_ref()
            .and_then(|(_, s)| self.auth.users.get(&s.user));
        let (Some((hash, session)), Some(account)) = (found, account) else {
            return Err(self.failed("resume a session"));
        };
        self.failures.store(0, Ordering::Relaxed);
        self.bind(Identity {
            user: Some(Arc::from(session.user.as_str())),
            role: Arc::from(account.role.as_str()),
            session: Some(hash),
        })?;
        let mut restored = 0;
        for target in &session.subs {
            let sub = ChannelCommand::Sub {
                target: target.clone(),
                filter: None,
                resume: None,
            };
            if self.hub.apply(self.id, sub.into()).is_ok() {
                restored += 1;
            }
        }
        log::info!(
            "connection {} from {}: resumed a session of {}",
            self.id,
            self.addr,
            session.user
        );
        Ok(Reply::Record {
            key: "session",
            fields: vec![
                ("user", json!(session.user)),
                ("role", json!(account.role)),
                ("subscriptions", json!(restored)),
            ],
        })
    }

    fn logout(&self) -> Result<Reply, ErrorReply> {
        let me = self.outbox.identity();
        let Some(user) = me.user.clone() else {
            return Err(ErrorReply::new("bad_args", "you are not logged in".into()));
        };
        self.auth.sessions.end_user(&user);
        self.rebind(&user, None)?;
        Ok(Reply::Done(None))
    }

    fn passwd(&self, old: &str, new: &str) -> Result<Reply, ErrorReply> {
        let me = self.outbox.identity();
        let Some(user) = me.user.clone() else {
            return Err(ErrorReply::new(
                "bad_args",
                "log in first: PASSWD changes your own password".into(),
            ));
        };
        check_password(new)?;
        let account = self.auth.users.get(&user);
        let ok = self
            .auth
            .hasher
            .verify(account.as_ref().map(|a| a.hash.as_str()), old);
        let Some(account) = account.filter(|_| ok) else {
            return Err(self.failed("change the password"));
        };
        let hash = self.auth.hasher.hash(new).map_err(unavailable)?;
        self.auth
            .users
            .put(&user, Account { hash, ..account })
            .map_err(unavailable)?;
        Ok(Reply::Done(None))
    }

    fn user_add(&self, user: &str, password: &str, role: &str) -> Result<Reply, ErrorReply> {
        check_name(user)?;
        check_password(password)?;
        self.known_role(role)?;
        if self.auth.users.exists(user) {
            return Err(ErrorReply::new(
                "user_exists",
                format!("there is a user '{user}' already"),
            ));
        }
        let hash = self.auth.hasher.hash(password).map_err(unavailable)?;
        let account = Account {
            hash,
            role: role.to_string(),
        };
        self.auth.users.put(user, account).map_err(unavailable)?;
        log::info!(
            "user {user} added with role {role} by connection {}",
            self.id
        );
        Ok(Reply::Done(None))
    }

    fn user_del(&self, user: &str) -> Result<Reply, ErrorReply> {
        if !self.auth.users.remove(user).map_err(unavailable)? {
            return Err(no_such_user(user));
        }
        self.auth.sessions.end_user(user);
        self.rebind(user, None)?;
        log::info!("user {user} removed by connection {}", self.id);
        Ok(Reply::Done(None))
    }

    fn user_role(&self, user: &str, role: &str) -> Result<Reply, ErrorReply> {
        self.known_role(role)?;
        let account = self
            .auth
            .users
            .get(user)
            .ok_or_else(|| no_such_user(user))?;
        let account = Account {
            role: role.to_string(),
            ..account
        };
        self.auth.users.put(user, account).map_err(unavailable)?;
        self.rebind(user, Some(role))?;
        Ok(Reply::Done(None))
    }

    fn users(&self) -> Reply {
        let items = self
            .auth
            .users
            .list()
            .into_iter()
            .map(|(user, role)| Item {
                text: format!("{user} {role}"),
                json: json!({"user": user, "role": role}),
            })
            .collect();
        Reply::List {
            key: "users",
            items,
        }
    }

    /// Makes the connection `identity`, through the manager (which owns names).
    fn bind(&self, identity: Identity) -> Result<(), ErrorReply> {
        let bind = Command::Session(SessionCommand::Bind(Box::new(identity)));
        self.hub.apply(self.id, bind).map(|_| ())
    }

    /// Every connection logged in as `user` gets `role`, or is logged out.
    fn rebind(&self, user: &str, role: Option<&str>) -> Result<(), ErrorReply> {
        let rebind = SessionCommand::Rebind {
            user: user.to_string(),
            role: role.map(str::to_string),
        };
        self.hub
            .apply(self.id, Command::Session(rebind))
            .map(|_| ())
    }

    /// Waits as long as the failures so far call for: this connection's and the user
    /// name's, whichever is longer. The coroutine waits, not its worker.
    fn wait_after_failures(&self, user: &str) {
        let mine = backoff(self.failures.load(Ordering::Relaxed));
        let theirs = self.auth.login_delay(user);
        let wait = mine.max(theirs);
        if !wait.is_zero() {
            crate::coop::nap(wait);
        }
    }

    /// Counts a failure (logged with the address, never the password); at
    /// [`MAX_FAILURES`] the connection is closed after this answer.
    fn failed(&self, what: &str) -> ErrorReply {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        log::warn!(
            "connection {} from {}: failed to {what} ({n} failures)",
            self.id,
            self.addr
        );
        ErrorReply::new("unauthorized", "wrong user name, password or token".into())
    }

    fn known_role(&self, role: &str) -> Result<(), ErrorReply> {
        if self.auth.has_role(role) {
            Ok(())
        } else {
            Err(ErrorReply::new(
                "bad_args",
                format!("no role named '{}'", crate::protocol::args::clip(role)),
            ))
        }
    }
}

fn check_password(p: &str) -> Result<(), ErrorReply> {
    if p.chars().count() < MIN_PASSWORD {
        return Err(ErrorReply::new(
            "bad_args",
            format!("a password has at least {MIN_PASSWORD} characters"),
        ));
    }
    Ok(())
}

fn no_such_user(user: &str) -> ErrorReply {
    ErrorReply::new(
        "no_such_user",
        format!("no user named '{}'", crate::protocol::args::clip(user)),
    )
}

fn unavailable(why: String) -> ErrorReply {
    ErrorReply::new("unavailable", why)
}

fn error(code: &'static str, message: String) -> Reply {
    Reply::Error(ErrorReply::new(code, message))
}
