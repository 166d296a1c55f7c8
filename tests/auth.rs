//! Users, sessions and permissions over real sockets: the modes, the account commands
//! in text and JSON, roles from the built-ins and an ACL file, pattern subscriptions
//! that never leak a forbidden channel, brute force, sessions across connections and
//! restarts, and no secret in any file or log line.

mod common;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Client, ServerProcess};
use leviathan::auth::{AuthMode, AuthSettings};
use leviathan::{Config, Server, ServerHandle};
use serde_json::json;

const ADMIN_PW: &str = "admin-secret-1";

fn start(mode: AuthMode, acl: Option<&str>) -> ServerHandle {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = Config {
        auth: AuthSettings {
            mode,
            acl: acl.map(str::to_string),
            session_ttl: Duration::from_secs(3600),
            admin_password: Some(ADMIN_PW.into()),
            ..AuthSettings::default()
        },
        ..Config::default()
    };
    Server::start(listener, config).expect("starts")
}

/// Logs `c` in; returns the session token.
fn login(c: &mut Client, user: &str, password: &str) -> String {
    let r = c.ok(&format!("LOGIN {user} {password}"));
    let token = r
        .split(' ')
        .find_map(|f| f.strip_prefix("session="))
        .unwrap_or_else(|| panic!("LOGIN {user}: {r}"));
    assert!(r.starts_with(&format!("+OK user={user} role=")), "{r}");
    token.to_string()
}

#[test]
fn required_mode_admits_only_logged_in_clients() {
    let server = start(AuthMode::Required, None);
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.ok("PING"), "+PONG");
    let e = c.ok("CREATE news");
    assert!(
        e.starts_with("-ERR unauthorized ") && e.contains("LOGIN"),
        "{e}"
    );
    let r = c.json(json!({"op":"sub","channel":"news","id":1}));
    assert_eq!(r["error"]["code"], "unauthorized");
    assert!(c
        .ok("LOGIN admin wrong-password")
        .starts_with("-ERR unauthorized "));
    let token = login(&mut c, "admin", ADMIN_PW);
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(c.ok("CREATE news"), "+OK");
    let who = c.ok("WHOAMI");
    assert!(
        who.contains("name=admin") && who.contains("user=admin role=admin"),
        "{who}"
    );
    // Accounts, in text and JSON.
    assert_eq!(c.ok("USER ADD ann ann-password"), "+OK");
    let r = c.json(
        json!({"op":"user","action":"add","user":"bob","password":"bob-password","role":"user"}),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert!(c
        .ok("USER ADD ann again-password")
        .starts_with("-ERR user_exists "));
    assert!(c.ok("USER ADD eve short").starts_with("-ERR bad_args "));
    assert!(c
        .ok("USER ADD eve eve-password wizard")
        .starts_with("-ERR bad_args "));
    let (users, _) = c.request("USERS");
    assert_eq!(
        users,
        ["* admin admin", "* ann user", "* bob user", "+OK 3"]
    );
    assert_eq!(c.ok("USER ROLE bob admin"), "+OK");
    assert_eq!(c.ok("USER DEL bob"), "+OK");
    assert!(c.ok("USER DEL bob").starts_with("-ERR no_such_user "));

    let mut ann = Client::connect(server.local_addr());
    login(&mut ann, "ann", "ann-password");
    assert_eq!(ann.ok("SUB news"), "+OK");
    let e = ann.ok("USERS");
    assert_eq!(e, "-ERR forbidden admin users");
    let r = ann.json(json!({"op":"user","action":"del","user":"admin"}));
    assert_eq!(r["error"]["code"], "forbidden");
    // PASSWD, then the old password no longer works.
    assert!(ann
        .ok("PASSWD wrong-password new-password-1")
        .starts_with("-ERR unauthorized"));
    assert_eq!(ann.ok("PASSWD ann-password new-password-1"), "+OK");
    let mut again = Client::connect(server.local_addr());
    assert!(again
        .ok("LOGIN ann ann-password")
        .starts_with("-ERR unauthorized"));
    login(&mut again, "ann", "new-password-1");
    assert_eq!(again.ok("LOGOUT"), "+OK");
    assert!(again.ok("PUB news x").starts_with("-ERR unauthorized"));
}

