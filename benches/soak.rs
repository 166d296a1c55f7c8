//! Soak: every misbehaviour at once against the real `servermain`, with a canary.
//!
//! `cargo bench --bench soak` runs 10 minutes; `cargo bench --bench soak -- 60` runs 60
//! seconds. Meanwhile: pipelined writers (every acknowledged id recorded), a publisher
//! flooding a channel with a reading subscriber, a TCP and a WebSocket subscriber that
//! never read, a DM flood at a reading victim, half-closing clients, clients holding
//! huge incomplete lines, one-byte-a-second clients, silent clients, a WebSocket ping
//! flood that never reads, pipelined scans of a big table, and clients running into the
//! quotas. A canary sends `PING` every 100 ms. At the end the server is killed with
//! SIGKILL and restarted, and every acknowledged row is looked for.
//!
//! It prints the server's peak RSS, the canary's p50/p99/max, and acknowledged versus
//! present rows. Every loop is bounded by the run's deadline.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: SocketAddr,
    /// Its log lines, each with when it arrived.
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

const FLAGS: &[&str] = &[
    "--outbox-limit",
    "1048576",
    "--input-budget-mib",
    "32",
    "--line-timeout-secs",
    "5",
    "--ping-interval-secs",
    "5",
    "--max-channels",
    "20000",
    "--max-tables",
    "50",
    "--snapshot-secs",
    "30",
    "--max-store-mib",
    "128",
];

/// More servermain flags from `SOAK_ARGS` (e.g. `--workers 2`).
fn extra_flags() -> Vec<String> {
    std::env::var("SOAK_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

impl Server {
    fn start(dir: &std::path::Path) -> Server {
        // LEVIATHAN_SERVERMAIN runs another build (a previous one, for a same-run
        // comparison).
        let program = std::env::var("LEVIATHAN_SERVERMAIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_servermain").to_string());
        let mut child = Command::new(program)
            .args(["127.0.0.1", "0"])
            .args(FLAGS)
            .args(extra_flags())
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start servermain");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = common::listening_addr(&mut lines, |_| {});
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut kept = kept.lock().unwrap();
                // Bounded: slow consumers are cut (and logged) all through the run.
                if kept.len() < 100_000 {
                    kept.push((Instant::now(), line));
                }
            }
        });
        Server { child, addr, log }
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

/// A line client with a read timeout.
struct Line {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Line {
    fn connect(addr: SocketAddr) -> Option<Line> {
        let s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.set_nodelay(true).ok()?;
        let mut l = Line {
            r: BufReader::new(s.try_clone().ok()?),
            w: s,
        };
        l.send("PING hello")?;
        // The greeting, then the PONG.
        l.line()?;
        l.line()?;
        Some(l)
    }
    fn send(&mut self, s: &str) -> Option<()> {
        self.w.write_all(s.as_bytes()).ok()?;
        self.w.write_all(b"\n").ok()
    }
    fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.r.read_line(&mut s) {
            Ok(n) if n > 0 => Some(s.trim_end().to_string()),
            _ => None,
        }
    }
    /// The next status line (`+…`/`-…`), skipping items and pushes.
    fn status(&mut self) -> Option<String> {
        loop {
            let l = self.line()?;
            if l.starts_with('+') || l.starts_with('-') {
                return Some(l);
            }
        }
    }
}

