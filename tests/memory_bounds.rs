//! Memory stays bounded by the configured limits whatever a WebSocket client does.
//! RSS is measured for the whole test process, so these tests run one at a time, in a
//! process of their own.

mod common;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{start_with, Client};
use leviathan::Config;

/// One measuring test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
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
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
    // Bounded: at most 100 MB published.
    common::publish_until_cut(&mut publisher, "firehose", stats, 1000);
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
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
fn unread_selects_of_a_big_table_hold_no_copy_of_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_with(Config::default());
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    c.ok("DEFINE t v:int s:str");
    let payload = "z".repeat(1000);
    // 20,000 rows of 1 KB: 20 MB of table.
    c.pipelined(
        (0..20_000).map(|i| format!("INSERT t v={i} s={payload}")),
        500,
    );
    let before = rss();
    let mut reader = Client::connect(addr);
    reader.send("SELECT t\nSELECT t\nSELECT t\nSELECT t");
    std::thread::sleep(Duration::from_millis(1500));
    let grown = rss().saturating_sub(before);
    eprintln!(
        "four unread SELECTs of a 20 MB table: memory grew by {} KB",
        grown >> 10
    );
    assert!(
        grown < 8 << 20,
        "four unread SELECTs grew memory by {} MB",
        grown >> 20
    );
    // Read back, the replies are whole and in order.
    for _ in 0..4 {
        let mut n = 0;
        loop {
            let l = reader.line();
            if let Some(count) = l.strip_prefix("+OK ") {
                assert_eq!(count, "20000");
                break;
            }
            n += 1;
        }
        assert_eq!(n, 20_000);
    }
    let mut canary = Client::connect(addr);
    assert_eq!(canary.ok("PING"), "+PONG");
}

#[test]
fn a_json_select_too_big_for_one_websocket_message_gets_an_error() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_with(Config {
        outbox_limit: 1 << 20,
        max_line: 1 << 20,
        ..Config::default()
    });
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    c.ok("DEFINE t s:str");
    let payload = "w".repeat(1000);
    c.pipelined((0..2000).map(|_| format!("INSERT t s={payload}")), 500);
    let mut ws = ws_connect(addr);
    ws.send(tungstenite::Message::text(
        r#"{"op":"select","table":"t","id":1}"#,
    ))
    .unwrap();
    let reply: serde_json::Value =
        serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"]["code"], "too_large");
    assert_eq!(reply["id"], 1);
    ws.send(tungstenite::Message::text(
        r#"{"op":"select","table":"t","limit":2,"id":2}"#,
    ))
    .unwrap();
    let reply: serde_json::Value =
        serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(reply["count"], 2, "a smaller page fits: {reply}");
    // Text rows are one frame each, so a text SELECT of any size streams.
    ws.send(tungstenite::Message::text("SELECT t")).unwrap();
    let mut frames = 0;
    loop {
        let m = ws.read().unwrap();
        let t = m.to_text().unwrap();
        if t.starts_with("+OK") {
            assert_eq!(t, "+OK 2000");
            break;
        }
        frames += 1;
    }
    assert_eq!(frames, 2000);
}

#[test]
fn unread_listings_are_sent_one_at_a_time_as_the_client_reads() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_with(Config {
        max_channels_per_client: 100_000,
        ..Config::default()
    });
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    const N: usize = 50_000;
    for start in (0..N).step_by(1000) {
        let batch: String = (start..start + 1000)
            .map(|i| format!("CREATE chan.{i:06}.with-a-longer-name-to-take-room\n"))
            .collect();
        c.send_raw(batch.as_bytes());
        for _ in 0..1000 {
            assert_eq!(c.line(), "+OK");
        }
    }
    let before = rss();
    let mut reader = Client::connect(addr);
    reader.send(&"CHANNELS\n".repeat(10));
    reader.send(r#"{"op":"channels","id":"j"}"#);
    std::thread::sleep(Duration::from_millis(1500));
    let grown = rss().saturating_sub(before);
    eprintln!(
        "ten unread CHANNELS of {N} channels: memory grew by {} KB",
        grown >> 10
    );
    assert!(grown < 48 << 20, "memory grew by {} MB", grown >> 20);
    for _ in 0..10 {
        let mut n = 0;
        loop {
            let l = reader.line();
            if let Some(count) = l.strip_prefix("+OK ") {
                assert_eq!(count, N.to_string());
                break;
            }
            assert!(l.starts_with("* chan."), "{l}");
            n += 1;
        }
        assert_eq!(n, N);
    }
    let v: serde_json::Value = serde_json::from_str(&reader.line()).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["id"].clone(), v["count"].clone()),
        (true.into(), "j".into(), N.into())
    );
    assert_eq!(v["channels"].as_array().unwrap().len(), N);
    assert_eq!(
        v["channels"][0],
        serde_json::json!({"name":"chan.000000.with-a-longer-name-to-take-room","subscribers":0})
    );
    assert_eq!(reader.ok("PING"), "+PONG");
}
