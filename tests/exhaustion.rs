//! No client can exhaust or freeze the server: connections that stop reading, stop
//! writing, or half-close are released, and their slots go to others.

mod common;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{start_with, Client};
use leviathan::Config;

/// Reads everything until EOF (bounded), as text.
fn read_to_eof(s: &mut TcpStream, limit: Duration) -> String {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut all = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 65536];
    loop {
        assert!(Instant::now() < deadline, "no EOF within {limit:?}");
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn half_closed_connections_are_answered_and_released() {
    let server = start_with(Config {
        max_connections: 10,
        ..Config::default()
    });
    let addr = server.local_addr();
    // Three times the connection limit, one after another: each is answered, closed,
    // and gives its slot back.
    for i in 0..30 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"PING\nPING last").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let text = read_to_eof(&mut s, Duration::from_secs(10));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("HELLO "), "{i}: {text}");
        assert_eq!(lines[1], "+PONG", "{i}: {text}");
        assert!(
            lines[2].starts_with("-ERR incomplete_line "),
            "{i}: a last line without its newline is not run: {text}"
        );
        assert_eq!(lines.len(), 3, "{i}: {text}");
    }
    let stats = server.stats();
    wait_for("every slot released", Duration::from_secs(10), || {
        stats.connections_current.load(Ordering::Acquire) == 0
    });
    assert_eq!(stats.connections_refused.load(Ordering::Relaxed), 0);
    let mut c = Client::connect(addr);
    assert_eq!(c.ok("PING"), "+PONG");
}

#[test]
fn a_last_line_and_the_end_arriving_together_are_both_seen() {
    // The connection reads no more after a read that emptied the socket until the next
    // wake; an end that arrived with the last line must not be waited for in vain.
    let server = start_with(Config::default());
    let addr = server.local_addr();
    for i in 0..30 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"PING\n").unwrap();
        let mut hello = [0u8; 256];
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"+PONG\n") {
            let n = s.read(&mut hello).expect("greeting and PONG");
            assert!(
                n > 0,
                "{i}: closed early: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&hello[..n]);
        }
        // Greeted and idle: now a line and the end in one go.
        s.write_all(b"PING\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let text = read_to_eof(&mut s, Duration::from_secs(10));
        assert_eq!(text, "+PONG\n", "{i}");
    }
    let stats = server.stats();
    wait_for("every slot released", Duration::from_secs(10), || {
        stats.connections_current.load(Ordering::Acquire) == 0
    });
}

#[test]
fn a_cut_slow_consumer_is_closed_at_once_and_leaves_clients() {
    let server = start_with(Config {
        outbox_limit: 256 << 10,
        drain_timeout: Duration::from_secs(30),
        ..Config::default()
    });
    let addr = server.local_addr();
    let mut publisher = Client::connect(addr);
    publisher.ok("NAME pub");
    publisher.ok("CREATE firehose");
    let mut stalled = Client::connect(addr);
    stalled.ok("NAME stalled");
    stalled.ok("SUB firehose");
    let stats = server.stats();
    // Bounded: 20,000 messages of 1 KB, far more than the socket buffers and outbox hold.
    common::publish_until_cut(&mut publisher, "firehose", stats, 200);
    assert_eq!(stats.slow_consumers.load(Ordering::Relaxed), 1);
    // Without the stalled client reading a byte, it is gone from CLIENTS.
    wait_for(
        "the cut client leaves CLIENTS",
        Duration::from_secs(5),
        || {
            let (items, _) = publisher.request("CLIENTS");
            !items.iter().any(|l| l.contains(" stalled "))
        },
    );
    assert_eq!(stats.connections_current.load(Ordering::Acquire), 1);
    // What the kernel had buffered, then the end.
    let text = read_to_eof(stalled.reader.get_mut(), Duration::from_secs(10));
    assert!(!text.is_empty());
    let started = Instant::now();
    let mut server = server;
    server.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown did not wait for the cut client's drain"
    );
}

