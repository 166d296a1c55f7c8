//! The table family's arguments as clients write them: assignments, values typed
//! later against their columns, row targets, `SELECT`'s query, and the `WHERE` helpers
//! that channels and watches share.

use serde_json::Value as Json;

use crate::protocol::args::{clip, type_name, Args, JsonArgs};
use crate::protocol::json::check_depth;
use crate::protocol::ErrorReply;
use crate::store::expr::{self, Expr};
use crate::store::lex::{self, Tok};

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

/// What `SELECT` asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    pub filter: Option<Expr>,
    /// Column and whether descending.
    pub order: Option<(String, bool)>,
    pub limit: Option<usize>,
    pub offset: usize,
}

pub(super) fn id_word(a: &Args, w: &str) -> Result<i64, ErrorReply> {
    w.parse::<i64>()
        .map_err(|_| a.error(format!("'{}' is not a row id (an integer)", clip(w))))
}

pub(super) fn starts_with_kw(s: &str, kw: &str) -> bool {
    s.len() >= kw.len()
        && s.is_char_boundary(kw.len())
        && s[..kw.len()].eq_ignore_ascii_case(kw)
        && s[kw.len()..].chars().next().is_none_or(char::is_whitespace)
}

/// Parses `col=value` pairs. With `stop_at_where`, stops at a `WHERE` keyword and
/// returns the text from it.
pub(super) fn assignments(mut s: &str, stop_at_where: bool) -> Result<(Assignments, &str), String> {
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

pub(super) fn json_object_text(s: &str) -> Result<Assignments, String> {
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
    expr_to_end(&toks, 1)
}

/// An expression that is the whole of `s` (JSON's `"where"`).
pub(crate) fn whole_expr(s: &str) -> Result<Expr, String> {
    expr_to_end(&lex::tokenize(s)?, 0)
}

/// The expression starting at token `pos`, which must take every token left.
fn expr_to_end(toks: &[Tok], mut pos: usize) -> Result<Expr, String> {
    let e = expr::parse(toks, &mut pos)?;
    match toks.get(pos) {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {} after the condition", t.describe())),
    }
}

pub(super) fn text_query(s: &str) -> Result<Query, String> {
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

pub(super) fn json_id(a: &mut JsonArgs) -> Result<Option<i64>, ErrorReply> {
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

pub(super) fn json_count(a: &mut JsonArgs, key: &str) -> Result<Option<usize>, ErrorReply> {
    Ok(a.optional_count(key)?.map(|n| n as usize))
}

// ---- applying ----

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
