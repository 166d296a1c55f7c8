//! Tables for programs that embed the server: the same commands a wire client sends,
//! applied the same way (typed against the schema, journaled, seen by `WATCH`ers), with
//! rows as JSON objects. A write returns once its journal record is durable by the
//! server's fsync policy, exactly when a wire client would get its `+OK`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json};

use super::tables::{self, json_object, whole_expr, Query, TableCommand, Target};
use crate::protocol::{ErrorReply, Reply};
use crate::store::journal::Waiter;
use crate::store::TableStore;

/// A handle on the server's tables ([`crate::ServerHandle::tables`]). Cheap to clone;
/// usable from threads and from coroutines (a write waits without blocking a worker).
#[derive(Clone)]
pub struct Tables {
    store: Arc<TableStore>,
}

/// What went wrong, with the same stable code a wire client gets (`no_such_table`,
/// `bad_value`, `null_not_allowed`, `unavailable`, …) and a message for people.
pub type TableError = ErrorReply;

impl Tables {
    pub(crate) fn new(store: Arc<TableStore>) -> Tables {
        Tables { store }
    }

    /// `DEFINE`: columns as `name:type[?]`.
    pub fn define(&self, table: &str, columns: &[&str]) -> Result<(), TableError> {
        let columns = columns.iter().map(|c| c.to_string()).collect();
        self.write(TableCommand::Define {
            table: table.into(),
            columns,
        })
        .map(|_| ())
    }

    /// `UNDEFINE`: removes the table and its rows.
    pub fn undefine(&self, table: &str) -> Result<(), TableError> {
        self.write(TableCommand::Undefine {
            table: table.into(),
        })
        .map(|_| ())
    }

    /// `INSERT` of a JSON object of column values; returns the new row's id.
    pub fn insert(&self, table: &str, row: Json) -> Result<i64, TableError> {
        let values = json_object(row).map_err(bad_args)?;
        let n = self.write(TableCommand::Insert {
            table: table.into(),
            values,
        })?;
        Ok(n as i64)
    }

    /// `UPDATE` of one row by id; returns how many rows changed (0 or 1).
    pub fn update(&self, table: &str, id: i64, set: Json) -> Result<u64, TableError> {
        let sets = json_object(set).map_err(bad_args)?;
        self.write(TableCommand::Update {
            table: table.into(),
            target: Target::Id(id),
            sets,
        })
    }

    /// `DELETE` of one row by id; returns how many rows went (0 or 1).
    pub fn delete(&self, table: &str, id: i64) -> Result<u64, TableError> {
        self.write(TableCommand::Delete {
            table: table.into(),
            target: Target::Id(id),
        })
    }

    /// `GET`: one row as a JSON object, `id` included.
    pub fn get(&self, table: &str, id: i64) -> Result<Json, TableError> {
        let mut rows = self.rows(TableCommand::Get {
            table: table.into(),
            id,
        })?;
        Ok(rows.pop().unwrap_or(Json::Null))
    }

    /// `SELECT … WHERE <filter>` (the wire's `WHERE` language), in id order.
    pub fn select(&self, table: &str, filter: Option<&str>) -> Result<Vec<Json>, TableError> {
        let filter = filter.map(whole_expr).transpose().map_err(bad_args)?;
        self.rows(TableCommand::Select {
            table: table.into(),
            query: Query {
                filter,
                ..Query::default()
            },
        })
    }

    /// `SELECT … [WHERE <filter>] [ORDER BY <column> [DESC]] [LIMIT <n>]`: `select`
    /// says which rows, in what order, and how many.
    pub fn select_by(&self, table: &str, select: &Select) -> Result<Vec<Json>, TableError> {
        let filter = select
            .filter
            .as_deref()
            .map(whole_expr)
            .transpose()
            .map_err(bad_args)?;
        self.rows(TableCommand::Select {
            table: table.into(),
            query: Query {
                filter,
                order: select.order.clone(),
                limit: select.limit,
                offset: 0,
            },
        })
    }

    /// `COUNT … WHERE <filter>`.
    pub fn count(&self, table: &str, filter: Option<&str>) -> Result<u64, TableError> {
        let filter = filter.map(whole_expr).transpose().map_err(bad_args)?;
        match self.apply(TableCommand::Count {
            table: table.into(),
            filter,
        })? {
            Reply::Count { n, .. } => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    fn rows(&self, c: TableCommand) -> Result<Vec<Json>, TableError> {
        match self.apply(c)? {
            Reply::Rows(r) => Ok(r
                .rows
                .iter()
                .map(|row| {
                    let obj: Map<String, Json> = r
                        .columns
                        .iter()
                        .zip(row)
                        .map(|(c, v)| (c.clone(), v.to_json()))
                        .collect();
                    Json::Object(obj)
                })
                .collect()),
            other => Err(unexpected(&other)),
        }
    }

    /// Applies a write and waits until the journal holds it.
    fn write(&self, c: TableCommand) -> Result<u64, TableError> {
        let (reply, seq) = tables::apply(&self.store, c);
        let n = match reply {
            Reply::Error(e) => return Err(e),
            Reply::Count { n, .. } => n,
            _ => 0,
        };
        if let Some(seq) = seq {
            wait_durable(&self.store, seq)?;
        }
        Ok(n)
    }

    fn apply(&self, c: TableCommand) -> Result<Reply, TableError> {
        match tables::apply(&self.store, c).0 {
            Reply::Error(e) => Err(e),
            r => Ok(r),
        }
    }
}

/// Waits until journal record `seq` is durable by the server's fsync policy (at once
/// without a journal), or says why it cannot be now. A coroutine waits here without
/// blocking its worker.
pub(crate) fn wait_durable(store: &TableStore, seq: u64) -> Result<(), ErrorReply> {
    let Some(journal) = store.journal() else {
        return Ok(());
    };
    let (tx, rx) = may::sync::mpsc::channel();
    let waiter: Arc<dyn Waiter> = Arc::new(ChannelWaiter(tx));
    while !journal.durable_or_wake(seq, &waiter) {
        if let Some(why) = journal.failure() {
            return Err(ErrorReply::new(
                "unavailable",
                format!("{why}; this change is applied in memory and will be journaled once the disk can be written, but it is not durable now"),
            ));
        }
        let _ = rx.recv_timeout(Duration::from_millis(500));
    }
    Ok(())
}

/// Which rows a [`Tables::select_by`] returns: a `WHERE` condition, an order and a
/// limit, each optional (`Select::default()` is every row in id order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Select {
    filter: Option<String>,
    order: Option<(String, bool)>,
    limit: Option<usize>,
}

impl Select {
    /// Every row, in id order.
    pub fn new() -> Select {
        Select::default()
    }

    /// Only rows matching a condition in the `WHERE` language (`room = lobby`).
    pub fn filter(mut self, condition: &str) -> Select {
        self.filter = Some(condition.to_string());
        self
    }

    /// Ordered by `column`, descending when `descending`.
    pub fn order_by(mut self, column: &str, descending: bool) -> Select {
        self.order = Some((column.to_string(), descending));
        self
    }

    /// At most `n` rows.
    pub fn limit(mut self, n: usize) -> Select {
        self.limit = Some(n);
        self
    }
}

struct ChannelWaiter(may::sync::mpsc::Sender<()>);

impl Waiter for ChannelWaiter {
    fn wake(&self) {
        let _ = self.0.send(());
    }
}

fn bad_args(message: String) -> ErrorReply {
    ErrorReply::new("bad_args", message)
}

fn unexpected(r: &Reply) -> ErrorReply {
    ErrorReply::new("internal", format!("unexpected reply {r:?}"))
}
