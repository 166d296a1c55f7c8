//! Every bad-input case of the contract gets a reply, and the connection stays usable.

mod common;
use common::{start, start_with, Client};
use leviathan::Config;

#[test]
fn unknown_command_and_bad_arguments() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    let e = c.ok("FROBNICATE now");
    assert!(e.starts_with("-ERR unknown_command "), "{e}");
    assert!(e.contains("FROBNICATE") && e.contains("HELP"), "{e}");
    let e = c.ok("SUB");
    assert_eq!(
        e,
        "-ERR bad_args missing channel or pattern; usage: SUB <channel or pattern> [SINCE <offset> EPOCH <epoch>] [WHERE <expr>]"
    );
    let e = c.ok("WHOAMI extra");
    assert!(
        e.starts_with("-ERR bad_args unexpected argument 'extra'"),
        "{e}"
    );
    assert_eq!(c.ok("PING"), "+PONG");
}

#[test]
fn telnet_line_endings_and_blank_lines() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    c.send_raw(b"\r\n   \r\nPING x\r\nname  carol \r\nWHOAMI\r\n");
    assert_eq!(c.line(), "+PONG x");
    assert_eq!(c.line(), "+OK name=carol");
    assert!(c.line().contains(" name=carol "));
}

#[test]
fn overlong_line_then_good_command() {
    let server = start_with(Config {
        max_line: 1024,
        ..Config::default()
    });
    let mut c = Client::connect(server.local_addr());
    let mut long = b"PUB news ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 10_000));
    long.extend_from_slice(b"\nPING after\n");
    c.send_raw(&long);
    let e = c.line();
    assert!(e.starts_with("-ERR line_too_long "), "{e}");
    assert_eq!(c.line(), "+PONG after");
    // An overlong JSON line is answered in JSON.
    let mut long = b"{\"op\":\"pub\",\"data\":\"".to_vec();
    long.extend(std::iter::repeat_n(b'y', 5000));
    long.extend_from_slice(b"\"}\nPING again\n");
    c.send_raw(&long);
    let v: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
    assert_eq!(v["error"]["code"], "line_too_long");
    assert_eq!(c.line(), "+PONG again");
}

#[test]
fn default_limit_is_one_mebibyte() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    let mut ok = b"PING ".to_vec();
    ok.extend(std::iter::repeat_n(b'a', (1 << 20) - 5));
    ok.push(b'\n');
    c.send_raw(&ok);
    assert_eq!(
        c.line().len(),
        6 + (1 << 20) - 5,
        "a line at the limit is served"
    );
    let mut too = b"PING ".to_vec();
    too.extend(std::iter::repeat_n(b'a', 1 << 20));
    too.extend_from_slice(b"\nPING ok\n");
    c.send_raw(&too);
    assert!(c.line().starts_with("-ERR line_too_long"));
    assert_eq!(c.line(), "+PONG ok");
}

#[test]
fn invalid_utf8_and_invalid_json() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    // (Byte 255 would start a telnet command, which no UTF-8 text holds.)
    c.send_raw(b"PUB news \xfe\xc3(\n");
    assert!(c.line().starts_with("-ERR bad_encoding "));
    c.send_raw(b"{\"op\": \"ping\"\n");
    let v: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], "bad_json");
    c.send_raw(b"{\"op\":\"frob\",\"id\":3}\n");
    let v: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
    assert_eq!(v["error"]["code"], "unknown_command");
    assert_eq!(v["id"], 3);
    c.send_raw(b"{\"op\":\"sub\",\"channel\":5}\n");
    let v: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
    assert_eq!(v["error"]["code"], "bad_args");
    assert_eq!(c.ok("PING"), "+PONG");
}

