//! API keys for the HTTP API (`--api-key-file`): programs that have no account send
//! `Authorization: Bearer <key>`. The file holds only each key's SHA-256, one key a
//! line, `<name> <role> <sha256 hex>` (`#` starts a comment), so a leaked file opens
//! nothing. A key acts with its role's rights, like a user of that role.

use std::path::Path;

use crate::auth::token_hash;

/// One key as the file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    pub role: String,
    hash: String,
}

/// The keys of an API key file.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys(Vec<ApiKey>);

impl ApiKeys {
    /// Reads `path`; a line that is not `<name> <role> <64 hex digits>` is refused with
    /// its file and line number.
    pub fn load(path: &Path) -> Result<ApiKeys, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the API key file {}: {e}", path.display()))?;
        ApiKeys::parse(&text).map_err(|(n, why)| format!("{} line {n}: {why}", path.display()))
    }

    fn parse(text: &str) -> Result<ApiKeys, (usize, String)> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let [name, role, hash] = words[..] else {
                return Err((i + 1, "expected <name> <role> <sha256 of the key>".into()));
            };
            let hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err((
                    i + 1,
                    "the third field must be the key's SHA-256 in 64 hex digits (never the key itself)".into(),
                ));
            }
            keys.push(ApiKey {
                name: name.to_string(),
                role: role.to_string(),
                hash: hash.to_ascii_lowercase(),
            });
        }
        Ok(ApiKeys(keys))
    }

    /// The key `secret` is, if it is one.
    pub fn find(&self, secret: &str) -> Option<&ApiKey> {
        let hash = token_hash(secret);
        self.0.iter().find(|k| k.hash == hash)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_their_hash_and_bad_lines_are_named() {
        let hash = token_hash("k-123");
        let keys = ApiKeys::parse(&format!("# CI\nci user {hash}\n\n")).unwrap();
        assert_eq!(keys.find("k-123").map(|k| k.role.as_str()), Some("user"));
        assert!(keys.find("k-124").is_none());
        assert_eq!(ApiKeys::parse("ci user").unwrap_err().0, 1);
        assert_eq!(ApiKeys::parse("\nci user k-123").unwrap_err().0, 2);
    }
}
