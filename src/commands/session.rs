//! Session commands: who you are and who else is here.
//! `PING`, `HELP` and `QUIT` are answered by the connection; `NAME`, `WHOAMI`,
//! `CLIENTS` and `HISTORY` by the channel manager, which owns names.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::CommandSpec;
use super::{ok, Command};
use crate::auth::{AuthMode, Identity, Right};
use crate::manager::outbox::ConnId;
use crate::manager::Manager;
use crate::protocol::args::{clip, Args};
use crate::protocol::{ErrorReply, Format, FormatChoice, Item, Reply};

/// Longest client name.
pub const MAX_NAME: usize = 64;

/// The session family: liveness, help, the push format, names, who is connected.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionCommand {
    Ping(Option<String>),
    /// `FORMAT json|text|auto`: fix the format of pushes (`None`: show it; `auto`:
    /// follow each request again).
    Format(Option<FormatChoice>),
    /// The answer to the server's `PING` push: no reply.
    Pong,
    Help(Option<String>),
    Quit,
    Name(String),
    Whoami,
    /// Server figures: uptime, connections, channels, tables, messages, memory.
    Info,
    Clients,
    History,
    /// Makes the client someone (after `LOGIN`, `RESUME` or `LOGOUT`); sent by the
    /// connection itself, never parsed from a client's line.
    Bind(Box<Identity>),
    /// Every connection logged in as `user` gets `role`, or is logged out (`None`):
    /// after `LOGOUT` (everywhere), `USER DEL` and `USER ROLE`. Never parsed either.
    Rebind {
        user: String,
        role: Option<String>,
    },
}

impl SessionCommand {
    /// Answered by the connection itself; the others by the channel manager.
    pub fn is_local(&self) -> bool {
        use SessionCommand::*;
        matches!(self, Ping(_) | Pong | Format(_) | Help(_) | Quit)
    }

    /// Its reply lists everything of a kind.
    pub fn is_listing(&self) -> bool {
        matches!(self, SessionCommand::Clients | SessionCommand::History)
    }
}

impl From<SessionCommand> for Command {
    fn from(c: SessionCommand) -> Command {
        Command::Session(c)
    }
}

pub static SPECS: &[CommandSpec] = &[
    CommandSpec {
        name: "PING",
        usage: "PING [text]",
        json: r#"{"op":"ping","data":"text"}"#,
        summary: "liveness check; answered +PONG [text]",
        parse_text: |mut a| {
            let t = a.rest();
            ok(SessionCommand::Ping((!t.is_empty()).then(|| t.to_string())))
        },
        parse_json: |mut a| {
            let t = a.optional_str("data")?;
            a.finish()?;
            ok(SessionCommand::Ping(t))
        },
    },
    CommandSpec {
        name: "FORMAT",
        usage: "FORMAT [json|text|auto]",
        json: r#"{"op":"format","format":"json"}"#,
        summary: "fix the format of pushes (json or text) instead of following each request (auto); no argument shows it",
        parse_text: |mut a| {
            let choice = a.next_word().map(|w| format_choice(&a, w)).transpose()?;
            a.finish()?;
            ok(SessionCommand::Format(choice))
        },
        parse_json: |mut a| {
            let choice = match a.optional_str("format")? {
                Some(w) => Some(format_choice_word(&w).ok_or_else(|| {
                    a.error(format!("format must be json, text or auto, not '{}'", clip(&w)))
                })?),
                None => None,
            };
            a.finish()?;
            ok(SessionCommand::Format(choice))
        },
    },
    CommandSpec {
        name: "PONG",
        usage: "PONG",
        json: r#"{"op":"pong"}"#,
        summary: "the answer to the server's PING push (after a silence); the one line that gets no reply",
        parse_text: |a| a.finish().map(|_| Command::Session(SessionCommand::Pong)),
        parse_json: |a| a.finish().map(|_| Command::Session(SessionCommand::Pong)),
    },
    CommandSpec {
        name: "HELP",
        usage: "HELP [command | WHERE]",
        json: r#"{"op":"help","command":"pub"}"#,
        summary: "list the commands, show one command's usage, or explain WHERE conditions",
        parse_text: |mut a| {
            let t = a.next_word().map(str::to_string);
            a.finish()?;
            ok(SessionCommand::Help(t))
        },
        parse_json: |mut a| {
            let t = a.optional_str("command")?;
            a.finish()?;
            ok(SessionCommand::Help(t))
        },
    },
    CommandSpec {
        name: "NAME",
        usage: "NAME <name>",
        json: r#"{"op":"name","name":"alice"}"#,
        summary: "set your name: 1-64 of [A-Za-z0-9_.-], unique among connected clients",
        parse_text: |mut a| {
            let n = a.required("name")?.to_string();
            a.finish()?;
            ok(SessionCommand::Name(n))
        },
        parse_json: |mut a| {
            let n = a.required_str("name")?;
            a.finish()?;
            ok(SessionCommand::Name(n))
        },
    },
    CommandSpec {
        name: "WHOAMI",
        usage: "WHOAMI",
        json: r#"{"op":"whoami"}"#,
        summary: "your id, name, address and connect time",
        parse_text: |a| a.finish().map(|_| Command::Session(SessionCommand::Whoami)),
        parse_json: |a| a.finish().map(|_| Command::Session(SessionCommand::Whoami)),
    },
    CommandSpec {
        name: "INFO",
        usage: "INFO",
        json: r#"{"op":"info"}"#,
        summary: "server figures: uptime, connections, channels, tables, messages, memory",
        parse_text: |a| a.finish().map(|_| Command::Session(SessionCommand::Info)),
        parse_json: |a| a.finish().map(|_| Command::Session(SessionCommand::Info)),
    },
    CommandSpec {
        name: "CLIENTS",
        usage: "CLIENTS",
        json: r#"{"op":"clients"}"#,
        summary: "who is connected now, and since when",
        parse_text: |a| a.finish().map(|_| Command::Session(SessionCommand::Clients)),
        parse_json: |a| a.finish().map(|_| Command::Session(SessionCommand::Clients)),
    },
    CommandSpec {
        name: "HISTORY",
        usage: "HISTORY",
        json: r#"{"op":"history"}"#,
        summary: "past and present connections with connect and disconnect times",
        parse_text: |a| a.finish().map(|_| Command::Session(SessionCommand::History)),
        parse_json: |a| a.finish().map(|_| Command::Session(SessionCommand::History)),
    },
    CommandSpec {
        name: "QUIT",
        usage: "QUIT",
        json: r#"{"op":"quit"}"#,
        summary: "close the connection (answered +OK bye)",
        parse_text: |a| a.finish().map(|_| Command::Session(SessionCommand::Quit)),
        parse_json: |a| a.finish().map(|_| Command::Session(SessionCommand::Quit)),
    },
];