/// Runs `f` in a loop on its own thread until `stop`, reconnecting as it likes, unless
/// `SOAK_SKIP` (a comma-separated list) names its group: writers, pubsub, unread, dm,
/// halfclose, partial, slowloris, silent, wsping, scans, quotas.
fn spawn(
    stop: &Arc<AtomicBool>,
    group: &str,
    f: impl Fn() + Send + 'static,
) -> Option<thread::JoinHandle<()>> {
    let skip = std::env::var("SOAK_SKIP").unwrap_or_default();
    if skip.split(',').any(|g| g == group) {
        return None;
    }
    let stop = stop.clone();
    Some(thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            f();
            thread::sleep(Duration::from_millis(50));
        }
    }))
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let addr = server.addr;
    println!(
        "soak: {secs} s against servermain {} ({} {})",
        addr,
        FLAGS.join(" "),
        extra_flags().join(" ")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let past = move || Instant::now() > deadline;

    let mut setup = Line::connect(addr).expect("connect");
    setup.send("DEFINE rows w:int p:str");
    setup.status();
    setup.send("DEFINE big v:int s:str");
    setup.status();
    for start in (0..200_000).step_by(1000) {
        let batch: String = (start..start + 1000)
            .map(|i| format!("INSERT big v={i} s=filler-{i}\n"))
            .collect();
        setup.w.write_all(batch.as_bytes()).unwrap();
        for _ in 0..1000 {
            setup.status();
        }
    }
    setup.send("CREATE fire");
    setup.status();
    let rss_base = server.rss_kib();

    let mut threads = Vec::new();
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    // Writers.
    for w in 0..2 {
        let acked = acked.clone();
        threads.extend(spawn(&stop, "writers", move || {
            let Some(mut c) = Line::connect(addr) else {
                return;
            };
            for batch in 0u64.. {
                if past() {
                    return;
                }
                let lines: String = (0..20)
                    .map(|i| format!("INSERT rows w={w} p=b{batch}-{i}\n"))
                    .collect();
                if c.w.write_all(lines.as_bytes()).is_err() {
                    return;
                }
                for _ in 0..20 {
                    match c.status() {
                        Some(l) => {
                            if let Some(id) = l.strip_prefix("+OK ") {
                                if let Ok(id) = id.parse() {
                                    acked.lock().unwrap().push(id);
                                }
                            } else if l.starts_with("-ERR limit_reached") {
                                // The store is full (--max-store-mib): the point of the limit.
                                thread::sleep(Duration::from_millis(1));
                            }
                        }
                        None => return,
                    }
                }
            }
        }));
    }
    // A reading subscriber and a publisher flooding the channel.
    let received = Arc::new(AtomicU64::new(0));
    {
        let received = received.clone();
        threads.extend(spawn(&stop, "pubsub", move || {
            let Some(mut c) = Line::connect(addr) else {
                return;
            };
            c.send("SUB fire");
            while !past() {
                match c.line() {
                    Some(l) if l.starts_with("MSG") => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        }));
    }
    threads.extend(spawn(&stop, "pubsub", move || {
        let Some(mut c) = Line::connect(addr) else {
            return;
        };
        let payload = "f".repeat(200);
        while !past() {
            let lines: String = (0..50)
                .map(|i| format!("PUB fire {payload} {i}\n"))
                .collect();
            if c.w.write_all(lines.as_bytes()).is_err() {
                return;
            }
            for _ in 0..50 {
                if c.status().is_none() {
                    return;
                }
            }
            thread::sleep(Duration::from_millis(2));
        }
    }));
    // Subscribers that never read, over TCP and WebSocket: cut, then back again.
    threads.extend(spawn(&stop, "unread", move || {
        let Some(mut c) = Line::connect(addr) else {
            return;
        };
        c.send("SUB fire");
        // Never reads; a new one every 20 s.
        let until = Instant::now() + Duration::from_secs(20);
        while !past() && Instant::now() < until {
            thread::sleep(Duration::from_millis(200));
        }
    }));
    threads.extend(spawn(&stop, "unread", move || {
        let Ok((mut ws, _)) = tungstenite::connect(format!("ws://{addr}/")) else {
            return;
        };
        let _ = ws.send(tungstenite::Message::text("SUB fire"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !past() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(200));
        }
    }));
    // A DM flood at a reading victim.
    threads.extend(spawn(&stop, "dm", move || {
        let Some(mut victim) = Line::connect(addr) else {
            return;
        };
        victim.send("NAME victim");
        victim.status();
        let flooder = thread::spawn(move || {
            let Some(mut c) = Line::connect(addr) else {
                return;
            };
            let mut sink = c.r.get_ref().try_clone().unwrap();
            thread::spawn(move || {
                let mut b = vec![0u8; 65536];
                while matches!(sink.read(&mut b), Ok(n) if n > 0) {}
            });
            let payload = "d".repeat(1000);
            while !past() {
                let lines: String = (0..100)
                    .map(|_| format!("SEND victim {payload}\n"))
                    .collect();
                if c.w.write_all(lines.as_bytes()).is_err() {
                    return;
                }
            }
        });
        while !past() {
            if victim.line().is_none() {
                break;
            }
        }
        let _ = flooder.join();
    }));
    // Half-closers.
    threads.extend(spawn(&stop, "halfclose", move || {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.write_all(b"PING\nPART");
            let _ = s.shutdown(Shutdown::Write);
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut b = Vec::new();
            let _ = s.read_to_end(&mut b);
        }
    }));
    // Incomplete lines: big ones, and one byte a second.
    for _ in 0..4 {
        threads.extend(spawn(&stop, "partial", move || {
            let Ok(mut s) = TcpStream::connect(addr) else {
                return;
            };
            let chunk = vec![b'p'; 64 << 10];
            for _ in 0..14 {
                if past() || s.write_all(&chunk).is_err() {
                    return;
                }
            }
            thread::sleep(Duration::from_secs(3));
        }));
    }
    for _ in 0..4 {
        threads.extend(spawn(&stop, "slowloris", move || {
            let Ok(mut s) = TcpStream::connect(addr) else {
                return;
            };
            while !past() {
                if s.write_all(b"x").is_err() {
                    return;
                }
                thread::sleep(Duration::from_secs(1));
            }
        }));
    }
    // Silent clients (pinged, then cut as stale).
    threads.extend(spawn(&stop, "silent", move || {
        let conns: Vec<TcpStream> = (0..20)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        let until = Instant::now() + Duration::from_secs(20);
        while !past() && Instant::now() < until {
            thread::sleep(Duration::from_millis(200));
        }
        drop(conns);
    }));
    // A WebSocket ping flood that never reads.
    threads.extend(spawn(&stop, "wsping", move || {
        let Ok((mut ws, _)) = tungstenite::connect(format!("ws://{addr}/")) else {
            return;
        };
        let mut frame = vec![0x89u8, 0x80 | 125, 1, 2, 3, 4];
        frame.extend((0..125usize).map(|i| b'x' ^ [1, 2, 3, 4][i % 4]));
        let batch: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * 1000)
            .collect();
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_write_timeout(Some(Duration::from_secs(2))).ok();
            for _ in 0..200 {
                if past() || s.write_all(&batch).is_err() {
                    return;
                }
            }
        }
    }));
    // Pipelined scans.
    threads.extend(spawn(&stop, "scans", move || {
        let Some(mut c) = Line::connect(addr) else {
            return;
        };
        while !past() {
            let mut lines = String::new();
            for _ in 0..20 {
                lines.push_str("COUNT big WHERE v > 5\n");
            }
            lines.push_str("SELECT big ORDER BY v DESC LIMIT 50000\n");
            if c.w.write_all(lines.as_bytes()).is_err() {
                return;
            }
            for _ in 0..21 {
                if c.status().is_none() {
                    return;
                }
            }
        }
    }));
    // Quota abusers.
    threads.extend(spawn(&stop, "quotas", move || {
        let Some(mut c) = Line::connect(addr) else {
            return;
        };
        for i in 0..30_000 {
            if past() {
                return;
            }
            c.send(&format!("CREATE q.{}.{i}", std::process::id()));
            match c.status() {
                Some(l) if l.starts_with("-ERR limit_reached") => break,
                None => return,
                _ => {}
            }
        }
        for i in 0..100 {
            c.send(&format!("DEFINE quota{i} a:int"));
            if c.status()
                .is_none_or(|l| l.starts_with("-ERR limit_reached"))
            {
                break;
            }
        }
        while !past() {
            thread::sleep(Duration::from_millis(200));
        }
    }));

    // The canary, and the server's memory.
    let mut canary = Line::connect(addr).expect("canary connects");
    let mut lat = Vec::new();
    let mut peak = 0;
    let mut failures = 0;
    let started = Instant::now();
    let mut n = 0u64;
    let mut slow = Vec::new();
    while !past() {
        let t = Instant::now();
        canary.send(&format!("PING {n}"));
        match canary.status() {
            Some(l) if l == format!("+PONG {n}") => {
                let d = t.elapsed();
                if d > Duration::from_millis(100) {
                    slow.push((t, d));
                }
                lat.push(d);
            }
            _ => {
                failures += 1;
                match Line::connect(addr) {
                    Some(c) => canary = c,
                    None => thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        n += 1;
        peak = peak.max(server.rss_kib());
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let ran = started.elapsed();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "canary: {} pings, p50 {:?}, p99 {:?}, max {:?}, failed {failures}",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or_default()
    );
    // The worst stalls, and what the server logged around them (not slow consumers).
    slow.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    let log = server.log.lock().unwrap().clone();
    for (at, d) in slow.iter().take(3) {
        println!(
            "canary stall: {d:?} at {:.1} s",
            at.duration_since(started).as_secs_f64()
        );
        for (t, l) in &log {
            let near =
                *t + Duration::from_secs(2) >= *at && *t <= *at + *d + Duration::from_secs(2);
            if near && !l.contains("slow consumer") {
                println!("    server: {l}");
            }
        }
    }
    println!(
        "server RSS: {} MiB after loading 200,000 rows, peak {} MiB over {:?}",
        rss_base >> 10,
        peak >> 10,
        ran
    );
    println!(
        "reading subscriber received {} messages",
        received.load(Ordering::Relaxed)
    );

    // kill -9, restart, and look for every acknowledged row.
    let mut child = server.child;
    let _ = child.kill();
    let _ = child.wait();
    let acked = acked.lock().unwrap().clone();
    let again = Server::start(dir.path());
    let mut c = Line::connect(again.addr).expect("connect after restart");
    c.send("SELECT rows");
    let mut present = HashSet::new();
    while let Some(l) = c.line() {
        if let Some(rest) = l.strip_prefix("* id=") {
            if let Some(id) = rest.split(' ').next().and_then(|s| s.parse::<u64>().ok()) {
                present.insert(id);
            }
        } else if l.starts_with('+') || l.starts_with('-') {
            break;
        }
    }
    let lost = acked.iter().filter(|id| !present.contains(id)).count();
    println!(
        "rows: {} acknowledged, {} present after kill -9 and restart, {lost} acknowledged rows lost",
        acked.len(),
        present.len()
    );
    let mut child = again.child;
    let _ = child.kill();
    let _ = child.wait();
    for t in threads {
        let _ = t.join();
    }
}