#[test]
fn a_dm_flood_slows_the_sender_instead_of_cutting_a_reading_victim() {
    // The default 4 MiB outbox: a sender has at most 1,024 requests (1 MB here) in
    // flight, so pausing it while the victim's outbox is half full keeps it from
    // overflowing.
    let server = start_with(Config::default());
    let addr = server.local_addr();
    let mut victim = Client::connect(addr);
    victim.ok("NAME victim");
    const N: usize = 12_000;
    // The victim reads all the time, but only about 4 MB/s.
    let reader = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = 0;
        while got < N && Instant::now() < deadline {
            match victim.line_or_eof() {
                Some(l) if l.starts_with("DM ") => got += 1,
                Some(l) => panic!("victim got {}", &l[..l.len().min(60)]),
                None => break,
            }
            if got % 4 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        got
    });
    let mut sender = Client::connect(addr);
    let mut sink = sender.reader.get_ref().try_clone().unwrap();
    // The sender's replies are drained apart, so nothing but the victim slows it.
    let replies = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut oks = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while oks < N && Instant::now() < deadline {
            match sink.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => oks += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            }
        }
    });
    let payload = "d".repeat(1000);
    let all: String = (0..N)
        .map(|i| format!("SEND victim {payload} {i}\n"))
        .collect();
    sender.send_raw(all.as_bytes());
    assert_eq!(
        reader.join().unwrap(),
        N,
        "the reading victim got every message"
    );
    let _ = replies.join();
    assert_eq!(server.stats().slow_consumers.load(Ordering::Relaxed), 0);
}

fn liveness_config() -> Config {
    Config {
        ping_interval: Some(Duration::from_millis(500)),
        max_pings_out: 2,
        line_timeout: Some(Duration::from_secs(1)),
        ..Config::default()
    }
}

#[test]
fn a_silent_client_is_pinged_then_closed_and_one_that_answers_stays() {
    let server = start_with(liveness_config());
    let addr = server.local_addr();
    let mut silent = Client::connect(addr);
    let mut answering = Client::connect(addr);
    // Answering every PING keeps a connection, and PONG itself gets no reply.
    let answerer = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            assert_eq!(answering.line(), "PING");
            answering.send("PONG");
        }
        assert_eq!(answering.ok("PING still"), "+PONG still");
        answering.send(r#"{"op":"pong"}"#);
        let r = answering.json(serde_json::json!({"op":"ping"}));
        assert_eq!(
            r["ok"], true,
            "the first reply after a JSON pong is the next request's: {r}"
        );
    });
    let started = Instant::now();
    assert_eq!(silent.line(), "PING");
    assert_eq!(silent.line(), "PING");
    assert_eq!(silent.line(), "BYE stale_connection");
    assert_eq!(silent.line_or_eof(), None);
    // Two intervals of pings, then a third of silence (counted from the connection's
    // start, which the greeting delay precedes).
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    answerer.join().unwrap();
}

#[test]
fn the_client_library_answers_pings_by_itself() {
    let server = start_with(liveness_config());
    let client = leviathan::client::Client::connect(&server.local_addr().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        client.ping().is_ok(),
        "still connected after six ping intervals"
    );
    let events: Vec<_> = client.events().try_iter().collect();
    assert!(
        !events.iter().any(|e| matches!(
            e,
            leviathan::client::Event::Disconnected | leviathan::client::Event::Bye { .. }
        )),
        "{events:?}"
    );
}

