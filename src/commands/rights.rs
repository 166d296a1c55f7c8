//! What each command needs: the right, and the channel, table, action or client it
//! needs it on. Checked by the connection before a command runs, so a refusal is that
//! request's own reply (`-ERR forbidden <right> <object>`) and nothing else changes.

use super::accounts::AccountCommand;
use super::app::AppCommand;
use super::channels::ChannelCommand;
use super::live::LiveCommand;
use super::services::ServiceCommand;
use super::tables::TableCommand;
use super::Command;
use crate::auth::{AuthMode, Identity, Right, Role};
use crate::protocol::subject::{self, Target};
use crate::protocol::ErrorReply;

/// What may be sent before logging in under `--auth required`: what passes a closed
/// gate, and `LOGIN` and `RESUME`.
fn open_to_anyone(c: &Command) -> bool {
    c.passes_closed_gate()
        || matches!(c, Command::Account(a) if matches!(
            **a,
            AccountCommand::Login { .. } | AccountCommand::Resume { .. }
        ))
}

/// The right `c` needs and on what, if any.
fn needs(c: &Command) -> Option<(Right, &str)> {
    match c {
        Command::Session(_) => None,
        Command::Channel(c) => match c {
            ChannelCommand::Create(ch, _) | ChannelCommand::Drop(ch) => Some((Right::Pub, ch)),
            // Reading a channel's history or members is reading the channel.
            ChannelCommand::Replay { channel, .. } | ChannelCommand::Presence(channel) => {
                Some((Right::Sub, channel))
            }
            ChannelCommand::Pub { channel, .. } => Some((Right::Pub, channel)),
            ChannelCommand::Send { to, .. } => Some((Right::Pub, to)),
            // A pattern is checked channel by channel as it delivers.
            ChannelCommand::Sub { target, .. } => match subject::classify(target) {
                Ok(Target::Channel) => Some((Right::Sub, target)),
                _ => None,
            },
            ChannelCommand::Unsub(_) | ChannelCommand::Channels => None,
        },
        Command::Live(LiveCommand::Watch { table, .. }) => Some((Right::Read, table)),
        Command::Live(LiveCommand::Unwatch { .. }) => None,
        Command::Table(t) => match &**t {
            TableCommand::Define { table, .. }
            | TableCommand::Undefine { table }
            | TableCommand::Insert { table, .. }
            | TableCommand::Update { table, .. }
            | TableCommand::Delete { table, .. } => Some((Right::Write, table)),
            TableCommand::Get { table, .. }
            | TableCommand::Select { table, .. }
            | TableCommand::Count { table, .. }
            | TableCommand::Schema { table } => Some((Right::Read, table)),
            TableCommand::Tables => None,
            // Saving touches every table: it needs write on all of them.
            TableCommand::Save => Some((Right::Write, ">")),
        },
        Command::App(a) => match &**a {
            AppCommand::Call { action, .. } => Some((Right::Call, action)),
            _ => None,
        },
        Command::Service(s) => match &**s {
            ServiceCommand::Serve(name) | ServiceCommand::Unserve(name) => {
                Some((Right::Serve, name))
            }
            ServiceCommand::Req { service, .. } => Some((Right::Req, service)),
            // Answering what one was given needs nothing more.
            ServiceCommand::Reply { .. }
            | ServiceCommand::Fail { .. }
            | ServiceCommand::Services => None,
        },
        Command::Account(a) if a.is_admin() => Some((Right::Admin, "users")),
        Command::Account(_) => None,
        Command::File(_) => Some((Right::Admin, "files")),
    }
}

/// Whether `PUB` on `channel` passes [`check`] (the connection's path for a text
/// `PUB` read straight from its line, with no command made).
pub fn may_pub(mode: AuthMode, identity: &Identity, role: &Role, channel: &str) -> bool {
    match mode {
        AuthMode::Off => true,
        AuthMode::Required if identity.user.is_none() => false,
        _ => role.allows(Right::Pub, channel),
    }
}

/// Whether a client that is `identity`, in `role` (its role as it is now), may send
/// `c`: `unauthorized` for an anonymous client under `--auth required` (with what to
/// do), `forbidden <right> <object>` for a right its role lacks.
pub fn check(
    mode: AuthMode,
    identity: &Identity,
    role: &Role,
    c: &Command,
) -> Result<(), ErrorReply> {
    if mode == AuthMode::Off {
        return Ok(());
    }
    if mode == AuthMode::Required && identity.user.is_none() && !open_to_anyone(c) {
        return Err(ErrorReply::new(
            "unauthorized",
            "this server requires logging in: LOGIN <user> <password>, or RESUME <token> (PING, HELP and QUIT work before)".into(),
        ));
    }
    let Some((right, object)) = needs(c) else {
        return Ok(());
    };
    if role.allows(right, object) {
        return Ok(());
    }
    Err(ErrorReply::new(
        "forbidden",
        format!("{} {}", right.as_str(), crate::protocol::args::clip(object)),
    ))
}
