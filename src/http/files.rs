//! Files over HTTP (DESIGN section 12): `PUT`, `GET` and `DELETE /files/<path>`, each
//! allowed by a grant's token (`GRANT`, or an action's `Ctx::grant`) sent as
//! `Authorization: Bearer <token>` or `?token=<token>`.
//!
//! Bodies stream both ways in chunks: an upload is read from the socket and written to
//! its temporary file a chunk at a time, a download read from disk as the socket takes
//! it, so a 1 GB file never sits in memory. Every disk call runs on the blocking-work
//! threads (`coop::blocking`), never on the connection's worker.

use std::io::{self, Read};
use std::sync::Arc;

use may_minihttp::Request;
use serde_json::json;

use super::{header, Answer, HttpContext};
use crate::coop::{blocking, Pending};
use crate::store::files::{check_path, FileError, FileOp, Files, Upload};

/// Bytes moved per disk call.
const CHUNK: usize = 256 << 10;

/// Answers a request for `/files/<raw>` (`raw` still %-encoded).
pub(super) fn serve(
    ctx: &HttpContext,
    req: Request,
    method: &str,
    raw: &str,
    query: &str,
) -> Answer {
    // An answer given before the body is read ends the connection: the body's bytes
    // would be read as the next request.
    let has_body = !matches!(req.content_length(), Ok(None | Some(0)));
    let refuse = |e: FileError| failure(e, has_body);
    let Some(files) = ctx.hub.files.clone() else {
        return refuse(FileError {
            code: "unavailable",
            status: 503,
            message: "files need a data folder (this server keeps everything in memory)".into(),
        });
    };
    let op = match method {
        "PUT" => FileOp::Put,
        "GET" => FileOp::Get,
        "DELETE" => FileOp::Delete,
        _ => {
            return refuse(FileError {
                code: "method_not_allowed",
                status: 405,
                message: "/files/<path> answers PUT, GET and DELETE".into(),
            })
        }
    };
    let path = match decode_path(raw) {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    // The path's rules come before the grant's: a path that could leave the folder
    // is refused as such, whatever the token.
    if let Err(e) = check_path(&path, false) {
        return refuse(e);
    }
    let token = header(&req, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .or_else(|| query_token(query));
    let Some(token) = token else {
        return refuse(FileError::unauthorized(
            "a file operation needs a grant: Authorization: Bearer <token> or ?token=<token> (GRANT gives one)",
        ));
    };
    let owner = match files.authorize(&token, op, &path) {
        Ok(o) => o,
        Err(e) => return refuse(e),
    };
    match op {
        FileOp::Put => upload(files, req, path, owner, ctx.settings.body_timeout),
        FileOp::Get if has_body => refuse(FileError::bad_path("a GET has no body")),
        FileOp::Get => match blocking(move || files.open_read(&path)) {
            Some(Ok((file, size))) => Answer {
                status: 200,
                content_type: content_type(raw),
                body: Vec::new(),
                stream: Some((Box::new(DiskReader::new(file)), size)),
                close: false,
            },
            Some(Err(e)) => refuse(e),
            None => refuse(crashed()),
        },
        FileOp::Delete => {
            let done = blocking({
                let path = path.clone();
                move || files.delete(&path)
            });
            match done {
                Some(Ok(())) => json_answer(200, json!({"ok": true, "path": path})),
                Some(Err(e)) => refuse(e),
                None => refuse(crashed()),
            }
        }
    }
}

/// Streams the body into a temporary file, then puts it in place: 201 for a new file,
/// 200 for one replaced.
fn upload(
    files: Arc<Files>,
    mut req: Request,
    path: String,
    owner: String,
    stall: Option<std::time::Duration>,
) -> Answer {
    let len = match req.content_length() {
        Ok(Some(n)) => n as u64,
        Ok(None) => {
            return failure(
                FileError {
                    code: "length_required",
                    status: 411,
                    message: "an upload needs a Content-Length (chunked bodies are not taken)"
                        .into(),
                },
                true,
            )
        }
        Err(()) => return failure(FileError::bad_path("Content-Length is not a number"), true),
    };
    let begun = blocking({
        let (path, owner) = (path.clone(), owner.clone());
        move || files.begin_upload(&path, &owner, len)
    });
    let upload = match begun {
        Some(Ok(u)) => u,
        Some(Err(e)) => return failure(e, len > 0),
        None => return failure(crashed(), len > 0),
    };
    // A client that stops sending mid-body is given up (its connection closes).
    let _ = req.set_body_timeout(stall);
    if req.expects_continue() && req.write_continue().is_err() {
        return discard(upload, FileError::bad_path("the client left"));
    }
    // Two buffers: the next chunk is read from the socket while the last one is
    // written on a blocking-work thread. Body left unread on an error is not drained:
    // the connection closes instead.
    let mut body = req.body();
    let mut buf = vec![0u8; CHUNK];
    let mut idle = Some(upload);
    let mut writing: Option<Pending<Written>> = None;
    let mut left = len;
    let mut stalled = false;
    while left > 0 {
        let want = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
        let mut filled = 0;
        while filled < want {
            match body.read(&mut buf[filled..want]) {
                Ok(0) => break,
                Err(e) => {
                    stalled = matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    );
                    break;
                }
                Ok(n) => filled += n,
            }
        }
        let (mut upload, spare) = match take_back(&mut idle, writing.take()) {
            Ok(back) => back,
            Err(answer) => {
                std::mem::forget(body);
                return answer;
            }
        };
        if filled < want {
            // The client left (or stopped) before sending all it announced.
            std::mem::forget(body);
            let e = FileError {
                code: "bad_args",
                status: 400,
                message: match (stalled, stall) {
                    (true, Some(limit)) => format!(
                        "the body stalled: nothing for {} s after {} of {len} bytes (--line-timeout-secs)",
                        limit.as_secs_f64(),
                        len - left + filled as u64
                    ),
                    _ => format!(
                        "the body ended after {} of {len} bytes",
                        len - left + filled as u64
                    ),
                },
            };
            return discard(upload, e);
        }
        left -= filled as u64;
        let chunk = std::mem::replace(&mut buf, spare);
        writing = Some(Pending::start(move || {
            let r = upload.write(&chunk[..filled]);
            (upload, chunk, r)
        }));
    }
    let upload = match take_back(&mut idle, writing.take()) {
        Ok((u, _)) => u,
        Err(answer) => return answer,
    };
    drop(body);
    match blocking(move || upload.commit()) {
        Some(Ok(created)) => json_answer(
            if created { 201 } else { 200 },
            json!({"ok": true, "path": path, "size": len, "created": created}),
        ),
        Some(Err(e)) => failure(e, false),
        None => failure(crashed(), false),
    }
}

/// What a chunk's write hands back: the upload, the buffer, how it went.
type Written = (Upload, Vec<u8>, Result<(), FileError>);

/// The upload back from the write under way (with its buffer, to fill next), or from
/// `idle` when none is; a failed write is answered (the upload given up).
fn take_back(
    idle: &mut Option<Upload>,
    writing: Option<Pending<Written>>,
) -> Result<(Upload, Vec<u8>), Answer> {
    match writing {
        None => idle
            .take()
            .map(|u| (u, vec![0u8; CHUNK]))
            .ok_or_else(|| failure(crashed(), true)),
        Some(p) => match p.wait() {
            Some((u, b, Ok(()))) => Ok((u, b)),
            Some((u, _, Err(e))) => Err(discard(u, e)),
            None => Err(failure(crashed(), true)),
        },
    }
}

/// Gives an upload up (its temporary file is removed off the worker) and answers `e`,
/// closing the connection.
fn discard(upload: Upload, e: FileError) -> Answer {
    let _ = blocking(move || drop(upload));
    failure(e, true)
}

/// A file operation's error as JSON with its status; `close` ends the connection after
/// it (a body not read).
fn failure(e: FileError, close: bool) -> Answer {
    let mut a = json_answer(
        e.status,
        json!({"ok": false, "error": {"code": e.code, "message": e.message}}),
    );
    a.close = close;
    a
}

fn json_answer(status: u16, body: serde_json::Value) -> Answer {
    Answer {
        status,
        content_type: "Content-Type: application/json",
        body: body.to_string().into_bytes(),
        stream: None,
        close: false,
    }
}

fn crashed() -> FileError {
    FileError {
        code: "internal",
        status: 500,
        message: "the disk work failed unexpectedly (see the server's log)".into(),
    }
}

/// `%xx` decoded. An encoded `/`, `\` or NUL is refused: it would make one name of
/// what the path's rules see as two, or end a name early.
pub fn decode_path(raw: &str) -> Result<String, FileError> {
    let lower = raw.to_ascii_lowercase();
    if ["%2f", "%5c", "%00"].iter().any(|e| lower.contains(e)) {
        return Err(FileError::bad_path(
            "no encoded /, \\ or NUL (%2F, %5C, %00) in a file path",
        ));
    }
    super::api::percent_decode(raw, false)
        .ok_or_else(|| FileError::bad_path("a broken %-escape in the path, or not UTF-8"))
}

/// `token=` from a query string (browsers cannot send a header for an `<img src>`).
fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("token="))
        .and_then(super::api::decode_query)
}

