//! Live data: `WATCH` and `UNWATCH`, applied on the channel manager's thread. The
//! manager then passes each change of a watched table to its watchers (see
//! `manager/watch.rs`).

use std::sync::atomic::Ordering;

use super::CommandSpec;
use super::{ok, Command};
use crate::manager::outbox::ConnId;
use crate::manager::{Manager, Watcher};
use crate::protocol::args::clip;
use crate::protocol::{ErrorReply, Reply};
use crate::store::expr::Expr;
use crate::store::read;

/// The live-data family: watching tables. Applied by the channel manager.
#[derive(Clone, Debug, PartialEq)]
pub enum LiveCommand {
    /// Receive row changes of a table (those matching the filter).
    Watch {
        table: String,
        filter: Option<Box<Expr>>,
    },
    Unwatch {
        table: String,
    },
}

impl From<LiveCommand> for Command {
    fn from(c: LiveCommand) -> Command {
        Command::Live(c)
    }
}

pub static SPECS: &[CommandSpec] = &[
    CommandSpec {
        name: "WATCH",
        usage: "WATCH <table> [WHERE <expr>]",
        json: r#"{"op":"watch","table":"users","where":"age > 20"}"#,
        summary: "receive ROW <table> insert|update|delete <row> for each matching change",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            let filter = super::tables::text_where(&mut a)?;
            ok(LiveCommand::Watch {
                table,
                filter: filter.map(Box::new),
            })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            let filter = super::tables::json_where(&mut a)?;
            a.finish()?;
            ok(LiveCommand::Watch {
                table,
                filter: filter.map(Box::new),
            })
        },
    },
    CommandSpec {
        name: "UNWATCH",
        usage: "UNWATCH <table>",
        json: r#"{"op":"unwatch","table":"users"}"#,
        summary: "stop a WATCH",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            a.finish()?;
            ok(LiveCommand::Unwatch { table })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            a.finish()?;
            ok(LiveCommand::Unwatch { table })
        },
    },
];

/// Applies `WATCH` / `UNWATCH` on the manager thread.
pub fn apply(m: &mut Manager, id: ConnId, cmd: LiveCommand) -> Reply {
    match cmd {
        LiveCommand::Watch { table, filter } => {
            watch(m, id, table, filter.map(|f| *f)).unwrap_or_else(Reply::Error)
        }
        LiveCommand::Unwatch { table } => {
            let watching = m
                .clients
                .get(&id)
                .is_some_and(|c| c.watching.contains(&table));
            if !watching {
                return ErrorReply::new(
                    "not_watching",
                    format!("you are not watching '{}'", clip(&table)),
                )
                .into();
            }
            m.unwatch(id, &table);
            Reply::Done(None)
        }
    }
}

fn watch(
    m: &mut Manager,
    id: ConnId,
    table: String,
    filter: Option<crate::store::expr::Expr>,
) -> Result<Reply, ErrorReply> {
    let tref = m.store.get(&table).ok_or_else(|| {
        ErrorReply::new(
            "no_such_table",
            format!("no table named '{}' (TABLES lists them)", clip(&table)),
        )
    })?;
    let max = m.settings.max_subscriptions;
    let Some(client) = m.clients.get_mut(&id) else {
        return Ok(Reply::Done(None));
    };
    if !client.watching.contains(&table) && client.subscriptions() >= max {
        return Err(super::channels::limit_reached(format!(
            "this connection holds its maximum of {max} subscriptions and watches (--max-subscriptions)"
        )));
    }
    // A short read lock on this OS thread, to check the filter against the schema.
    let t = read(&tref);
    let filter = filter.map(|e| super::tables::compile(&e, &t)).transpose()?;
    client.watching.insert(table.clone());
    let watcher = Watcher {
        outbox: client.outbox.clone(),
        filter,
    };
    m.watches.entry(table).or_default().insert(id, watcher);
    // Set before the reply goes out, so every write after the client's +OK reports.
    t.watched.store(true, Ordering::Relaxed);
    Ok(Reply::Done(None))
}
