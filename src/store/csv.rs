//! CSV as RFC 4180 writes it: comma-separated, `"`-quoted fields with `""` for a
//! quote, records ending in `\n` (`\r\n` accepted). Written here rather than with the
//! `csv` crate because the store must tell a quoted empty field (`""`, the empty
//! string) from an empty one (null), which that crate's records do not expose.

/// Appends one record.
pub fn write_record<'a>(out: &mut Vec<u8>, fields: impl IntoIterator<Item = Field<'a>>) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match f {
            Field::Null => {}
            Field::Text(s) => write_field(out, s),
        }
    }
    out.push(b'\n');
}

/// A field to write: null is an empty unquoted field.
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    Null,
    Text(&'a str),
}

fn write_field(out: &mut Vec<u8>, s: &str) {
    let needs_quotes = s.is_empty()
        || s.contains([',', '"', '\n', '\r'])
        || s.starts_with(char::is_whitespace)
        || s.ends_with(char::is_whitespace);
    if !needs_quotes {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A field as read: its text and whether it was quoted.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadField {
    pub text: String,
    pub quoted: bool,
}

/// Reads records one at a time, tracking line numbers for error messages.
pub struct Reader<'a> {
    data: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a str) -> Self {
        Reader {
            data,
            pos: 0,
            line: 1,
        }
    }

    /// The next record and the line it starts on; `Err` names the line.
    pub fn next_record(&mut self) -> Option<Result<(usize, Vec<ReadField>), String>> {
        if self.pos >= self.data.len() {
            return None;
        }
        let start_line = self.line;
        let bytes = self.data.as_bytes();
        let mut fields = Vec::new();
        loop {
            // One field.
            let mut text = String::new();
            let mut quoted = false;
            if bytes.get(self.pos) == Some(&b'"') {
                quoted = true;
                self.pos += 1;
                loop {
                    let Some(rel) = self.data[self.pos..].find('"') else {
                        return Some(Err(format!(
                            "line {start_line}: a quoted field is not closed"
                        )));
                    };
                    let chunk = &self.data[self.pos..self.pos + rel];
                    self.line += chunk.matches('\n').count();
                    text.push_str(chunk);
                    self.pos += rel + 1;
                    if bytes.get(self.pos) == Some(&b'"') {
                        text.push('"');
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
            } else {
                let rel = self.data[self.pos..]
                    .find([',', '\n', '\r', '"'])
                    .unwrap_or(self.data.len() - self.pos);
                text.push_str(&self.data[self.pos..self.pos + rel]);
                self.pos += rel;
                if bytes.get(self.pos) == Some(&b'"') {
                    return Some(Err(format!(
                        "line {}: a quote inside an unquoted field",
                        self.line
                    )));
                }
            }
            fields.push(ReadField { text, quoted });
            match bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'\r') if bytes.get(self.pos + 1) == Some(&b'\n') => {
                    self.pos += 2;
                    self.line += 1;
                    return Some(Ok((start_line, fields)));
                }
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                    return Some(Ok((start_line, fields)));
                }
                None => return Some(Ok((start_line, fields))),
                Some(_) => {
                    return Some(Err(format!(
                        "line {}: text after a closing quote",
                        self.line
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_quoting_and_nulls() {
        let mut out = Vec::new();
        write_record(
            &mut out,
            [Field::Text("id"), Field::Text("name"), Field::Text("note")],
        );
        write_record(
            &mut out,
            [Field::Text("1"), Field::Text("a, \"b\""), Field::Null],
        );
        write_record(
            &mut out,
            [Field::Text("2"), Field::Text(""), Field::Text("two\nlines")],
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "id,name,note\n1,\"a, \"\"b\"\"\",\n2,\"\",\"two\nlines\"\n"
        );
        let mut r = Reader::new(&text);
        let (l, h) = r.next_record().unwrap().unwrap();
        assert_eq!((l, h.len()), (1, 3));
        let (l, a) = r.next_record().unwrap().unwrap();
        assert_eq!(l, 2);
        assert_eq!(a[1].text, "a, \"b\"");
        assert_eq!(
            a[2],
            ReadField {
                text: String::new(),
                quoted: false
            }
        );
        let (l, b) = r.next_record().unwrap().unwrap();
        assert_eq!(l, 3);
        assert_eq!(
            b[1],
            ReadField {
                text: String::new(),
                quoted: true
            }
        );
        assert_eq!(b[2].text, "two\nlines");
        assert!(r.next_record().is_none());
    }

    #[test]
    fn errors_name_the_line() {
        let mut r = Reader::new("a,b\n1,\"open\n");
        r.next_record().unwrap().unwrap();
        let e = r.next_record().unwrap().unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let mut r = Reader::new("a\nx\"y\n");
        r.next_record().unwrap().unwrap();
        assert!(r.next_record().unwrap().unwrap_err().starts_with("line 2:"));
        let mut r = Reader::new("\"a\"b\n");
        assert!(r.next_record().unwrap().is_err());
        let mut r = Reader::new("a,b\r\nc,d");
        assert_eq!(r.next_record().unwrap().unwrap().1.len(), 2);
        assert_eq!(r.next_record().unwrap().unwrap().0, 2);
    }
}
