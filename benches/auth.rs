//! What accounts and rights cost. `cargo bench --bench auth` (`-- 2` for 2 s phases):
//! - `LOGIN` latency with 20 clients logging in at once, and meanwhile the `PING`
//!   latency of another client (logins hash on threads of their own, so it should not
//!   move);
//! - `PUB` throughput with every request checked against a role (`--auth optional`),
//!   against `--auth off`, on servers started the same way in the same run.
//!
//! Each server is the real `servermain` in its own process. Every loop is bounded in
//! count and time; nothing asserts on time.

mod common;
use common::Servermain;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const PASSWORD: &str = "bench-password-1";

/// servermain in --in-memory mode, with the admin password the logins use.
fn server(args: &[&str]) -> Servermain {
    let mut all = vec!["--in-memory"];
    all.extend_from_slice(args);
    Servermain::start(&all, &[("LEVIATHAN_ADMIN_PASSWORD", PASSWORD)])
}

struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
    buf: String,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Conn {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
            buf: String::new(),
        };
        c.request("PING"); // the greeting comes first
        c
    }

    /// The next line; empty once the connection ends or stays silent for 30 s (the
    /// loops reading it are bounded by time, and go on to their end).
    fn line(&mut self) -> &str {
        self.buf.clear();
        if self.r.read_line(&mut self.buf).is_err() {
            self.buf.clear();
        }
        self.buf.trim_end()
    }

    /// Sends `line` and reads lines up to its reply.
    fn request(&mut self, line: &str) -> String {
        self.w.write_all(format!("{line}\n").as_bytes()).unwrap();
        loop {
            let l = self.line().to_string();
            if l.is_empty() || l.starts_with('+') || l.starts_with('-') {
                return l;
            }
        }
    }
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn logins(secs: u64) {
    let server = server(&["--auth", "required"]);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let canary = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut c = Conn::open(addr);
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) && lat.len() < 100_000 {
                let t = Instant::now();
                c.request("PING");
                lat.push(t.elapsed());
                thread::sleep(Duration::from_millis(5));
            }
            lat
        })
    };
    thread::sleep(Duration::from_millis(200));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            thread::spawn(move || {
                let mut lat = Vec::new();
                while Instant::now() < deadline && lat.len() < 1000 {
                    let mut c = Conn::open(addr);
                    let t = Instant::now();
                    let r = c.request(&format!("LOGIN admin {PASSWORD}"));
                    assert!(r.starts_with("+OK user=admin"), "{r}");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut login: Vec<Duration> = clients
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    stop.store(true, Ordering::Relaxed);
    let mut ping = canary.join().unwrap();
    println!(
        "LOGIN, 20 at once: {} logins, p50 {:?}, p99 {:?}; meanwhile PING from another client: p50 {:?}, p99 {:?} ({} pings)",
        login.len(),
        percentile(&mut login, 0.5),
        percentile(&mut login, 0.99),
        percentile(&mut ping, 0.5),
        percentile(&mut ping, 0.99),
        ping.len()
    );
}

/// Messages published per second by 4 pipelining publishers on one channel a reader
/// subscribes to.
fn publish_rate(args: &[&str], secs: u64) -> f64 {
    let server = server(args);
    let addr = server.addr;
    let mut admin = Conn::open(addr);
    admin.request("CREATE bench");
    let mut reader = Conn::open(addr);
    reader.request("SUB bench");
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && !reader.line().is_empty() {
                n += 1;
            }
            n
        })
    };
    let batch: String = (0..64).map(|_| "PUB bench 0123456789abcdef\n").collect();
    let started = Instant::now();
    let publishers: Vec<_> = (0..4)
        .map(|_| {
            let batch = batch.clone();
            thread::spawn(move || {
                let mut c = Conn::open(addr);
                let mut sent = 0u64;
                while started.elapsed() < Duration::from_secs(secs) && sent < 500_000_000 {
                    c.w.write_all(batch.as_bytes()).unwrap();
                    for _ in 0..64 {
                        c.line();
                    }
                    sent += 64;
                }
                sent
            })
        })
        .collect();
    let sent: u64 = publishers.into_iter().map(|h| h.join().unwrap()).sum();
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    admin.request("PUB bench end");
    let _ = drain.join();
    rate
}

fn main() {
    let secs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    logins(secs);
    // Alternated, three of each, medians: one run of either varies by 10-20% here.
    let (mut off, mut checked) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        off.push(publish_rate(&["--auth", "off"], secs));
        checked.push(publish_rate(&["--auth", "optional"], secs));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!("PUB runs: --auth off {off:.0?}, checked {checked:.0?}");
    let (off, checked) = (median(&mut off), median(&mut checked));
    println!(
        "PUB, 4 pipelining publishers: --auth off {off:.0}/s, checked (--auth optional) {checked:.0}/s: {:.3}x ({:+.1}%)",
        checked / off,
        (checked / off - 1.0) * 100.0
    );
}
