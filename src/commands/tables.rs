//! Table commands, applied by the connection itself on the shared [`TableStore`]:
//! `DEFINE`, `UNDEFINE`, `INSERT`, `GET`, `SELECT`, `UPDATE`, `DELETE`, `COUNT`,
//! `TABLES`, `SCHEMA`.

use serde_json::{json, Map as JsonMap, Value as Json};

use super::Command;
use super::CommandSpec;
use crate::protocol::args::{clip, type_name, Args, JsonArgs};
use crate::protocol::json::check_depth;
use crate::protocol::reply::RowsReply;
use crate::protocol::{ErrorReply, Item, Reply};
use crate::store::expr::{self, CompileError, Expr, Predicate};
use crate::store::journal::Record;
use crate::store::lex::{self, Tok};
use crate::store::schema::{check_name, Schema};
use crate::store::table::{Table, TableError};
use crate::store::value::Value;
use crate::store::{read, write, ChangeKind, ChangeNote, DefineError, RowChange, TableStore};
use std::sync::atomic::Ordering;

/// Why `UPDATE … SET` and `DELETE` need an id or a `WHERE`: neither touches every row
/// by accident.
const EVERY_ROW: &str =
    "give a row id or WHERE <expr>; to change or remove every row, say so: WHERE id > 0";

/// Deepest JSON accepted inside a text command (`INSERT t {...}`).
const MAX_JSON_DEPTH: usize = 32;

/// A value as the client wrote it, typed later against its column.
#[derive(Clone, Debug, PartialEq)]
pub enum RawValue {
    Text { text: String, quoted: bool },
    Json(Json),
}

/// `column = value` pairs, in the order given.
pub type Assignments = Vec<(String, RawValue)>;

/// Which rows an `UPDATE` or `DELETE` touches.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Id(i64),
    /// `None`: every row (only `UPDATE ... SET` without `WHERE`).
    Where(Option<Expr>),
}

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

/// What `SELECT` asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    pub filter: Option<Expr>,
    /// Column and whether descending.
    pub order: Option<(String, bool)>,
    pub limit: Option<usize>,
    pub offset: usize,
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

fn id_word(a: &Args, w: &str) -> Result<i64, ErrorReply> {
    w.parse::<i64>()
        .map_err(|_| a.error(format!("'{}' is not a row id (an integer)", clip(w))))
}

fn starts_with_kw(s: &str, kw: &str) -> bool {
    s.len() >= kw.len()
        && s.is_char_boundary(kw.len())
        && s[..kw.len()].eq_ignore_ascii_case(kw)
        && s[kw.len()..].chars().next().is_none_or(char::is_whitespace)
}

/// Parses `col=value` pairs. With `stop_at_where`, stops at a `WHERE` keyword and
/// returns the text from it.
fn assignments(mut s: &str, stop_at_where: bool) -> Result<(Assignments, &str), String> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Ok((out, s));
        }
        if stop_at_where && starts_with_kw(s, "WHERE") {
            return Ok((out, s));
        }
        let Some(eq) = s.find('=') else {
            return Err(format!("expected <column>=<value>, found '{}'", clip(s)));
        };
        let col = &s[..eq];
        if col.is_empty() || col.contains(char::is_whitespace) {
            return Err(format!(
                "expected <column>=<value>, found '{}'",
                clip(s.split_whitespace().next().unwrap_or(s))
            ));
        }
        s = &s[eq + 1..];
        let value = if s.starts_with('"') {
            let (text, len) = lex::quoted(s)?;
            s = &s[len..];
            if s.chars().next().is_some_and(|c| !c.is_whitespace()) {
                return Err(format!(
                    "expected a space after the quoted value of '{col}'"
                ));
            }
            RawValue::Text { text, quoted: true }
        } else {
            let end = s.find(char::is_whitespace).unwrap_or(s.len());
            let text = s[..end].to_string();
            s = &s[end..];
            if text.is_empty() {
                return Err(format!(
                    "missing value for '{col}' (write {col}=null for null)"
                ));
            }
            RawValue::Text {
                text,
                quoted: false,
            }
        };
        out.push((col.to_string(), value));
    }
}

fn json_object_text(s: &str) -> Result<Assignments, String> {
    if let Err(d) = check_depth(s.as_bytes(), MAX_JSON_DEPTH) {
        return Err(format!(
            "JSON nested deeper than {MAX_JSON_DEPTH} levels (found {d})"
        ));
    }
    let v: Json = serde_json::from_str(s).map_err(|e| format!("invalid JSON object: {e}"))?;
    json_object(v)
}

pub(crate) fn json_object(v: Json) -> Result<Assignments, String> {
    match v {
        Json::Object(m) => Ok(m.into_iter().map(|(k, v)| (k, RawValue::Json(v))).collect()),
        other => Err(format!(
            "expected a JSON object of column values, got {}",
            type_name(&other)
        )),
    }
}

