//! Roles and rights: what each role may do, as patterns in the channel-pattern syntax
//! (`news.>`, `public.*`, `articles`) per right. Built in: `admin` (everything),
//! `user` (everything but `admin`) and `guest` (what `user` may under `--auth
//! optional`, nothing under `required`); more, or the built-ins changed, from an ACL
//! file in TOML:
//!
//! ```toml
//! [roles.reader]          # every right is a list of patterns; a missing right grants nothing
//! sub = ["news.>", "public.*"]
//! read = ["articles"]
//! call = ["recent"]
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::protocol::subject;

/// What a command needs, on what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Right {
    /// Publish on a channel (also create and drop it).
    Pub,
    /// Subscribe to a channel.
    Sub,
    /// Call an action.
    Call,
    /// Offer a service.
    Serve,
    /// Request a service.
    Req,
    /// Read a table (`SELECT`, `GET`, `COUNT`, `WATCH`, `TABLES`, `SCHEMA`).
    Read,
    /// Change a table (`INSERT`, `UPDATE`, `DELETE`, `DEFINE`, `UNDEFINE`).
    Write,
    /// Manage users and the server.
    Admin,
}

impl Right {
    /// Every right, in the order of [`Right::as_str`]'s names.
    pub const ALL: [Right; 8] = [
        Right::Pub,
        Right::Sub,
        Right::Call,
        Right::Serve,
        Right::Req,
        Right::Read,
        Right::Write,
        Right::Admin,
    ];

    /// Its name in `forbidden` errors and the ACL file.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Pub => "pub",
            Right::Sub => "sub",
            Right::Call => "call",
            Right::Serve => "serve",
            Right::Req => "req",
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Right> {
        Right::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One role: per right, the patterns it is granted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Role {
    pub name: String,
    grants: [Vec<String>; 8],
}

impl Role {
    /// A role granted `patterns` for each right in `rights`.
    pub fn new(name: &str, rights: &[(Right, &[&str])]) -> Role {
        let mut role = Role {
            name: name.to_string(),
            ..Role::default()
        };
        for (right, patterns) in rights {
            role.grants[*right as usize] = patterns.iter().map(|p| p.to_string()).collect();
        }
        role
    }

    /// Whether the role may do `right` on `object` (a channel, table, action or service
    /// name; for `admin`, the command).
    pub fn allows(&self, right: Right, object: &str) -> bool {
        self.grants[right as usize]
            .iter()
            .any(|p| p == ">" || p == object || subject::matches(p, object))
    }

    /// Whether the role has any grant of `right` at all.
    pub fn has_any(&self, right: Right) -> bool {
        !self.grants[right as usize].is_empty()
    }
}

/// How clients authenticate (`--auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// No users, no checks: everyone may do everything.
    Off,
    /// Anonymous clients are guests, who may what users may; logging in is optional.
    #[default]
    Optional,
    /// Anonymous clients may only `PING`, `HELP`, `AUTH`, `LOGIN`, `RESUME` and `QUIT`.
    Required,
}

impl std::str::FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<AuthMode, String> {
        match s {
            "off" => Ok(AuthMode::Off),
            "optional" => Ok(AuthMode::Optional),
            "required" => Ok(AuthMode::Required),
            _ => Err(format!("--auth is off, optional or required, not '{s}'")),
        }
    }
}

/// Every role by name.
#[derive(Clone, Debug)]
pub struct Roles {
    by_name: HashMap<String, Arc<Role>>,
}

const ALL: &[&str] = &[">"];

impl Roles {
    /// The built-in roles for `mode`.
    pub fn builtin(mode: AuthMode) -> Roles {
        let user_rights: Vec<(Right, &[&str])> = Right::ALL
            .into_iter()
            .filter(|r| *r != Right::Admin)
            .map(|r| (r, ALL))
            .collect();
        let admin_rights: Vec<(Right, &[&str])> =
            Right::ALL.into_iter().map(|r| (r, ALL)).collect();
        let guest = match mode {
            AuthMode::Required => Role::new("guest", &[]),
            _ => Role::new("guest", &user_rights),
        };
        let mut by_name = HashMap::new();
        for role in [
            Role::new("admin", &admin_rights),
            Role::new("user", &user_rights),
            guest,
        ] {
            by_name.insert(role.name.clone(), Arc::new(role));
        }
        Roles { by_name }
    }

