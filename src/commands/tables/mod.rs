//! Table commands, applied by the connection itself on the shared [`TableStore`]:
//! `DEFINE`, `UNDEFINE`, `INSERT`, `GET`, `SELECT`, `UPDATE`, `DELETE`, `COUNT`,
//! `TABLES`, `SCHEMA`, `SAVE`. A command is a variant, a spec and an arm here; its
//! arguments are read with `parse.rs`, checked with `check.rs`, and applied by
//! `write.rs`, `read.rs` or `select.rs` (the streaming cursor).

mod check;
pub(crate) use check::no_such_table;
mod parse;
mod read;
pub mod select;
mod write;

use super::{Command, CommandSpec};
use serde_json::Value as Json;

use crate::protocol::args::{clip, type_name, Args};
use crate::protocol::{ErrorReply, Reply};
use crate::store::expr::Expr;
use crate::store::TableStore;
pub(crate) use check::{compile, writable};
use parse::{
    assignments, id_word, json_count, json_id, json_object_text, starts_with_kw, text_query,
    where_clause,
};
pub(crate) use parse::{json_object, json_where, text_where, whole_expr};
pub use parse::{Assignments, Query, RawValue, Target};
pub(crate) use write::row_change;

/// Why `UPDATE … SET` and `DELETE` need an id or a `WHERE`: neither touches every row
/// by accident.
const EVERY_ROW: &str =
    "give a row id or WHERE <expr>; to change or remove every row, say so: WHERE id > 0";

#[derive(Clone, Debug, PartialEq)]
pub enum TableCommand {
    Define {
        table: String,
        columns: Vec<String>,
    },
    Undefine {
        table: String,
    },
    Insert {
        table: String,
        values: Assignments,
    },
    Get {
        table: String,
        id: i64,
    },
    Select {
        table: String,
        query: Query,
    },
    Update {
        table: String,
        target: Target,
        sets: Assignments,
    },
    Delete {
        table: String,
        target: Target,
    },
    Count {
        table: String,
        filter: Option<Expr>,
    },
    Tables,
    Schema {
        table: String,
    },
    Save,
}

impl TableCommand {
    /// Whether this is a `SELECT`, which connections stream as their client reads.
    pub fn is_select(&self) -> bool {
        matches!(self, TableCommand::Select { .. })
    }

    /// Whether the command changes tables (and so needs the journal).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            TableCommand::Define { .. }
                | TableCommand::Undefine { .. }
                | TableCommand::Insert { .. }
                | TableCommand::Update { .. }
                | TableCommand::Delete { .. }
        )
    }
}

fn cmd(c: TableCommand) -> Result<Command, ErrorReply> {
    Ok(Command::Table(Box::new(c)))
}