/// `WHERE <expr>` (the keyword included) to the end of `s`.
pub(crate) fn where_clause(s: &str) -> Result<Expr, String> {
    let toks = lex::tokenize(s)?;
    if !toks.first().is_some_and(|t| t.is_kw("WHERE")) {
        return Err(format!("expected WHERE, found '{}'", clip(s)));
    }
    let mut pos = 1;
    let e = expr::parse(&toks, &mut pos)?;
    match toks.get(pos) {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {} after the condition", t.describe())),
    }
}

/// An expression that is the whole of `s` (JSON's `"where"`).
pub(crate) fn whole_expr(s: &str) -> Result<Expr, String> {
    let toks = lex::tokenize(s)?;
    let mut pos = 0;
    let e = expr::parse(&toks, &mut pos)?;
    match toks.get(pos) {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {} after the condition", t.describe())),
    }
}

fn text_query(s: &str) -> Result<Query, String> {
    let toks = lex::tokenize(s)?;
    let mut q = Query::default();
    let mut pos = 0;
    if toks.first().is_some_and(|t| t.is_kw("WHERE")) {
        pos = 1;
        q.filter = Some(expr::parse(&toks, &mut pos)?);
    }
    if toks.get(pos).is_some_and(|t| t.is_kw("ORDER")) {
        if !toks.get(pos + 1).is_some_and(|t| t.is_kw("BY")) {
            return Err("expected ORDER BY <column>".into());
        }
        let Some(Tok::Word(col)) = toks.get(pos + 2) else {
            return Err("expected a column after ORDER BY".into());
        };
        pos += 3;
        let mut desc = false;
        if toks.get(pos).is_some_and(|t| t.is_kw("DESC")) {
            desc = true;
            pos += 1;
        } else if toks.get(pos).is_some_and(|t| t.is_kw("ASC")) {
            pos += 1;
        }
        q.order = Some((col.clone(), desc));
    }
    while let Some(t) = toks.get(pos) {
        let slot = if t.is_kw("LIMIT") && q.limit.is_none() {
            "LIMIT"
        } else if t.is_kw("OFFSET") {
            "OFFSET"
        } else {
            return Err(format!("unexpected {}", t.describe()));
        };
        let n = match toks.get(pos + 1) {
            Some(Tok::Word(w)) => w
                .parse::<usize>()
                .map_err(|_| format!("{slot} needs a count, got '{w}'"))?,
            _ => return Err(format!("{slot} needs a count")),
        };
        if slot == "LIMIT" {
            q.limit = Some(n);
        } else {
            q.offset = n;
        }
        pos += 2;
    }
    Ok(q)
}

fn json_id(a: &mut JsonArgs) -> Result<Option<i64>, ErrorReply> {
    match a.take("row_id") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(o) => Err(a.error(format!(
            "'row_id' must be an integer, got {}",
            type_name(&o)
        ))),
    }
}

/// An optional `WHERE <expr>` that ends a text command (SUB, WATCH, COUNT).
pub(crate) fn text_where(a: &mut Args) -> Result<Option<Expr>, ErrorReply> {
    let rest = a.rest();
    if rest.is_empty() {
        return Ok(None);
    }
    where_clause(rest).map(Some).map_err(|e| a.error(e))
}

/// An optional `"where"` field of a JSON request.
pub(crate) fn json_where(a: &mut JsonArgs) -> Result<Option<Expr>, ErrorReply> {
    match a.optional_str("where")? {
        None => Ok(None),
        Some(s) => whole_expr(&s).map(Some).map_err(|e| a.error(e)),
    }
}

fn json_count(a: &mut JsonArgs, key: &str) -> Result<Option<usize>, ErrorReply> {
    match a.take(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().map(|n| n as usize)),
        Some(o) => Err(a.error(format!("'{key}' must be a count, got {}", type_name(&o)))),
    }
}

// ---- applying ----