pub use crate::manager::default_name;

fn is_reserved(name: &str) -> bool {
    name.eq_ignore_ascii_case(crate::manager::SERVER_NAME)
        || name
            .strip_prefix("client-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks a requested client name.
pub fn check_name(name: &str) -> Result<(), ErrorReply> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if name.is_empty() || name.len() > MAX_NAME || !ok_chars {
        return Err(ErrorReply::new(
            "bad_args",
            format!(
                "bad name '{}': use 1 to {MAX_NAME} of [A-Za-z0-9_.-]",
                clip(name)
            ),
        ));
    }
    if is_reserved(name) {
        return Err(ErrorReply::new(
            "bad_args",
            format!("'server' and names of the form client-<number> are reserved ('{name}')"),
        ));
    }
    Ok(())
}

fn format_choice_word(w: &str) -> Option<FormatChoice> {
    match w.to_ascii_lowercase().as_str() {
        "json" => Some(FormatChoice::Fixed(Format::Json)),
        "text" => Some(FormatChoice::Fixed(Format::Text)),
        "auto" => Some(FormatChoice::Auto),
        _ => None,
    }
}

fn format_choice(a: &Args, w: &str) -> Result<FormatChoice, ErrorReply> {
    format_choice_word(w).ok_or_else(|| {
        a.error(format!(
            "format must be json, text or auto, not '{}'",
            clip(w)
        ))
    })
}

/// RFC 3339 time in UTC with milliseconds.
pub fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Applies `NAME`, `WHOAMI`, `INFO`, `CLIENTS`, `HISTORY` on the manager thread.
pub fn apply(m: &mut Manager, id: ConnId, cmd: SessionCommand) -> Reply {
    match cmd {
        SessionCommand::Name(name) => set_name(m, id, name),
        SessionCommand::Whoami => whoami(m, id),
        SessionCommand::Info => info(m),
        SessionCommand::Clients => clients(m, shows_addresses(m, id)),
        SessionCommand::History => history(m, shows_addresses(m, id)),
        SessionCommand::Bind(identity) => bind(m, id, *identity),
        SessionCommand::Rebind { user, role } => {
            rebind(m, &user, role.as_deref());
            Reply::Done(None)
        }
        // PING, PONG, FORMAT, HELP and QUIT are the connection's own.
        _ => Reply::Error(ErrorReply::new(
            "internal",
            "a connection command was routed to the channel manager".into(),
        )),
    }
}

fn set_name(m: &mut Manager, id: ConnId, name: String) -> Reply {
    if let Err(e) = check_name(&name) {
        return e.into();
    }
    let Some(client) = m.clients.get_mut(&id) else {
        return Reply::Done(None);
    };
    if let Some(user) = client.outbox.identity().user.clone() {
        if *user != *name {
            return ErrorReply::new(
                "bad_args",
                format!(
                    "you are logged in as {user}, and a logged-in client's name is its user name"
                ),
            )
            .into();
        }
    } else if m.auth.users.exists(&name) {
        return ErrorReply::new(
            "name_taken",
            format!("the name '{name}' belongs to a user: LOGIN {name} <password> to use it"),
        )
        .into();
    }
    if &*client.name != name.as_str() {
        if m.names.contains_key(name.as_str()) {
            return ErrorReply::new(
                "name_taken",
                format!("the name '{name}' is taken by a connected client"),
            )
            .into();
        }
        let name: Arc<str> = name.into();
        m.names.remove(&client.name);
        m.names.insert(name.clone(), id);
        client.outbox.set_name(name.clone());
        let old = std::mem::replace(&mut client.name, name.clone());
        m.renamed(id, old);
        return Reply::Record {
            key: "client",
            fields: vec![("name", Value::from(&*name))],
        };
    }
    Reply::Record {
        key: "client",
        fields: vec![("name", Value::from(&*client.name))],
    }
}

/// `INFO`: what an operator checks first. Figures only; no names or addresses.
fn info(m: &Manager) -> Reply {
    let s = &m.stats;
    let tables = m.store.all();
    let rows: usize = tables.iter().map(|t| crate::store::read(t).len()).sum();
    let subscriptions: usize = m.clients.values().map(|c| c.subscriptions()).sum();
    Reply::Record {
        key: "info",
        fields: vec![
            ("version", json!(env!("CARGO_PKG_VERSION"))),
            ("uptime_secs", json!(m.started.elapsed().as_secs())),
            ("connections", json!(s.connections_current.load(Relaxed))),
            (
                "connections_total",
                json!(s.connections_total.load(Relaxed)),
            ),
            (
                "connections_refused",
                json!(s.connections_refused.load(Relaxed)),
            ),
            ("slow_consumers", json!(s.slow_consumers.load(Relaxed))),
            ("clients", json!(m.clients.len())),
            ("channels", json!(m.channels.len())),
            ("subscriptions", json!(subscriptions)),
            (
                "published",
                json!(m.counts.published + m.stats.published.load(Relaxed)),
            ),
            (
                "delivered",
                json!(m.counts.delivered + m.stats.delivered.load(Relaxed)),
            ),
            ("direct", json!(m.counts.direct)),
            ("tables", json!(tables.len())),
            ("rows", json!(rows)),
            ("table_bytes", json!(m.store.bytes())),
            ("memory_bytes", json!(resident_bytes())),
        ],
    }
}

/// The server's resident memory, from `/proc/self/statm` (0 where there is none).
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fn whoami(m: &Manager, id: ConnId) -> Reply {
    let Some(c) = m.clients.get(&id) else {
        return Reply::Done(None);
    };
    let mut fields = vec![
        ("id", json!(id)),
        ("name", json!(&*c.name)),
        ("addr", json!(c.addr.to_string())),
        ("since", json!(time(c.since))),
        ("via", json!(c.transport.as_str())),
        ("user", json!(c.outbox.identity().user.as_deref())),
        ("role", json!(&*c.outbox.identity().role)),
    ];
    if let Some(backplane) = m.routes.backplane.get() {
        fields.push(("node", json!(backplane.node())));
    }
    Reply::Record {
        key: "client",
        fields,
    }
}

/// Gives every connection logged in as `user` the role `role`, or logs it out.
fn rebind(m: &mut Manager, user: &str, role: Option<&str>) {
    let ids: Vec<ConnId> = m
        .clients
        .iter()
        .filter(|(_, c)| c.outbox.identity().user.as_deref() == Some(user))
        .map(|(id, _)| *id)
        .collect();
    for id in ids {
        let Some(c) = m.clients.get(&id) else {
            continue;
        };
        let identity = match role {
            Some(role) => Identity {
                role: Arc::from(role),
                ..(*c.outbox.identity()).clone()
            },
            None => Identity::guest(),
        };
        bind(m, id, identity);
    }
}

/// Whether client `id` may see others' addresses: admins only, once auth is on. The
/// server itself (its tasks, the HTTP API, which hides them from callers that are no
/// admins) sees them.
fn shows_addresses(m: &Manager, id: ConnId) -> bool {
    m.auth.mode == AuthMode::Off
        || id == crate::manager::SERVER_ID
        || m.clients
            .get(&id)
            .is_some_and(|c| m.auth.allows(&c.outbox.identity(), Right::Admin, "clients"))
}

/// Makes client `id` `identity` (it logged in, resumed or logged out): a user's name
/// is its user name, taken from whoever held it unless that is the same user; a client
/// logging out gets its own name back. Pattern subscriptions are delivered anew under
/// the new role.
fn bind(m: &mut Manager, id: ConnId, identity: Identity) -> Reply {
    let Some(outbox) = m.clients.get(&id).map(|c| c.outbox.clone()) else {
        return Reply::Done(None);
    };
    let name: Arc<str> = match &identity.user {
        Some(user) => user.clone(),
        None => default_name(id).into(),
    };
    let (before, after) = (
        m.auth.role(&outbox.identity().role),
        m.auth.role(&identity.role),
    );
    outbox.set_identity(identity.clone());
    m.rewire(id, &before, &after);
    if let Some(holder) = m.names.get(&name).copied().filter(|h| *h != id) {
        let same_user = m
            .clients
            .get(&holder)
            .is_some_and(|h| h.outbox.identity().user.as_deref() == Some(&*name));
        if !same_user {
            if let Some(h) = m.clients.get_mut(&holder) {
                let old = std::mem::replace(&mut h.name, default_name(holder).into());
                h.outbox.set_name(h.name.clone());
                m.names.insert(h.name.clone(), holder);
                m.renamed(holder, old);
            }
        }
    }
    if let Some(c) = m.clients.get_mut(&id) {
        if m.names.get(&c.name) == Some(&id) {
            m.names.remove(&c.name);
        }
        let old = std::mem::replace(&mut c.name, name.clone());
        c.outbox.set_name(name.clone());
        m.names.insert(name, id);
        m.renamed(id, old);
    }
    Reply::Done(None)
}

/// `CLIENTS`: this node's clients, then, in a cluster, every other node's, each with
/// its node.
fn clients(m: &Manager, addresses: bool) -> Reply {
    let here = m.routes.backplane.get().map(|b| Arc::<str>::from(b.node()));
    let mut list: Vec<_> = m
        .clients
        .iter()
        .map(|(id, c)| {
            let row = ClientRow {
                id: *id,
                name: &c.name,
                addr: c.addr.to_string(),
                since: time(c.since),
                via: c.transport.as_str(),
                node: here.as_deref(),
            };
            (0, row)
        })
        .collect();
    list.extend(m.remote.clients().map(|(node, c)| {
        let since = crate::manager::backplane::from_epoch_millis(c.since);
        let row = ClientRow {
            id: c.id,
            name: &c.name,
            addr: c.addr.to_string(),
            since: time(since),
            via: &c.via,
            node: Some(node),
        };
        (1, row)
    }));
    list.sort_by_key(|(local, row)| (*local, row.id));
    let items = list
        .into_iter()
        .map(|(_, row)| row.item(addresses))
        .collect();
    Reply::List {
        key: "clients",
        items,
    }
}

/// A line of `CLIENTS`.
struct ClientRow<'a> {
    id: u64,
    name: &'a str,
    addr: String,
    since: String,
    via: &'a str,
    /// Set in a cluster.
    node: Option<&'a str>,
}

