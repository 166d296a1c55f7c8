//! Table benchmarks over loopback against the real `servermain` in its own process,
//! with a real data folder (fsync everysec, the default).
//!
//! `cargo bench --bench tables` prints inserts/s and point GETs/s for 50 clients
//! (pipelined 16 deep, and one request at a time), `SELECT ... WHERE` over 1,000,000
//! rows, snapshot and load time, and memory per row. `-- quick` uses 100,000 rows.
//! Every loop is bounded in count and time; nothing asserts on time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &std::path::Path) -> Server {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_servermain"))
            .args(["127.0.0.1", "0", "--snapshot-secs", "0"])
            .current_dir(dir)
            .env("RUST_LOG", "warn,servermain=info,leviathan::server=info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start servermain");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("servermain log").expect("log line");
            if line.contains("data:") {
                println!("  server: {}", line.split("] ").nth(1).unwrap_or(&line));
            }
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        println!(
            "  (started and ready in {} ms)",
            started.elapsed().as_millis()
        );
        thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A connection past the greeting, with a helper to send a command and read its
/// reply lines.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut c = Conn {
            r: BufReader::with_capacity(1 << 16, s.try_clone().unwrap()),
            w: s,
        };
        c.w.write_all(b"PING\n").unwrap();
        let mut l = String::new();
        c.r.read_line(&mut l).unwrap(); // HELLO
        l.clear();
        c.r.read_line(&mut l).unwrap(); // +PONG
        c
    }

    /// Sends one command and returns its final status line (items are skipped).
    fn call(&mut self, cmd: &str) -> String {
        self.w.write_all(cmd.as_bytes()).unwrap();
        self.w.write_all(b"\n").unwrap();
        let mut l = String::new();
        loop {
            l.clear();
            self.r.read_line(&mut l).unwrap();
            if l.starts_with('+') || l.starts_with('-') {
                return l.trim_end().to_string();
            }
        }
    }

    /// Reads the replies to `n` pipelined requests: lines up to and including `n`
    /// status lines (`+...` or `-...`); item lines (`* ...`) are skipped. Only called
    /// at a line start, with nothing more in flight.
    fn replies(&mut self, n: usize) {
        let mut got = 0;
        let mut at_line_start = true;
        let count = |bytes: &[u8], at_start: &mut bool, got: &mut usize| {
            for &b in bytes {
                if *at_start && (b == b'+' || b == b'-') {
                    *got += 1;
                }
                *at_start = b == b'\n';
            }
        };
        count(self.r.buffer(), &mut at_line_start, &mut got);
        let held = self.r.buffer().len();
        self.r.consume(held);
        let mut buf = [0u8; 1 << 16];
        while got < n || !at_line_start {
            let k = self.r.get_mut().read(&mut buf).unwrap();
            assert!(k > 0, "server closed");
            count(&buf[..k], &mut at_line_start, &mut got);
        }
        assert_eq!(got, n, "one status line per request");
    }
}