fn no_such_table(name: &str) -> ErrorReply {
    ErrorReply::new(
        "no_such_table",
        format!(
            "no table named '{}' (TABLES lists them; DEFINE creates one)",
            clip(name)
        ),
    )
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

fn limit_reached(message: String) -> ErrorReply {
    ErrorReply::new("limit_reached", message)
}

/// Refuses a write that would add `rows` rows, make a row `largest` bytes, or grow the
/// store by `growth` bytes past its limits.
fn room_for_rows(
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

fn table_error(e: TableError) -> ErrorReply {
    match e {
        TableError::NullNotAllowed(col) => ErrorReply::new(
            "null_not_allowed",
            format!("column '{col}' may not be null (define it as {col}:<type>? to allow null)"),
        ),
    }
}

/// Types `values` against the table's columns.
fn typed(t: &Table, values: &Assignments) -> Result<Vec<(usize, Value)>, ErrorReply> {
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

/// A change as watchers are told of it.
fn row_change(
    t: &Table,
    kind: ChangeKind,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
) -> RowChange {
    let shown = after
        .as_ref()
        .or(before.as_ref())
        .map_or(&[][..], |r| &r[..]);
    RowChange {
        kind,
        item: row_item(&t.schema, shown),
        before,
        after,
    }
}

fn row_json(row: &[Value]) -> Vec<Json> {
    row.iter().map(Value::to_json).collect()
}

pub(crate) fn table_ref(
    store: &TableStore,
    name: &str,
) -> Result<crate::store::TableRef, ErrorReply> {
    store.get(name).ok_or_else(|| no_such_table(name))
}

type Applied = Result<(Reply, Option<u64>), ErrorReply>;

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

fn apply_inner(store: &TableStore, c: TableCommand) -> Applied {
    if c.writes() {
        writable(store)?;
    }
    match c {
        TableCommand::Define { table, columns } => {
            check_name("table", &table, true).map_err(|e| ErrorReply::new("bad_args", e))?;
            let schema =
                Schema::parse_columns(&columns).map_err(|e| ErrorReply::new("bad_args", e))?;
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
        TableCommand::Undefine { table } => match store.undefine(&table) {
            Some(seq) => {
                store.notify(ChangeNote::Dropped { table });
                Ok((Reply::Done(None), seq))
            }
            None => Err(no_such_table(&table)),
        },
        TableCommand::Insert { table, values } => {
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
            if t.watched.load(Ordering::Relaxed) {
                let row = row.to_vec();
                let change = row_change(&t, ChangeKind::Insert, None, Some(row));
                store.notify(ChangeNote::Rows {
                    table,
                    changes: vec![change],
                });
            }
            let reply = Reply::Count {
                key: "row_id",
                n: id as u64,
            };
            Ok((reply, seq))
        }
        TableCommand::Get { table, id } => {
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
        TableCommand::Select { table, query } => select(store, &table, &query),
        TableCommand::Update {
            table,
            target,
            sets,
        } => {
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
            if t.watched.load(Ordering::Relaxed) && !updated.is_empty() {
                let changes = updated
                    .into_iter()
                    .map(|(b, a)| row_change(&t, ChangeKind::Update, Some(b), Some(a)))
                    .collect();
                store.notify(ChangeNote::Rows { table, changes });
            }
            Ok((Reply::Count { key: "count", n }, seq))
        }
        TableCommand::Delete { table, target } => {
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
            if t.watched.load(Ordering::Relaxed) && !removed.is_empty() {
                let changes = removed
                    .into_iter()
                    .map(|b| row_change(&t, ChangeKind::Delete, Some(b), None))
                    .collect();
                store.notify(ChangeNote::Rows { table, changes });
            }
            Ok((Reply::Count { key: "count", n }, seq))
        }
        TableCommand::Count { table, filter } => {
            let n = super::select::count(store, &table, filter.as_ref())?;
            Ok((Reply::Count { key: "count", n }, None))
        }
        TableCommand::Tables => Ok((tables(store), None)),
        TableCommand::Schema { table } => {
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
        TableCommand::Save => save(store),
    }
}

/// The ids an `UPDATE` or `DELETE` targets, in a table already locked.
fn target_ids(t: &Table, target: &Target) -> Result<Vec<i64>, ErrorReply> {
    Ok(match target {
        Target::Id(id) => t.get(*id).map(|_| vec![*id]).unwrap_or_default(),
        Target::Where(f) => {
            let p = f.as_ref().map(|e| compile(e, t)).transpose()?;
            t.ids(p.as_ref())
        }
    })
}

/// A whole `SELECT` reply in memory (embedders; the connections stream theirs).
fn select(store: &TableStore, table: &str, query: &Query) -> Applied {
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

/// `no_such_column` for a column named in `what`.
pub(crate) fn no_such_column(what: &str) -> ErrorReply {
    ErrorReply::new("no_such_column", format!("{}: no such column", clip(what)))
}

fn tables(store: &TableStore) -> Reply {
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

fn save(store: &TableStore) -> Applied {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_parsing() {
        let (a, rest) = assignments(r#"name="alice smith" age=30 note=a=b"#, false).unwrap();
        assert_eq!(rest, "");
        assert_eq!(
            a[0],
            (
                "name".into(),
                RawValue::Text {
                    text: "alice smith".into(),
                    quoted: true
                }
            )
        );
        assert_eq!(
            a[1],
            (
                "age".into(),
                RawValue::Text {
                    text: "30".into(),
                    quoted: false
                }
            )
        );
        assert_eq!(
            a[2],
            (
                "note".into(),
                RawValue::Text {
                    text: "a=b".into(),
                    quoted: false
                }
            )
        );
        let (a, rest) = assignments("age=31 WHERE name = bob", true).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(rest, "WHERE name = bob");
        assert!(assignments("age", false).is_err());
        assert!(assignments("age= x", false).is_err());
        assert!(assignments(r#"a="x"y"#, false).is_err());
    }

    #[test]
    fn query_parsing() {
        let q = text_query("WHERE age > 20 ORDER BY age DESC LIMIT 5 OFFSET 2").unwrap();
        assert!(q.filter.is_some());
        assert_eq!(q.order, Some(("age".into(), true)));
        assert_eq!((q.limit, q.offset), (Some(5), 2));
        let q = text_query("where status = limit limit 3").unwrap();
        assert_eq!(q.limit, Some(3), "a bare word after an operator is a value");
        assert!(text_query("ORDER age").is_err());
        assert!(text_query("LIMIT x").is_err());
        assert!(text_query("WHERE a = 1 junk").is_err());
    }
}
