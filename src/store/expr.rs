//! The `WHERE` language: comparisons between a column (left) and a literal (right),
//! `IS [NOT] NULL`, joined by `AND` (binding tighter) and `OR`, with parentheses.
//! Literals: numbers, `true`/`false`, `null`, double-quoted strings, and bare words,
//! which are strings.
//!
//! An [`Expr`] is parsed once; [`Expr::compile`] checks it against a table's schema
//! (columns exist, literals fit their column's type) and gives a [`Predicate`] that
//! evaluates a row with no further lookups.

use std::cmp::Ordering;

use super::lex::{CmpOp, Tok};
use super::schema::Schema;
use super::value::{ColumnType, Value};

/// Deepest parenthesis nesting accepted (keeps the recursive parser's stack small).
const MAX_DEPTH: usize = 32;

/// A literal as written.
#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    pub text: String,
    pub quoted: bool,
}

/// A parsed, unchecked expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Cmp {
        column: String,
        op: CmpOp,
        literal: Literal,
    },
    IsNull {
        column: String,
        negated: bool,
    },
}

/// Parses an expression from `toks[*pos..]`, stopping before a token that cannot
/// continue it (such as `ORDER` or `LIMIT`), which is left for the caller.
pub fn parse(toks: &[Tok], pos: &mut usize) -> Result<Expr, String> {
    let e = parse_or(toks, pos, 0)?;
    Ok(e)
}

fn parse_or(toks: &[Tok], pos: &mut usize, depth: usize) -> Result<Expr, String> {
    let mut terms = vec![parse_and(toks, pos, depth)?];
    while toks.get(*pos).is_some_and(|t| t.is_kw("OR")) {
        *pos += 1;
        terms.push(parse_and(toks, pos, depth)?);
    }
    Ok(if terms.len() == 1 {
        terms.pop().unwrap_or(Expr::Or(Vec::new()))
    } else {
        Expr::Or(terms)
    })
}

fn parse_and(toks: &[Tok], pos: &mut usize, depth: usize) -> Result<Expr, String> {
    let mut terms = vec![parse_term(toks, pos, depth)?];
    while toks.get(*pos).is_some_and(|t| t.is_kw("AND")) {
        *pos += 1;
        terms.push(parse_term(toks, pos, depth)?);
    }
    Ok(if terms.len() == 1 {
        terms.pop().unwrap_or(Expr::And(Vec::new()))
    } else {
        Expr::And(terms)
    })
}

fn parse_term(toks: &[Tok], pos: &mut usize, depth: usize) -> Result<Expr, String> {
    match toks.get(*pos) {
        Some(Tok::LParen) => {
            if depth >= MAX_DEPTH {
                return Err(format!("parentheses nested deeper than {MAX_DEPTH}"));
            }
            *pos += 1;
            let e = parse_or(toks, pos, depth + 1)?;
            match toks.get(*pos) {
                Some(Tok::RParen) => {
                    *pos += 1;
                    Ok(e)
                }
                Some(t) => Err(format!("expected ')' or AND/OR, found {}", t.describe())),
                None => Err("missing ')'".into()),
            }
        }
        Some(Tok::Word(column)) => {
            *pos += 1;
            parse_comparison(column.clone(), toks, pos)
        }
        Some(t) => Err(format!("expected a column name, found {}", t.describe())),
        None => Err("expected a condition such as 'age > 20'".into()),
    }
}

