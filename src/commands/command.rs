//! The command a request asks for, whichever format it arrived in, and how a request
//! line becomes one: the wire's envelope, then the parser of the verb's family.

use serde_json::Value;

use super::accounts::AccountCommand;
use super::app::AppCommand;
use super::channels::ChannelCommand;
use super::files::FileCommand;
use super::live::LiveCommand;
use super::services::ServiceCommand;
use super::session::SessionCommand;
use super::tables::TableCommand;
use super::{did_you_mean, spec};
use crate::protocol::args::{clip, Args, JsonArgs};
use crate::protocol::{parse_envelope, Body, ErrorReply, Format, ParseLimits, RawArgs};

/// Every command a client can send, whichever format it arrived in: one variant per
/// command family, each family's own enum in its file (with its specs and apply).
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Session(SessionCommand),
    Channel(ChannelCommand),
    Live(LiveCommand),
    /// A table command. Boxed: it is large, and every command is moved through the
    /// manager's queue.
    Table(Box<TableCommand>),
    /// The application's own commands (actions, tasks, the gate). Boxed like tables.
    App(Box<AppCommand>),
    /// Accounts and sessions (`LOGIN`, `USER ADD`, …). Boxed like tables.
    Account(Box<AccountCommand>),
    /// Services between clients (`SERVE`, `REQ`, `REPLY`, …). Boxed like tables.
    Service(Box<ServiceCommand>),
    /// Files on the HTTP port (`GRANT`). Boxed like tables.
    File(Box<FileCommand>),
}

impl Command {
    /// Commands whose reply lists everything of a kind (and so may be large): a
    /// connection sends one at a time, and writes its reply as its client reads.
    pub fn is_listing(&self) -> bool {
        match self {
            Command::Session(c) => c.is_listing(),
            Command::Channel(c) => matches!(c, ChannelCommand::Channels),
            Command::Live(_)
            | Command::Table(_)
            | Command::App(_)
            | Command::Account(_)
            | Command::Service(_)
            | Command::File(_) => false,
        }
    }

    /// Commands the connection answers itself (tables included); all others go to the
    /// channel manager.
    pub fn is_local(&self) -> bool {
        match self {
            Command::Session(c) => c.is_local(),
            Command::Table(_) | Command::App(_) | Command::Account(_) | Command::File(_) => true,
            Command::Channel(_) | Command::Live(_) | Command::Service(_) => false,
        }
    }

    /// Commands that hold for a whole cluster (a name, a channel): in one, they are
    /// claimed across it before the manager applies them (`framework/cluster_wide.rs`).
    pub fn is_cluster_wide(&self) -> bool {
        matches!(
            self,
            Command::Session(super::session::SessionCommand::Name(_))
                | Command::Channel(ChannelCommand::Create(..) | ChannelCommand::Drop(_))
        )
    }
}

impl Command {
    /// What a client may do before it passes the server's gate: `PING` (and the `PONG`
    /// that answers the server's), `HELP`, `AUTH` and `QUIT`.
    pub fn passes_closed_gate(&self) -> bool {
        match self {
            Command::Session(c) => matches!(
                c,
                SessionCommand::Ping(_)
                    | SessionCommand::Pong
                    | SessionCommand::Help(_)
                    | SessionCommand::Quit
            ),
            Command::App(c) => matches!(**c, AppCommand::Auth(_)),
            _ => false,
        }
    }
}

/// A parser's success: the family's command as a [`Command`].
pub(super) fn ok(command: impl Into<Command>) -> Result<Command, ErrorReply> {
    Ok(command.into())
}

/// One parsed request line: its format, the JSON request id to echo, and the command or
/// the error to answer with.
#[derive(Debug)]
pub struct Request {
    pub format: Format,
    pub id: Option<Value>,
    pub command: Result<Command, ErrorReply>,
}

/// Parses one line (without its `\n`) into the request it makes. Returns `None` for an
/// empty line, which is ignored.
pub fn parse_request(line: &[u8], limits: &ParseLimits) -> Option<Request> {
    if let Some(publish) = parse_pub(line) {
        return Some(publish);
    }
    let env = parse_envelope(line, limits)?;
    Some(Request {
        format: env.format,
        id: env.id,
        command: env.body.and_then(parse_body),
    })
}

/// A well-formed text `PUB` (most lines of a busy server), read straight into its
/// command: the same result as the envelope, registry and spec would give (the test
/// below compares them), without building them. Anything else, or an error, goes the
/// general way, which reports it.
fn parse_pub(line: &[u8]) -> Option<Request> {
    let (channel, data) = pub_text(line)?;
    let (channel, data) = (channel.to_string(), data.to_string());
    Some(Request {
        format: Format::Text,
        id: None,
        command: Ok(Command::Channel(ChannelCommand::Pub {
            channel,
            data: crate::protocol::Payload::Text(data),
        })),
    })
}

/// A well-formed text `PUB`'s channel and message, borrowed from the line (the
/// connection publishes them without making a command); `None` for anything else.
pub fn pub_text(line: &[u8]) -> Option<(&str, &str)> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() < 6 || !line[..3].eq_ignore_ascii_case(b"PUB") || line[3] != b' ' {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    let spec = (*PUB)?;
    let mut args = Args::new(&text[3..], spec.usage);
    let channel = args.required("channel").ok()?;
    let data = args.required_rest("message").ok()?;
    Some((channel, data))
}