/// The type a browser should take a file for, by its extension. Downloads also carry
/// `nosniff` and a sandboxing CSP (see `Service::call`): an uploaded page cannot run
/// script in the console's origin.
fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "md" => "Content-Type: text/plain; charset=utf-8",
        "csv" => "Content-Type: text/csv; charset=utf-8",
        "json" => "Content-Type: application/json",
        "html" | "htm" => "Content-Type: text/html; charset=utf-8",
        "css" => "Content-Type: text/css",
        "js" => "Content-Type: text/javascript",
        "png" => "Content-Type: image/png",
        "jpg" | "jpeg" => "Content-Type: image/jpeg",
        "gif" => "Content-Type: image/gif",
        "webp" => "Content-Type: image/webp",
        "svg" => "Content-Type: image/svg+xml",
        "pdf" => "Content-Type: application/pdf",
        "mp3" => "Content-Type: audio/mpeg",
        "mp4" => "Content-Type: video/mp4",
        "zip" => "Content-Type: application/zip",
        "wasm" => "Content-Type: application/wasm",
        _ => "Content-Type: application/octet-stream",
    }
}

/// Reads a file a chunk at a time on the blocking-work threads. (Reading one chunk
/// ahead measured slower here: `cargo bench --bench http`, 256 MiB, 770-851 against
/// 946-1,127 MiB/s, the page cache answering faster than the hand-over between
/// threads that overlapping costs on two cores.)
struct DiskReader {
    file: Option<cap_std::fs::File>,
    buf: Vec<u8>,
}

impl DiskReader {
    fn new(file: cap_std::fs::File) -> DiskReader {
        DiskReader {
            file: Some(file),
            buf: Vec::new(),
        }
    }
}

impl Read for DiskReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the file is gone"))?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(out.len().min(CHUNK), 0);
        let (file, buf, result) = blocking(move || {
            let r = file.read(&mut buf);
            (file, buf, r)
        })
        .ok_or_else(|| io::Error::other("reading the file failed"))?;
        let n = result?;
        out[..n].copy_from_slice(&buf[..n]);
        self.file = Some(file);
        self.buf = buf;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_separators_are_refused_and_the_rest_decoded() {
        assert_eq!(decode_path("a%20b/c%C3%A9.txt").unwrap(), "a b/cé.txt");
        for bad in ["a%2Fb", "a%2fb", "a%5Cb", "a%00b", "a%2", "a%zz", "%C3"] {
            assert_eq!(decode_path(bad).unwrap_err().code, "bad_path", "{bad}");
        }
        assert_eq!(query_token("x=1&token=ab%2Bc"), Some("ab+c".into()));
    }
}