pub static SPECS: &[CommandSpec] = &[
    CommandSpec {
        name: "DEFINE",
        usage: "DEFINE <table> <column>:<int|float|str|bool>[?] ...",
        json: r#"{"op":"define","table":"users","columns":["name:str","age:int","email:str?"]}"#,
        summary: "create a table; ? makes a column nullable; every row gets an integer id",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            let mut columns = Vec::new();
            while let Some(c) = a.next_word() {
                columns.push(c.to_string());
            }
            cmd(TableCommand::Define { table, columns })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            let columns = match a.required_value("columns")? {
                Json::Array(v) => v
                    .into_iter()
                    .map(|c| match c {
                        Json::String(s) => Ok(s),
                        other => Err(a.error(format!(
                            "each column is a \"name:type\" string, got {}",
                            type_name(&other)
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                other => {
                    return Err(a.error(format!(
                        "'columns' must be an array, got {}",
                        type_name(&other)
                    )))
                }
            };
            a.finish()?;
            cmd(TableCommand::Define { table, columns })
        },
    },
    CommandSpec {
        name: "UNDEFINE",
        usage: "UNDEFINE <table>",
        json: r#"{"op":"undefine","table":"users"}"#,
        summary: "remove a table and all its rows",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            a.finish()?;
            cmd(TableCommand::Undefine { table })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            a.finish()?;
            cmd(TableCommand::Undefine { table })
        },
    },
    CommandSpec {
        name: "INSERT",
        usage: "INSERT <table> <column>=<value> ... | INSERT <table> {json object}",
        json: r#"{"op":"insert","table":"users","row":{"name":"alice","age":30}}"#,
        summary: "add a row (quote values with spaces); answered +OK <id>",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            let rest = a.rest();
            let values = if rest.starts_with('{') {
                json_object_text(rest).map_err(|e| a.error(e))?
            } else {
                let (values, tail) = assignments(rest, false).map_err(|e| a.error(e))?;
                debug_assert!(tail.is_empty());
                values
            };
            if values.is_empty() {
                return Err(a.error("missing values".into()));
            }
            cmd(TableCommand::Insert { table, values })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            let values = json_object(a.required_value("row")?).map_err(|e| a.error(e))?;
            a.finish()?;
            cmd(TableCommand::Insert { table, values })
        },
    },
    CommandSpec {
        name: "GET",
        usage: "GET <table> <id>",
        json: r#"{"op":"get","table":"users","row_id":1}"#,
        summary: "one row by id",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            let w = a.required("id")?;
            let id = id_word(&a, w)?;
            a.finish()?;
            cmd(TableCommand::Get { table, id })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            let id = json_id(&mut a)?.ok_or_else(|| a.error("missing field 'row_id'".into()))?;
            a.finish()?;
            cmd(TableCommand::Get { table, id })
        },
    },
    CommandSpec {
        name: "SELECT",
        usage: "SELECT <table> [WHERE <expr>] [ORDER BY <column> [ASC|DESC]] [LIMIT <n>] [OFFSET <n>]",
        json: r#"{"op":"select","table":"users","where":"age > 20","order_by":"age","desc":true,"limit":10,"offset":0}"#,
        summary: "rows matching a condition; answered with one item per row, then +OK <n>",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            let query = text_query(a.rest()).map_err(|e| a.error(e))?;
            cmd(TableCommand::Select { table, query })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            let filter = json_where(&mut a)?;
            let order = match a.optional_str("order_by")? {
                Some(col) => {
                    let desc = match a.take("desc") {
                        None | Some(Json::Null) => false,
                        Some(Json::Bool(b)) => b,
                        Some(o) => return Err(a.error(format!("'desc' must be true or false, got {}", type_name(&o)))),
                    };
                    Some((col, desc))
                }
                None => None,
            };
            let limit = json_count(&mut a, "limit")?;
            let offset = json_count(&mut a, "offset")?.unwrap_or(0);
            a.finish()?;
            cmd(TableCommand::Select {
                table,
                query: Query { filter, order, limit, offset },
            })
        },
    },
    CommandSpec {
        name: "UPDATE",
        usage: "UPDATE <table> <id> <column>=<value> ... | UPDATE <table> SET <column>=<value> ... WHERE <expr>",
        json: r#"{"op":"update","table":"users","row_id":1,"set":{"age":31}}"#,
        summary: "change rows by id or by condition; answered +OK <rows changed>",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            let what = a.required("id or SET")?;
            let (target, rest) = if what.eq_ignore_ascii_case("SET") {
                (None, a.rest())
            } else {
                (Some(id_word(&a, what)?), a.rest())
            };
            let (sets, tail) = assignments(rest, target.is_none()).map_err(|e| a.error(e))?;
            if sets.is_empty() {
                return Err(a.error("missing <column>=<value>".into()));
            }
            let target = match target {
                Some(id) => Target::Id(id),
                None if tail.is_empty() => return Err(a.error(EVERY_ROW.into())),
                None => Target::Where(Some(where_clause(tail).map_err(|e| a.error(e))?)),
            };
            cmd(TableCommand::Update { table, target, sets })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            let id = json_id(&mut a)?;
            let filter = json_where(&mut a)?;
            let sets = json_object(a.required_value("set")?).map_err(|e| a.error(e))?;
            let target = match (id, filter) {
                (Some(id), None) => Target::Id(id),
                (None, Some(f)) => Target::Where(Some(f)),
                (None, None) => return Err(a.error(EVERY_ROW.into())),
                _ => return Err(a.error("give exactly one of 'row_id' and 'where'".into())),
            };
            a.finish()?;
            cmd(TableCommand::Update { table, target, sets })
        },
    },
    CommandSpec {
        name: "DELETE",
        usage: "DELETE <table> <id> | DELETE <table> WHERE <expr>",
        json: r#"{"op":"delete","table":"users","where":"age < 18"}"#,
        summary: "remove rows by id or by condition; answered +OK <rows removed>",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            let rest = a.rest();
            let target = if starts_with_kw(rest, "WHERE") {
                Target::Where(Some(where_clause(rest).map_err(|e| a.error(e))?))
            } else {
                let mut b = Args::new(rest, "");
                let w = b.next_word().ok_or_else(|| a.error(EVERY_ROW.into()))?;
                let id = id_word(&a, w)?;
                if let Some(extra) = b.next_word() {
                    return Err(a.error(format!("unexpected argument '{}'", clip(extra))));
                }
                Target::Id(id)
            };
            cmd(TableCommand::Delete { table, target })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            let id = json_id(&mut a)?;
            let filter = json_where(&mut a)?;
            let target = match (id, filter) {
                (Some(id), None) => Target::Id(id),
                (None, Some(f)) => Target::Where(Some(f)),
                (None, None) => return Err(a.error(EVERY_ROW.into())),
                _ => return Err(a.error("give exactly one of 'row_id' and 'where'".into())),
            };
            a.finish()?;
            cmd(TableCommand::Delete { table, target })
        },
    },
    CommandSpec {
        name: "COUNT",
        usage: "COUNT <table> [WHERE <expr>]",
        json: r#"{"op":"count","table":"users","where":"age >= 18"}"#,
        summary: "how many rows match; answered +OK <n>",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            let filter = text_where(&mut a)?;
            cmd(TableCommand::Count { table, filter })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            let filter = json_where(&mut a)?;
            a.finish()?;
            cmd(TableCommand::Count { table, filter })
        },
    },
    CommandSpec {
        name: "TABLES",
        usage: "TABLES",
        json: r#"{"op":"tables"}"#,
        summary: "list tables with their row counts",
        parse_text: |a| a.finish().and_then(|_| cmd(TableCommand::Tables)),
        parse_json: |a| a.finish().and_then(|_| cmd(TableCommand::Tables)),
    },
    CommandSpec {
        name: "SCHEMA",
        usage: "SCHEMA <table>",
        json: r#"{"op":"schema","table":"users"}"#,
        summary: "a table's columns and types",
        parse_text: |mut a| {
            let table = a.required("table")?.to_string();
            a.finish()?;
            cmd(TableCommand::Schema { table })
        },
        parse_json: |mut a| {
            let table = a.required_str("table")?;
            a.finish()?;
            cmd(TableCommand::Schema { table })
        },
    },
    CommandSpec {
        name: "SAVE",
        usage: "SAVE",
        json: r#"{"op":"save"}"#,
        summary: "write every table to the data folder now (a snapshot)",
        parse_text: |a| a.finish().and_then(|_| cmd(TableCommand::Save)),
        parse_json: |a| a.finish().and_then(|_| cmd(TableCommand::Save)),
    },
];

