//! JSON requests: `{"op": "<verb>", ...fields..., "id": <any>}`, one per line.

use serde_json::Value;

use super::args::{clip, JsonArgs};
use super::reply::ErrorReply;
use super::{Format, ParseLimits, Request};
use crate::commands;

/// Parses a line that starts with `{`. Nesting deeper than `limits.max_json_depth`
/// is refused before serde_json runs, because its recursive descent would otherwise
/// need stack in proportion to the nesting.
// Out of line so serde_json's frames are only on the stack for JSON lines.
#[inline(never)]
pub fn parse(line: &str, limits: &ParseLimits) -> Request {
    let mut req = Request {
        format: Format::Json,
        id: None,
        command: Err(ErrorReply::new("bad_json", String::new())),
    };
    if let Err(depth) = check_depth(line.as_bytes(), limits.max_json_depth) {
        req.command = Err(ErrorReply::new(
            "bad_json",
            format!(
                "JSON nested deeper than {} levels (found {depth})",
                limits.max_json_depth
            ),
        ));
        return req;
    }
    let mut obj = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(o)) => o,
        Ok(_) => {
            req.command = Err(ErrorReply::new(
                "bad_json",
                "a JSON request must be an object".into(),
            ));
            return req;
        }
        Err(e) => {
            req.command = Err(ErrorReply::new("bad_json", format!("invalid JSON: {e}")));
            return req;
        }
    };
    req.id = obj.remove("id");
    let op = match obj.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => {
            req.command = Err(ErrorReply::new(
                "bad_json",
                "field 'op' must be a string naming the command".into(),
            ));
            return req;
        }
        None => {
            req.command = Err(ErrorReply::new(
                "bad_json",
                "missing field 'op' (e.g. {\"op\":\"ping\"})".into(),
            ));
            return req;
        }
    };
    req.command = match commands::spec(&op) {
        Some(spec) => (spec.parse_json)(JsonArgs::new(obj, spec.json)),
        None => Err(ErrorReply::new(
            "unknown_command",
            format!(
                "unknown command '{}';{} send {{\"op\":\"help\"}} for the list",
                clip(&op),
                commands::did_you_mean(&op, |n| format!("\"{}\"", n.to_ascii_lowercase()))
            ),
        )),
    };
    req
}

/// Scans brackets outside strings; `Err(depth)` once nesting exceeds `max`.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(depth);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Command;

    #[test]
    fn id_is_echoed_and_op_dispatched() {
        let r = parse(r#"{"op":"ping","id":7}"#, &ParseLimits::default());
        assert_eq!(r.id, Some(Value::from(7)));
        assert_eq!(r.command, Ok(Command::Ping(None)));
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!(
            "{{\"op\":\"pub\",\"data\":{}{}}}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        let r = parse(&deep, &ParseLimits::default());
        assert_eq!(r.command.unwrap_err().code, "bad_json");
        // Brackets inside strings do not count.
        assert!(check_depth(br#"{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#, 4).is_ok());
    }

    #[test]
    fn errors_name_the_problem() {
        let lim = ParseLimits::default();
        assert_eq!(parse("{nope", &lim).command.unwrap_err().code, "bad_json");
        assert_eq!(parse("[1]", &lim).command.unwrap_err().code, "bad_json");
        assert_eq!(
            parse(r#"{"x":1}"#, &lim).command.unwrap_err().code,
            "bad_json"
        );
        let e = parse(r#"{"op":"frobnicate"}"#, &lim).command.unwrap_err();
        assert_eq!(e.code, "unknown_command");
        assert!(e.message.contains("frobnicate"));
        let e = parse(r#"{"op":"sub","chanel":"x"}"#, &lim)
            .command
            .unwrap_err();
        assert_eq!(e.code, "bad_args");
    }
}
