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
    let payload = "p".repeat(1000);
    let stats = server.stats();
    // Bounded: 20,000 messages of 1 KB, far more than the socket buffers and outbox hold.
    for chunk in 0..200 {
        if stats.slow_consumers.load(Ordering::Relaxed) > 0 {
            break;
        }
        let batch: String = (0..100)
            .map(|i| format!("PUB firehose {payload} {}\n", chunk * 100 + i))
            .collect();
        publisher.send_raw(batch.as_bytes());
        for _ in 0..100 {
            assert!(publisher.line().starts_with("+OK"));
        }
    }
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

/// Resident memory of this process (server and test client), in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn ws_connect(
    addr: std::net::SocketAddr,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>> {
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/")).expect("handshake");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(common::WAIT)).unwrap();
    }
    ws.read().expect("greeting");
    ws
}

#[test]
fn a_websocket_subscriber_that_never_reads_is_cut_at_the_outbox_limit() {
    let server = start_with(Config {
        outbox_limit: 1 << 20,
        ..Config::default()
    });
    let addr = server.local_addr();
    let mut publisher = Client::connect(addr);
    publisher.ok("CREATE firehose");
    let mut ws = ws_connect(addr);
    ws.send(tungstenite::Message::text("SUB firehose")).unwrap();
    assert_eq!(ws.read().unwrap().to_text().unwrap(), "+OK");
    // From here on the WebSocket client reads nothing.
    let stats = server.stats();
    let before = rss();
    let payload = "p".repeat(1000);
    // Bounded: at most 100 MB published.
    for chunk in 0..1000 {
        if stats.slow_consumers.load(Ordering::Relaxed) > 0 {
            break;
        }
        let batch: String = (0..100)
            .map(|i| format!("PUB firehose {payload} {}\n", chunk * 100 + i))
            .collect();
        publisher.send_raw(batch.as_bytes());
        for _ in 0..100 {
            assert!(publisher.line().starts_with("+OK"));
        }
    }
    assert_eq!(stats.slow_consumers.load(Ordering::Relaxed), 1, "cut");
    let grown = rss().saturating_sub(before);
    assert!(grown < 64 << 20, "memory grew by {} MB", grown >> 20);
    wait_for("its slot is released", Duration::from_secs(5), || {
        stats.connections_current.load(Ordering::Acquire) == 1
    });
    assert_eq!(publisher.ok("PUB firehose after"), "+OK 0");
}

#[test]
fn a_websocket_ping_flood_from_a_client_that_never_reads_stays_bounded() {
    let server = start_with(Config::default());
    let addr = server.local_addr();
    let mut ws = ws_connect(addr);
    let before = rss();
    // Masked ping frames with the largest payload a control frame may carry (125
    // bytes), written raw: 500,000 of them, about 65 MB, and nothing read back. Each
    // would be answered by a pong of 127 bytes: far more than socket buffers hold.
    let mut frame = vec![0x89u8, 0x80 | 125, 1, 2, 3, 4];
    frame.extend((0..125usize).map(|i| b'x' ^ [1, 2, 3, 4][i % 4]));
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 10_000)
        .collect();
    let raw = match ws.get_mut() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!(),
    };
    raw.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for _ in 0..50 {
        if raw.write_all(&batch).is_err() {
            break; // the server may close a client this abusive; either way it is bounded
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss().saturating_sub(before);
    assert!(grown < 32 << 20, "memory grew by {} MB", grown >> 20);
    let mut c = Client::connect(addr);
    assert_eq!(c.ok("PING"), "+PONG", "the server serves others");
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
