//! Files on the HTTP port over real sockets: `GRANT` (text, JSON, rights) and an
//! action's `Ctx::grant`, `PUT`/`GET`/`DELETE /files/<path>` with every status, paths
//! that try to leave the files folder (`..`, encoded slashes, NUL, absolute paths,
//! symlinks), the size limit and the per-user quota under concurrent uploads, atomic
//! replacement under readers, uploads cut short, restarts, and a 1 GiB file that
//! streams through a real servermain without growing its memory.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, ServerProcess, WAIT};
use leviathan::framework::{ActionError, Answer, Ctx, FileOp};
use leviathan::server::HttpPort;
use leviathan::store::files::FileLimits;
use leviathan::{App, Config, ServerHandle};
use serde_json::{json, Value};

/// A response as read off the socket.
struct Resp {
    status: u16,
    headers: Vec<String>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        common::find_header(&self.headers, name)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

fn read_response(r: &mut impl BufRead) -> Resp {
    let (status, headers, body) = common::read_http(r);
    Resp {
        status,
        headers,
        body,
    }
}

/// One request on a new connection (`Content-Length` added unless `headers` has one).
fn send(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // A server that answers early (a refusal) may close before taking all of it.
    let _ = s.write_all(body);
    read_response(&mut BufReader::new(s))
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// `GRANT …` on `c`, its token.
fn grant(c: &mut Client, line: &str) -> String {
    let r = c.ok(line);
    r.strip_prefix("+OK ")
        .unwrap_or_else(|| panic!("{line}: {r}"))
        .to_string()
}

/// A connection that has sent a `PUT` of `path` with `token` and the header lines
/// `extra`, and no body yet: the test sends what it wants of one.
fn put_head(addr: SocketAddr, token: &str, path: &str, extra: &[&str]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = format!("PUT /files/{path} HTTP/1.1\r\n{}\r\n", bearer(token));
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s
}

fn put(addr: SocketAddr, token: &str, path: &str, body: &[u8]) -> Resp {
    send(
        addr,
        "PUT",
        &format!("/files/{path}"),
        &[&bearer(token)],
        body,
    )
}

fn get(addr: SocketAddr, token: &str, path: &str) -> Resp {
    send(
        addr,
        "GET",
        &format!("/files/{path}?token={token}"),
        &[],
        b"",
    )
}

/// A server with its data in `dir` and no accounts (everyone may `GRANT`; the rights
/// are tested in `rights_actions_owners_and_restarts`).
fn server(dir: &Path, limits: FileLimits) -> ServerHandle {
    common::start_with(Config {
        data_dir: Some(dir.to_path_buf()),
        http: HttpPort::Port(0),
        files: limits,
        auth: auth_off(),
        ..Config::default()
    })
}

fn auth_off() -> leviathan::auth::AuthSettings {
    leviathan::auth::AuthSettings {
        mode: leviathan::auth::AuthMode::Off,
        ..Default::default()
    }
}

#[test]
fn grant_put_get_delete_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), FileLimits::default());
    let http = server.http_addr().unwrap();
    let mut c = Client::connect(server.local_addr());

    let up = grant(&mut c, "GRANT put notes/hello.txt TTL 60");
    assert_eq!(up.len(), 48, "{up}");
    let r = put(http, &up, "notes/hello.txt", b"hello, files\n");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!({"ok": true, "path": "notes/hello.txt", "size": 13, "created": true})
    );
    assert_eq!(
        std::fs::read(dir.path().join("files/notes/hello.txt")).unwrap(),
        b"hello, files\n"
    );
    // The grant lasts its TTL: a second PUT replaces the file (200).
    let r = put(http, &up, "notes/hello.txt", b"hello again\n");
    assert_eq!((r.status, r.json()["created"].clone()), (200, json!(false)));

    // JSON GRANT; a download as ?token=, with the file's type and the sandbox.
    let r = c.json(json!({"op": "grant", "operation": "get", "path": "notes/", "id": 7}));
    assert_eq!(
        (r["ok"].clone(), r["id"].clone()),
        (json!(true), json!(7)),
        "{r}"
    );
    let down = r["token"].as_str().unwrap().to_string();
    let r = get(http, &down, "notes/hello.txt");
    assert_eq!((r.status, &r.body[..]), (200, &b"hello again\n"[..]));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("content-security-policy"), Some("sandbox"));
    // A folder grant covers what is under it, not beside it.
    let r = get(http, &down, "notes/missing.txt");
    assert_eq!((r.status, r.code()), (404, "not_found".into()));
    let r = get(http, &down, "notesx/hello.txt");
    assert_eq!((r.status, r.code()), (403, "forbidden".into()));
    // A grant is for its operation only.
    let r = send(
        http,
        "DELETE",
        "/files/notes/hello.txt",
        &[&bearer(&down)],
        b"",
    );
    assert_eq!((r.status, r.code()), (403, "forbidden".into()));
    let r = put(http, &down, "notes/hello.txt", b"x");
    assert_eq!((r.status, r.code()), (403, "forbidden".into()));
    // No grant, an unknown one, a method files do not answer, no Content-Length.
    let r = send(http, "GET", "/files/notes/hello.txt", &[], b"");
    assert_eq!((r.status, r.code()), (401, "unauthorized".into()));
    let r = get(http, "0123456789abcdef", "notes/hello.txt");
    assert_eq!((r.status, r.code()), (401, "unauthorized".into()));
    let r = send(
        http,
        "POST",
        "/files/notes/hello.txt",
        &[&bearer(&up)],
        b"x",
    );
    assert_eq!((r.status, r.code()), (405, "method_not_allowed".into()));
    let s = put_head(http, &up, "notes/hello.txt", &[]);
    let r = read_response(&mut BufReader::new(s));
    assert_eq!((r.status, r.code()), (411, "length_required".into()));

    // Metrics count the file, the uploads and the downloads.
    assert_eq!(common::metric(http, "files"), 1.0);
    assert_eq!(common::metric(http, "file_bytes"), 12.0);
    assert_eq!(common::metric(http, "file_uploads_total"), 2.0);
    assert!(common::metric(http, "file_downloads_total") >= 1.0);

    let del = grant(&mut c, "GRANT DELETE notes/hello.txt");
    let r = send(
        http,
        "DELETE",
        "/files/notes/hello.txt",
        &[&bearer(&del)],
        b"",
    );
    assert_eq!((r.status, r.json()["ok"].clone()), (200, json!(true)));
    assert!(!dir.path().join("files/notes/hello.txt").exists());
    let r = send(
        http,
        "DELETE",
        "/files/notes/hello.txt",
        &[&bearer(&del)],
        b"",
    );
    assert_eq!((r.status, r.code()), (404, "not_found".into()));
    assert_eq!(common::metric(http, "files"), 0.0);

    // GRANT's own errors.
    for (line, code) in [
        ("GRANT", "bad_args"),
        ("GRANT fetch a.txt", "bad_args"),
        ("GRANT put", "bad_args"),
        ("GRANT put ../a.txt", "bad_path"),
        ("GRANT put /etc/passwd", "bad_path"),
        ("GRANT put a.txt TTL 0", "bad_args"),
        ("GRANT put a.txt TTL 9999999", "bad_args"),
        ("GRANT put a.txt TTL 5 TTL 6", "bad_args"),
        ("GRANT put a.txt FOR", "bad_args"),
    ] {
        let r = c.ok(line);
        assert!(r.starts_with(&format!("-ERR {code} ")), "{line}: {r}");
    }
    let (help, _) = c.request("HELP GRANT");
    assert!(
        help.iter()
            .any(|l| l.contains("GRANT put|get|delete <path>")),
        "{help:?}"
    );
    drop(server);
}

