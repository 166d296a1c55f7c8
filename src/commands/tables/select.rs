//! `SELECT` and `COUNT` over tables of any size without freezing anyone: rows are
//! visited in chunks of [`CHUNK`], each under a short read lock released before the
//! next, and a coroutine yields between chunks. A `SELECT` is a cursor that the
//! connection drains as its client reads, so an unread reply holds no more than one
//! chunk and the connection's output buffer.
//!
//! Rows are read as the chunks reach them: a row written during a long `SELECT` or
//! `COUNT` may or may not be seen (as with Redis's `SCAN`), each row at most once.

use std::sync::mpsc;

use super::check::{compile, no_such_column, table_ref};
use super::parse::Query;
use crate::protocol::ErrorReply;
use crate::store::expr::{Expr, Predicate};
use crate::store::value::Value;
use crate::store::{read, TableRef, TableStore};

/// Rows visited under one lock hold.
pub const CHUNK: usize = 4096;

/// Sorting more keys than this goes to an OS thread, so a worker is never busy with it.
const SORT_ON_THREAD: usize = 50_000;

/// An open `SELECT`.
pub struct RowStream {
    table: TableRef,
    columns: std::sync::Arc<[String]>,
    filter: Option<Predicate>,
    order: Cursor,
    /// Matching rows still to skip (`OFFSET`, in id order).
    skip: usize,
    /// Rows still to give (`LIMIT`).
    left: usize,
}

enum Cursor {
    /// Id order: the next id to look at; `None` once done.
    ById(Option<i64>),
    /// Another order: the ids, sorted, offset and limit applied; the next to give.
    Ids(Vec<i64>, usize),
}

impl RowStream {
    /// The table's column names, in row order.
    pub fn columns(&self) -> &std::sync::Arc<[String]> {
        &self.columns
    }

    /// Hands up to one chunk's worth of rows to `f`. Returns true when no rows are left.
    pub fn next_rows(&mut self, mut f: impl FnMut(&[Value])) -> bool {
        if self.left == 0 {
            return true;
        }
        let t = read(&self.table);
        match &mut self.order {
            Cursor::ById(next) => {
                let Some(from) = *next else { return true };
                let (skip, left) = (&mut self.skip, &mut self.left);
                *next = t.scan_from(from, CHUNK, self.filter.as_ref(), |row| {
                    if *left == 0 {
                    } else if *skip > 0 {
                        *skip -= 1;
                    } else {
                        *left -= 1;
                        f(row);
                    }
                });
                next.is_none() || self.left == 0
            }
            Cursor::Ids(ids, pos) => {
                let end = (*pos + CHUNK).min(ids.len());
                for id in &ids[*pos..end] {
                    // A row deleted since the sort is skipped.
                    if let Some(row) = t.get(*id) {
                        f(row);
                    }
                }
                *pos = end;
                end == ids.len()
            }
        }
    }
}

/// Opens a `SELECT`: checks the query against the table and, for an `ORDER BY` other
/// than id, gathers and sorts the matching ids (in chunks).
pub fn open(store: &TableStore, table: &str, query: &Query) -> Result<RowStream, ErrorReply> {
    let tref = table_ref(store, table)?;
    let (columns, filter, order) = {
        let t = read(&tref);
        let filter = query.filter.as_ref().map(|e| compile(e, &t)).transpose()?;
        let order = match &query.order {
            None => None,
            Some((col, desc)) => {
                let idx = t
                    .schema
                    .index_of(col)
                    .ok_or_else(|| no_such_column(&format!("cannot ORDER BY '{col}'")))?;
                Some((idx, *desc))
            }
        };
        (t.schema.names.clone(), filter, order)
    };
    let limit = query.limit.unwrap_or(usize::MAX);
    let order = match order {
        None | Some((0, false)) => Cursor::ById(Some(i64::MIN)),
        Some((col, desc)) => {
            let mut keys: Vec<(Value, i64)> = Vec::new();
            let mut next = Some(i64::MIN);
            let mut slice = crate::coop::Slice::new();
            while let Some(from) = next {
                next = read(&tref).scan_from(from, CHUNK, filter.as_ref(), |row| {
                    if let Some(Value::Int(id)) = row.first() {
                        keys.push((row[col].clone(), *id));
                    }
                });
                slice.give_way();
            }
            let keys = sort(keys, desc);
            let ids = keys
                .into_iter()
                .skip(query.offset)
                .take(limit)
                .map(|(_, id)| id)
                .collect();
            return Ok(RowStream {
                table: tref,
                columns,
                filter,
                order: Cursor::Ids(ids, 0),
                skip: 0,
                left: limit,
            });
        }
    };
    Ok(RowStream {
        table: tref,
        columns,
        filter,
        order,
        skip: query.offset,
        left: limit,
    })
}

/// Sorts by key (ties by id, so the order is stable), big sets on an OS thread while
/// the coroutine waits on a `may` channel.
fn sort(mut keys: Vec<(Value, i64)>, desc: bool) -> Vec<(Value, i64)> {
    fn by(keys: &mut [(Value, i64)], desc: bool) {
        keys.sort_by(|a, b| {
            let o = a.0.sort_cmp(&b.0).then(a.1.cmp(&b.1));
            if desc {
                o.reverse()
            } else {
                o
            }
        });
    }
    if keys.len() < SORT_ON_THREAD || !may::coroutine::is_coroutine() {
        by(&mut keys, desc);
        return keys;
    }
    let (tx, rx) = may::sync::mpsc::channel();
    let (back_tx, back_rx) = mpsc::channel::<Vec<(Value, i64)>>();
    let spawned = std::thread::Builder::new()
        .name("sort".into())
        .spawn(move || {
            if let Ok(mut keys) = back_rx.recv() {
                by(&mut keys, desc);
                let _ = tx.send(keys);
            }
        });
    match spawned {
        Ok(_) => {
            let _ = back_tx.send(keys);
            rx.recv().unwrap_or_default()
        }
        Err(_) => {
            by(&mut keys, desc);
            keys
        }
    }
}

/// `COUNT … [WHERE …]`, in chunks.
pub fn count(store: &TableStore, table: &str, filter: Option<&Expr>) -> Result<u64, ErrorReply> {
    let tref = table_ref(store, table)?;
    let p = {
        let t = read(&tref);
        match filter {
            None => return Ok(t.len() as u64),
            Some(e) => compile(e, &t)?,
        }
    };
    let mut n = 0u64;
    let mut next = Some(i64::MIN);
    let mut slice = crate::coop::Slice::new();
    while let Some(from) = next {
        next = read(&tref).scan_from(from, CHUNK, Some(&p), |_| n += 1);
        slice.give_way();
    }
    Ok(n)
}
