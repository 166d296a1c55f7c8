//! Request/reply between clients, against NATS request/reply measured in the same run
//! by the same load generator: `cargo bench --bench services` (`-- 2` for 2 s phases).
//!
//! - 1 requester -> 1 provider, one request at a time: round trips per second and
//!   latency p50/p99;
//! - 50 requesters -> 4 providers, 16 requests in flight per requester: throughput.
//!
//! leviathan is the real `servermain` (`--in-memory --auth off`); NATS is Debian's
//! `nats-server` (`apt-get install nats-server`), skipped with a note when missing.
//! NATS providers share a queue group, as leviathan's share a service. Every loop is
//! bounded in count and time; nothing asserts on time.

mod common;
use common::Servermain;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const PAYLOAD: &str = "0123456789abcdef";

/// One side of a wire conversation: line reads, buffered writes.
struct Wire {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
    line: String,
}

impl Wire {
    fn open(addr: SocketAddr) -> Wire {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Wire {
            r: BufReader::new(s.try_clone().unwrap()),
            w: BufWriter::new(s),
            line: String::new(),
        }
    }

    /// The next line, without its line ending; empty at the end or after 10 s.
    fn next(&mut self) -> &str {
        self.line.clear();
        if self.r.read_line(&mut self.line).is_err() {
            self.line.clear();
        }
        self.line.trim_end()
    }

    fn send(&mut self, s: &str) {
        let _ = self.w.write_all(s.as_bytes());
    }

    fn flush(&mut self) {
        let _ = self.w.flush();
    }

    /// Flushes only when nothing more has arrived to answer in the same write.
    fn flush_if_idle(&mut self) {
        if self.r.buffer().is_empty() {
            self.flush();
        }
    }
}

/// A system under test: how its providers answer and its requesters ask.
trait System: Sync {
    fn provider(&self, stop: &AtomicBool, ready: &Barrier);
    /// Sends `n` requests at once and waits for their `n` answers.
    fn requester(&self) -> Box<dyn FnMut(usize) + Send>;
}

struct Leviathan(SocketAddr);

impl System for Leviathan {
    fn provider(&self, stop: &AtomicBool, ready: &Barrier) {
        let mut w = Wire::open(self.0);
        w.send("SERVE bench\n");
        w.flush();
        while !w.next().starts_with("+OK") {}
        ready.wait();
        while !stop.load(Ordering::Relaxed) {
            let line = w.next().to_string();
            if line.is_empty() {
                break;
            }
            // REQ <id> <service> <from> <payload>
            if let Some(rest) = line.strip_prefix("REQ ") {
                let mut f = rest.splitn(4, ' ');
                let id = f.next().unwrap_or("0").to_string();
                let payload = f.nth(2).unwrap_or("").to_string();
                w.send(&format!("REPLY {id} {payload}\n"));
                w.flush_if_idle();
            }
        }
    }

    fn requester(&self) -> Box<dyn FnMut(usize) + Send> {
        let mut w = Wire::open(self.0);
        w.send("PING\n");
        w.flush();
        while !w.next().starts_with("+PONG") {}
        Box::new(move |n| {
            for _ in 0..n {
                w.send(&format!("REQ bench {PAYLOAD}\n"));
            }
            w.flush();
            let mut got = 0;
            while got < n {
                let l = w.next();
                if l.is_empty() {
                    return;
                }
                if l.starts_with('+') || l.starts_with('-') {
                    got += 1;
                }
            }
        })
    }
}

struct Nats(SocketAddr);

impl Nats {
    fn open(&self) -> Wire {
        let mut w = Wire::open(self.0);
        w.next(); // INFO
        w.send("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
        w
    }
}

/// Reads one `MSG <subject> <sid> [reply] <n>` and its payload; answers server PINGs.
fn nats_msg(w: &mut Wire) -> Option<(Option<String>, String)> {
    loop {
        let line = w.next().to_string();
        if line.is_empty() {
            return None;
        }
        if line == "PING" {
            w.send("PONG\r\n");
            w.flush();
            continue;
        }
        let Some(rest) = line.strip_prefix("MSG ") else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        let n: usize = f.last()?.parse().ok()?;
        let reply = (f.len() == 4).then(|| f[2].to_string());
        let mut payload = vec![0u8; n + 2];
        // The payload is in the reader's buffer or on its way.
        w.r.read_exact(&mut payload).ok()?;
        payload.truncate(n);
        return Some((reply, String::from_utf8_lossy(&payload).into_owned()));
    }
}

impl System for Nats {
    fn provider(&self, stop: &AtomicBool, ready: &Barrier) {
        let mut w = self.open();
        w.send("SUB bench q 1\r\nPING\r\n");
        w.flush();
        while w.next() != "PONG" {}
        ready.wait();
        while !stop.load(Ordering::Relaxed) {
            let Some((Some(reply), payload)) = nats_msg(&mut w) else {
                break;
            };
            w.send(&format!("PUB {reply} {}\r\n{payload}\r\n", payload.len()));
            w.flush_if_idle();
        }
    }

