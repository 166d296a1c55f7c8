//! JSON requests: `{"op": "<verb>", ...fields..., "id": <any>}`, one per line.

use serde_json::Value;

use std::borrow::Cow;

use super::reply::ErrorReply;
use super::{Body, Envelope, Format, ParseLimits, RawArgs};

/// Parses a line that starts with `{` into its envelope: `op` is the verb, the other
/// fields (less `id`) the arguments. Nesting deeper than `limits.max_json_depth` is
/// refused before serde_json runs, because its recursive descent would otherwise need
/// stack in proportion to the nesting.
// Out of line so serde_json's frames are only on the stack for JSON lines.
#[inline(never)]
pub fn parse(line: &str, limits: &ParseLimits) -> Envelope<'static> {
    let mut env = Envelope {
        format: Format::Json,
        id: None,
        body: Err(ErrorReply::new("bad_json", String::new())),
    };
    if let Err(depth) = check_depth(line.as_bytes(), limits.max_json_depth) {
        env.body = Err(ErrorReply::new(
            "bad_json",
            format!(
                "JSON nested deeper than {} levels (found {depth})",
                limits.max_json_depth
            ),
        ));
        return env;
    }
    let mut obj = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(o)) => o,
        Ok(_) => {
            env.body = Err(ErrorReply::new(
                "bad_json",
                "a JSON request must be an object".into(),
            ));
            return env;
        }
        Err(e) => {
            env.body = Err(ErrorReply::new("bad_json", format!("invalid JSON: {e}")));
            return env;
        }
    };
    env.id = obj.remove("id");
    env.body = match obj.remove("op") {
        Some(Value::String(op)) => Ok(Body {
            verb: Cow::Owned(op),
            args: RawArgs::Json(obj),
        }),
        Some(_) => Err(ErrorReply::new(
            "bad_json",
            "field 'op' must be a string naming the command".into(),
        )),
        None => Err(ErrorReply::new(
            "bad_json",
            "missing field 'op' (e.g. {\"op\":\"ping\"})".into(),
        )),
    };
    env
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

    #[test]
    fn id_is_kept_and_op_is_the_verb() {
        let r = parse(r#"{"op":"ping","id":7,"x":1}"#, &ParseLimits::default());
        assert_eq!(r.id, Some(Value::from(7)));
        let body = r.body.unwrap();
        assert_eq!(body.verb, "ping");
        match body.args {
            RawArgs::Json(obj) => assert_eq!(obj.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!(
            "{{\"op\":\"pub\",\"data\":{}{}}}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        let r = parse(&deep, &ParseLimits::default());
        assert_eq!(r.body.unwrap_err().code, "bad_json");
        // Brackets inside strings do not count.
        assert!(check_depth(br#"{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#, 4).is_ok());
    }

    #[test]
    fn errors_name_the_problem() {
        let lim = ParseLimits::default();
        assert_eq!(parse("{nope", &lim).body.unwrap_err().code, "bad_json");
        assert_eq!(parse("[1]", &lim).body.unwrap_err().code, "bad_json");
        let e = parse(r#"{"x":1,"id":3}"#, &lim);
        assert_eq!(
            e.id,
            Some(Value::from(3)),
            "the id is echoed with the error"
        );
        assert_eq!(e.body.unwrap_err().code, "bad_json");
    }
}
