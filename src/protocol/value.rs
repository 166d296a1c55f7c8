//! Column types and typed values (table cells, compared in `WHERE` conditions), with
//! their text and JSON forms as they travel in requests, replies and pushes. The store
//! keeps its rows in these values.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::Value as Json;

/// A column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Int,
    Float,
    Str,
    Bool,
}

impl ColumnType {
    pub fn parse(s: &str) -> Option<ColumnType> {
        match s.to_ascii_lowercase().as_str() {
            "int" => Some(ColumnType::Int),
            "float" => Some(ColumnType::Float),
            "str" => Some(ColumnType::Str),
            "bool" => Some(ColumnType::Bool),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Str => "str",
            ColumnType::Bool => "bool",
        }
    }

    /// The indefinite article for the type's name in messages ("an int", "a str").
    pub fn article(self) -> &'static str {
        match self {
            ColumnType::Int => "an",
            _ => "a",
        }
    }
}

/// One cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
}

impl Value {
    /// Memory the value takes, its text included.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Value>()
            + match self {
                Value::Str(s) => s.len(),
                _ => 0,
            }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Reads a value for a column of type `ty` from command text. `quoted` says the
    /// text came from a double-quoted string, which is always a string (so `"null"` is
    /// the four letters, not null). `Err` holds what the text was expected to be.
    pub fn from_text(ty: ColumnType, text: &str, quoted: bool) -> Result<Value, &'static str> {
        if !quoted && text.eq_ignore_ascii_case("null") {
            return Ok(Value::Null);
        }
        if quoted && ty != ColumnType::Str {
            return Err(ty.as_str());
        }
        Value::from_cell(ty, text)
    }

    /// Reads a non-null value of type `ty` from its text: a string is the text itself,
    /// whatever it says (a CSV cell `null` is the four letters: null is an empty cell).
    pub fn from_cell(ty: ColumnType, text: &str) -> Result<Value, &'static str> {
        match ty {
            ColumnType::Str => Ok(Value::Str(text.to_string())),
            ColumnType::Int => text.parse().map(Value::Int).map_err(|_| "int"),
            ColumnType::Float => match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Value::Float(f)),
                _ => Err("float"),
            },
            ColumnType::Bool => match text.to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err("bool"),
            },
        }
    }

    /// Reads a value for a column of type `ty` from JSON. Ints accept only integral
    /// numbers; floats accept any number.
    pub fn from_json(ty: ColumnType, v: &Json) -> Result<Value, &'static str> {
        match (ty, v) {
            (_, Json::Null) => Ok(Value::Null),
            (ColumnType::Int, Json::Number(n)) => n.as_i64().map(Value::Int).ok_or("int"),
            (ColumnType::Float, Json::Number(n)) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Value::Float)
                .ok_or("float"),
            (ColumnType::Str, Json::String(s)) => Ok(Value::Str(s.clone())),
            (ColumnType::Bool, Json::Bool(b)) => Ok(Value::Bool(*b)),
            (t, _) => Err(t.as_str()),
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => Json::from(*f),
            Value::Str(s) => Json::from(s.as_str()),
            Value::Bool(b) => Json::from(*b),
        }
    }

    /// Writes the value as it appears in a text row (`name=value`): strings bare when
    /// they cannot be mistaken for anything else, else quoted; so every value reads
    /// back as itself.
    pub fn write_text(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => write_float(out, *f),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Str(s) if is_bare_safe(s) => out.push_str(s),
            Value::Str(s) => {
                if let Ok(q) = serde_json::to_string(s) {
                    out.push_str(&q);
                }
            }
        }
    }

    /// [`Value::write_text`] into bytes, as replies are built.
    pub fn write_text_bytes(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => super::digits::push_i64(out, *i),
            Value::Str(s) if is_bare_safe(s) => out.extend_from_slice(s.as_bytes()),
            Value::Str(s) => crate::protocol::write_json_str(out, s),
            other => {
                let mut s = String::new();
                other.write_text(&mut s);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// Writes the value as JSON.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Int(i) => super::digits::push_i64(out, *i),
            Value::Str(s) => crate::protocol::write_json_str(out, s),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Float(f) => {
                let _ = serde_json::to_writer(&mut *out, f);
            }
        }
    }

    /// The value as a CSV field: empty for null (see the schema file for which columns
    /// may be null), floats always with a fractional part or exponent.
    pub fn to_csv(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Str(s) => s.clone(),
            Value::Float(f) => {
                let mut s = String::new();
                write_float(&mut s, *f);
                s
            }
            other => {
                let mut s = String::new();
                other.write_text(&mut s);
                s
            }
        }
    }

    /// Orders values of one column: nulls first, then by value (ints and floats
    /// compared as numbers).
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Less,
            (_, Value::Null) => Ordering::Greater,
            (a, b) => a.compare(b).unwrap_or(Ordering::Equal),
        }
    }

    /// Compares two non-null values of compatible types.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Float(b)) => (*a as f64).partial_cmp(b),
            (Value::Float(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

fn write_float(out: &mut String, f: f64) {
    // `{:?}` always shows a fractional part or an exponent, so a float reads back as a
    // float and never as an int.
    let _ = write!(out, "{f:?}");
}

/// A string that reads back as itself when written bare in a text row.
fn is_bare_safe(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(|c: char| {
            c.is_whitespace() || c == '"' || c == '=' || c == '\\' || c.is_control()
        })
        && !s.eq_ignore_ascii_case("null")
        && !s.eq_ignore_ascii_case("true")
        && !s.eq_ignore_ascii_case("false")
        && s.parse::<f64>().is_err()
        && !s.starts_with(['(', ')', '<', '>', '!', '{'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &Value) -> String {
        let mut s = String::new();
        v.write_text(&mut s);
        s
    }

    #[test]
    fn text_forms_round_trip() {
        for (ty, v) in [
            (ColumnType::Int, Value::Int(-42)),
            (ColumnType::Float, Value::Float(3.0)),
            (ColumnType::Float, Value::Float(1e300)),
            (ColumnType::Bool, Value::Bool(true)),
            (ColumnType::Str, Value::Str("alice".into())),
            (ColumnType::Str, Value::Str("two words".into())),
            (ColumnType::Str, Value::Str("null".into())),
            (ColumnType::Str, Value::Str("42".into())),
            (ColumnType::Str, Value::Str(String::new())),
            (ColumnType::Str, Value::Str("say \"hi\"\n".into())),
            (ColumnType::Int, Value::Null),
        ] {
            let t = text(&v);
            let (body, quoted) = match t.strip_prefix('"') {
                Some(_) => (serde_json::from_str::<String>(&t).unwrap(), true),
                None => (t.clone(), false),
            };
            assert_eq!(Value::from_text(ty, &body, quoted), Ok(v.clone()), "{t}");
        }
    }

    #[test]
    fn typing_errors() {
        assert_eq!(Value::from_text(ColumnType::Int, "abc", false), Err("int"));
        assert_eq!(Value::from_text(ColumnType::Int, "1.5", false), Err("int"));
        assert_eq!(Value::from_text(ColumnType::Int, "5", true), Err("int"));
        assert_eq!(
            Value::from_text(ColumnType::Bool, "yes", false),
            Err("bool")
        );
        assert_eq!(
            Value::from_text(ColumnType::Float, "inf", false),
            Err("float")
        );
        assert_eq!(
            Value::from_json(ColumnType::Int, &serde_json::json!(1.5)),
            Err("int")
        );
        assert_eq!(
            Value::from_json(ColumnType::Float, &serde_json::json!(2)),
            Ok(Value::Float(2.0))
        );
        assert_eq!(
            Value::from_json(ColumnType::Str, &serde_json::json!(2)),
            Err("str")
        );
    }

    #[test]
    fn ordering_puts_nulls_first_and_mixes_numbers() {
        let mut v = vec![Value::Int(3), Value::Null, Value::Float(2.5), Value::Int(1)];
        v.sort_by(Value::sort_cmp);
        assert_eq!(
            v,
            vec![Value::Null, Value::Int(1), Value::Float(2.5), Value::Int(3)]
        );
    }
}