fn parse_comparison(column: String, toks: &[Tok], pos: &mut usize) -> Result<Expr, String> {
    match toks.get(*pos) {
        Some(Tok::Op(op)) => {
            let op = *op;
            *pos += 1;
            let literal = match toks.get(*pos) {
                // SQL's habit: 'eve' would be compared quotes and all, and match nothing.
                Some(Tok::Word(w)) if w.starts_with('\'') => {
                    let bare = w.trim_matches('\'');
                    return Err(format!(
                        "single quotes do not quote a value here: write {column} {op} {bare} or \
                         {column} {op} \"{bare}\" (double quotes, for spaces; a value that \
                         really starts with ' goes in double quotes too)",
                        op = op.as_str()
                    ));
                }
                Some(Tok::Word(w)) => Literal {
                    text: w.clone(),
                    quoted: false,
                },
                Some(Tok::Quoted(q)) => Literal {
                    text: q.clone(),
                    quoted: true,
                },
                Some(t) => {
                    return Err(format!(
                        "expected a value after '{column} {}', found {}",
                        op.as_str(),
                        t.describe()
                    ))
                }
                None => return Err(format!("expected a value after '{column} {}'", op.as_str())),
            };
            *pos += 1;
            Ok(Expr::Cmp {
                column,
                op,
                literal,
            })
        }
        Some(t) if t.is_kw("IS") => {
            *pos += 1;
            let negated = toks.get(*pos).is_some_and(|t| t.is_kw("NOT"));
            if negated {
                *pos += 1;
            }
            if !toks.get(*pos).is_some_and(|t| t.is_kw("NULL")) {
                return Err(format!("expected NULL after '{column} IS'"));
            }
            *pos += 1;
            Ok(Expr::IsNull { column, negated })
        }
        Some(t) => Err(format!(
            "expected a comparison (= != < <= > >= or IS NULL) after '{column}', found {}",
            t.describe()
        )),
        None => Err(format!(
            "expected a comparison (= != < <= > >= or IS NULL) after '{column}'"
        )),
    }
}

impl Expr {
    /// Evaluates the expression against a JSON message: a column name is a field of
    /// the object (`a.b` reaches into nested objects), and each literal is read as the
    /// type of the field it is compared with. A missing or null field matches only
    /// `IS NULL`; a field of another type than the literal matches nothing.
    pub fn matches_json(&self, msg: &serde_json::Value) -> bool {
        match self {
            Expr::Or(v) => v.iter().any(|e| e.matches_json(msg)),
            Expr::And(v) => v.iter().all(|e| e.matches_json(msg)),
            Expr::IsNull { column, negated } => {
                json_field(msg, column).is_none_or(|v| v.is_null()) != *negated
            }
            Expr::Cmp {
                column,
                op,
                literal,
            } => {
                let field = json_field(msg, column).filter(|v| !v.is_null());
                if !literal.quoted && literal.text.eq_ignore_ascii_case("null") {
                    let is_null = field.is_none();
                    return match op {
                        CmpOp::Eq => is_null,
                        CmpOp::Ne => !is_null,
                        _ => false,
                    };
                }
                let Some(ord) = field.and_then(|f| json_compare(f, literal)) else {
                    return false;
                };
                op_holds(*op, ord)
            }
        }
    }
}

fn json_field<'a>(msg: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if let Some(v) = msg.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(msg, |v, key| v.get(key))
}

/// Compares a JSON field with a literal read as the field's type.
fn json_compare(field: &serde_json::Value, lit: &Literal) -> Option<Ordering> {
    use serde_json::Value as J;
    match field {
        J::String(s) => Some(s.as_str().cmp(lit.text.as_str())),
        J::Number(n) if !lit.quoted => {
            if let (Some(a), Ok(b)) = (n.as_i64(), lit.text.parse::<i64>()) {
                return Some(a.cmp(&b));
            }
            let b = lit.text.parse::<f64>().ok()?;
            n.as_f64()?.partial_cmp(&b)
        }
        J::Bool(a) if !lit.quoted => match lit.text.to_ascii_lowercase().as_str() {
            "true" => Some(a.cmp(&true)),
            "false" => Some(a.cmp(&false)),
            _ => None,
        },
        _ => None,
    }
}

fn op_holds(op: CmpOp, ord: Ordering) -> bool {
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    }
}

/// A checked expression over one table's rows.
#[derive(Clone, Debug)]
pub enum Predicate {
    Or(Vec<Predicate>),
    And(Vec<Predicate>),
    Cmp {
        index: usize,
        op: CmpOp,
        value: Value,
    },
    IsNull {
        index: usize,
        negated: bool,
    },
}

