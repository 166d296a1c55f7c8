//! What a newcomer runs into in the first hour, driven over a real socket: errors that
//! quote what was typed without driving the terminal, suggestions for other systems'
//! verbs, help for conditions, SQL habits, writes that need a WHERE, and INFO.

mod common;
use common::{start, Client};
use serde_json::json;

#[test]
fn errors_show_control_bytes_escaped_and_stay_one_line() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    // An up-arrow typed into nc, then a bell and a CSI (U+009B) inside a word.
    c.send_raw(b"\x1b[A\n");
    let l = c.line();
    assert_eq!(
        l, "-ERR unknown_command unknown command '\\x1b[A'; type HELP for the list",
        "{l:?}"
    );
    c.send_raw("PUB \x07news\u{9b}2J hi\n".as_bytes());
    let l = c.line();
    assert!(l.starts_with("-ERR "), "{l:?}");
    assert!(!l.contains(['\x07', '\u{9b}', '\x1b']), "{l:?}");
    assert!(l.contains("\\x07news\\u{9b}2J"), "{l:?}");
}

#[test]
fn other_systems_verbs_and_typos_get_a_suggestion() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    let l = c.ok("PUBLISH news hello");
    assert!(l.contains("did you mean PUB?"), "{l}");
    let l = c.ok("subscribe news");
    assert!(l.contains("did you mean SUB?"), "{l}");
    let l = c.ok("SELEKT users");
    assert!(l.contains("did you mean SELECT?"), "{l}");
    let l = c.ok("HELP PUBLISH");
    assert!(l.contains("did you mean PUB?"), "{l}");
    let r = c.json(json!({"op":"publish","channel":"news","data":"hi"}));
    let m = r["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(m.contains("did you mean \"pub\"?"), "{r}");
}

#[test]
fn help_where_explains_conditions_and_single_quotes_get_a_hint() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    let (reply, _) = c.request("HELP WHERE");
    assert!(
        reply.last().is_some_and(|l| l.starts_with("+OK ")),
        "{reply:?}"
    );
    let all = reply.join("\n");
    for needle in [
        "IS NULL",
        "AND binds tighter than OR",
        "\"double quoted\"",
        "id > 0",
    ] {
        assert!(all.contains(needle), "HELP WHERE lacks {needle}: {all}");
    }
    c.ok("DEFINE people name:str");
    c.ok("INSERT people name=eve");
    let l = c.ok("COUNT people WHERE name = 'eve'");
    assert!(
        l.starts_with("-ERR bad_args") && l.contains("write name = eve or name = \"eve\""),
        "{l}"
    );
    assert_eq!(c.ok("COUNT people WHERE name = eve"), "+OK 1");
}

#[test]
fn update_and_delete_without_where_are_refused_alike() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    c.ok("DEFINE t n:int");
    c.ok("INSERT t n=1");
    c.ok("INSERT t n=2");
    for bare in ["UPDATE t SET n=0", "DELETE t"] {
        let l = c.ok(bare);
        assert!(
            l.starts_with("-ERR bad_args give a row id or WHERE <expr>"),
            "{bare}: {l}"
        );
    }
    for op in ["update", "delete"] {
        let r = c.json(json!({"op": op, "table": "t", "set": {"n": 0}}));
        assert_eq!(r["error"]["code"], "bad_args", "{op}: {r}");
    }
    assert_eq!(c.ok("COUNT t WHERE n = 0"), "+OK 0", "nothing changed");
    assert_eq!(c.ok("UPDATE t SET n=0 WHERE id > 0"), "+OK 2");
    assert_eq!(c.ok("DELETE t WHERE id > 0"), "+OK 2");
}

#[test]
fn info_shows_what_the_server_is_doing() {
    let server = start();
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    let mut sub = Client::connect(addr);
    c.ok("CREATE news");
    sub.ok("SUB news");
    c.ok("NAME ann");
    c.ok("PUB news one");
    c.ok("PUB news two");
    c.ok("SEND ann to myself");
    c.ok("DEFINE t n:int");
    c.ok("INSERT t n=1");
    let l = c.ok("INFO");
    assert!(l.starts_with("+OK version="), "{l}");
    for field in [
        "connections=2",
        "channels=1",
        "subscriptions=1",
        "published=2",
        "delivered=2",
        "direct=1",
        "tables=1",
        "rows=1",
    ] {
        assert!(l.contains(&format!(" {field}")), "INFO lacks {field}: {l}");
    }
    let r = c.json(json!({"op":"info"}));
    assert_eq!(r["ok"], true, "{r}");
    let info = &r["info"];
    assert!(info["uptime_secs"].is_u64(), "{r}");
    assert!(info["memory_bytes"].as_u64().unwrap_or(0) > 1 << 20, "{r}");
    assert_eq!(info["connections_total"], 2, "{r}");
}

#[test]
fn format_fixes_what_pushes_look_like_whatever_the_requests() {
    let server = start();
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    assert_eq!(c.ok("FORMAT"), "+OK format=text fixed=false");
    assert_eq!(c.ok("FORMAT json"), "+OK format=json fixed=true");
    c.ok("CREATE news");
    c.ok("SUB news");
    // A JSON request, then text ones: the push format stays JSON.
    let r = c.json(json!({"op":"ping"}));
    assert_eq!(r["ok"], true);
    assert_eq!(c.ok("PING"), "+PONG");
    let mut other = Client::connect(addr);
    other.ok("PUB news one");
    let push: serde_json::Value = serde_json::from_str(&c.push()).unwrap();
    assert_eq!(push["event"], "msg");
    assert_eq!(push["data"], "one");
    // Back to following each request.
    assert_eq!(c.ok("FORMAT auto"), "+OK format=text fixed=false");
    other.ok("PUB news two");
    assert_eq!(c.push(), "MSG news client-2 two");
    let e = c.ok("FORMAT xml");
    assert!(
        e.starts_with("-ERR bad_args format must be json, text or auto"),
        "{e}"
    );
    let r = c.json(json!({"op":"format","format":"text"}));
    assert_eq!(r["format"]["format"], "text", "{r}");
    assert_eq!(r["format"]["fixed"], true, "{r}");
}