    fn requester(&self) -> Box<dyn FnMut(usize) + Send> {
        let mut w = self.open();
        let inbox = format!("_INBOX.{}", std::ptr::addr_of!(w) as usize);
        w.send(&format!("SUB {inbox}.* 1\r\nPING\r\n"));
        w.flush();
        while w.next() != "PONG" {}
        let mut i = 0u64;
        Box::new(move |n| {
            for _ in 0..n {
                i += 1;
                w.send(&format!(
                    "PUB bench {inbox}.{i} {}\r\n{PAYLOAD}\r\n",
                    PAYLOAD.len()
                ));
            }
            w.flush();
            for _ in 0..n {
                if nats_msg(&mut w).is_none() {
                    return;
                }
            }
        })
    }
}

/// Runs `providers` providers, then `requesters` requesters with `inflight` requests
/// each at a time for `secs`. Returns requests per second and, with one in flight, the
/// latencies.
fn run(
    sys: Arc<dyn System + Send>,
    providers: usize,
    requesters: usize,
    inflight: usize,
    secs: u64,
) -> (f64, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(providers + 1));
    let ps: Vec<_> = (0..providers)
        .map(|_| {
            let (sys, stop, ready) = (sys.clone(), stop.clone(), ready.clone());
            thread::spawn(move || sys.provider(&stop, &ready))
        })
        .collect();
    ready.wait();
    let start = Arc::new(Barrier::new(requesters + 1));
    let rs: Vec<_> = (0..requesters)
        .map(|_| {
            let (sys, start) = (sys.clone(), start.clone());
            thread::spawn(move || {
                let mut ask = sys.requester();
                start.wait();
                let began = Instant::now();
                let (mut done, mut lat) = (0u64, Vec::new());
                while began.elapsed() < Duration::from_secs(secs) && done < 50_000_000 {
                    let t = Instant::now();
                    ask(inflight);
                    if inflight == 1 && lat.len() < 1_000_000 {
                        lat.push(t.elapsed());
                    }
                    done += inflight as u64;
                }
                (done, began.elapsed(), lat)
            })
        })
        .collect();
    start.wait();
    let (mut total, mut longest, mut lat) = (0, Duration::ZERO, Vec::new());
    for r in rs {
        let (n, t, l) = r.join().unwrap();
        total += n;
        longest = longest.max(t);
        lat.extend(l);
    }
    stop.store(true, Ordering::Relaxed);
    drop(ps); // the providers end when their servers stop
    (total as f64 / longest.as_secs_f64(), lat)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    let secs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    // LEVIATHAN_ARGS adds server flags (`--workers 2`, say) to compare settings.
    let extra = std::env::var("LEVIATHAN_ARGS").unwrap_or_default();
    let mut args = vec![
        "--in-memory",
        "--auth",
        "off",
        "--max-pending-requests",
        "1024",
    ];
    args.extend(extra.split_whitespace());
    let lev = Servermain::start(&args, &[]);
    let lev_addr = lev.addr;
    let nats = common::peers::nats();
    let mut systems: Vec<(&str, Arc<dyn System + Send>)> =
        vec![("leviathan", Arc::new(Leviathan(lev_addr)))];
    if let Some(peer) = &nats {
        systems.push(("nats", Arc::new(Nats(peer.addr))));
    }
    let mut seq = Vec::new();
    let mut many = Vec::new();
    for (name, sys) in &systems {
        let (rate, mut lat) = run(sys.clone(), 1, 1, 1, secs);
        let (p50, p90, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.9), pct(&mut lat, 0.99));
        println!(
            "{name:<10} 1 -> 1 sequential: {rate:>9.0} req/s, p50 {p50:?}, p90 {p90:?}, p99 {p99:?}"
        );
        seq.push((rate, p99));
        let (rate, _) = run(sys.clone(), 4, 50, 16, secs);
        println!("{name:<10} 50 -> 4, 16 in flight: {rate:>9.0} req/s");
        many.push(rate);
    }
    if seq.len() == 2 {
        println!(
            "leviathan / NATS: sequential {:.2}x (p99 {:?} vs {:?}), 50 -> 4 {:.2}x",
            seq[0].0 / seq[1].0,
            seq[0].1,
            seq[1].1,
            many[0] / many[1]
        );
    }
    // Stopping the servers ends the providers' threads (their reads end).
    drop(systems);
    drop(nats);
    drop(lev);
}
