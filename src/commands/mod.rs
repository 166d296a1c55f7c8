//! The application floor: commands, one file per family. Each family holds its own
//! command enum, its [`CommandSpec`]s (usage, help, text and JSON parsers over the
//! wire's argument cursors) and its apply; adding a command to a family means a
//! variant, a spec and a match arm, all in that family's file. The registry here
//! ([`spec`]) maps a verb to its spec, and [`Command`] has one variant per family.
//!
//! Where a command is applied:
//! - `PING`, `PONG`, `FORMAT`, `HELP`, `QUIT` and table commands: by the connection
//!   itself (`apply_local`), tables on the shared `TableStore`;
//! - everything else: on the channel-manager thread, which hands it to [`Routed`]
//!   (the routing floor's `Handler`), and so to its family's apply.

pub mod accounts;
pub mod app;
pub mod channels;
pub mod command;
pub mod files;
pub mod history;
pub mod live;
pub mod rights;
pub mod services;
pub mod session;
pub mod table_api;
pub mod tables;

use command::ok;
pub use command::{parse_request, parse_text, Command, Request};

use crate::manager::outbox::ConnId;
use crate::protocol::args::{clip, Args, JsonArgs};
use crate::protocol::{ErrorReply, Item, Reply};
use session::SessionCommand;

/// A command's contract: how it is written and how it is parsed.
pub struct CommandSpec {
    /// The verb in upper case.
    pub name: &'static str,
    /// Text usage, quoted in `bad_args` errors and `HELP`.
    pub usage: &'static str,
    /// JSON form, shown by `HELP <command>`.
    pub json: &'static str,
    /// One line saying what it does.
    pub summary: &'static str,
    pub parse_text: fn(Args) -> Result<Command, ErrorReply>,
    pub parse_json: fn(JsonArgs) -> Result<Command, ErrorReply>,
}

/// Every command family's specs, in `HELP` order.
fn families() -> [&'static [CommandSpec]; 9] {
    [
        session::SPECS,
        channels::SPECS,
        history::SPECS,
        tables::SPECS,
        live::SPECS,
        services::SPECS,
        accounts::SPECS,
        files::SPECS,
        app::SPECS,
    ]
}

/// Longest verb; anything longer is not a command.
const MAX_VERB: usize = 16;

/// Every spec by its upper-case name, built once.
static BY_NAME: std::sync::LazyLock<crate::collections::Map<&'static str, &'static CommandSpec>> =
    std::sync::LazyLock::new(|| {
        families()
            .into_iter()
            .flatten()
            .map(|s| (s.name, s))
            .collect()
    });

/// Looks a command up by verb or JSON op, in any case.
pub fn spec(verb: &str) -> Option<&'static CommandSpec> {
    if verb.len() > MAX_VERB {
        return None;
    }
    let mut buf = [0u8; MAX_VERB];
    let upper = &mut buf[..verb.len()];
    upper.copy_from_slice(verb.as_bytes());
    upper.make_ascii_uppercase();
    let upper = std::str::from_utf8(upper).ok()?;
    BY_NAME.get(upper).copied()
}

/// Every command's name, in `HELP` order (for completion in `clientmain`).
pub fn names() -> Vec<&'static str> {
    families().into_iter().flatten().map(|s| s.name).collect()
}

/// ` did you mean PUB?` for a verb that is another system's name for a command
/// (Redis's `PUBLISH`, `SUBSCRIBE`, …) or a known verb mistyped; else nothing.
/// `show` writes the suggestion as the caller's users spell commands.
pub fn did_you_mean(verb: &str, show: impl Fn(&str) -> String) -> String {
    const HABITS: &[(&str, &str)] = &[
        ("PUBLISH", "PUB"),
        ("SUBSCRIBE", "SUB"),
        ("PSUBSCRIBE", "SUB"),
        ("UNSUBSCRIBE", "UNSUB"),
        ("PUNSUBSCRIBE", "UNSUB"),
        ("EXIT", "QUIT"),
        ("WHO", "CLIENTS"),
        ("MSG", "SEND"),
    ];
    if verb.len() > MAX_VERB {
        return String::new();
    }
    let upper = verb.to_ascii_uppercase();
    let habit = HABITS
        .iter()
        .find(|(from, _)| *from == upper)
        .map(|(_, to)| *to);
    // One typo in a short verb, two in a longer one.
    let allowed = if upper.len() <= 4 { 1 } else { 2 };
    let typo = || {
        names()
            .into_iter()
            .map(|n| (edit_distance(&upper, n), n))
            .filter(|(d, _)| *d <= allowed)
            .min_by_key(|(d, _)| *d)
            .map(|(_, n)| n)
    };
    match habit.or_else(typo) {
        Some(name) => format!(" did you mean {}?", show(name)),
        None => String::new(),
    }
}

/// Levenshtein distance between two short ASCII words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let swap = if ca == cb { 0 } else { 1 };
            cur[j + 1] = (prev[j] + swap).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `HELP WHERE`: the condition language of SELECT, COUNT, UPDATE, DELETE, WATCH and SUB.
const WHERE_HELP: &[&str] = &[
    "WHERE <condition>, in SELECT, COUNT, UPDATE, DELETE, WATCH and SUB:",
    "  <column> = != <> < <= > >= <value>    age > 20   name != bob",
    "  <column> IS NULL | IS NOT NULL        email IS NULL",
    "  AND binds tighter than OR; parentheses group, at most 32 deep",
    "  (name = bob OR name = ann) AND age >= 18",
    "values: numbers, true, false, null, bare words (strings: name = alice),",
    "  \"double quoted\" strings with JSON escapes (name = \"Ann Lee\");",
    "  single quotes are not string quotes: name = 'eve' is refused with a hint",
    "a null cell matches only IS NULL (and = null); every other comparison is false",
    "keywords in any case; every row: WHERE id > 0",
];

