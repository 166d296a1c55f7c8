//! The table family's writes: each applied under its table's write lock, journaled
//! and reported to watchers from under it, so both see a table's changes in the order
//! they were made.

use std::sync::atomic::Ordering;

use serde_json::Value as Json;

use super::check::{
    limit_reached, no_such_table, room_for_rows, table_error, table_ref, target_ids, typed,
};
use super::parse::{Assignments, Target};
use super::read::row_item;
use super::Applied;
use crate::protocol::{ErrorReply, Reply};
use crate::store::changes::LoggedChange;
use crate::store::journal::Record;
use crate::store::schema::{check_name, Schema};
use crate::store::table::Table;
use crate::store::value::Value;
use crate::store::{write, ChangeKind, ChangeNote, DefineError, RowChange, TableStore};

/// `DEFINE`.
pub(super) fn define(store: &TableStore, table: String, columns: Vec<String>) -> Applied {
    check_name("table", &table, true).map_err(|e| ErrorReply::new("bad_args", e))?;
    let schema = Schema::parse_columns(&columns).map_err(|e| ErrorReply::new("bad_args", e))?;
    let seq = store.define(&table, schema).map_err(|e| match e {
        DefineError::Exists => {
            ErrorReply::new("table_exists", format!("table '{table}' already exists"))
        }
        DefineError::TooMany(n) => limit_reached(format!(
            "the server holds its maximum of {n} tables (--max-tables)"
        )),
    })?;
    Ok((Reply::Done(None), seq))
}

/// `UNDEFINE`.
pub(super) fn undefine(store: &TableStore, table: String) -> Applied {
    match store.undefine(&table) {
        Some(seq) => {
            store.notify(ChangeNote::Dropped { table });
            Ok((Reply::Done(None), seq))
        }
        None => Err(no_such_table(store, &table)),
    }
}

/// `INSERT`.
pub(super) fn insert(store: &TableStore, table: String, values: Assignments) -> Applied {
    let tref = table_ref(store, &table)?;
    let mut t = write(&tref);
    let values = typed(&t, &values)?;
    let size = crate::store::table::row_bytes(&[Value::Int(0)])
        + values.iter().map(|(_, v)| v.heap_bytes()).sum::<usize>()
        + (t.schema.columns.len() - 1 - values.len()) * Value::Null.heap_bytes();
    room_for_rows(store, &t, 1, size, size)?;
    let before = t.bytes();
    let id = t.insert(values).map_err(table_error)?;
    store.account(before, t.bytes());
    let row = t.get(id).map_or(&[][..], |r| &r[..]);
    // Recorded (and reported) under the table's lock, so the journal and the
    // watchers see this table's changes in the order they were made.
    let seq = store.log(|| Record::Insert {
        t: table.clone(),
        row: row_json(row),
    });
    if t.watched.load(Ordering::Relaxed) || t.log.is_active() {
        let row = row.to_vec();
        report(
            store,
            &mut t,
            table,
            vec![(ChangeKind::Insert, None, Some(row))],
        );
    }
    let reply = Reply::Count {
        key: "row_id",
        n: id as u64,
    };
    Ok((reply, seq))
}

/// `UPDATE`.
pub(super) fn update(
    store: &TableStore,
    table: String,
    target: Target,
    sets: Assignments,
) -> Applied {
    let tref = table_ref(store, &table)?;
    let mut t = write(&tref);
    let sets = typed(&t, &sets)?;
    let ids = target_ids(&t, &target)?;
    let (mut largest, mut growth) = (0, 0);
    for id in &ids {
        if let (Some(after), Some(row)) = (t.bytes_after(*id, &sets), t.get(*id)) {
            largest = largest.max(after);
            growth += after.saturating_sub(crate::store::table::row_bytes(row));
        }
    }
    room_for_rows(store, &t, 0, largest, growth)?;
    let before = t.bytes();
    let updated = t.update(&ids, &sets).map_err(table_error)?;
    store.account(before, t.bytes());
    let mut seq = None;
    for (_, row) in &updated {
        seq = store.log(|| Record::Update {
            t: table.clone(),
            row: row_json(row),
        });
    }
    let n = updated.len() as u64;
    let changes = updated
        .into_iter()
        .map(|(b, a)| (ChangeKind::Update, Some(b), Some(a)));
    report(store, &mut t, table, changes.collect());
    Ok((Reply::Count { key: "count", n }, seq))
}

/// `DELETE`.
pub(super) fn delete(store: &TableStore, table: String, target: Target) -> Applied {
    let tref = table_ref(store, &table)?;
    let mut t = write(&tref);
    let ids = target_ids(&t, &target)?;
    let before = t.bytes();
    let removed = t.delete(&ids);
    store.account(before, t.bytes());
    let mut seq = None;
    for row in &removed {
        if let Some(Value::Int(id)) = row.first() {
            seq = store.log(|| Record::Delete {
                t: table.clone(),
                id: *id,
            });
        }
    }
    let n = removed.len() as u64;
    let changes = removed
        .into_iter()
        .map(|b| (ChangeKind::Delete, Some(b), None));
    report(store, &mut t, table, changes.collect());
    Ok((Reply::Count { key: "count", n }, seq))
}

/// A row's change: its kind, the row before and after.
type Change = (ChangeKind, Option<Vec<Value>>, Option<Vec<Value>>);

/// Numbers `changes`, keeps them for resuming watchers and tells the watchers, when
/// the table is logged or watched; nothing otherwise. Called under the table's write
/// lock, so watchers and the log see its changes in the order they were made.
fn report(store: &TableStore, t: &mut Table, table: String, changes: Vec<Change>) {
    let watched = t.watched.load(Ordering::Relaxed);
    if changes.is_empty() || !(watched || t.log.is_active()) {
        return;
    }
    let mut told = Vec::new();
    for (kind, before, after) in changes {
        let seq = store.change_seq.next();
        if t.log.is_active() {
            t.log.push(LoggedChange {
                seq,
                kind,
                before: before.clone(),
                after: after.clone(),
            });
        }
        if watched {
            told.push(row_change(t, seq, kind, before, after));
        }
    }
    if !told.is_empty() {
        store.notify(ChangeNote::Rows {
            table,
            changes: told,
        });
    }
}

/// A change as watchers are told of it.
pub(crate) fn row_change(
    t: &Table,
    seq: u64,
    kind: ChangeKind,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
) -> RowChange {
    let shown = after
        .as_ref()
        .or(before.as_ref())
        .map_or(&[][..], |r| &r[..]);
    RowChange {
        seq,
        kind,
        item: row_item(&t.schema, shown),
        before,
        after,
    }
}

fn row_json(row: &[Value]) -> Vec<Json> {
    row.iter().map(Value::to_json).collect()
}