#[test]
fn optional_mode_keeps_guests_and_reserves_users_names() {
    let server = start(AuthMode::Optional, None);
    let mut admin = Client::connect(server.local_addr());
    login(&mut admin, "admin", ADMIN_PW);
    admin.ok("USER ADD ann ann-password");
    let mut guest = Client::connect(server.local_addr());
    assert_eq!(
        guest.ok("CREATE lobby"),
        "+OK",
        "a guest may what a user may"
    );
    let e = guest.ok("NAME ann");
    assert!(
        e.starts_with("-ERR name_taken ") && e.contains("LOGIN"),
        "{e}"
    );
    assert!(guest.ok("USERS").starts_with("-ERR forbidden admin "));
    // Addresses only to admins.
    let (clients, _) = guest.request("CLIENTS");
    assert!(clients[0].contains(" - since="), "{clients:?}");
    let (clients, _) = admin.request("CLIENTS");
    assert!(clients[0].contains(" 127.0.0.1:"), "{clients:?}");
    // Logging in makes the user's name the client's.
    guest.ok("NAME visitor");
    login(&mut guest, "ann", "ann-password");
    assert!(guest.ok("WHOAMI").contains("name=ann"));
    assert!(guest.ok("NAME other").starts_with("-ERR bad_args "));
    admin.ok("SEND ann hello");
    assert_eq!(guest.push(), "DM admin hello");
    guest.ok("LOGOUT");
    assert!(guest.ok("WHOAMI").contains("name=client-"));
    // Under --auth off there are no accounts.
    let off = start(AuthMode::Off, None);
    let mut c = Client::connect(off.local_addr());
    assert!(c.ok("LOGIN admin x").starts_with("-ERR unavailable "));
    assert!(c.ok("USERS").starts_with("-ERR unavailable "));
}

const ACL: &str = r#"
[roles.reader]
sub = ["news.>"]
read = ["articles"]
call = []
"#;

#[test]
fn acl_roles_limit_what_a_user_may_do_and_patterns_never_leak() {
    let server = start(AuthMode::Required, Some(ACL));
    let mut admin = Client::connect(server.local_addr());
    login(&mut admin, "admin", ADMIN_PW);
    admin.ok("USER ADD rita rita-password reader");
    admin.ok("CREATE news.sport");
    admin.ok("CREATE secret.plans");
    admin.ok("DEFINE articles title:str");
    admin.ok("DEFINE salaries amount:int");
    let mut rita = Client::connect(server.local_addr());
    login(&mut rita, "rita", "rita-password");
    assert_eq!(
        rita.ok("PUB news.sport hi"),
        "-ERR forbidden pub news.sport"
    );
    assert_eq!(
        rita.ok("SUB secret.plans"),
        "-ERR forbidden sub secret.plans"
    );
    assert_eq!(
        rita.ok("SUB >"),
        "+OK",
        "a pattern may be broader than the role"
    );
    assert_eq!(rita.ok("SELECT articles"), "+OK 0");
    assert_eq!(rita.ok("SELECT salaries"), "-ERR forbidden read salaries");
    assert_eq!(
        rita.ok("INSERT articles title=x"),
        "-ERR forbidden write articles"
    );
    assert_eq!(rita.ok("WATCH salaries"), "-ERR forbidden read salaries");
    assert_eq!(rita.ok("CREATE news.mine"), "-ERR forbidden pub news.mine");
    // A channel's history and members are read like the channel.
    assert_eq!(
        rita.ok("REPLAY secret.plans"),
        "-ERR forbidden sub secret.plans"
    );
    assert_eq!(
        rita.ok("PRESENCE secret.plans"),
        "-ERR forbidden sub secret.plans"
    );
    // What the pattern delivers: only channels rita may read, also ones made later.
    let r = rita.json(json!({"op":"pub","channel":"news.sport","data":1}));
    assert_eq!(r["error"]["message"], "pub news.sport");
    rita.ok("PING");
    admin.ok("CREATE news.late");
    admin.ok("CREATE secret.late");
    for ch in ["secret.plans", "news.sport", "secret.late", "news.late"] {
        admin.ok(&format!("PUB {ch} on-{ch}"));
    }
    assert_eq!(rita.push(), "MSG news.sport admin on-news.sport");
    assert_eq!(rita.push(), "MSG news.late admin on-news.late");
    assert_eq!(rita.ok("PING"), "+PONG", "nothing else arrived before");
    assert!(rita.seen_pushes.is_empty(), "{:?}", rita.seen_pushes);
}

#[test]
fn repeated_failed_logins_wait_longer_and_close_the_connection() {
    let server = start(AuthMode::Required, None);
    let mut c = Client::connect(server.local_addr());
    let mut took = Vec::new();
    for _ in 0..4 {
        let t = Instant::now();
        assert!(c
            .ok("LOGIN admin guess-password")
            .starts_with("-ERR unauthorized"));
        took.push(t.elapsed());
    }
    assert!(took[3] > took[1] + Duration::from_millis(300), "{took:?}");
    c.send("LOGIN admin guess-password");
    let mut rest = Vec::new();
    while let Some(l) = c.line_or_eof() {
        rest.push(l);
    }
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert!(rest[0].starts_with("-ERR unauthorized "), "{rest:?}");
    assert_eq!(rest[1], "BYE unauthorized");
    // Others are not held up, and the right password still works after the wait.
    let mut d = Client::connect(server.local_addr());
    assert_eq!(d.ok("PING"), "+PONG");
}