// ---- parsing helpers ----

type Applied = Result<(Reply, Option<u64>), ErrorReply>;

/// Applies a table command. Also returns the journal sequence number of the last change
/// it recorded, which must be durable before the reply is written (fsync `always`).
// Kept out of line: inlined, its large frame would be reserved by every request a
// connection handles, and stack pages once touched stay resident per connection.
#[inline(never)]
pub fn apply(store: &TableStore, c: TableCommand) -> (Reply, Option<u64>) {
    match apply_inner(store, c) {
        Ok(r) => r,
        Err(e) => (Reply::Error(e), None),
    }
}

fn apply_inner(store: &TableStore, c: TableCommand) -> Applied {
    if c.writes() {
        writable(store)?;
    }
    match c {
        TableCommand::Define { table, columns } => write::define(store, table, columns),
        TableCommand::Undefine { table } => write::undefine(store, table),
        TableCommand::Insert { table, values } => write::insert(store, table, values),
        TableCommand::Get { table, id } => read::get(store, table, id),
        TableCommand::Select { table, query } => read::select(store, &table, &query),
        TableCommand::Update {
            table,
            target,
            sets,
        } => write::update(store, table, target, sets),
        TableCommand::Delete { table, target } => write::delete(store, table, target),
        TableCommand::Count { table, filter } => {
            let n = select::count(store, &table, filter.as_ref())?;
            Ok((Reply::Count { key: "count", n }, None))
        }
        TableCommand::Tables => Ok((read::tables(store), None)),
        TableCommand::Schema { table } => read::schema(store, table),
        TableCommand::Save => read::save(store),
    }
}