#[test]
fn a_line_that_never_ends_is_cut_after_the_line_timeout() {
    let server = start_with(Config {
        ping_interval: None,
        ..liveness_config()
    });
    let mut c = Client::connect(server.local_addr());
    let started = Instant::now();
    // One byte every 100 ms, never a newline: bounded to 5 s.
    let mut ended = false;
    while started.elapsed() < Duration::from_secs(5) {
        if c.writer.write_all(b"x").is_err() {
            ended = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        c.reader.get_ref().set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let got = c.reader.get_mut().read(&mut b);
        c.reader.get_ref().set_nonblocking(false).unwrap();
        match got {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => {
                assert_eq!(&b[..n], b"BYE line_timeout\n");
            }
            Err(_) => {}
        }
    }
    assert!(ended, "the connection was closed");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let mut other = Client::connect(server.local_addr());
    assert_eq!(other.ok("PING"), "+PONG");
}

/// Ten connections each send up to 900 KB of input that never completes, 9 MB against
/// a 4 MB budget: the budget holds, at least four of them are told `BYE input_budget`
/// (`bye` reads what one was told, if anything), a newcomer is served, and the bytes
/// held are given back once they go.
fn the_input_budget_holds<C>(
    connect: impl Fn(std::net::SocketAddr) -> C,
    send: impl Fn(&mut C, &[u8]),
    bye: impl Fn(&mut C) -> Option<String>,
) {
    let server = start_with(Config {
        input_budget: 4 << 20,
        ..Config::default()
    });
    let addr = server.local_addr();
    let stats = server.stats();
    let chunk = vec![b'a'; 100 << 10];
    let mut conns: Vec<C> = (0..10).map(|_| connect(addr)).collect();
    for _ in 0..9 {
        for c in conns.iter_mut() {
            send(c, &chunk);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for("the budget holds", Duration::from_secs(5), || {
        stats.input_buffered.load(Ordering::Acquire) <= (4 << 20) + (1 << 20)
    });
    let mut cut = 0;
    for c in conns.iter_mut() {
        if let Some(l) = bye(c) {
            assert_eq!(l, "BYE input_budget");
            cut += 1;
        }
    }
    assert!(cut >= 4, "only {cut} of 10 were cut");
    let mut canary = Client::connect(addr);
    assert_eq!(canary.ok("PING"), "+PONG");
    drop(conns);
    wait_for("held bytes are given back", Duration::from_secs(5), || {
        stats.input_buffered.load(Ordering::Acquire) == 0
    });
}

#[test]
fn partial_lines_are_bounded_by_the_input_budget() {
    the_input_budget_holds(
        Client::connect,
        |c, chunk| {
            let _ = c.writer.write_all(chunk);
        },
        |c| {
            c.writer
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            c.line_or_eof_quick()
        },
    );
}

/// A WebSocket whose raw socket the test writes to itself, to send part of a message.
type RawWs = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn ws_connect(addr: std::net::SocketAddr) -> RawWs {
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/")).expect("handshake");
    raw(&mut ws)
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    ws.read().expect("greeting");
    ws
}

fn raw(ws: &mut RawWs) -> &mut TcpStream {
    match ws.get_mut() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("plain ws://"),
    }
}

/// The head of a masked client text frame announcing `len` payload bytes (mask 0: the
/// payload goes out as it is).
fn frame_head(len: u64) -> Vec<u8> {
    let mut head = vec![0x81, 0x80 | 127];
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&[0, 0, 0, 0]);
    head
}

/// What a WebSocket client gets once the server closes: the text frames, then the end.
fn ws_texts_until_closed(ws: &mut RawWs, limit: Duration) -> Vec<String> {
    raw(ws).set_read_timeout(Some(limit)).unwrap();
    let mut texts = Vec::new();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => texts.push(t.to_string()),
            Ok(_) => {}
            Err(_) => return texts,
        }
    }
    panic!("not closed within {limit:?}; got {texts:?}");
}

#[test]
fn a_websocket_message_that_never_ends_is_cut_after_the_line_timeout() {
    let server = start_with(Config {
        ping_interval: None,
        ..liveness_config()
    });
    let mut ws = ws_connect(server.local_addr());
    let started = Instant::now();
    raw(&mut ws).write_all(&frame_head(1000)).unwrap();
    // One payload byte every 100 ms, bounded to 5 s; the message needs 1000.
    while started.elapsed() < Duration::from_secs(5) {
        if raw(&mut ws).write_all(b"x").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        raw(&mut ws).set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let peeked = raw(&mut ws).peek(&mut b);
        raw(&mut ws).set_nonblocking(false).unwrap();
        if peeked.is_ok() {
            break;
        }
    }
    let texts = ws_texts_until_closed(&mut ws, Duration::from_secs(5));
    assert_eq!(texts, ["BYE line_timeout"]);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn partial_websocket_messages_are_bounded_by_the_input_budget() {
    // Each connection opens a 1000 KB message and never finishes it.
    the_input_budget_holds(
        |addr| {
            let mut ws = ws_connect(addr);
            raw(&mut ws).write_all(&frame_head(1000 << 10)).unwrap();
            ws
        },
        |ws, chunk| {
            let _ = raw(ws).write_all(chunk);
        },
        |ws| {
            raw(ws)
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => Some(t.to_string()),
                _ => None,
            }
        },
    );
}