/// Finds the verb's family in the registry and lets its parser read the arguments.
fn parse_body(body: Body) -> Result<Command, ErrorReply> {
    match body.args {
        RawArgs::Text(rest) => parse_text(&body.verb, rest),
        RawArgs::Json(fields) => match spec(&body.verb) {
            Some(spec) => (spec.parse_json)(JsonArgs::new(fields, spec.json)),
            None => Err(ErrorReply::new(
                "unknown_command",
                format!(
                    "unknown command '{}';{} send {{\"op\":\"help\"}} for the list",
                    clip(&body.verb),
                    did_you_mean(&body.verb, |n| format!("\"{}\"", n.to_ascii_lowercase()))
                ),
            )),
        },
    }
}

/// `PUB`'s spec, found once: the verb of most lines a busy server reads skips the
/// registry's hash lookup (a twentieth of a publisher's time in perf).
static PUB: std::sync::LazyLock<Option<&'static super::CommandSpec>> =
    std::sync::LazyLock::new(|| spec("PUB"));

/// Parses a text command from its verb and the rest of its line.
pub fn parse_text(verb: &str, rest: &str) -> Result<Command, ErrorReply> {
    let found = if verb.eq_ignore_ascii_case("PUB") {
        *PUB
    } else {
        spec(verb)
    };
    match found {
        Some(spec) => (spec.parse_text)(Args::new(rest, spec.usage)),
        None => Err(ErrorReply::new(
            "unknown_command",
            format!(
                "unknown command '{}';{} type HELP for the list",
                clip(verb),
                did_you_mean(verb, |n| n.to_string())
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Payload;

    fn parse(s: &str) -> Request {
        parse_request(s.as_bytes(), &ParseLimits::default()).expect("not empty")
    }

    /// The general way, without the `PUB` shortcut.
    fn parse_slowly(s: &str) -> Option<Request> {
        let env = parse_envelope(s.as_bytes(), &ParseLimits::default())?;
        Some(Request {
            format: env.format,
            id: env.id,
            command: env.body.and_then(parse_body),
        })
    }

    #[test]
    fn the_pub_shortcut_reads_exactly_what_the_general_way_reads() {
        let lines = [
            "PUB news hello",
            "pub news hello  world\r",
            "Pub news  spaced   out  ",
            "PUB news \thello",
            "PUB news\thello",
            "PUB  news hello",
            "PUB news",
            "PUB news ",
            "PUB ",
            "PUB",
            "PUBLISH news hi",
            "PUBX news hi",
            "  PUB news hi",
            "PUB news héllo wörld",
            "PUB a.b.c {\"x\":1}",
            "PUB news\u{a0}hi there",
            "PUB \u{2003}news hi",
            "SUB news",
        ];
        for l in lines {
            let fast = parse_pub(l.as_bytes());
            let slow = parse_slowly(l);
            if let Some(f) = &fast {
                let s = slow.as_ref().expect("the general way reads it too");
                assert_eq!(f.command, s.command, "{l:?}");
                assert_eq!(f.format, s.format, "{l:?}");
                assert_eq!(f.id, s.id, "{l:?}");
            }
            let whole = parse_request(l.as_bytes(), &ParseLimits::default());
            assert_eq!(whole.map(|r| r.command), slow.map(|r| r.command), "{l:?}");
        }
        assert!(parse_pub(b"PUB news hi").is_some(), "the shortcut is taken");
        assert!(
            parse_pub(b"PUB news").is_none(),
            "an error goes the general way"
        );
    }

    #[test]
    fn text_and_json_give_the_same_command() {
        let t = parse("pub news hello  world\r");
        let j = parse(r#"{"op":"pub","channel":"news","data":"hello  world","id":7}"#);
        assert_eq!(
            t.command,
            Ok(Command::Channel(ChannelCommand::Pub {
                channel: "news".into(),
                data: Payload::Text("hello  world".into())
            }))
        );
        assert_eq!(
            j.command,
            Ok(Command::Channel(ChannelCommand::Pub {
                channel: "news".into(),
                data: Payload::Json(Value::String("hello  world".into()))
            }))
        );
        assert_eq!((t.format, t.id), (Format::Text, None));
        assert_eq!((j.format, j.id), (Format::Json, Some(Value::from(7))));
    }

    #[test]
    fn errors_name_the_problem_in_the_requests_own_terms() {
        let e = parse(r#"{"op":"frobnicate"}"#).command.unwrap_err();
        assert_eq!(e.code, "unknown_command");
        assert!(e.message.contains("frobnicate") && e.message.contains(r#"{"op":"help"}"#));
        let e = parse(r#"{"op":"publish"}"#).command.unwrap_err();
        assert!(
            e.message.contains(r#"did you mean "pub"?"#),
            "{}",
            e.message
        );
        let e = parse(r#"{"op":"sub","chanel":"x"}"#).command.unwrap_err();
        assert_eq!(e.code, "bad_args");
        let e = parse("FROB x").command.unwrap_err();
        assert!(e.message.contains("type HELP"), "{}", e.message);
        assert_eq!(parse("{nope").command.unwrap_err().code, "bad_json");
    }
}
