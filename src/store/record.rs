//! Journal lines: one JSON object per change, numbered and checksummed, so that a
//! missing, repeated or damaged line is found at start instead of silently replayed.
//!
//! A line is `{"seq":<n>,"op":…,…,"crc":"<8 hex digits>"}`: `seq` numbers the changes
//! 1, 2, … across segments, and `crc` is the CRC-32 of every byte of the line before
//! `,"crc"`. Each segment starts with `{"op":"segment","first":<n>,"crc":…}`, the
//! number its first change has, so that losing a segment's first lines is found too.
//! The lines stay plain JSON, so `jq` reads a journal as it is.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::protocol::digits::push_u64;

/// One change, as a journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Record {
    Define {
        t: String,
        columns: Vec<String>,
    },
    Undefine {
        t: String,
    },
    /// The whole row, id first.
    Insert {
        t: String,
        row: Vec<Json>,
    },
    /// The whole row after the change.
    Update {
        t: String,
        row: Vec<Json>,
    },
    Delete {
        t: String,
        id: i64,
    },
    /// The first line of a segment: the sequence number of its first change.
    Segment {
        first: u64,
    },
    /// A channel was created (channel definitions live in the data folder too).
    #[serde(rename = "create_channel")]
    CreateChannel {
        c: String,
        /// Its options, when not the defaults.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        o: Option<super::history::ChannelOptions>,
    },
    /// A channel was dropped.
    #[serde(rename = "drop_channel")]
    DropChannel {
        c: String,
    },
}

/// `,"crc":"xxxxxxxx"}` closes every checksummed line.
const CRC_TAIL: usize = 18;

/// Appends `record` as one line numbered `seq` (none for a segment header).
pub fn encode(out: &mut Vec<u8>, seq: Option<u64>, record: &Record) {
    let start = out.len();
    let at = match seq {
        Some(n) => {
            out.extend_from_slice(b"{\"seq\":");
            push_u64(out, n);
            let at = out.len();
            // Serializing plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, record);
            // The record's own `{` becomes the comma after `"seq":n`.
            out[at] = b',';
            at
        }
        None => {
            let _ = serde_json::to_writer(&mut *out, record);
            start
        }
    };
    debug_assert_eq!(out.last(), Some(&b'}'), "a record is an object ({at})");
    out.pop();
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(b",\"crc\":\"");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend((0..8).rev().map(|i| HEX[(crc >> (i * 4)) as usize & 0xf]));
    out.extend_from_slice(b"\"}\n");
}

/// A line as read back.
#[derive(Debug, PartialEq)]
pub struct Line {
    /// `None` for a segment header, and for lines written before lines were numbered.
    pub seq: Option<u64>,
    pub record: Record,
    /// Whether the line carried a checksum (and it matched).
    pub checked: bool,
}

#[derive(Deserialize)]
struct Fields {
    seq: Option<u64>,
    #[serde(flatten)]
    record: Record,
}

/// Reads one line (without its `\n`). A line without a checksum is read as written by
/// an older version; the caller decides whether that is allowed where it stands.
pub fn decode(line: &[u8]) -> Result<Line, String> {
    let checked = has_checksum(line);
    if checked {
        let body = &line[..line.len() - CRC_TAIL];
        let stored = std::str::from_utf8(&line[line.len() - 10..line.len() - 2])
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        let actual = crc32fast::hash(body);
        if stored != Some(actual) {
            return Err(format!(
                "checksum mismatch (the line says {}, its bytes give {actual:08x})",
                stored.map_or("nothing readable".into(), |c| format!("{c:08x}"))
            ));
        }
    }
    let f: Fields = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    Ok(Line {
        seq: f.seq,
        record: f.record,
        checked,
    })
}

fn has_checksum(line: &[u8]) -> bool {
    line.len() > CRC_TAIL
        && line[line.len() - CRC_TAIL..].starts_with(b",\"crc\":\"")
        && line.ends_with(b"\"}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_damage_is_found() {
        let r = Record::Insert {
            t: "users".into(),
            row: vec![Json::from(1), Json::from("a\nb\t\"c\""), Json::Null],
        };
        let mut out = Vec::new();
        encode(&mut out, Some(42), &r);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.starts_with(
                r#"{"seq":42,"op":"insert","t":"users","row":[1,"a\nb\t\"c\"",null],"crc":""#
            ),
            "{text}"
        );
        assert!(text.ends_with("\"}\n"));
        let line = &out[..out.len() - 1];
        assert_eq!(
            decode(line).unwrap(),
            Line {
                seq: Some(42),
                record: r.clone(),
                checked: true
            }
        );
        serde_json::from_slice::<Json>(line).expect("plain JSON");

        let mut bad = line.to_vec();
        let i = bad.iter().position(|&b| b == b'1').unwrap();
        bad[i] = b'2';
        assert!(decode(&bad).unwrap_err().contains("checksum"));

        let mut header = Vec::new();
        encode(&mut header, None, &Record::Segment { first: 7 });
        let h = decode(&header[..header.len() - 1]).unwrap();
        assert_eq!((h.seq, h.record), (None, Record::Segment { first: 7 }));

        let old = br#"{"op":"delete","t":"users","id":3}"#;
        let o = decode(old).unwrap();
        assert!(!o.checked && o.seq.is_none());
        assert!(decode(b"GARBAGE").is_err());
    }
}
