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
use std::sync::Arc;

use serde_json::json;

use crate::manager::watch;
use crate::protocol::push::RowEvent;
use crate::protocol::Push;
use crate::store::write;

/// The live-data family: watching tables. Applied by the channel manager.
#[derive(Clone, Debug, PartialEq)]
pub enum LiveCommand {
    /// Receive row changes of a table (those matching the filter).
    Watch {
        table: String,
        filter: Option<Box<Expr>>,
        /// Resume: the changes after this number first.
        since: Option<u64>,
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
        usage: "WATCH <table> [SINCE <seq>] [WHERE <expr>]",
        json: r#"{"op":"watch","table":"users","where":"age > 20","since":1733222333444555}"#,
        summary: "receive ROW <table> insert|update|delete <row> for each matching change; answered +OK seq=<n>, SINCE <n> first gives the changes missed after it",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            let since = if a.keyword("SINCE") {
                Some(a.required_count("seq")?)
            } else {
                None
            };
            let filter = super::tables::text_where(&mut a)?;
            ok(LiveCommand::Watch {
                table,
                filter: filter.map(Box::new),
                since,
            })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            let filter = super::tables::json_where(&mut a)?;
            let since = a.optional_count("since")?;
            a.finish()?;
            ok(LiveCommand::Watch {
                table,
                filter: filter.map(Box::new),
                since,
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
        LiveCommand::Watch {
            table,
            filter,
            since,
        } => watch(m, id, table, filter.map(|f| *f), since).unwrap_or_else(Reply::Error),
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

/// `WATCH`: answered `+OK seq=<n>` (every change after `n` will come); with `since`,
/// the changes after it that the table still keeps come first (`recovered=true`), or
/// none when it no longer keeps them all (`recovered=false`: reload).
fn watch(
    m: &mut Manager,
    id: ConnId,
    table: String,
    filter: Option<crate::store::expr::Expr>,
    since: Option<u64>,
) -> Result<Reply, ErrorReply> {
    let tref = m
        .store
        .get(&table)
        .ok_or_else(|| super::tables::no_such_table(&m.store, &table))?;
    let max = m.settings.max_subscriptions;
    let Some(client) = m.clients.get_mut(&id) else {
        return Ok(Reply::Done(None));
    };
    if !client.watching.contains(&table) && client.subscriptions() >= max {
        return Err(super::channels::limit_reached(format!(
            "this connection holds its maximum of {max} subscriptions and watches (--max-subscriptions)"
        )));
    }
    // A short write lock on this OS thread: no change is being made while the
    // watcher's starting point is read, and the table starts keeping its changes.
    let mut t = write(&tref);
    let filter = filter.map(|e| super::tables::compile(&e, &t)).transpose()?;
    let from = m.store.change_seq.current();
    let mut missed = Vec::new();
    let recovered = since.map(|s| match t.log.since(s) {
        Some(changes) => {
            for c in changes {
                if watch::passes(filter.as_ref(), c.before.as_deref(), c.after.as_deref()) {
                    let row_change = super::tables::row_change(
                        &t,
                        c.seq,
                        c.kind,
                        c.before.clone(),
                        c.after.clone(),
                    );
                    missed.push(Push::Row(Arc::new(RowEvent {
                        table: table.clone(),
                        change: c.kind.as_str(),
                        row: Some(row_change.item),
                        seq: Some(c.seq),
                    })));
                }
            }
            true
        }
        None => false,
    });
    t.log.activate(from);
    client.watching.insert(table.clone());
    let outbox = client.outbox.clone();
    let watcher = Watcher {
        outbox: outbox.clone(),
        filter,
        from,
    };
    m.watches.entry(table).or_default().insert(id, watcher);
    // Set before the reply goes out, so every write after the client's +OK reports.
    t.watched.store(true, Ordering::Relaxed);
    drop(t);
    // Staged with the manager's batch, before any change it passes on later.
    for push in missed {
        m.push(&outbox, push);
    }
    let mut fields = vec![("seq", json!(from))];
    if let Some(r) = recovered {
        fields.insert(0, ("recovered", json!(r)));
    }
    Ok(Reply::Record {
        key: "watch",
        fields,
    })
}
