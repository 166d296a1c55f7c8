//! Looking tables up and checking a request against them, with the table commands'
//! error codes: names, columns, types, limits, and whether the journal can be written.

use super::parse::{Assignments, RawValue, Target};
use crate::protocol::args::clip;
use crate::protocol::ErrorReply;
use crate::store::expr::{CompileError, Expr, Predicate};
use crate::store::table::{Table, TableError};
use crate::store::value::Value;
use crate::store::{TableRef, TableStore};

pub(crate) fn no_such_table(store: &TableStore, name: &str) -> ErrorReply {
    let mut message = format!(
        "no table named '{}' (TABLES lists them; DEFINE creates one)",
        clip(name)
    );
    if let Some(node) = store.node() {
        message.push_str(&format!(
            "; in a cluster each node holds its own tables, and this is node {node}: ask the node that holds it"
        ));
    }
    ErrorReply::new("no_such_table", message)
}

/// Checks an expression against a table, with the table commands' error codes.
pub(crate) fn compile(e: &Expr, t: &Table) -> Result<Predicate, ErrorReply> {
    e.compile(&t.schema).map_err(|e| match e {
        CompileError::NoSuchColumn(m) => {
            ErrorReply::new("no_such_column", format!("in WHERE: {m}"))
        }
        CompileError::BadValue(m) => ErrorReply::new("bad_where", m),
    })
}

pub(super) fn limit_reached(message: String) -> ErrorReply {
    ErrorReply::new("limit_reached", message)
}

/// Refuses a write that would add `rows` rows, make a row `largest` bytes, or grow the
/// store by `growth` bytes past its limits.
pub(super) fn room_for_rows(
    store: &TableStore,
    t: &Table,
    rows: usize,
    largest: usize,
    growth: usize,
) -> Result<(), ErrorReply> {
    let l = &store.limits;
    if largest > l.max_row_bytes {
        return Err(limit_reached(format!(
            "a row of about {largest} bytes is over the {}-byte limit (--max-row-bytes)",
            l.max_row_bytes
        )));
    }
    if rows > 0 && t.len() + rows > l.max_table_rows {
        return Err(limit_reached(format!(
            "table '{}' holds its maximum of {} rows (--max-table-rows)",
            t.name, l.max_table_rows
        )));
    }
    if growth > 0 && store.bytes() + growth > l.max_store_bytes {
        return Err(limit_reached(format!(
            "the tables hold about {} bytes, their maximum is {} (--max-store-mib)",
            store.bytes(),
            l.max_store_bytes
        )));
    }
    Ok(())
}

pub(super) fn table_error(e: TableError) -> ErrorReply {
    match e {
        TableError::NullNotAllowed(col) => ErrorReply::new(
            "null_not_allowed",
            format!("column '{col}' may not be null (define it as {col}:<type>? to allow null)"),
        ),
    }
}

/// Types `values` against the table's columns.
pub(super) fn typed(t: &Table, values: &Assignments) -> Result<Vec<(usize, Value)>, ErrorReply> {
    let mut out: Vec<(usize, Value)> = Vec::with_capacity(values.len());
    for (col, raw) in values {
        let idx = t.schema.index_of(col).ok_or_else(|| {
            ErrorReply::new(
                "no_such_column",
                format!(
                    "table '{}' has no column '{}' (columns: {})",
                    t.name,
                    clip(col),
                    t.schema.names().join(", ")
                ),
            )
        })?;
        if idx == 0 {
            return Err(ErrorReply::new(
                "bad_args",
                "'id' is assigned by the server and cannot be set".into(),
            ));
        }
        if out.iter().any(|(i, _)| *i == idx) {
            return Err(ErrorReply::new(
                "bad_args",
                format!("column '{col}' is given twice"),
            ));
        }
        let ty = t.schema.columns[idx].ty;
        let v = match raw {
            RawValue::Text { text, quoted } => {
                Value::from_text(ty, text, *quoted).map_err(|want| {
                    let shown = if *quoted {
                        format!("\"{}\"", clip(text))
                    } else {
                        format!("'{}'", clip(text))
                    };
                    ErrorReply::new(
                        "bad_value",
                        format!("column '{col}' is {} {want}; {shown} is not", ty.article()),
                    )
                })?
            }
            RawValue::Json(j) => Value::from_json(ty, j).map_err(|want| {
                ErrorReply::new(
                    "bad_value",
                    format!(
                        "column '{col}' is {} {want}; {} is not",
                        ty.article(),
                        clip(&j.to_string())
                    ),
                )
            })?,
        };
        out.push((idx, v));
    }
    Ok(out)
}

pub(crate) fn table_ref(store: &TableStore, name: &str) -> Result<TableRef, ErrorReply> {
    store.get(name).ok_or_else(|| no_such_table(store, name))
}

/// Refuses a write while the journal cannot write, before anything changes.
pub(crate) fn writable(store: &TableStore) -> Result<(), ErrorReply> {
    match store.journal().and_then(|j| j.failure()) {
        None => Ok(()),
        Some(why) => Err(ErrorReply::new(
            "unavailable",
            format!("{why}; nothing was changed, and writes resume by themselves once it can"),
        )),
    }
}

/// `no_such_column` for a column named in `what`.
pub(crate) fn no_such_column(what: &str) -> ErrorReply {
    ErrorReply::new("no_such_column", format!("{}: no such column", clip(what)))
}

/// The ids an `UPDATE` or `DELETE` targets, in a table already locked.
pub(super) fn target_ids(t: &Table, target: &Target) -> Result<Vec<i64>, ErrorReply> {
    Ok(match target {
        Target::Id(id) => t.get(*id).map(|_| vec![*id]).unwrap_or_default(),
        Target::Where(f) => {
            let p = f.as_ref().map(|e| compile(e, t)).transpose()?;
            t.ids(p.as_ref())
        }
    })
}