#[test]
fn paths_cannot_leave_the_files_folder() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
    let server = server(dir.path(), FileLimits::default());
    let http = server.http_addr().unwrap();
    let mut c = Client::connect(server.local_addr());
    let files = dir.path().join("files");
    // Links someone with access to the disk left in the folder: to a folder outside,
    // and to a file outside.
    std::os::unix::fs::symlink(outside.path(), files.join("evil")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), files.join("link.txt")).unwrap();

    let any_get = grant(&mut c, "GRANT get evil/");
    let r = get(http, &any_get, "evil/secret.txt");
    assert_eq!(
        (r.status, r.code()),
        (400, "bad_path".into()),
        "through a linked folder"
    );
    let t = grant(&mut c, "GRANT get link.txt");
    let r = get(http, &t, "link.txt");
    assert_eq!(r.status, 404, "a linked file is not served");
    let t = grant(&mut c, "GRANT put evil/new.txt");
    let r = put(http, &t, "evil/new.txt", b"planted");
    assert_eq!((r.status, r.code()), (400, "bad_path".into()));
    assert!(!outside.path().join("new.txt").exists());
    let t = grant(&mut c, "GRANT put link.txt");
    let r = put(http, &t, "link.txt", b"overwritten");
    assert_eq!((r.status, r.code()), (400, "bad_path".into()));
    let t = grant(&mut c, "GRANT delete link.txt");
    let r = send(http, "DELETE", "/files/link.txt", &[&bearer(&t)], b"");
    assert_eq!(r.status, 404);
    assert_eq!(
        std::fs::read(outside.path().join("secret.txt")).unwrap(),
        b"secret",
        "nothing outside was touched"
    );

    // Paths that say `..`, an absolute path, NUL, backslashes or an encoded slash,
    // with a grant that would cover them if they were taken as they decode.
    let root = grant(&mut c, "GRANT get a/");
    for path in [
        "../secret.txt",
        "a/../../secret.txt",
        "a/%2e%2e/%2e%2e/secret.txt",
        "a%2F..%2F..%2Fsecret.txt",
        "a/..%2F..%2Fsecret.txt",
        "a/%5C..%5Csecret.txt",
        "a/x%00.txt",
        "/etc/passwd",
        "a//b.txt",
        "a/.hidden",
        "a/%ZZ",
    ] {
        let r = get(http, &root, path);
        assert!(
            r.status == 400 && r.code() == "bad_path",
            "{path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    drop(server);
}

#[test]
fn size_limit_and_quota_hold_under_concurrent_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let mib: usize = 1 << 20;
    let server = server(
        dir.path(),
        FileLimits {
            max_file_size: 2 * mib as u64,
            quota: 3 * mib as u64,
        },
    );
    let http = server.http_addr().unwrap();
    let mut c = Client::connect(server.local_addr());
    let t = grant(&mut c, "GRANT put ann/ FOR ann");

    // Too large, asked with Expect: 100-continue: refused before any byte is sent.
    let length = format!("Content-Length: {}", 3 * mib);
    let s = put_head(http, &t, "ann/big.bin", &[&length, "Expect: 100-continue"]);
    let r = read_response(&mut BufReader::new(s));
    assert_eq!((r.status, r.code()), (413, "too_large".into()));
    assert_eq!(r.header("connection"), Some("close"));
    // Too large, sent whole without waiting: the answer still arrives.
    let r = put(http, &t, "ann/big.bin", &vec![7u8; 3 * mib]);
    assert_eq!((r.status, r.code()), (413, "too_large".into()));
    // Accepted with Expect: 100-continue: told to go on, then stored.
    let mut s = put_head(
        http,
        &t,
        "ann/ok.bin",
        &["Content-Length: 5", "Expect: 100-continue"],
    );
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    r.read_line(&mut line).unwrap();
    s.write_all(b"12345").unwrap();
    assert_eq!(read_response(&mut r).status, 201);

    // Four 1 MiB uploads at once against 3 MiB with 5 bytes used: exactly two fit
    // (reservations count uploads under way, so none overruns the quota).
    let results: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let t = t.clone();
                scope.spawn(move || {
                    put(http, &t, &format!("ann/{i}.bin"), &vec![i as u8; mib]).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = results.iter().filter(|s| **s == 201).count();
    assert_eq!(stored, 2, "{results:?}");
    assert_eq!(
        results.iter().filter(|s| **s == 413).count(),
        2,
        "{results:?}"
    );
    let one = (0..4).find(|i| results[*i] == 201).unwrap();
    // Replacing one's own file counts it once.
    let r = put(http, &t, &format!("ann/{one}.bin"), &vec![9u8; mib]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = put(http, &t, "ann/more.bin", &vec![9u8; mib]);
    assert_eq!((r.status, r.code()), (413, "quota_exceeded".into()));
    // Another user's quota is their own.
    let bob = grant(&mut c, "GRANT put bob/ FOR bob");
    assert_eq!(
        put(http, &bob, "bob/a.bin", &vec![1u8; 2 * mib]).status,
        201
    );
    // Deleting frees the space.
    let del = grant(&mut c, "GRANT delete ann/");
    let r = send(
        http,
        "DELETE",
        &format!("/files/ann/{one}.bin"),
        &[&bearer(&del)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(put(http, &t, "ann/more.bin", &vec![9u8; mib]).status, 201);

    // An upload cut short leaves nothing behind and gives its reservation back.
    let length = format!("Content-Length: {mib}");
    let mut s = put_head(http, &t, "ann/cut.bin", &[&length]);
    s.write_all(&vec![1u8; 100_000]).unwrap();
    drop(s);
    let deadline = Instant::now() + WAIT;
    let leftovers = || {
        std::fs::read_dir(dir.path().join("files/ann"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count()
    };
    while leftovers() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(leftovers(), 0, "the temporary file is removed");
    assert!(!dir.path().join("files/ann/cut.bin").exists());
    let r = put(http, &t, "ann/small.bin", b"fits");
    assert_eq!(r.status, 201, "the cut upload's bytes were given back");
    drop(server);
}

#[test]
fn readers_see_the_old_file_or_the_new_never_part() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), FileLimits::default());
    let http = server.http_addr().unwrap();
    let mut c = Client::connect(server.local_addr());
    let up = grant(&mut c, "GRANT put shared/");
    let down = grant(&mut c, "GRANT get shared/");
    let size = 2 << 20;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Six writers replace one file, each with its own byte; six others write
        // files of their own.
        let writers: Vec<_> = (0..12u8)
            .map(|i| {
                let up = up.clone();
                scope.spawn(move || {
                    let path = if i < 6 {
                        "shared/same.bin".to_string()
                    } else {
                        format!("shared/own-{i}.bin")
                    };
                    for _ in 0..3 {
                        let r = put(http, &up, &path, &vec![i + 1; size]);
                        assert!(r.status == 200 || r.status == 201, "{}", r.status);
                    }
                })
            })
            .collect();
        let reader = scope.spawn(|| {
            let mut whole = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let r = get(http, &down, "shared/same.bin");
                if r.status == 404 {
                    continue;
                }
                assert_eq!(r.status, 200);
                assert_eq!(r.body.len(), size, "a whole file");
                assert!(r.body.iter().all(|b| *b == r.body[0]), "one writer's file");
                whole += 1;
            }
            whole
        });
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0, "the reader saw the file");
    });
    for i in 6..12u8 {
        let r = get(http, &down, &format!("shared/own-{i}.bin"));
        assert_eq!(r.body, vec![i + 1; size]);
    }
    let names: Vec<String> = std::fs::read_dir(dir.path().join("files/shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 7, "no temporary file left: {names:?}");
    drop(server);
}

/// An action hands out grants: a client uploads its own avatar without being an admin.
fn avatar(ctx: &mut Ctx, _req: Value) -> Result<Answer, ActionError> {
    let user = ctx
        .user()
        .ok_or_else(|| ActionError::new("unauthorized", "log in first"))?
        .to_string();
    let token = ctx.grant(
        FileOp::Put,
        &format!("avatars/{user}.png"),
        Duration::from_secs(60),
    )?;
    Ok(Answer::new(
        json!({"token": token, "path": format!("avatars/{user}.png")}),
    ))
}

#[test]
fn rights_actions_owners_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        data_dir: Some(dir.path().to_path_buf()),
        http: HttpPort::Port(0),
        files: FileLimits {
            max_file_size: 0,
            quota: 1000,
        },
        auth: leviathan::auth::AuthSettings {
            admin_password: Some("admin-secret".into()),
            ..Default::default()
        },
        ..Config::default()
    };
    let start = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        App::new()
            .config(config())
            .action("avatar", "a grant to upload one's avatar", avatar)
            .start(listener)
            .unwrap()
    };
    let server = start();
    let http = server.http_addr().unwrap();
    let mut admin = Client::connect(server.local_addr());
    admin.ok("LOGIN admin admin-secret");
    admin.ok("USER ADD ann ann-password");
    let mut ann = Client::connect(server.local_addr());
    ann.ok("LOGIN ann ann-password");
    // A user is no admin of files; a guest neither.
    assert_eq!(ann.ok("GRANT put x.txt"), "-ERR forbidden admin files");
    let mut guest = Client::connect(server.local_addr());
    assert!(guest.ok("GRANT get x.txt").starts_with("-ERR forbidden"));
    // The action grants to whoever calls it, for their own quota.
    let r = ann.json(json!({"op": "call", "action": "avatar", "data": {}}));
    let token = r["result"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    assert_eq!(
        put(http, &token, "avatars/ann.png", &[1u8; 600]).status,
        201
    );
    let r = put(http, &token, "avatars/admin.png", &[1u8; 10]);
    assert_eq!(r.status, 403, "only the path granted");
    // The admin's grant counts against the admin unless it names a user.
    let t = grant(&mut admin, "GRANT put docs/ FOR ann");
    let r = put(http, &t, "docs/big.txt", &[2u8; 500]);
    assert_eq!(
        (r.status, r.code()),
        (413, "quota_exceeded".into()),
        "ann has 600 of 1000"
    );
    let t = grant(&mut admin, "GRANT put docs/");
    assert_eq!(put(http, &t, "docs/big.txt", &[2u8; 500]).status, 201);
    drop(server);

    // An unfinished upload a crash left behind is removed at start; owners survive.
    std::fs::write(dir.path().join("files/docs/.upload-0123abcd.part"), b"half").unwrap();
    let server = start();
    assert!(!dir.path().join("files/docs/.upload-0123abcd.part").exists());
    let http = server.http_addr().unwrap();
    let mut admin = Client::connect(server.local_addr());
    admin.ok("LOGIN admin admin-secret");
    let t = grant(&mut admin, "GRANT put docs/ FOR ann");
    let r = put(http, &t, "docs/more.txt", &[2u8; 500]);
    assert_eq!(
        (r.status, r.code()),
        (413, "quota_exceeded".into()),
        "ann's 600 bytes are still hers after a restart"
    );
    assert_eq!(put(http, &t, "docs/more.txt", &[2u8; 400]).status, 201);
    let down = grant(&mut admin, "GRANT get avatars/ann.png");
    assert_eq!(get(http, &down, "avatars/ann.png").body, vec![1u8; 600]);
    drop(server);

    // Without a data folder there are no files, and GRANT says why.
    let server = common::start_with(Config {
        http: HttpPort::Port(0),
        auth: auth_off(),
        ..Config::default()
    });
    let mut c = Client::connect(server.local_addr());
    assert!(c
        .ok("GRANT put a.txt")
        .starts_with("-ERR unavailable files need a data folder"));
    let r = send(
        server.http_addr().unwrap(),
        "GET",
        "/files/a.txt?token=x",
        &[],
        b"",
    );
    assert_eq!((r.status, r.code()), (503, "unavailable".into()));
    drop(server);
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_gigabyte_streams_through_without_sitting_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--http-port", "0", "--auth", "off"]).unwrap();
    let pid = server.child.id();
    let http = server.http_addr();
    let mut c = Client::connect(server.addr);
    let up = grant(&mut c, "GRANT put big/one.bin");
    let before = rss_kib(pid);

    // 1 GiB of a pattern that shows any lost or reordered chunk.
    let total: u64 = 1 << 30;
    let block = |n: u64| -> Vec<u8> {
        let mut b = vec![0u8; 1 << 20];
        for (i, chunk) in b.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&(n * 131_072 + i as u64).to_le_bytes());
        }
        b
    };
    let length = format!("Content-Length: {total}");
    let mut s = put_head(http, &up, "big/one.bin", &[&length]);
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut peak = before;
    for n in 0..total >> 20 {
        s.write_all(&block(n)).unwrap();
        if n % 64 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    let r = read_response(&mut BufReader::new(s));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        std::fs::metadata(dir.path().join("data/files/big/one.bin"))
            .unwrap()
            .len(),
        total
    );

    let down = grant(&mut c, "GRANT get big/one.bin");
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(s, "GET /files/big/one.bin?token={down} HTTP/1.1\r\n\r\n").unwrap();
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut line = String::new();
    let mut len = 0u64;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        assert!(!line.is_empty(), "headers end");
    }
    assert_eq!(len, total);
    let mut buf = vec![0u8; 1 << 20];
    for n in 0..total >> 20 {
        r.read_exact(&mut buf).unwrap();
        assert!(buf == block(n), "MiB {n} came back as it went");
        if n % 64 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    let grown = peak.saturating_sub(before);
    println!("servermain RSS {before} KiB before, at most {peak} KiB while moving 1 GiB each way");
    assert!(grown < 64 << 10, "the server grew by {grown} KiB");
    drop(server);
}