/// `HELP` lists every command; `HELP <command>` shows one in detail; `HELP WHERE`
/// explains conditions.
#[inline(never)]
pub fn help(topic: Option<&str>) -> Reply {
    let item = |text: String, json: serde_json::Value| Item { text, json };
    match topic {
        None => Reply::List {
            key: "commands",
            items: families()
                .into_iter()
                .flatten()
                .map(|s| {
                    item(
                        format!("{:<34} {}", s.usage, s.summary),
                        serde_json::json!({"name": s.name, "usage": s.usage, "summary": s.summary}),
                    )
                })
                .collect(),
        },
        Some(t) if t.eq_ignore_ascii_case("WHERE") => Reply::List {
            key: "lines",
            items: WHERE_HELP
                .iter()
                .map(|l| item(l.to_string(), serde_json::Value::String(l.to_string())))
                .collect(),
        },
        Some(t) => match spec(t) {
            Some(s) => Reply::List {
                key: "lines",
                items: [
                    format!("usage: {}", s.usage),
                    format!("json:  {}", s.json),
                    s.summary.to_string(),
                ]
                .into_iter()
                .map(|l| item(l.clone(), serde_json::Value::String(l)))
                .collect(),
            },
            None => Reply::Error(ErrorReply::new(
                "unknown_command",
                format!(
                    "no command named '{}';{} type HELP for the list, or HELP WHERE for conditions",
                    clip(t),
                    did_you_mean(t, |n| n.to_string())
                ),
            )),
        },
    }
}

/// The commands the channel manager applies (names, channels, subscriptions, watches),
/// each by its family; handed to [`Manager::run`](crate::manager::Manager::run).
pub struct Routed;

impl crate::manager::Handler for Routed {
    type Command = Command;

    fn apply(
        &self,
        m: &mut crate::manager::Manager,
        id: ConnId,
        command: Command,
    ) -> Option<Reply> {
        Some(match command {
            Command::Session(c) => session::apply(m, id, c),
            Command::Channel(c) => channels::apply(m, id, c),
            Command::Live(c) => live::apply(m, id, c),
            Command::Service(c) => return services::apply(m, id, *c),
            Command::Table(_) | Command::App(_) | Command::Account(_) | Command::File(_) => {
                Reply::Error(ErrorReply::new(
                    "internal",
                    "a connection's own command was routed to the channel manager".into(),
                ))
            }
        })
    }
}

/// What connections send the channel manager.
pub type Op = crate::manager::ChannelOp<Command>;

/// Applies a command the connection answers itself. `QUIT` is answered here and the
/// connection closes after writing the reply.
///
/// Also returns the journal sequence number that must be durable before the reply is
/// written, for table writes.
pub fn apply_local(cmd: Command, store: &crate::store::TableStore) -> (Reply, Option<u64>) {
    match cmd {
        Command::Session(SessionCommand::Ping(text)) => (Reply::Pong(text), None),
        Command::Session(SessionCommand::Help(topic)) => (help(topic.as_deref()), None),
        Command::Session(SessionCommand::Quit) => (Reply::Done(Some("bye".into())), None),
        Command::Table(t) => tables::apply(store, *t),
        _ => {
            let e = ErrorReply::new("internal", "command routed to the wrong place".into());
            (Reply::Error(e), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_name_is_unique_upper_case_and_in_its_usage() {
        let all: Vec<_> = families().into_iter().flatten().collect();
        for s in &all {
            assert!(s.name.len() <= MAX_VERB);
            assert!(std::ptr::eq(spec(&s.name.to_lowercase()).unwrap(), *s));
            assert_eq!(s.name, s.name.to_ascii_uppercase());
            assert!(s.usage.starts_with(s.name), "{}", s.usage);
            assert_eq!(all.iter().filter(|o| o.name == s.name).count(), 1);
        }
    }

    #[test]
    fn help_lists_everything() {
        match help(None) {
            Reply::List { items, .. } => assert!(items.len() >= 14),
            other => panic!("{other:?}"),
        }
        assert!(help(Some("nope")).is_error());
        match help(Some("where")) {
            Reply::List { items, .. } => {
                assert!(items.iter().any(|i| i.text.contains("IS NULL")));
            }
            _ => panic!("HELP WHERE lists lines"),
        }
        assert!(!help(Some("pub")).is_error());
    }

    #[test]
    fn unknown_verbs_point_at_help() {
        let e = parse_text("FROB", "").unwrap_err();
        assert_eq!(e.code, "unknown_command");
        assert!(e.message.contains("HELP"));
    }

    #[test]
    fn unknown_verbs_suggest_what_was_meant() {
        let msg = |v: &str| parse_text(v, "news hi").unwrap_err().message;
        assert!(
            msg("PUBLISH").contains("did you mean PUB?"),
            "{}",
            msg("PUBLISH")
        );
        assert!(msg("subscribe").contains("did you mean SUB?"));
        assert!(msg("SELCT").contains("did you mean SELECT?"));
        assert!(msg("INSRET").contains("did you mean INSERT?"));
        assert!(!msg("FROB").contains("did you mean"), "{}", msg("FROB"));
        assert!(!msg("XYZ").contains("did you mean"));
    }
}
