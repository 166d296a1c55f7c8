//! A client that floods the server with input never hides other connections on its
//! worker: a canary's `PING` is answered while the flood goes on. Before may was
//! patched to poll for I/O after a bounded run (vendor/may/PATCHES.md), the canary
//! waited for the whole flood.

mod common;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start_with, Client};
use leviathan::Config;

/// How long each flood lasts, and the worst canary round trip allowed meanwhile (loose:
/// the fixed server answers in milliseconds, the unfixed one not until the flood ends).
const FLOOD: Duration = Duration::from_secs(3);
const WORST: Duration = Duration::from_millis(800);

fn one_worker() -> leviathan::ServerHandle {
    start_with(Config {
        workers: 1,
        ..Config::default()
    })
}

/// Pings every 20 ms while `flooding`, and returns the worst round trip and the count.
fn canary(addr: SocketAddr, flooding: &AtomicBool) -> (Duration, usize) {
    let mut canary = Client::connect(addr);
    let mut worst = Duration::ZERO;
    let mut n = 0;
    let deadline = Instant::now() + FLOOD + Duration::from_secs(10);
    while flooding.load(Ordering::Relaxed) && Instant::now() < deadline {
        let t = Instant::now();
        assert_eq!(canary.ok(&format!("PING {n}")), format!("+PONG {n}"));
        worst = worst.max(t.elapsed());
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    (worst, n)
}

/// Writes `batch` over and over for [`FLOOD`], never reading, then clears `flooding`.
fn flood(mut s: TcpStream, batch: Vec<u8>, flooding: Arc<AtomicBool>) -> u64 {
    s.set_write_timeout(Some(Duration::from_secs(2))).ok();
    let until = Instant::now() + FLOOD;
    let mut sent = 0;
    while Instant::now() < until && s.write_all(&batch).is_ok() {
        sent += batch.len() as u64;
    }
    flooding.store(false, Ordering::Relaxed);
    sent
}

#[test]
fn a_websocket_ping_flood_leaves_a_canary_on_the_same_worker_responsive() {
    let server = one_worker();
    let addr = server.local_addr();
    let (ws, _) = tungstenite::connect(format!("ws://{addr}/")).expect("handshake");
    let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() else {
        panic!("plain TCP");
    };
    let s = s.try_clone().unwrap();
    // Masked client pings with 125-byte payloads, a thousand to a write.
    let mut frame = vec![0x89u8, 0x80 | 125, 1, 2, 3, 4];
    frame.extend((0..125usize).map(|i| b'x' ^ [1, 2, 3, 4][i % 4]));
    let batch = frame.repeat(1000);
    let flooding = Arc::new(AtomicBool::new(true));
    let f = flooding.clone();
    let flooder = std::thread::spawn(move || flood(s, batch, f));
    let (worst, pings) = canary(addr, &flooding);
    let sent = flooder.join().unwrap();
    eprintln!("canary: {pings} pings, worst {worst:?}, during {sent} bytes of pings");
    assert!(pings >= 10, "only {pings} canary pings during the flood");
    assert!(worst < WORST, "worst PING took {worst:?}");
    drop(ws);
    let mut after = Client::connect(addr);
    assert_eq!(after.ok("PING after"), "+PONG after");
}

#[test]
fn a_pipelined_flood_leaves_a_canary_on_the_same_worker_responsive() {
    let server = one_worker();
    let addr = server.local_addr();
    let c = Client::connect(addr);
    // Pipelined PINGs, answered on the connection itself; the replies are read apart,
    // so the flooder is never held back by its own output.
    let mut sink = c.reader.get_ref().try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut oks = 0u64;
        sink.set_read_timeout(Some(Duration::from_secs(2))).ok();
        let deadline = Instant::now() + FLOOD + Duration::from_secs(20);
        while Instant::now() < deadline {
            match sink.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => oks += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64,
            }
        }
        oks
    });
    let batch = "PING flood\n".repeat(4096).into_bytes();
    let flooding = Arc::new(AtomicBool::new(true));
    let f = flooding.clone();
    let s = c.writer.try_clone().unwrap();
    let flooder = std::thread::spawn(move || flood(s, batch, f));
    let (worst, pings) = canary(addr, &flooding);
    let sent = flooder.join().unwrap();
    eprintln!("canary: {pings} pings, worst {worst:?}, during {sent} bytes of PINGs");
    assert!(pings >= 10, "only {pings} canary pings during the flood");
    assert!(worst < WORST, "worst PING took {worst:?}");
    let _ = c.writer.shutdown(std::net::Shutdown::Write);
    assert!(drain.join().unwrap() > 0, "the flooder was answered");
}

/// A connection whose slice is always used up still answers every line and frame it
/// was sent. Lines read but not yet run get no socket event to wake their connection
/// again; a loop that checked its slice before running the first of them, or that
/// counted its slice from when it went to sleep, slept on them for good (seen as a
/// canary's `PING` or a pipelined batch left unanswered under CPU load).
#[test]
fn a_connection_always_out_of_time_still_answers_everything_it_was_sent() {
    let server = start_with(Config {
        workers: 1,
        slice: Duration::ZERO,
        ..Config::default()
    });
    let addr = server.local_addr();

    let mut c = Client::connect(addr);
    c.ok("DEFINE t v:int");
    // Bounded: 20 rounds of 500 pipelined lines, sent in one write each.
    for round in 0..20 {
        let mut batch = String::new();
        for i in 0..250 {
            batch.push_str(&format!("PING {round}-{i}\nINSERT t v={i}\n"));
        }
        c.send_raw(batch.as_bytes());
        for i in 0..250 {
            assert_eq!(c.line(), format!("+PONG {round}-{i}"));
            assert_eq!(c.line(), format!("+OK {}", round * 250 + i + 1));
        }
        // Idle between rounds, so that the connection sleeps and is woken again.
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(c.ok("COUNT t"), "+OK 5000");

    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/")).expect("handshake");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(common::WAIT)).expect("timeout");
    }
    assert!(ws_text(&mut ws).starts_with("HELLO "));
    for i in 0..200 {
        ws.write(tungstenite::Message::text(format!("PING w{i}")))
            .expect("queue a frame");
    }
    ws.flush().expect("send the frames");
    for i in 0..200 {
        assert_eq!(ws_text(&mut ws), format!("+PONG w{i}"));
    }
}

/// The next text frame.
fn ws_text(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
) -> String {
    loop {
        match ws.read().expect("a frame before the timeout") {
            tungstenite::Message::Text(t) => return t.to_string(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}