#[test]
fn a_session_resumes_on_another_connection_until_logout() {
    let server = start(AuthMode::Required, None);
    let mut admin = Client::connect(server.local_addr());
    login(&mut admin, "admin", ADMIN_PW);
    admin.ok("USER ADD ann ann-password");
    admin.ok("CREATE news");
    let mut ann = Client::connect(server.local_addr());
    let token = login(&mut ann, "ann", "ann-password");
    ann.ok("SUB news");
    drop(ann);
    std::thread::sleep(Duration::from_millis(100));
    let mut back = Client::connect(server.local_addr());
    assert!(back.ok("RESUME 00ff").starts_with("-ERR unauthorized"));
    let r = back.ok(&format!("RESUME {token}"));
    assert_eq!(r, "+OK user=ann role=user subscriptions=1");
    admin.ok("PUB news back");
    assert_eq!(back.push(), "MSG news admin back");
    // JSON, on a third connection: the same session.
    let mut third = Client::connect(server.local_addr());
    let r = third.json(json!({"op":"resume","token": token, "id": 5}));
    assert_eq!(r["session"]["user"], "ann", "{r}");
    back.ok("LOGOUT");
    let mut late = Client::connect(server.local_addr());
    assert!(late
        .ok(&format!("RESUME {token}"))
        .starts_with("-ERR unauthorized"));
    // LOGOUT ends the session everywhere: the third connection is out too.
    assert!(third.ok("WHOAMI").starts_with("-ERR unauthorized"));
    // A role change reaches connected clients; a deleted user is logged out.
    let mut ann = Client::connect(server.local_addr());
    login(&mut ann, "ann", "ann-password");
    assert!(ann.ok("USERS").starts_with("-ERR forbidden"));
    admin.ok("USER ROLE ann admin");
    let (users, _) = ann.request("USERS");
    assert_eq!(users.last().unwrap(), "+OK 2", "now an admin");
    admin.ok("USER DEL ann");
    assert!(ann.ok("WHOAMI").starts_with("-ERR unauthorized"));
}

