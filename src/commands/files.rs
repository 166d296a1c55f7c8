//! Files: `GRANT <op> <path> [TTL <seconds>] [FOR <user>]`, for admins (the `admin`
//! right on `files`). The files themselves go over the HTTP port (`http/files.rs`),
//! each operation allowed by a grant's token; grants live with the files
//! (`store/files.rs`). An action grants through `Ctx::grant`.

use std::time::Duration;

use super::{ok, Command, CommandSpec};
use crate::protocol::args::clip;
use crate::protocol::{ErrorReply, Payload, Reply};
use crate::store::files::{FileOp, Files, DEFAULT_TTL, MAX_TTL};

/// The files family.
#[derive(Clone, Debug, PartialEq)]
pub enum FileCommand {
    /// A token allowing `op` on `path` (a file, or everything under a folder ending in
    /// `/`) for `ttl`; uploads count against `owner`'s quota (default: the granter).
    Grant {
        op: FileOp,
        path: String,
        ttl: Duration,
        owner: Option<String>,
    },
}

impl From<FileCommand> for Command {
    fn from(c: FileCommand) -> Command {
        Command::File(Box::new(c))
    }
}

fn op(s: &str) -> Result<FileOp, ErrorReply> {
    FileOp::parse(s).ok_or_else(|| {
        ErrorReply::new(
            "bad_args",
            format!("'{}' is no file operation: put, get or delete", clip(s)),
        )
    })
}

fn ttl(seconds: Option<u64>) -> Result<Duration, ErrorReply> {
    match seconds {
        None => Ok(DEFAULT_TTL),
        Some(0) => Err(ErrorReply::new(
            "bad_args",
            "TTL is at least 1 second".into(),
        )),
        Some(s) if s > MAX_TTL.as_secs() => Err(ErrorReply::new(
            "bad_args",
            format!("TTL is at most {} seconds (7 days)", MAX_TTL.as_secs()),
        )),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// `GRANT` as either parser read it.
fn grant(
    op: FileOp,
    path: String,
    seconds: Option<u64>,
    owner: Option<String>,
) -> Result<Command, ErrorReply> {
    ok(FileCommand::Grant {
        op,
        path,
        ttl: ttl(seconds)?,
        owner,
    })
}

pub static SPECS: &[CommandSpec] = &[CommandSpec {
    name: "GRANT",
    usage: "GRANT put|get|delete <path> [TTL <seconds>] [FOR <user>]",
    json: r#"{"op":"grant","operation":"put","path":"photos/cat.png","ttl":300,"for":"ann"}"#,
    summary: "admins: a token for one file operation over HTTP (PUT/GET/DELETE /files/<path>; a path ending in / covers a folder); answered +OK <token>",
    parse_text: |mut a| {
        let op = op(a.required("put, get or delete")?)?;
        let path = a.required("path")?.to_string();
        let mut seconds = None;
        let mut owner = None;
        while let Some(word) = a.next_word() {
            match word.to_ascii_uppercase().as_str() {
                "TTL" if seconds.is_none() => seconds = Some(a.required_count("seconds")?),
                "FOR" if owner.is_none() => owner = Some(a.required("user")?.to_string()),
                _ => return Err(a.error(format!("unexpected '{}'", clip(word)))),
            }
        }
        a.finish()?;
        grant(op, path, seconds, owner)
    },
    parse_json: |mut a| {
        let op = op(&a.required_str("operation")?)?;
        let path = a.required_str("path")?;
        let seconds = a.optional_count("ttl")?;
        let owner = a.optional_str("for")?;
        a.finish()?;
        grant(op, path, seconds, owner)
    },
}];

/// Carries out `c` for a caller logged in as `user` (if any): `+OK <token>`.
pub fn apply(files: Option<&Files>, user: Option<&str>, c: FileCommand) -> Reply {
    let Some(files) = files else {
        return Reply::Error(ErrorReply::new(
            "unavailable",
            "files need a data folder (this server keeps everything in memory)".into(),
        ));
    };
    match c {
        FileCommand::Grant {
            op,
            path,
            ttl,
            owner,
        } => {
            let owner = owner.as_deref().or(user).unwrap_or("");
            match files.grant(op, &path, ttl, owner) {
                Ok(token) => Reply::Value("token", Box::new(Payload::Text(token))),
                Err(e) => Reply::Error(ErrorReply::new(e.code, e.message)),
            }
        }
    }
}