impl Expr {
    /// Checks the expression against `schema`. Errors name the column and the value.
    pub fn compile(&self, schema: &Schema) -> Result<Predicate, CompileError> {
        match self {
            Expr::Or(v) => Ok(Predicate::Or(
                v.iter()
                    .map(|e| e.compile(schema))
                    .collect::<Result<_, _>>()?,
            )),
            Expr::And(v) => Ok(Predicate::And(
                v.iter()
                    .map(|e| e.compile(schema))
                    .collect::<Result<_, _>>()?,
            )),
            Expr::IsNull { column, negated } => Ok(Predicate::IsNull {
                index: column_index(schema, column)?,
                negated: *negated,
            }),
            Expr::Cmp {
                column,
                op,
                literal,
            } => {
                let index = column_index(schema, column)?;
                let ty = schema.columns[index].ty;
                if !literal.quoted && literal.text.eq_ignore_ascii_case("null") {
                    return match op {
                        CmpOp::Eq => Ok(Predicate::IsNull {
                            index,
                            negated: false,
                        }),
                        CmpOp::Ne => Ok(Predicate::IsNull {
                            index,
                            negated: true,
                        }),
                        _ => Err(CompileError::BadValue(format!(
                            "'{column} {} null' compares with null; use IS NULL or IS NOT NULL",
                            op.as_str()
                        ))),
                    };
                }
                let value = literal_value(ty, literal).ok_or_else(|| {
                    CompileError::BadValue(format!(
                        "column '{column}' is {} {}; cannot compare it with {}",
                        ty.article(),
                        ty.as_str(),
                        if literal.quoted {
                            format!("the string \"{}\"", literal.text)
                        } else {
                            format!("'{}'", literal.text)
                        }
                    ))
                })?;
                Ok(Predicate::Cmp {
                    index,
                    op: *op,
                    value,
                })
            }
        }
    }
}

/// Why an expression does not fit a table.
#[derive(Debug, PartialEq)]
pub enum CompileError {
    NoSuchColumn(String),
    BadValue(String),
}

fn column_index(schema: &Schema, column: &str) -> Result<usize, CompileError> {
    schema.index_of(column).ok_or_else(|| {
        CompileError::NoSuchColumn(format!(
            "no column '{column}' (columns: {})",
            schema.names().join(", ")
        ))
    })
}

/// A literal as a value comparable with a column of type `ty`. A number compared with
/// an int column may be a float (`age > 20.5`); a bare number compared with a string
/// column is the string as written.
fn literal_value(ty: ColumnType, lit: &Literal) -> Option<Value> {
    match ty {
        ColumnType::Str => Some(Value::Str(lit.text.clone())),
        _ if lit.quoted => None,
        ColumnType::Int => lit.text.parse::<i64>().map(Value::Int).ok().or_else(|| {
            lit.text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::Float)
        }),
        ColumnType::Float => lit
            .text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Float),
        ColumnType::Bool => match lit.text.to_ascii_lowercase().as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
    }
}

