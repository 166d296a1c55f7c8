//! Argument cursors: one for text command arguments, one for JSON request fields.
//! Every command checks its arguments through these, so every command reports a
//! missing, malformed or extra argument the same way: `bad_args` with its usage.

use serde_json::{Map, Value};

use super::reply::ErrorReply;

/// A cursor over the arguments of a text command (everything after the verb).
pub struct Args<'a> {
    rest: &'a str,
    usage: &'static str,
}

impl<'a> Args<'a> {
    /// `usage` is quoted in every error this cursor produces.
    pub fn new(rest: &'a str, usage: &'static str) -> Self {
        Args { rest, usage }
    }

    /// The next whitespace-separated word, if any.
    pub fn next_word(&mut self) -> Option<&'a str> {
        let s = self.rest.trim_start();
        if s.is_empty() {
            self.rest = s;
            return None;
        }
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        self.rest = &s[end..];
        Some(&s[..end])
    }

    /// Takes the next word if it is the keyword `kw` (in any case); says whether it was.
    pub fn keyword(&mut self, kw: &str) -> bool {
        let s = self.rest.trim_start();
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        let found = end > 0 && s[..end].eq_ignore_ascii_case(kw);
        if found {
            self.rest = &s[end..];
        }
        found
    }

    /// The next word as a count (a non-negative integer), or `bad_args` naming `what`.
    pub fn required_count(&mut self, what: &str) -> Result<u64, ErrorReply> {
        let w = self.required(what)?;
        w.parse()
            .map_err(|_| self.error(format!("{what} must be a whole number, not '{}'", clip(w))))
    }

    /// The next word, or `bad_args` naming `what` is missing.
    pub fn required(&mut self, what: &str) -> Result<&'a str, ErrorReply> {
        self.next_word()
            .ok_or_else(|| self.error(format!("missing {what}")))
    }

    /// Everything left on the line with leading whitespace removed (inner and trailing
    /// spaces are kept: they are part of a message).
    pub fn rest(&mut self) -> &'a str {
        let s = self.rest.trim_start();
        self.rest = "";
        s
    }

    /// The rest of the line, which must not be empty.
    pub fn required_rest(&mut self, what: &str) -> Result<&'a str, ErrorReply> {
        let s = self.rest();
        if s.is_empty() {
            Err(self.error(format!("missing {what}")))
        } else {
            Ok(s)
        }
    }

    /// Rejects arguments left over.
    pub fn finish(self) -> Result<(), ErrorReply> {
        let extra = self.rest.trim();
        if extra.is_empty() {
            Ok(())
        } else {
            Err(self.error(format!("unexpected argument '{}'", clip(extra))))
        }
    }

    /// A `bad_args` error carrying this command's usage.
    pub fn error(&self, what: String) -> ErrorReply {
        ErrorReply::new("bad_args", format!("{what}; usage: {}", self.usage))
    }
}

/// A cursor over the named fields of a JSON request (`op` and `id` already taken).
pub struct JsonArgs {
    fields: Map<String, Value>,
    usage: &'static str,
}

impl JsonArgs {
    pub fn new(fields: Map<String, Value>, usage: &'static str) -> Self {
        JsonArgs { fields, usage }
    }

    /// A field that must be a string.
    pub fn required_str(&mut self, key: &str) -> Result<String, ErrorReply> {
        match self.fields.remove(key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.error(format!(
                "field '{key}' must be a string, got {}",
                type_name(&other)
            ))),
            None => Err(self.error(format!("missing field '{key}'"))),
        }
    }

    /// A field that may be absent or null, else must be a string.
    pub fn optional_str(&mut self, key: &str) -> Result<Option<String>, ErrorReply> {
        match self.fields.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(format!(
                "field '{key}' must be a string, got {}",
                type_name(&other)
            ))),
        }
    }

    /// A field that may be absent or null, else must be a count (a non-negative
    /// integer).
    pub fn optional_count(&mut self, key: &str) -> Result<Option<u64>, ErrorReply> {
        match self.fields.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(other) => Err(self.error(format!(
                "'{key}' must be a count, got {}",
                type_name(&other)
            ))),
        }
    }

    /// A field, if present, whatever its type.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.fields.remove(key)
    }

    /// A field holding any JSON value.
    pub fn required_value(&mut self, key: &str) -> Result<Value, ErrorReply> {
        self.fields
            .remove(key)
            .ok_or_else(|| self.error(format!("missing field '{key}'")))
    }

    /// Rejects fields the command does not know, so a misspelt field is not ignored.
    pub fn finish(self) -> Result<(), ErrorReply> {
        match self.fields.keys().next() {
            None => Ok(()),
            Some(k) => Err(self.error(format!("unknown field '{}'", clip(k)))),
        }
    }

    pub fn error(&self, what: String) -> ErrorReply {
        ErrorReply::new("bad_args", format!("{what}; usage: {}", self.usage))
    }
}

/// A JSON value's kind, for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Shortens user input quoted back in an error message.
pub fn clip(s: &str) -> &str {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_rest_and_finish() {
        let mut a = Args::new("  news   hello  world ", "PUB <channel> <message...>");
        assert_eq!(a.next_word(), Some("news"));
        assert_eq!(a.rest(), "hello  world ");
        assert!(a.finish().is_ok());
        let mut a = Args::new(" a b", "X <a>");
        assert_eq!(a.required("a").unwrap(), "a");
        let e = a.finish().unwrap_err();
        assert_eq!(e.code, "bad_args");
        assert!(
            e.message.contains("unexpected argument 'b'"),
            "{}",
            e.message
        );
        assert!(e.message.contains("usage: X <a>"));
    }

    #[test]
    fn clip_respects_char_boundaries() {
        let s = "é".repeat(100);
        assert!(clip(&s).len() <= 64);
    }
}
