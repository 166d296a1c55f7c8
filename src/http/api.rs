//! The JSON API's routes beyond the listings: a table's rows (`GET /api/tables/<t>`,
//! also `.csv`), `POST /api/publish` and `POST /api/call/<action>`. Each is a wire
//! command, built and parsed the way a client's would be, so it is checked and answered
//! the same way.

use serde_json::Value;

use super::{Answer, HttpContext};
use crate::commands::app::AppCommand;
use crate::commands::{self, Command};
use crate::framework::Ctx;
use crate::protocol::{ErrorReply, Payload, Reply};

/// Rows a table route answers with when it names no `limit`, and the most it may ask.
pub const DEFAULT_LIMIT: u64 = 1000;
pub const MAX_LIMIT: u64 = 100_000;

/// `%xx` and `+` decoded (a query string's value); `None` when it is not UTF-8.
pub fn decode_query(s: &str) -> Option<String> {
    percent_decode(s, true)
}

/// `%xx` decoded, and `+` as a space when `plus_is_space` (a query string, not a
/// path); `None` for a broken escape or a result that is not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The query string's parameters, decoded.
pub fn query_params(query: &str) -> Result<Vec<(String, String)>, ErrorReply> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match (decode_query(k), decode_query(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(ErrorReply::new(
                    "bad_args",
                    format!(
                        "the query parameter '{}' is not valid UTF-8 or %-encoding",
                        crate::protocol::args::clip(p)
                    ),
                )),
            }
        })
        .collect()
}

/// `SELECT` for `GET /api/tables/<table>?where=…&order=…&limit=…&offset=…`.
pub fn select(table: &str, params: &[(String, String)]) -> Result<Command, ErrorReply> {
    let bad = |m: String| ErrorReply::new("bad_args", m);
    if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad(format!(
            "'{}' is not a table name",
            crate::protocol::args::clip(table)
        )));
    }
    let mut text = table.to_string();
    let mut limit = DEFAULT_LIMIT;
    let mut clauses = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "where" => clauses.push((0, format!(" WHERE {v}"))),
            "order" => clauses.push((1, format!(" ORDER BY {v}"))),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| *n <= MAX_LIMIT)
                    .ok_or_else(|| bad(format!("limit must be a count up to {MAX_LIMIT}")))?;
            }
            "offset" => {
                let n: u64 = v
                    .parse()
                    .map_err(|_| bad("offset must be a count".into()))?;
                clauses.push((3, format!(" OFFSET {n}")));
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter '{}'; there are where, order, limit, offset",
                    crate::protocol::args::clip(other)
                )))
            }
        }
    }
    clauses.push((2, format!(" LIMIT {limit}")));
    clauses.sort_by_key(|(i, _)| *i);
    for (_, c) in clauses {
        text.push_str(&c);
    }
    commands::parse_text("SELECT", &text)
}

/// The rows of a `SELECT` reply as CSV.
pub fn csv_answer(reply: &Reply) -> Answer {
    match reply {
        Reply::Rows(r) => Answer::bytes(
            200,
            "Content-Type: text/csv; charset=utf-8",
            crate::store::persist::rows_csv(
                r.columns.iter().map(String::as_str),
                r.rows.iter().map(|row| &row[..]),
                r.rows.len(),
            ),
        ),
        other => Answer::reply(other),
    }
}

/// `PUB` for `POST /api/publish` with `{"channel":…,"data":…}`: the body is read as a
/// JSON `pub` request.
pub fn publish(ctx: &HttpContext, body: &[u8]) -> Result<Command, ErrorReply> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| ErrorReply::new("bad_json", format!("the body is not JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(ErrorReply::new(
            "bad_args",
            r#"the body must be an object: {"channel":"news","data":…}"#.into(),
        ));
    };
    obj.insert("op".into(), Value::from("pub"));
    let line = serde_json::to_vec(&v).unwrap_or_default();
    let req = commands::parse_request(&line, &ctx.settings.parse)
        .ok_or_else(|| ErrorReply::new("bad_args", "an empty request".into()))?;
    req.command
}

/// `CALL <action>` for `POST /api/call/<action>`, the body (JSON, or nothing for null)
/// as its argument.
pub fn call_command(action: &str, body: &[u8]) -> Result<Command, ErrorReply> {
    let data = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ErrorReply::new("bad_json", format!("the body is not JSON: {e}")))?
    };
    Ok(Command::App(Box::new(AppCommand::Call {
        action: action.to_string(),
        data: Payload::Json(data),
    })))
}

/// Runs an action as the server's own call does (its `Ctx` is the server's).
pub fn call(ctx: &HttpContext, command: Command) -> Reply {
    match command {
        Command::App(a) => match *a {
            AppCommand::Call { action, data } => {
                ctx.framework
                    .call(Ctx::for_server(ctx.hub.clone()), &action, data)
            }
            _ => Reply::Error(ErrorReply::new("internal", "not a call".into())),
        },
        _ => Reply::Error(ErrorReply::new("internal", "not a call".into())),
    }
}