impl Predicate {
    /// Whether `row` matches. A null cell matches only `IS NULL`: every other
    /// comparison with it is false, `!=` included.
    pub fn matches(&self, row: &[Value]) -> bool {
        match self {
            Predicate::Or(v) => v.iter().any(|p| p.matches(row)),
            Predicate::And(v) => v.iter().all(|p| p.matches(row)),
            Predicate::IsNull { index, negated } => {
                row.get(*index).is_none_or(Value::is_null) != *negated
            }
            Predicate::Cmp { index, op, value } => {
                let Some(cell) = row.get(*index).filter(|c| !c.is_null()) else {
                    return false;
                };
                let Some(ord) = cell.compare(value) else {
                    return false;
                };
                op_holds(*op, ord)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lex::tokenize;
    use super::*;

    fn schema() -> Schema {
        Schema::parse_columns(&["name:str", "age:int?", "score:float", "ok:bool"]).unwrap()
    }

    fn pred(s: &str) -> Predicate {
        let toks = tokenize(s).unwrap();
        let mut pos = 0;
        let e = parse(&toks, &mut pos).unwrap();
        assert_eq!(pos, toks.len(), "all consumed: {s}");
        e.compile(&schema()).unwrap()
    }

    fn row(name: &str, age: Option<i64>, score: f64, ok: bool) -> Vec<Value> {
        vec![
            Value::Int(1),
            Value::Str(name.into()),
            age.map_or(Value::Null, Value::Int),
            Value::Float(score),
            Value::Bool(ok),
        ]
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let p = pred("name = bob OR name = alice AND age > 50");
        assert!(p.matches(&row("bob", Some(1), 0.0, true)));
        assert!(!p.matches(&row("alice", Some(30), 0.0, true)));
        assert!(p.matches(&row("alice", Some(60), 0.0, true)));
        let p = pred("(name = bob OR name = alice) AND age > 50");
        assert!(!p.matches(&row("bob", Some(1), 0.0, true)));
    }

    #[test]
    fn single_quotes_get_a_hint() {
        let parse_str = |s: &str| parse(&tokenize(s).unwrap(), &mut 0);
        let e = parse_str("name = 'eve'").unwrap_err();
        assert!(e.contains("write name = eve or name = \"eve\""), "{e}");
        assert!(parse_str("name = 'two words'").is_err());
        // Inside a word, or double-quoted, a quote is just a character.
        assert!(pred("name = O'Brien").matches(&row("O'Brien", None, 0.0, true)));
        assert!(pred("name = \"'x'\"").matches(&row("'x'", None, 0.0, true)));
    }

    #[test]
    fn nulls() {
        let p = pred("age IS NULL");
        assert!(p.matches(&row("x", None, 0.0, true)));
        assert!(!p.matches(&row("x", Some(3), 0.0, true)));
        assert!(pred("age is not null").matches(&row("x", Some(3), 0.0, true)));
        // A null never satisfies a comparison, not even !=.
        assert!(!pred("age != 3").matches(&row("x", None, 0.0, true)));
        assert!(!pred("age < 100").matches(&row("x", None, 0.0, true)));
        assert!(pred("age = null").matches(&row("x", None, 0.0, true)));
        assert!(pred("age != null").matches(&row("x", Some(1), 0.0, true)));
    }

    #[test]
    fn literals() {
        assert!(pred("name = \"two words\"").matches(&row("two words", None, 0.0, true)));
        assert!(pred("name = 42").matches(&row("42", None, 0.0, true)));
        assert!(pred("score >= 1.5 AND ok = false").matches(&row("x", None, 2.0, false)));
        assert!(pred("age > 20.5").matches(&row("x", Some(21), 0.0, true)));
        assert!(pred("id = 1").matches(&row("x", None, 0.0, true)));
    }

    #[test]
    fn json_messages() {
        let m = serde_json::json!({"price": 12.5, "sym": "ACME", "qty": 3, "live": true,
                                   "meta": {"venue": "x"}, "none": null});
        let e = |s: &str| {
            parse(&tokenize(s).unwrap(), &mut 0)
                .unwrap()
                .matches_json(&m)
        };
        assert!(e("price > 10 AND sym = ACME"));
        assert!(e("qty = 3 AND qty >= 3 AND qty < 3.5"));
        assert!(!e("sym = acme"));
        assert!(e("live = true AND meta.venue = x"));
        assert!(e("none IS NULL AND missing IS NULL AND sym IS NOT NULL"));
        assert!(!e("missing != 1"), "a missing field matches no comparison");
        assert!(
            !e("qty = abc OR live = 1 OR meta = x"),
            "a type mismatch matches nothing"
        );
        assert!(
            e("sym > 5"),
            "a literal compared with a string field is text, as in tables"
        );
        assert!(e("(sym = X OR sym = ACME) AND price <= 12.5"));
        assert!(!serde_json::json!("text").is_object());
        assert!(!parse(&tokenize("a = 1").unwrap(), &mut 0)
            .unwrap()
            .matches_json(&serde_json::json!("a")));
    }

    #[test]
    fn errors_name_column_and_value() {
        let toks = tokenize("age = abc").unwrap();
        let e = parse(&toks, &mut 0)
            .unwrap()
            .compile(&schema())
            .unwrap_err();
        match e {
            CompileError::BadValue(m) => assert!(m.contains("age") && m.contains("abc"), "{m}"),
            other => panic!("{other:?}"),
        }
        let toks = tokenize("nope = 1").unwrap();
        let e = parse(&toks, &mut 0)
            .unwrap()
            .compile(&schema())
            .unwrap_err();
        assert!(matches!(e, CompileError::NoSuchColumn(m) if m.contains("nope")));
        for bad in ["age >", "age", "(age = 1", "= 1", "age = 1 AND", "age IS 5"] {
            let toks = tokenize(bad).unwrap();
            assert!(parse(&toks, &mut 0).is_err(), "{bad}");
        }
        let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&tokenize(&deep).unwrap(), &mut 0).is_err());
    }
}
