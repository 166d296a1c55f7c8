//! The table family's reads that answer at once: a row, a table's schema, the list of
//! tables, a whole `SELECT` in memory (for embedders; connections stream theirs
//! through `select.rs`), and `SAVE`.

use serde_json::{json, Map as JsonMap, Value as Json};

use super::check::table_ref;
use super::parse::Query;
use super::Applied;
use crate::protocol::reply::RowsReply;
use crate::protocol::{ErrorReply, Item, Reply};
use crate::store::schema::Schema;
use crate::store::value::Value;
use crate::store::{read, TableStore};

/// `GET`.
pub(super) fn get(store: &TableStore, table: String, id: i64) -> Applied {
    let t = table_ref(store, &table)?;
    let t = read(&t);
    let row = t.get(id).ok_or_else(|| {
        ErrorReply::new(
            "no_such_row",
            format!("table '{table}' has no row with id {id}"),
        )
    })?;
    let reply = Reply::Rows(Box::new(RowsReply {
        key: "row",
        one: true,
        columns: t.schema.names.clone(),
        rows: vec![row.clone()],
    }));
    Ok((reply, None))
}

/// `SCHEMA`.
pub(super) fn schema(store: &TableStore, table: String) -> Applied {
    let t = table_ref(store, &table)?;
    let t = read(&t);
    let items = t
        .schema
        .columns
        .iter()
        .map(|c| Item {
            text: format!(
                "{} {}{}",
                c.name,
                c.ty.as_str(),
                if c.nullable { "?" } else { "" }
            ),
            json: json!({"name": c.name, "type": c.ty.as_str(), "nullable": c.nullable}),
        })
        .collect();
    Ok((
        Reply::List {
            key: "columns",
            items,
        },
        None,
    ))
}

/// A row as a reply item: `id=1 name=alice` and `{"id":1,"name":"alice"}`.
pub fn row_item(schema: &Schema, row: &[Value]) -> Item {
    let mut text = String::new();
    let mut obj = JsonMap::new();
    for (col, v) in schema.columns.iter().zip(row) {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&col.name);
        text.push('=');
        v.write_text(&mut text);
        obj.insert(col.name.clone(), v.to_json());
    }
    Item {
        text,
        json: Json::Object(obj),
    }
}

/// A whole `SELECT` reply in memory (embedders; the connections stream theirs).
pub(super) fn select(store: &TableStore, table: &str, query: &Query) -> Applied {
    let mut stream = super::select::open(store, table, query)?;
    let mut rows = Vec::new();
    while !stream.next_rows(|r| rows.push(r.to_vec())) {}
    let reply = Reply::Rows(Box::new(RowsReply {
        key: "rows",
        one: false,
        columns: stream.columns().clone(),
        rows,
    }));
    Ok((reply, None))
}

pub(super) fn tables(store: &TableStore) -> Reply {
    let items = store
        .all()
        .iter()
        .map(|t| {
            let t = read(t);
            let (rows, columns) = (t.len(), t.schema.columns.len());
            Item {
                text: format!("{} rows={rows} columns={columns}", t.name),
                json: json!({"name": t.name, "rows": rows, "columns": columns}),
            }
        })
        .collect();
    Reply::List {
        key: "tables",
        items,
    }
}

pub(super) fn save(store: &TableStore) -> Applied {
    let unavailable = |why: &str| ErrorReply::new("unavailable", why.to_string());
    let rx = store.request_save().ok_or_else(|| {
        unavailable("tables are not saved by this server (start it with --data-dir)")
    })?;
    // A may channel: only this coroutine waits for the snapshot, not its worker thread.
    match rx.recv() {
        Ok(Ok(r)) => {
            let msg = format!(
                "saved {} tables, {} rows, {} bytes in {} ms",
                r.tables, r.rows, r.bytes, r.millis
            );
            Ok((Reply::Done(Some(msg)), None))
        }
        Ok(Err(e)) => Err(ErrorReply::new("save_failed", e)),
        Err(_) => Err(unavailable("the server is stopping")),
    }
}
