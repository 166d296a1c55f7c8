//! Tokens of table commands: bare words, double-quoted strings (JSON escapes),
//! comparison operators and parentheses.

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Word(String),
    Quoted(String),
    Op(CmpOp),
    LParen,
    RParen,
}

impl Tok {
    /// Whether this is the bare keyword `kw` (any case).
    pub fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    pub fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Quoted(q) => format!("\"{q}\""),
            Tok::Op(o) => format!("'{}'", o.as_str()),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
        }
    }
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '"' | '=' | '!' | '<' | '>' | '(' | ')')
}

/// Splits `s` into tokens.
pub fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(toks);
        };
        let (tok, len) = match c {
            '"' => {
                let (text, len) = quoted(rest)?;
                (Tok::Quoted(text), len)
            }
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '=' => (Tok::Op(CmpOp::Eq), 1),
            '!' if rest.starts_with("!=") => (Tok::Op(CmpOp::Ne), 2),
            '<' if rest.starts_with("<=") => (Tok::Op(CmpOp::Le), 2),
            '<' if rest.starts_with("<>") => (Tok::Op(CmpOp::Ne), 2),
            '>' if rest.starts_with(">=") => (Tok::Op(CmpOp::Ge), 2),
            '<' => (Tok::Op(CmpOp::Lt), 1),
            '>' => (Tok::Op(CmpOp::Gt), 1),
            '!' => return Err("'!' must be followed by '=' (as in !=)".into()),
            _ => {
                let len = rest.find(|c| !is_word_char(c)).unwrap_or(rest.len());
                (Tok::Word(rest[..len].to_string()), len)
            }
        };
        toks.push(tok);
        rest = &rest[len..];
    }
}

/// Reads a double-quoted string at the start of `s` (which starts with `"`), with JSON
/// escapes. Returns the text and the length consumed.
pub fn quoted(s: &str) -> Result<(String, usize), String> {
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => {
                let text = serde_json::from_str::<String>(&s[..=i])
                    .map_err(|e| format!("bad quoted string {}: {e}", &s[..=i]))?;
                return Ok((text, i + 1));
            }
            _ => i += 1,
        }
    }
    Err("unterminated quoted string (missing closing \")".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = tokenize(r#"age>=20 AND (name = "a \"b\"" OR x!=y) <>"#).unwrap();
        assert_eq!(
            t,
            vec![
                Tok::Word("age".into()),
                Tok::Op(CmpOp::Ge),
                Tok::Word("20".into()),
                Tok::Word("AND".into()),
                Tok::LParen,
                Tok::Word("name".into()),
                Tok::Op(CmpOp::Eq),
                Tok::Quoted("a \"b\"".into()),
                Tok::Word("OR".into()),
                Tok::Word("x".into()),
                Tok::Op(CmpOp::Ne),
                Tok::Word("y".into()),
                Tok::RParen,
                Tok::Op(CmpOp::Ne),
            ]
        );
        assert!(tokenize("\"open").is_err());
        assert!(tokenize("a ! b").is_err());
        assert_eq!(
            tokenize("-1.5e3").unwrap(),
            vec![Tok::Word("-1.5e3".into())]
        );
    }
}