#[test]
fn accounts_and_sessions_survive_a_restart_and_no_secret_is_written_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("LEVIATHAN_ADMIN_PASSWORD", ADMIN_PW)];
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_servermain"));
    let args = ["--auth", "required"];
    let server =
        ServerProcess::start_program(program, dir.path(), &args, None, "debug", &env).unwrap();
    let mut c = Client::connect(server.addr);
    login(&mut c, "admin", ADMIN_PW);
    c.ok("USER ADD ann ann-password");
    assert!(c
        .ok("LOGIN ann wrong-guess-1")
        .starts_with("-ERR unauthorized"));
    let mut ann = Client::connect(server.addr);
    let token = login(&mut ann, "ann", "ann-password");
    ann.ok("DEFINE notes text:str");
    ann.ok("INSERT notes text=hello");
    drop((c, ann));
    let (status, mut log) = server.signal_and_wait(libc::SIGINT);
    assert!(status.success());
    let restarted =
        ServerProcess::start_program(program, dir.path(), &args, None, "debug", &[]).unwrap();
    let mut again = Client::connect(restarted.addr);
    let r = again.ok(&format!("RESUME {token}"));
    assert!(r.starts_with("+OK user=ann "), "{r}");
    assert_eq!(again.ok("COUNT notes"), "+OK 1");
    let (_, more) = restarted.signal_and_wait(libc::SIGINT);
    log.extend(more);
    let secrets = [ADMIN_PW, "ann-password", "wrong-guess-1", token.as_str()];
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for s in secrets {
            assert!(!text.contains(s), "{} holds a secret", entry.display());
        }
    }
    let users = std::fs::read_to_string(dir.path().join("data/users.json")).unwrap();
    assert!(users.contains("$argon2id$"), "{users}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("data/users.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "users.json is private");
    assert!(
        log.iter()
            .any(|l| l.contains("failed to login as 'ann'") && l.contains("127.0.0.1")),
        "{log:?}"
    );
    for l in &log {
        for s in secrets {
            assert!(!l.contains(s), "the log holds a secret: {l}");
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_websocket_brings_its_session_token_and_a_bad_one_is_refused() {
    let server = start(AuthMode::Required, None);
    let addr = server.local_addr();
    let mut admin = Client::connect(addr);
    let token = login(&mut admin, "admin", ADMIN_PW);
    let whoami = |req: tungstenite::handshake::client::Request| {
        let (mut ws, _) = tungstenite::connect(req).expect("handshake");
        ws.read().expect("greeting");
        ws.send(tungstenite::Message::text("WHOAMI")).unwrap();
        ws.read().unwrap().into_text().unwrap().to_string()
    };
    use tungstenite::client::IntoClientRequest;
    let url = format!("ws://{addr}/?token={token}")
        .into_client_request()
        .unwrap();
    assert!(whoami(url).contains("user=admin role=admin"));
    let mut bearer = format!("ws://{addr}/").into_client_request().unwrap();
    let auth = format!("Bearer {token}").parse().unwrap();
    bearer.headers_mut().insert("authorization", auth);
    assert!(whoami(bearer).contains("user=admin"));
    let plain = format!("ws://{addr}/").into_client_request().unwrap();
    let anonymous = whoami(plain);
    assert!(anonymous.starts_with("-ERR unauthorized"), "{anonymous}");
    match tungstenite::connect(format!("ws://{addr}/?token=0123abcd")) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("an invalid token must get 401: {:?}", other.map(|_| ())),
    }
}

#[test]
fn names_never_reach_outside_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = Config {
        data_dir: Some(data.clone()),
        ..Config::default()
    };
    let mut server = Server::start(listener, config).unwrap();
    let mut c = Client::connect(server.local_addr());
    let long = "a".repeat(10_000);
    let bad = [
        "../x",
        "..",
        "/tmp/evil",
        "a/b",
        "x\u{0}y",
        "%2e%2e",
        long.as_str(),
    ];
    for name in bad {
        let r = c.json(json!({"op":"define","table":name,"columns":["v:int"]}));
        assert_eq!(r["error"]["code"], "bad_args", "DEFINE {name:.20}: {r}");
        let r = c.json(json!({"op":"create","channel":name}));
        assert_eq!(r["error"]["code"], "bad_args", "CREATE {name:.20}: {r}");
        let r = c.json(json!({"op":"user","action":"add","user":name,"password":"long-enough"}));
        assert_ne!(r["ok"], true, "USER ADD {name:.20}: {r}");
    }
    assert_eq!(c.ok("SAVE").split(' ').next(), Some("+OK"));
    server.shutdown();
    // Nothing was written outside the data folder.
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, [std::ffi::OsString::from("data")]);
    assert!(!std::path::Path::new("/tmp/evil.csv").exists());
}

#[test]
fn a_reloaded_acl_changes_the_rights_of_connected_clients() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    std::fs::write(
        &acl,
        "[roles.reader]\nsub = [\"news.>\"]\nread = [\"notes\"]\n",
    )
    .unwrap();
    let env = [("LEVIATHAN_ADMIN_PASSWORD", ADMIN_PW)];
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_servermain"));
    let acl_arg = acl.to_str().unwrap();
    let args = ["--auth", "required", "--in-memory", "--acl", acl_arg];
    let server =
        ServerProcess::start_program(program, dir.path(), &args, None, "info", &env).unwrap();
    let mut admin = Client::connect(server.addr);
    login(&mut admin, "admin", ADMIN_PW);
    admin.ok("USER ADD rita rita-password reader");
    admin.ok("CREATE news.a");
    admin.ok("CREATE sport.b");
    let mut rita = Client::connect(server.addr);
    login(&mut rita, "rita", "rita-password");
    rita.ok("SUB >");
    assert_eq!(rita.ok("SUB sport.b"), "-ERR forbidden sub sport.b");
    admin.ok("DEFINE notes text:str");
    assert!(rita.ok("WATCH notes").starts_with("+OK seq="));
    // The file changes: sport, not news.
    std::fs::write(&acl, "[roles.reader]\nsub = [\"sport.>\"]\n").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while rita.ok("SUB sport.b") != "+OK" {
        assert!(Instant::now() < deadline, "the reload did not take");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rita.ok("SUB news.a"), "-ERR forbidden sub news.a");
    rita.ok("UNSUB sport.b");
    admin.ok("INSERT notes text=hidden");
    admin.ok("PUB news.a old");
    admin.ok("PUB sport.b new");
    assert_eq!(
        rita.push(),
        "MSG sport.b admin new",
        "the pattern follows the new role"
    );
    // A file that does not parse changes nothing.
    std::fs::write(&acl, "[roles.reader\n").unwrap();
    unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rita.ok("SUB sport.b"), "+OK");
}