    /// The built-ins for `mode` with the roles of an ACL file over them.
    pub fn from_toml(mode: AuthMode, text: &str) -> Result<Roles, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            roles: HashMap<String, HashMap<String, Vec<String>>>,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut roles = Roles::builtin(mode);
        for (name, rights) in file.roles {
            if !valid_role_name(&name) {
                return Err(format!(
                    "role '{name}': a role name is 1 to 64 of [A-Za-z0-9_-]"
                ));
            }
            let mut role = Role {
                name: name.clone(),
                ..Role::default()
            };
            for (right, patterns) in rights {
                let r = Right::parse(&right).ok_or_else(|| {
                    format!("role '{name}': no right '{right}' (rights: pub, sub, call, serve, req, read, write, admin)")
                })?;
                for p in &patterns {
                    if p != ">" && subject::classify(p).is_err() && !p.is_empty() {
                        return Err(format!("role '{name}', right '{right}': bad pattern '{p}'"));
                    }
                }
                role.grants[r as usize] = patterns;
            }
            roles.by_name.insert(name, Arc::new(role));
        }
        Ok(roles)
    }

    /// Adds `role`, or replaces the one of its name.
    pub fn insert(&mut self, role: Role) {
        self.by_name.insert(role.name.clone(), Arc::new(role));
    }

    /// The role named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Role>> {
        self.by_name.get(name).cloned()
    }

    /// Every role.
    pub fn all(&self) -> Vec<Role> {
        self.by_name.values().map(|r| (**r).clone()).collect()
    }

    /// Role names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }
}

/// Role names are plain words.
pub fn valid_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roles() {
        let r = Roles::builtin(AuthMode::Optional);
        let (admin, user, guest) = (
            r.get("admin").unwrap(),
            r.get("user").unwrap(),
            r.get("guest").unwrap(),
        );
        assert!(admin.allows(Right::Admin, "users"));
        assert!(!user.allows(Right::Admin, "users"));
        assert!(user.allows(Right::Pub, "news.sport"));
        assert!(guest.allows(Right::Write, "articles"));
        let r = Roles::builtin(AuthMode::Required);
        assert!(!r.get("guest").unwrap().allows(Right::Sub, "news"));
    }

    #[test]
    fn acl_file_roles_grant_patterns() {
        let text = r#"
            [roles.reader]
            sub = ["news.>", "public.*"]
            pub = []
            read = ["articles"]
            call = ["recent"]
        "#;
        let roles = Roles::from_toml(AuthMode::Optional, text).unwrap();
        let reader = roles.get("reader").unwrap();
        assert!(reader.allows(Right::Sub, "news.sport.football"));
        assert!(reader.allows(Right::Sub, "public.lobby"));
        assert!(!reader.allows(Right::Sub, "public.lobby.x"));
        assert!(!reader.allows(Right::Sub, "private"));
        assert!(!reader.allows(Right::Pub, "news.sport"));
        assert!(reader.allows(Right::Read, "articles"));
        assert!(!reader.allows(Right::Write, "articles"));
        assert!(reader.allows(Right::Call, "recent"));
        assert!(!reader.allows(Right::Admin, "users"));
        assert!(roles.get("admin").is_some(), "built-ins stay");
        assert!(Roles::from_toml(AuthMode::Optional, "[roles.x]\nfly = [\"a\"]").is_err());
        assert!(Roles::from_toml(AuthMode::Optional, "[roles.x]\nsub = [\"a..b\"]").is_err());
        assert!(Roles::from_toml(AuthMode::Optional, "[roles.\"a b\"]\nsub = []").is_err());
        assert!(Roles::from_toml(AuthMode::Optional, "nonsense").is_err());
    }
}