/// `clients` connections each doing `per_client` requests made by `make`, `depth` at a
/// time; returns requests per second.
fn load(
    addr: SocketAddr,
    clients: usize,
    per_client: usize,
    depth: usize,
    make: impl Fn(usize, usize) -> String + Send + Sync + 'static,
) -> f64 {
    let make = Arc::new(make);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (make, barrier) = (make.clone(), barrier.clone());
            thread::spawn(move || {
                let mut conn = Conn::new(addr);
                barrier.wait();
                let mut i = 0;
                let deadline = Instant::now() + Duration::from_secs(60);
                while i < per_client && Instant::now() < deadline {
                    let k = depth.min(per_client - i);
                    let mut batch = String::new();
                    for j in 0..k {
                        batch.push_str(&make(c, i + j));
                        batch.push('\n');
                    }
                    conn.w.write_all(batch.as_bytes()).unwrap();
                    conn.replies(k);
                    i += k;
                }
                i
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let done: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let rows: usize = if quick { 100_000 } else { 1_000_000 };
    let dir = tempfile::tempdir().unwrap();
    println!("leviathan table benchmark (servermain in its own process, data in a temp folder, fsync everysec)");
    let server = Server::start(dir.path());
    let addr = server.addr;
    let mut c = Conn::new(addr);
    assert_eq!(c.call("DEFINE kv v:int s:str"), "+OK");
    let rss_empty = server.rss_kib();

    let per = (if quick { 20_000 } else { 100_000 }) / 50 * 16 / 16;
    let ins = load(addr, 50, per, 16, |c, i| {
        format!("INSERT kv v={} s=val{c}x{i}", c * 1_000_000 + i)
    });
    println!("INSERT, 50 clients, pipelined 16:   {ins:>10.0} /s   (Redis 7.0 SET: 612k/s)");
    let n = c.call("COUNT kv");
    let have: usize = n.trim_start_matches("+OK ").parse().unwrap();
    let get = load(addr, 50, per, 16, move |c, i| {
        format!("GET kv {}", 1 + (c * 7919 + i * 104_729) % have)
    });
    println!("GET,    50 clients, pipelined 16:   {get:>10.0} /s   (Redis 7.0 GET: 805k/s)");
    let small = per / 8;
    let ins1 = load(addr, 50, small, 1, |c, i| {
        format!("INSERT kv v={} s=one{c}x{i}", c * 1_000_000 + i)
    });
    println!("INSERT, 50 clients, no pipelining:  {ins1:>10.0} /s   (Redis 7.0 SET: 86k/s)");
    let get1 = load(addr, 50, small, 1, move |c, i| {
        format!("GET kv {}", 1 + (c * 7919 + i * 104_729) % have)
    });
    println!("GET,    50 clients, no pipelining:  {get1:>10.0} /s   (Redis 7.0 GET: 92k/s)");

    // Fill to `rows` rows.
    let have: usize = c
        .call("COUNT kv")
        .trim_start_matches("+OK ")
        .parse()
        .unwrap();
    if have < rows {
        let need = rows - have;
        let start = Instant::now();
        let r = load(addr, 10, need.div_ceil(10), 64, |c, i| {
            format!("INSERT kv v={} s=fill", 5_000_000 + c * 1_000_000 + i)
        });
        println!(
            "  (filled to {rows} rows at {r:.0} inserts/s in {:.1} s)",
            start.elapsed().as_secs_f64()
        );
    }
    thread::sleep(Duration::from_millis(500));
    let rss_full = server.rss_kib();
    println!(
        "memory per row: {:.0} bytes  (server RSS {} MiB empty, {} MiB with {rows} rows)",
        (rss_full.saturating_sub(rss_empty)) as f64 * 1024.0 / rows as f64,
        rss_empty / 1024,
        rss_full / 1024
    );
    for q in [
        "SELECT kv WHERE v = 123",
        "COUNT kv WHERE v > 5500000 AND s = fill",
        "SELECT kv WHERE v >= 5000000 AND v < 5000100 ORDER BY v DESC LIMIT 10",
    ] {
        let start = Instant::now();
        let runs = 5;
        let mut last = String::new();
        for _ in 0..runs {
            last = c.call(q);
        }
        println!(
            "{q:<75} {:>7.1} ms  ({last}, {rows} rows scanned)",
            start.elapsed().as_secs_f64() * 1000.0 / runs as f64
        );
    }
    let start = Instant::now();
    let saved = c.call("SAVE");
    println!(
        "SAVE (snapshot of {rows} rows): {:.0} ms  ({saved})",
        start.elapsed().as_secs_f64() * 1000.0
    );
    let csv_bytes = std::fs::metadata(dir.path().join("data/kv.csv"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("  kv.csv is {:.1} MiB", csv_bytes as f64 / (1 << 20) as f64);
    drop(c);
    server.stop();
    let start = Instant::now();
    let server = Server::start(dir.path());
    println!(
        "restart (load {rows} rows + first snapshot): {:.0} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    let mut c = Conn::new(server.addr);
    println!("  rows after restart: {}", c.call("COUNT kv"));
    server.stop();
}
