//! The chat example app (examples/chat.rs) as its users meet it: its binary on a real
//! port, text, JSON and WebSocket clients, a restart that keeps what was said.

mod common;

use common::{Client, ServerProcess};
use serde_json::{json, Value};

fn start(dir: &std::path::Path) -> ServerProcess {
    let data = dir.join("data");
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--stats-secs",
        "1",
        "--key",
        "sesame",
    ];
    ServerProcess::start_program(&common::example("chat"), dir, &args, None, "info", &[])
        .expect("the chat example starts (a plain `cargo test` builds it)")
}

fn ws(
    addr: std::net::SocketAddr,
    query: &str,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/{query}")).expect("handshake");
    ws.read().expect("greeting");
    ws
}

fn ws_request(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    line: &str,
) -> String {
    ws.send(tungstenite::Message::text(line)).unwrap();
    ws.read().unwrap().into_text().unwrap().to_string()
}

#[test]
fn the_chat_example_serves_rooms_and_keeps_messages_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.addr;

    let mut ann = Client::connect(addr);
    let e = ann.ok(r#"CALL join {"room":"lobby"}"#);
    assert!(e.starts_with("-ERR unauthorized "), "{e}");
    assert_eq!(ann.ok(r#"AUTH {"key":"sesame"}"#), "+OK");
    ann.ok("NAME ann");
    let e = ann.ok(r#"CALL say {"room":"lobby","text":"too early"}"#);
    assert!(e.starts_with("-ERR not_in_room "), "{e}");
    assert_eq!(
        ann.ok(r#"CALL join {"room":"lobby"}"#),
        r#"+OK {"room":"lobby","members":1}"#
    );
    assert_eq!(ann.push(), r#"MSG room.lobby ann {"joined":"ann"}"#);

    let mut bob = Client::connect(addr);
    bob.json(json!({"op":"auth","headers":{"key":"sesame"}}));
    bob.json(json!({"op":"name","name":"bob"}));
    let r = bob.json(json!({"op":"call","action":"join","data":{"room":"lobby"},"id":1}));
    assert_eq!(
        r,
        json!({"ok":true,"id":1,"result":{"room":"lobby","members":2}})
    );
    assert_eq!(ann.push(), r#"MSG room.lobby bob {"joined":"bob"}"#);

    assert_eq!(
        ann.ok(r#"CALL say {"room":"lobby","text":"hello all"}"#),
        r#"+OK {"id":1}"#
    );
    assert_eq!(
        ann.push(),
        r#"MSG room.lobby ann {"from":"ann","text":"hello all"}"#
    );
    let said: Value = loop {
        let p: Value = serde_json::from_str(&bob.push()).unwrap();
        if p["data"]["text"].is_string() {
            break p;
        }
    };
    assert_eq!(
        said,
        json!({"event":"msg","channel":"room.lobby","from":"ann","data":{"from":"ann","text":"hello all"}})
    );
    let e = ann.ok(r#"CALL say {"room":"lobby","text":"  "}"#);
    assert!(
        e.starts_with("-ERR bad_args ") && e.contains("empty"),
        "{e}"
    );

    let (actions, _) = ann.request("ACTIONS");
    let names: Vec<&str> = actions
        .iter()
        .filter_map(|l| l.strip_prefix("* "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["join", "recent", "say"]);
    assert!(ann.ok("CALL dance").starts_with("-ERR no_such_action "));

    let mut browser = ws(addr, "?key=sesame");
    let recent = ws_request(&mut browser, r#"CALL recent {"room":"lobby"}"#);
    let recent: Value = serde_json::from_str(recent.strip_prefix("+OK ").unwrap()).unwrap();
    assert_eq!(recent[0]["author"], "ann");
    assert_eq!(recent[0]["text"], "hello all");
    let mut stranger = ws(addr, "");
    assert!(ws_request(&mut stranger, r#"CALL recent {"room":"lobby"}"#)
        .starts_with("-ERR unauthorized"));

    // The stats task publishes every second.
    ann.ok("SUB stats");
    let stats = loop {
        let p = ann.push();
        if let Some(s) = p.strip_prefix("MSG stats server ") {
            break s.to_string();
        }
    };
    assert_eq!(stats, r#"{"rooms":1,"messages":1}"#);

    drop((ann, bob, browser, stranger));
    let (status, _) = server.signal_and_wait(libc::SIGINT);
    assert!(status.success(), "{status:?}");

    let server = start(dir.path());
    let mut c = Client::connect(server.addr);
    c.ok(r#"AUTH {"key":"sesame"}"#);
    let r = c.ok(r#"CALL recent {"room":"lobby"}"#);
    assert!(r.contains(r#""text":"hello all""#), "{r}");
    let (rows, _) = c.request("SELECT shutdowns");
    assert_eq!(rows.len(), 2, "one shutdown recorded: {rows:?}");
    assert!(rows[0].starts_with("* id=1 time="), "{rows:?}");
}