#[test]
fn deeply_nested_json_cannot_crash_the_server() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    for depth in [100usize, 10_000, 200_000] {
        let line = format!(
            "{{\"op\":\"pub\",\"channel\":\"x\",\"data\":{}{}}}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        c.send_raw(line.as_bytes());
        let v: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        assert_eq!(v["error"]["code"], "bad_json", "depth {depth}");
    }
    // Unbalanced opening brackets only.
    c.send_raw(format!("{{{}\n", "{".repeat(100_000)).as_bytes());
    assert!(c.line().contains("bad_json"));
    assert_eq!(c.ok("PING"), "+PONG");
    // Others were never affected.
    let mut d = Client::connect(server.local_addr());
    assert_eq!(d.ok("PING"), "+PONG");
}

#[test]
fn client_vanishing_mid_line_harms_no_one() {
    let server = start();
    let mut other = Client::connect(server.local_addr());
    other.ok("CREATE a");
    other.ok("SUB a");
    for _ in 0..20 {
        let mut v = Client::connect(server.local_addr());
        v.send_raw(b"PUB a half a li");
        drop(v);
    }
    assert_eq!(other.ok("PUB a fine"), "+OK 1");
    assert_eq!(other.push(), format!("MSG a {} fine", other.name));
}

#[test]
fn plain_http_gets_a_helpful_error() {
    use std::io::{Read, Write};
    let get = |addr, path: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(common::WAIT)).unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: localhost:1234\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    };
    // With an HTTP port (the default), a redirect to it.
    let server = start();
    let http = server.http_addr().expect("an HTTP port by default").port();
    let resp = get(server.local_addr(), "/metrics");
    assert!(resp.starts_with("HTTP/1.1 307 "), "{resp}");
    assert!(
        resp.contains(&format!(
            "\r\nLocation: http://localhost:{http}/metrics\r\n"
        )),
        "{resp}"
    );
    assert!(resp.contains(&format!("port {http}")), "{resp}");
    assert!(
        !resp.contains("HELLO"),
        "HTTP clients never see the greeting"
    );
    // Without one, how to connect.
    let config = leviathan::Config {
        http: leviathan::server::HttpPort::Off,
        ..leviathan::Config::default()
    };
    let server = common::start_with(config);
    assert!(server.http_addr().is_none());
    let resp = get(server.local_addr(), "/");
    assert!(resp.starts_with("HTTP/1.1 426 "), "{resp}");
    assert!(
        resp.contains("WebSocket") && resp.contains("telnet"),
        "{resp}"
    );
    assert!(
        !resp.contains("HELLO"),
        "HTTP clients never see the greeting"
    );
}

#[test]
fn greeting_comes_first_even_when_the_client_speaks_at_once() {
    let server = start();
    let mut c = Client::connect_raw(server.local_addr());
    c.send(r#"{"op":"ping","id":1}"#);
    assert!(c.line().starts_with("HELLO leviathan "));
    assert_eq!(c.line(), r#"{"ok":true,"id":1,"pong":""}"#);
}

#[test]
fn connections_over_the_limit_are_told_why() {
    let server = start_with(Config {
        max_connections: 3,
        ..Config::default()
    });
    let addr = server.local_addr();
    let mut held: Vec<Client> = (0..3).map(|_| Client::connect(addr)).collect();
    let mut extra = Client::connect_raw(addr);
    let e = extra.line();
    assert!(e.starts_with("-ERR too_many_connections "), "{e}");
    assert!(e.contains('3'), "{e}");
    assert_eq!(extra.line_or_eof(), None);
    // Served clients are unaffected, and a freed place can be taken again.
    assert_eq!(held[0].ok("PING"), "+PONG");
    held.pop().unwrap().ok("QUIT");
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        use std::io::Write;
        let mut c = Client::connect_raw(addr);
        // Refused connections are closed at once: the write may fail, or nothing come.
        let _ = c.writer.write_all(b"PING\n");
        let first = c.line_or_eof().unwrap_or_default();
        if first.starts_with("HELLO") {
            assert_eq!(c.line(), "+PONG");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "place never freed: {first}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
