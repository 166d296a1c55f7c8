//! Accounts and sessions: `LOGIN`, `LOGOUT`, `PASSWD`, `RESUME`, and for admins `USER
//! ADD|DEL|ROLE` and `USERS`. Parsed here; carried out by the connection (password
//! hashing runs off its worker), see `conn/accounts.rs`.

use super::{ok, Command, CommandSpec};

/// The accounts family.
#[derive(Clone, PartialEq)]
pub enum AccountCommand {
    Login {
        user: String,
        password: String,
    },
    Logout,
    Passwd {
        old: String,
        new: String,
    },
    Resume {
        token: String,
    },
    UserAdd {
        user: String,
        password: String,
        role: Option<String>,
    },
    UserDel {
        user: String,
    },
    UserRole {
        user: String,
        role: String,
    },
    Users,
}

/// Passwords and tokens never show, not even in a debug log.
impl std::fmt::Debug for AccountCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountCommand::Login { user, .. } => write!(f, "Login {{ user: {user:?}, .. }}"),
            AccountCommand::Logout => write!(f, "Logout"),
            AccountCommand::Passwd { .. } => write!(f, "Passwd {{ .. }}"),
            AccountCommand::Resume { .. } => write!(f, "Resume {{ .. }}"),
            AccountCommand::UserAdd { user, role, .. } => {
                write!(f, "UserAdd {{ user: {user:?}, role: {role:?}, .. }}")
            }
            AccountCommand::UserDel { user } => write!(f, "UserDel {{ user: {user:?} }}"),
            AccountCommand::UserRole { user, role } => {
                write!(f, "UserRole {{ user: {user:?}, role: {role:?} }}")
            }
            AccountCommand::Users => write!(f, "Users"),
        }
    }
}

impl From<AccountCommand> for Command {
    fn from(c: AccountCommand) -> Command {
        Command::Account(Box::new(c))
    }
}

impl AccountCommand {
    /// Whether only admins may send it.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            AccountCommand::UserAdd { .. }
                | AccountCommand::UserDel { .. }
                | AccountCommand::UserRole { .. }
                | AccountCommand::Users
        )
    }
}

pub static SPECS: &[CommandSpec] = &[
    CommandSpec {
        name: "LOGIN",
        usage: "LOGIN <user> <password>",
        json: r#"{"op":"login","user":"ann","password":"..."}"#,
        summary: "log in; answered +OK user=<user> role=<role> session=<token> (RESUME <token> on another connection)",
        parse_text: |mut a| {
            let user = a.required("user")?.to_string();
            let password = a.required("password")?.to_string();
            a.finish()?;
            ok(AccountCommand::Login { user, password })
        },
        parse_json: |mut a| {
            let user = a.required_str("user")?;
            let password = a.required_str("password")?;
            a.finish()?;
            ok(AccountCommand::Login { user, password })
        },
    },
    CommandSpec {
        name: "LOGOUT",
        usage: "LOGOUT",
        json: r#"{"op":"logout"}"#,
        summary: "log out, and end your session everywhere",
        parse_text: |a| a.finish().map(|_| AccountCommand::Logout.into()),
        parse_json: |a| a.finish().map(|_| AccountCommand::Logout.into()),
    },
    CommandSpec {
        name: "PASSWD",
        usage: "PASSWD <old password> <new password>",
        json: r#"{"op":"passwd","old":"...","new":"..."}"#,
        summary: "change your password (at least 8 characters)",
        parse_text: |mut a| {
            let old = a.required("old password")?.to_string();
            let new = a.required("new password")?.to_string();
            a.finish()?;
            ok(AccountCommand::Passwd { old, new })
        },
        parse_json: |mut a| {
            let old = a.required_str("old")?;
            let new = a.required_str("new")?;
            a.finish()?;
            ok(AccountCommand::Passwd { old, new })
        },
    },
    CommandSpec {
        name: "RESUME",
        usage: "RESUME <token>",
        json: r#"{"op":"resume","token":"..."}"#,
        summary: "take up a session from its LOGIN token: user, name and subscriptions",
        parse_text: |mut a| {
            let token = a.required("token")?.to_string();
            a.finish()?;
            ok(AccountCommand::Resume { token })
        },
        parse_json: |mut a| {
            let token = a.required_str("token")?;
            a.finish()?;
            ok(AccountCommand::Resume { token })
        },
    },
    CommandSpec {
        name: "USER",
        usage: "USER ADD <user> <password> [<role>] | USER DEL <user> | USER ROLE <user> <role>",
        json: r#"{"op":"user","action":"add","user":"ann","password":"...","role":"user"}"#,
        summary: "admins: add or remove a user, or change a user's role",
        parse_text: |mut a| {
            let action = a.required("ADD, DEL or ROLE")?.to_ascii_uppercase();
            let user = a.required("user")?.to_string();
            let c = match action.as_str() {
                "ADD" => {
                    let password = a.required("password")?.to_string();
                    let role = a.next_word().map(str::to_string);
                    AccountCommand::UserAdd {
                        user,
                        password,
                        role,
                    }
                }
                "DEL" => AccountCommand::UserDel { user },
                "ROLE" => {
                    let role = a.required("role")?.to_string();
                    AccountCommand::UserRole { user, role }
                }
                other => return Err(a.error(format!("'{other}': use ADD, DEL or ROLE"))),
            };
            a.finish()?;
            ok(c)
        },
        parse_json: |mut a| {
            let action = a.required_str("action")?.to_ascii_lowercase();
            let user = a.required_str("user")?;
            let c = match action.as_str() {
                "add" => {
                    let password = a.required_str("password")?;
                    let role = a.optional_str("role")?;
                    AccountCommand::UserAdd {
                        user,
                        password,
                        role,
                    }
                }
                "del" => AccountCommand::UserDel { user },
                "role" => {
                    let role = a.required_str("role")?;
                    AccountCommand::UserRole { user, role }
                }
                other => return Err(a.error(format!("'action' is add, del or role, not '{other}'"))),
            };
            a.finish()?;
            ok(c)
        },
    },
    CommandSpec {
        name: "USERS",
        usage: "USERS",
        json: r#"{"op":"users"}"#,
        summary: "admins: every user and its role",
        parse_text: |a| a.finish().map(|_| AccountCommand::Users.into()),
        parse_json: |a| a.finish().map(|_| AccountCommand::Users.into()),
    },
];
