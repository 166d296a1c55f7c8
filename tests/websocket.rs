//! WebSocket on the same port, with tungstenite's client.

mod common;
use std::net::TcpStream;

use common::{start, start_with, Client, WAIT};
use leviathan::Config;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn ws_connect(addr: std::net::SocketAddr) -> Ws {
    let (ws, resp) = tungstenite::connect(format!("ws://{addr}/")).expect("handshake");
    assert_eq!(resp.status(), 101);
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    ws
}

fn frame(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("a frame before the timeout") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

fn send(ws: &mut Ws, s: &str) {
    ws.send(Message::text(s)).unwrap();
}

#[test]
fn greeting_then_commands_one_per_frame() {
    let server = start();
    let mut ws = ws_connect(server.local_addr());
    let hello = frame(&mut ws);
    assert!(hello.starts_with("HELLO leviathan "), "{hello}");
    send(&mut ws, "PING");
    assert_eq!(frame(&mut ws), "+PONG");
    send(&mut ws, r#"{"op":"ping","id":"w"}"#);
    assert_eq!(frame(&mut ws), r#"{"ok":true,"id":"w","pong":""}"#);
    send(&mut ws, "NAME wendy");
    assert_eq!(frame(&mut ws), "+OK name=wendy");
    send(&mut ws, "CREATE a");
    assert_eq!(frame(&mut ws), "+OK");
    send(&mut ws, "CREATE b");
    assert_eq!(frame(&mut ws), "+OK");
    // Each line of a list reply is its own frame.
    send(&mut ws, "CHANNELS");
    assert_eq!(frame(&mut ws), "* a 0");
    assert_eq!(frame(&mut ws), "* b 0");
    assert_eq!(frame(&mut ws), "+OK 2");
    send(&mut ws, "WHOAMI");
    assert!(frame(&mut ws).contains("via=ws"));
    send(&mut ws, "NOPE");
    assert!(frame(&mut ws).starts_with("-ERR unknown_command"));
    send(&mut ws, "QUIT");
    assert_eq!(frame(&mut ws), "+OK bye");
}

#[test]
fn websocket_and_tcp_clients_chat() {
    let server = start();
    let mut ws = ws_connect(server.local_addr());
    frame(&mut ws);
    let mut tcp = Client::connect(server.local_addr());
    tcp.ok("NAME tina");
    send(&mut ws, "NAME wendy");
    frame(&mut ws);
    tcp.ok("CREATE room");
    send(&mut ws, r#"{"op":"sub","channel":"room"}"#);
    assert_eq!(frame(&mut ws), r#"{"ok":true}"#);
    assert_eq!(tcp.ok("PUB room hi from tcp"), "+OK 1");
    let v: serde_json::Value = serde_json::from_str(&frame(&mut ws)).unwrap();
    assert_eq!(v["event"], "msg");
    assert_eq!(v["data"], "hi from tcp");
    assert_eq!(v["from"], "tina");
    send(&mut ws, "SEND tina hello from ws");
    assert_eq!(frame(&mut ws), "+OK");
    assert_eq!(tcp.push(), "DM wendy hello from ws");
    // A frame holding several lines is several requests: a newline cannot be smuggled
    // into a text line.
    tcp.ok("SUB room");
    send(&mut ws, "PUB room one\nPING two");
    let a = frame(&mut ws);
    let b = frame(&mut ws);
    let c = frame(&mut ws);
    let mut got = [a, b, c];
    got.sort();
    assert_eq!(got, ["+OK 2", "+PONG two", "MSG room wendy one"]);
    assert_eq!(tcp.push(), "MSG room wendy one");
}

#[test]
fn oversized_frame_gets_a_clear_error() {
    let server = start_with(Config {
        max_line: 1000,
        ..Config::default()
    });
    let mut ws = ws_connect(server.local_addr());
    frame(&mut ws);
    send(&mut ws, &format!("PUB x {}", "y".repeat(5000)));
    let e = frame(&mut ws);
    assert!(e.starts_with("-ERR line_too_long"), "{e}");
    // The server then closes with 1009 (message too big).
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1009);
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    // Everyone else is fine.
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.ok("PING"), "+PONG");
}

#[test]
fn format_json_on_the_url_fixes_the_greeting_and_every_push() {
    let server = start();
    let addr = server.local_addr();
    let (mut ws, resp) = tungstenite::connect(format!("ws://{addr}/?format=json")).unwrap();
    assert_eq!(resp.status(), 101);
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    let hello: serde_json::Value = serde_json::from_str(&frame(&mut ws)).unwrap();
    assert_eq!(hello["event"], "hello");
    assert_eq!(hello["server"], "leviathan");
    assert!(hello["name"].as_str().unwrap().starts_with("client-"));
    // A text request gets a text reply; the pushes stay JSON.
    send(&mut ws, "CREATE news");
    assert_eq!(frame(&mut ws), "+OK");
    send(&mut ws, "SUB news");
    assert_eq!(frame(&mut ws), "+OK");
    let mut c = Client::connect(addr);
    c.ok("PUB news hello");
    let push: serde_json::Value = serde_json::from_str(&frame(&mut ws)).unwrap();
    assert_eq!(push["event"], "msg");
    assert_eq!(push["data"], "hello");
    // A bad value is refused at the handshake, with the reason.
    match tungstenite::connect(format!("ws://{addr}/?format=xml")) {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 400);
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default());
            assert!(body.contains("format=json or format=text"), "{body}");
        }
        other => panic!("{other:?}"),
    }
}