#[test]
fn an_upload_that_stalls_is_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(Config {
        data_dir: Some(dir.path().to_path_buf()),
        http: HttpPort::Port(0),
        auth: auth_off(),
        line_timeout: Some(Duration::from_secs(1)),
        files: FileLimits {
            max_file_size: 0,
            quota: 1 << 20,
        },
        ..Config::default()
    });
    let http = server.http_addr().unwrap();
    let mut c = Client::connect(server.local_addr());
    let t = grant(&mut c, "GRANT put slow.bin");
    let length = format!("Content-Length: {}", 1 << 20);
    let mut s = put_head(http, &t, "slow.bin", &[&length]);
    s.write_all(&[5u8; 1000]).unwrap();
    // Then nothing, with the connection open: the server answers and closes.
    let started = Instant::now();
    let r = read_response(&mut BufReader::new(s));
    assert_eq!((r.status, r.code()), (400, "bad_args".into()));
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("stalled") && message.contains("1000 of 1048576"),
        "{message}"
    );
    assert!(started.elapsed() < WAIT);
    // Nothing is left, and the quota it reserved (all of it) is free again.
    assert!(!dir.path().join("files/slow.bin").exists());
    let left: Vec<_> = std::fs::read_dir(dir.path().join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let r = put(http, &t, "slow.bin", &vec![1u8; 1 << 20]);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}
