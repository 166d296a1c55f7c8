//! Channel names and subscription patterns.
//!
//! A channel name is dot-separated tokens of `[A-Za-z0-9_-]`. In a pattern, `*` stands
//! for exactly one token and a final `>` for one or more trailing tokens.

/// Longest channel name or pattern accepted.
pub const MAX_NAME: usize = 256;

/// What a `SUB`/`UNSUB` argument names.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Channel,
    Pattern,
}

fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a channel name (no wildcards).
pub fn check_channel(name: &str) -> Result<(), String> {
    match classify(name)? {
        Target::Channel => Ok(()),
        Target::Pattern => Err(format!(
            "'{name}' is a pattern; a channel name has no '*' or '>'"
        )),
    }
}

/// Checks a channel name or pattern and says which it is.
pub fn classify(target: &str) -> Result<Target, String> {
    if target.is_empty() || target.len() > MAX_NAME {
        return Err(format!(
            "a channel name is 1 to {MAX_NAME} characters of dot-separated [A-Za-z0-9_-] tokens"
        ));
    }
    let tokens: Vec<&str> = target.split('.').collect();
    let mut pattern = false;
    for (i, t) in tokens.iter().enumerate() {
        match *t {
            "*" => pattern = true,
            ">" if i == tokens.len() - 1 => pattern = true,
            ">" => return Err(format!("in '{target}', '>' may only be the last token")),
            t if valid_token(t) => {}
            _ => {
                return Err(format!(
                    "bad channel name '{}': use dot-separated tokens of [A-Za-z0-9_-] ('*' and a final '>' in patterns)",
                    super::args::clip(target)
                ))
            }
        }
    }
    Ok(if pattern {
        Target::Pattern
    } else {
        Target::Channel
    })
}

/// Whether a valid `pattern` matches a valid channel name.
pub fn matches(pattern: &str, channel: &str) -> bool {
    let mut chan = channel.split('.');
    for p in pattern.split('.') {
        match (p, chan.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (p, Some(c)) if p == c => {}
            _ => return false,
        }
    }
    chan.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names_and_patterns() {
        assert_eq!(classify("news"), Ok(Target::Channel));
        assert_eq!(classify("news.sport-1_a"), Ok(Target::Channel));
        assert_eq!(classify("news.*"), Ok(Target::Pattern));
        assert_eq!(classify("news.>"), Ok(Target::Pattern));
        assert_eq!(classify(">"), Ok(Target::Pattern));
        assert!(classify("news.>.x").is_err());
        assert!(classify("news..x").is_err());
        assert!(classify("news.").is_err());
        assert!(classify("new s").is_err());
        assert!(classify("").is_err());
        assert!(classify(&"a".repeat(300)).is_err());
        assert!(check_channel("a.*").is_err());
    }

    #[test]
    fn matching() {
        assert!(matches("news.*", "news.sport"));
        assert!(!matches("news.*", "news"));
        assert!(!matches("news.*", "news.sport.eu"));
        assert!(matches("news.>", "news.sport"));
        assert!(matches("news.>", "news.sport.eu"));
        assert!(!matches("news.>", "news"));
        assert!(matches("*.sport", "news.sport"));
        assert!(!matches("*.sport", "news.weather"));
        assert!(matches("news", "news"));
        assert!(!matches("news", "newsx"));
        assert!(matches(">", "a.b.c"));
    }
}