impl ClientRow<'_> {
    fn item(self, addresses: bool) -> Item {
        let addr = addresses.then_some(self.addr);
        let (id, name, since, via) = (self.id, self.name, self.since, self.via);
        let mut text = format!(
            "{id} {name} {} since={since} via={via}",
            addr.as_deref().unwrap_or("-"),
        );
        let mut json = json!({"id": id, "name": name, "addr": addr, "since": since, "via": via});
        if let Some(node) = self.node {
            text.push_str(" node=");
            text.push_str(node);
            json["node"] = json!(node);
        }
        Item { text, json }
    }
}

fn history(m: &Manager, addresses: bool) -> Reply {
    let past = m.history.iter().map(|p| {
        (
            p.id,
            &p.name,
            p.addr,
            p.connected,
            Some(p.disconnected),
            p.transport,
        )
    });
    let present = m
        .clients
        .iter()
        .map(|(id, c)| (*id, &c.name, c.addr, c.since, None, c.transport));
    let mut rows: Vec<_> = past.chain(present).collect();
    rows.sort_by_key(|r| r.0);
    let items = rows
        .into_iter()
        .map(|(id, name, addr, connected, disconnected, via)| {
            let connected = time(connected);
            let disconnected = disconnected.map(time);
            let addr = addresses.then(|| addr.to_string());
            Item {
                text: format!(
                    "{id} {name} {} connected={connected} disconnected={} via={}",
                    addr.as_deref().unwrap_or("-"),
                    disconnected.as_deref().unwrap_or("-"),
                    via.as_str()
                ),
                json: json!({"id": id, "name": &**name, "addr": addr,
                             "connected": connected, "disconnected": disconnected,
                             "via": via.as_str()}),
            }
        })
        .collect();
    Reply::List {
        key: "history",
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("a.b-c_9").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("has space").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name("client-12").is_err());
        assert!(check_name("client-bob").is_ok());
    }
}
