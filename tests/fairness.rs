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
