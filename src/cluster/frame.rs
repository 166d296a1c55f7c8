//! How a publication crosses Redis: one header line, `L1 <node> <t|j> <from>`, then
//! the payload as is (text, or JSON text). The channel is the Redis channel's name.

use crate::manager::backplane::PayloadRef;
use crate::protocol::Payload;

/// What a frame carries.
#[derive(Debug, PartialEq)]
pub struct Frame<'a> {
    pub node: &'a str,
    pub from: &'a str,
    pub payload: Payload,
}

pub fn encode(node: &str, from: &str, payload: PayloadRef<'_>) -> Vec<u8> {
    let (kind, body) = match payload {
        PayloadRef::Text(s) => ('t', std::borrow::Cow::Borrowed(s)),
        PayloadRef::Json(v) => ('j', std::borrow::Cow::Owned(v.to_string())),
    };
    let mut out = Vec::with_capacity(node.len() + from.len() + body.len() + 8);
    out.extend_from_slice(b"L1 ");
    out.extend_from_slice(node.as_bytes());
    out.push(b' ');
    out.push(kind as u8);
    out.push(b' ');
    out.extend_from_slice(from.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body.as_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let (head, body) = text.split_once('\n').ok_or("no header line")?;
    let mut parts = head.splitn(4, ' ');
    let (Some("L1"), Some(node), Some(kind), Some(from)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "not a leviathan frame: '{}'",
            head.get(..40).unwrap_or(head)
        ));
    };
    let payload = match kind {
        "t" => Payload::Text(body.to_string()),
        "j" => Payload::Json(serde_json::from_str(body).map_err(|e| format!("bad JSON: {e}"))?),
        other => return Err(format!("unknown payload kind '{other}'")),
    };
    Ok(Frame {
        node,
        from,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_carry_text_and_json_unchanged() {
        let text = "héllo  with spaces\tand more";
        let f = encode("ab12", "alice", PayloadRef::Text(text));
        assert_eq!(
            decode(&f).unwrap(),
            Frame {
                node: "ab12",
                from: "alice",
                payload: Payload::Text(text.into())
            }
        );
        let v = json!({"n": 1, "s": "line\nbreak", "a": [true, null]});
        let f = encode("ab12", "bob", PayloadRef::Json(&v));
        assert_eq!(decode(&f).unwrap().payload, Payload::Json(v));
        assert_eq!(
            decode(&encode("n", "x", PayloadRef::Text("")))
                .unwrap()
                .payload,
            Payload::Text(String::new())
        );
    }

    #[test]
    fn other_bytes_are_refused() {
        for bad in [
            &b"hello"[..],
            b"L2 n t x\nhi",
            b"L1 n q x\nhi",
            b"L1 n j x\n{",
            b"\xff\n",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
