//! Load benchmarks over loopback against the real `servermain` in its own process.
//!
//! `cargo bench --bench pubsub` prints pub/sub throughput (1→1, 1→100, 50 channels),
//! one-way latency at a fixed rate, server memory per idle subscribed connection, and
//! how long 9,000 clients connecting at once take to be subscribed (`storm`), each for
//! leviathan and, in the same run with the same load generator, for NATS and Redis
//! when `nats-server` and `redis-server` are installed (`LEVIATHAN_PEERS=0` leaves them
//! out), with leviathan's ratio to the best of them. Throughput and latency figures
//! are medians of 3 runs (latency: of 5, and p99 also over every sample; with
//! `LEVIATHAN_ROUNDS=N`: of N), the servers taking turns.
//! `cargo bench --bench pubsub -- quick` runs a shorter version of each; naming
//! scenarios (`1to1 fanout channels latency memory storm history cluster`) runs only those;
//! `history` compares channels with and without a history (`pubsub/history.rs`);
//! `cluster` two nodes joined through Redis against one (`pubsub/cluster.rs`).
//! Every loop is bounded in count and time; nothing asserts on time.
//! `LEVIATHAN_SERVERMAIN=/path/to/servermain` measures another build (say, the previous
//! commit's) with the same load generator.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[path = "pubsub/cluster.rs"]
mod cluster;
mod common;
#[path = "pubsub/history.rs"]
mod history;

const PAYLOAD: &str = "0123456789abcdef"; // 16 bytes
/// No scenario runs longer than this.
const TIME_CAP: Duration = Duration::from_secs(20);

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        // LEVIATHAN_SERVERMAIN runs another build (a previous one, for a same-run
        // comparison).
        let program = std::env::var("LEVIATHAN_SERVERMAIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_servermain").to_string());
        let mut child = Command::new(program)
            .args(["127.0.0.1", "0", "--in-memory"])
            .args(extra)
            .env("RUST_LOG", "warn,servermain=info,leviathan::app=info")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start servermain");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = common::listening_addr(&mut lines, |_| {});
        // Keep draining its log so the server never blocks on a full pipe, and show
        // its warnings (slow consumers, limits) beside the figures they explain.
        thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") {
                    println!("  server: {line}");
                }
            }
        });
        Server { child, addr }
    }

    /// leviathan as a target of the throughput scenarios.
    fn target(&self) -> Target {
        Target {
            proto: Proto::Leviathan,
            addr: self.addr,
            pid: self.child.id(),
            create_with: "",
        }
    }
}

/// Resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// How a server under test speaks pub/sub.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Leviathan,
    Nats,
    Redis,
}

/// A server the throughput scenarios run against.
struct Target {
    proto: Proto,
    addr: SocketAddr,
    pid: u32,
    /// What leviathan's `CREATE` adds after the channel (` HISTORY 1000`, say).
    create_with: &'static str,
}

impl Target {
    /// CPU time the server has used so far (user + system), in seconds.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) + ticks(12)) / hz
    }

    /// A connection ready to publish or subscribe.
    fn open(&self) -> (BufReader<TcpStream>, TcpStream) {
        if self.proto == Proto::Leviathan {
            return connect(self.addr);
        }
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::with_capacity(1 << 16, s);
        if self.proto == Proto::Nats {
            let mut line = String::new();
            r.read_line(&mut line).unwrap(); // INFO
            w.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")
                .unwrap();
            read_until(&mut r, "PONG");
        }
        (r, w)
    }

    /// Makes channel `ch` where that is needed (leviathan's `CREATE`).
    fn create(&self, ch: &str) {
        if self.proto == Proto::Leviathan {
            let (mut r, mut w) = connect(self.addr);
            let create = format!("CREATE {ch}{}", self.create_with);
            assert!(command(&mut r, &mut w, &create).starts_with("+OK"));
        }
    }

    /// Waits (bounded) until channel `ch`, made on another node of a cluster, is here.
    fn await_channel(&self, ch: &str) {
        let (mut r, mut w) = connect(self.addr);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !command(&mut r, &mut w, &format!("SUB {ch}")).starts_with("+OK") {
            assert!(
                Instant::now() < deadline,
                "channel {ch} reaches the other node"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Subscribes a connection from [`Target::open`] to `ch`, waiting for the ack.
    fn subscribe(&self, r: &mut BufReader<TcpStream>, w: &mut TcpStream, ch: &str) {
        match self.proto {
            Proto::Leviathan => {
                assert!(command(r, w, &format!("SUB {ch}")).starts_with("+OK"));
            }
            Proto::Nats => {
                w.write_all(format!("SUB {ch} 1\r\nPING\r\n").as_bytes())
                    .unwrap();
                read_until(r, "PONG");
            }
            Proto::Redis => {
                w.write_all(format!("SUBSCRIBE {ch}\r\n").as_bytes())
                    .unwrap();
                // *3 $9 subscribe $n ch :1
                for _ in 0..6 {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                }
            }
        }
    }

    /// One published message on the wire.
    fn frame(&self, ch: &str) -> String {
        self.frame_of(ch, PAYLOAD)
    }

    /// A message carrying `payload` (no spaces, no line breaks) on the wire.
    fn frame_of(&self, ch: &str, payload: &str) -> String {
        match self.proto {
            Proto::Leviathan => format!("PUB {ch} {payload}\n"),
            Proto::Nats => format!("PUB {ch} {}\r\n{payload}\r\n", payload.len()),
            Proto::Redis => format!(
                "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{ch}\r\n${}\r\n{payload}\r\n",
                ch.len(),
                payload.len()
            ),
        }
    }

    /// What a new connection sends to subscribe to `ch` at once, and a part of the
    /// reply that says it is subscribed.
    fn subscribe_at_once(&self, ch: &str) -> (String, &'static str) {
        match self.proto {
            Proto::Leviathan => (format!("SUB {ch}\n"), "\n+OK"),
            Proto::Nats => (
                format!("CONNECT {{\"verbose\":false}}\r\nSUB {ch} 1\r\nPING\r\n"),
                "PONG",
            ),
            Proto::Redis => (
                format!("*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{ch}\r\n", ch.len()),
                ":1\r\n",
            ),
        }
    }

    /// Resident memory of the server process, KiB.
    fn rss_kib(&self) -> u64 {
        rss_kib(self.pid)
    }

    /// Lines a delivered message takes on the wire.
    fn lines_per_message(&self) -> u64 {
        match self.proto {
            Proto::Leviathan => 1,
            Proto::Nats => 2,
            Proto::Redis => 7,
        }
    }

    /// Reply lines a publisher gets per message (NATS does not acknowledge).
    fn reply_lines(&self) -> u64 {
        match self.proto {
            Proto::Nats => 0,
            _ => 1,
        }
    }
}

/// Reads lines until one is `want` (bounded by the read timeout).
fn read_until(r: &mut BufReader<TcpStream>, want: &str) {
    for _ in 0..1000 {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("connection closed before {want}");
        }
        if line.trim_end() == want {
            return;
        }
    }
    panic!("no {want}");
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A connection that has passed the greeting.
fn connect(addr: SocketAddr) -> (BufReader<TcpStream>, TcpStream) {
    common::line_client(addr)
}

fn command(r: &mut BufReader<TcpStream>, w: &mut TcpStream, cmd: &str) -> String {
    w.write_all(cmd.as_bytes()).unwrap();
    w.write_all(b"\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

/// Counts lines arriving on `r` until `want` have come or time runs out.
fn count_lines(r: BufReader<TcpStream>, want: u64, counter: Arc<AtomicU64>) -> u64 {
    count_lines_until(r, want, counter).0
}

/// As [`count_lines`], also returning when the last of them arrived. A server that drops
/// messages (NATS cuts slow consumers) never sends `want`: its rate counts up to the
/// last arrival, not the time cap.
fn count_lines_until(
    mut r: BufReader<TcpStream>,
    want: u64,
    counter: Arc<AtomicU64>,
) -> (u64, Instant) {
    let mut last = Instant::now();
    let mut buf = vec![0u8; 1 << 18];
    // Bytes already buffered by BufReader count too.
    let mut got = memchr::memchr_iter(b'\n', r.buffer()).count() as u64;
    r.consume(r.buffer().len());
    let mut inner = r.into_inner();
    let deadline = Instant::now() + TIME_CAP;
    // Nothing for a while after messages flowed: the rest is not coming.
    let _ = inner.set_read_timeout(Some(Duration::from_secs(3)));
    while got < want && Instant::now() < deadline {
        match inner.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let k = memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
                got += k;
                counter.fetch_add(k, Ordering::Relaxed);
                last = Instant::now();
            }
        }
    }
    (got, last)
}

/// Publishes `n` messages on `channel` as fast as the socket takes them, pipelined in
/// large writes; replies are read and discarded by a helper thread.
fn publish(target: &Target, channel: &str, n: u64, stop: Arc<AtomicBool>) {
    let (r, mut w) = target.open();
    let want = n * target.reply_lines();
    let replies = thread::spawn(move || count_lines(r, want, Arc::new(AtomicU64::new(0))));
    let line = target.frame(channel);
    let per_batch = (64 << 10) / line.len();
    let batch = line.repeat(per_batch);
    let mut sent = 0u64;
    let deadline = Instant::now() + TIME_CAP;
    while sent < n && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let k = per_batch.min((n - sent) as usize);
        if w.write_all(&batch.as_bytes()[..k * line.len()]).is_err() {
            break;
        }
        sent += k as u64;
    }
    let _ = replies.join();
}

/// `publishers` publishers, one channel each, `subs_per_channel` subscribers on each;
/// returns delivered messages per second and the server's CPU microseconds per
/// delivered message (steadier than throughput on a shared machine).
fn fanout(server: &Target, publishers: usize, subs_per_channel: usize, per_pub: u64) -> (f64, f64) {
    fanout_between(server, server, publishers, subs_per_channel, per_pub)
}

/// As [`fanout`], the publishers connected to `server` and the subscribers to `subs_at`
/// (another node of a cluster, say; the CPU counted is both servers').
fn fanout_between(
    server: &Target,
    subs_at: &Target,
    publishers: usize,
    subs_per_channel: usize,
    per_pub: u64,
) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    // Channels of their own each time: scenarios run again on the same server.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let tag = RUNS.fetch_add(1, Ordering::Relaxed);
    let apart = subs_at.pid != server.pid;
    for p in 0..publishers {
        let ch = format!("b{tag}.{p}");
        server.create(&ch);
        if apart {
            subs_at.await_channel(&ch);
        }
        for _ in 0..subs_per_channel {
            let (mut r, mut w) = subs_at.open();
            subs_at.subscribe(&mut r, &mut w, &ch);
            subs.push((r, w));
        }
    }
    let cpu_secs = || server.cpu_secs() + if apart { subs_at.cpu_secs() } else { 0.0 };
    let total_subs = subs.len();
    let barrier = Arc::new(Barrier::new(total_subs + publishers + 1));
    let mut handles = Vec::new();
    let lines = server.lines_per_message();
    for (r, w) in subs {
        let (barrier, delivered) = (barrier.clone(), delivered.clone());
        handles.push(thread::spawn(move || {
            barrier.wait();
            let (got, last) = count_lines_until(r, per_pub * lines, delivered);
            drop(w);
            (got / lines, last)
        }));
    }
    let mut pubs = Vec::new();
    for p in 0..publishers {
        let ch = format!("b{tag}.{p}");
        let (barrier, stop) = (barrier.clone(), stop.clone());
        let target = Target {
            proto: server.proto,
            addr: server.addr,
            pid: server.pid,
            create_with: server.create_with,
        };
        pubs.push(thread::spawn(move || {
            barrier.wait();
            let started = Instant::now();
            publish(&target, &ch, per_pub, stop);
            started
        }));
    }
    // The servers idle until the barrier opens: their CPU is read before it.
    let cpu_start = cpu_secs();
    barrier.wait();
    // Timed from the first publisher's start, not from here: this thread may run
    // only after the others finished (seen on 2 cores: a fan-out "of 500 M msgs/s").
    let mut start = Instant::now();
    let mut total = 0;
    let mut last = start;
    for h in handles {
        let (got, at) = h.join().unwrap();
        total += got;
        last = last.max(at);
    }
    let cpu = cpu_secs() - cpu_start;
    stop.store(true, Ordering::Relaxed);
    for p in pubs {
        if let Ok(started) = p.join() {
            start = start.min(started);
        }
    }
    let secs = last.duration_since(start).as_secs_f64().max(1e-6);
    let expected = per_pub * (total_subs as u64);
    if total < expected {
        println!(
            "  (note: {:?}: {total} of {expected} messages arrived; the rate counts to the last arrival)",
            server.proto
        );
    }
    (total as f64 / secs, cpu * 1e6 / total.max(1) as f64)
}

/// One-way latencies at `rate` messages per second for `secs` seconds, through
/// `target`: a message carrying `ts=<send time>` in, the same out.
fn latency(target: &Target, rate: u64, secs: u64) -> Latencies {
    latency_between(target, target, rate, secs)
}

/// As [`latency`], published through `target` and received from `subs_at`.
fn latency_between(target: &Target, subs_at: &Target, rate: u64, secs: u64) -> Latencies {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let ch = format!("lat{}x{}", target.pid, RUNS.fetch_add(1, Ordering::Relaxed));
    target.create(&ch);
    if subs_at.pid != target.pid {
        subs_at.await_channel(&ch);
    }
    let (mut sr, mut sw) = subs_at.open();
    subs_at.subscribe(&mut sr, &mut sw, &ch);
    let (r, w) = target.open();
    let want = rate * secs * target.reply_lines();
    let replies = thread::spawn(move || count_lines(r, want, Arc::new(AtomicU64::new(0))));
    let frame = |payload: &str| target.frame_of(&ch, payload);
    let result = paced_latency(sr, w, rate, secs, &frame);
    let _ = replies.join();
    drop(sw);
    result
}

/// The same measurement through the simplest possible relay: one blocking thread
/// copying bytes from the sending socket to the receiving one. It is the floor this
/// machine's loopback and scheduler allow for one hop through another process.
fn baseline_latency(rate: u64, secs: u64) -> Latencies {
    let (relay_addr, relay) = spawn_relay();
    let rx = TcpStream::connect(relay_addr).unwrap();
    let tx = TcpStream::connect(relay_addr).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    for s in [&rx, &tx] {
        s.set_nodelay(true).unwrap();
    }
    let frame = |payload: &str| format!("{payload}\n");
    let result = paced_latency(BufReader::new(rx), tx, rate, secs, &frame);
    let mut relay = relay;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(relay.id() as i32, libc::SIGTERM) };
    let _ = relay.wait();
    result
}

/// Runs this bench binary as a relay process (see `relay_main`), returning its address.
fn spawn_relay() -> (SocketAddr, Child) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("relay")
        .stdout(Stdio::piped())
        .spawn()
        .expect("relay starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (line.trim().parse().unwrap(), child)
}

/// The relay: accepts a receiver then a sender and copies sender → receiver.
fn relay_main() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", l.local_addr().unwrap());
    let (mut rx, _) = l.accept().unwrap();
    let (mut tx, _) = l.accept().unwrap();
    rx.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = tx.read(&mut buf) {
        if n == 0 || rx.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Sends `frame("ts=<time>")` at `rate`/s on `w` and times each `ts=<time>` arriving on
/// `r` (the last word of a line; other lines are the protocol's framing).
fn paced_latency(
    mut r: BufReader<TcpStream>,
    mut w: TcpStream,
    rate: u64,
    secs: u64,
    frame: &dyn Fn(&str) -> String,
) -> Latencies {
    let epoch = Instant::now();
    let n = rate * secs;
    let reader = thread::spawn(move || {
        let mut samples = Vec::with_capacity(n as usize);
        let mut line = String::new();
        let deadline = Instant::now() + TIME_CAP + Duration::from_secs(secs);
        while (samples.len() as u64) < n && Instant::now() < deadline {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let now = epoch.elapsed().as_nanos() as u64;
            let ts = line.trim_end().rsplit(' ').next();
            let ts = ts.and_then(|t| t.strip_prefix("ts="));
            if let Some(ts) = ts.and_then(|t| t.parse::<u64>().ok()) {
                samples.push(now.saturating_sub(ts));
            }
        }
        samples
    });
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    // Sleep, not spin, until each send is due: on two cores a spinning sender would
    // take a core from the server and measure the contention instead. A 1 µs timer
    // slack makes short sleeps precise.
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0, 0, 0) };
    let start = Instant::now();
    for i in 0..n {
        let due = start + interval * (i as u32);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        let ts = epoch.elapsed().as_nanos() as u64;
        if w.write_all(frame(&format!("ts={ts}")).as_bytes()).is_err() {
            break;
        }
    }
    let mut samples = reader.join().unwrap();
    samples.sort_unstable();
    Latencies(samples)
}

/// One-way latencies measured, in nanoseconds, sorted.
struct Latencies(Vec<u64>);

impl Latencies {
    /// The `p` quantile (0.99 for p99), in µs.
    fn at(&self, p: f64) -> f64 {
        let s = &self.0;
        s.get(((s.len() as f64 * p) as usize).min(s.len().saturating_sub(1)))
            .map_or(f64::NAN, |&ns| ns as f64 / 1000.0)
    }

    /// p50, p99 and p99.9 in µs, as the bench prints them.
    fn line(&self) -> String {
        let (p50, p99, p999) = (self.at(0.50), self.at(0.99), self.at(0.999));
        format!("p50 {p50:.1} us, p99 {p99:.1} us, p99.9 {p999:.1} us")
    }

    /// Every sample of `runs` together.
    fn pooled(runs: &[Latencies]) -> Latencies {
        let mut all: Vec<u64> = runs.iter().flat_map(|r| r.0.iter().copied()).collect();
        all.sort_unstable();
        Latencies(all)
    }
}

/// `n` clients connecting at once from `threads` threads, each subscribing to a channel:
/// seconds until every one is subscribed. Connections the acceptor has not taken wait
/// in the listen backlog; past it the kernel drops SYNs and those clients retry a
/// second or more later.
fn storm(target: &Target, n: usize, threads: usize) -> f64 {
    let ch = format!("storm{}", target.pid);
    target.create(&ch);
    let (hello, subscribed) = target.subscribe_at_once(&ch);
    let addr = target.addr;
    let go = Arc::new(Barrier::new(threads + 1));
    let each = n / threads;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (go, hello) = (go.clone(), hello.clone());
            thread::spawn(move || {
                go.wait();
                let mut conns = Vec::with_capacity(each);
                for _ in 0..each {
                    match TcpStream::connect(addr) {
                        Ok(mut s) => {
                            let _ = s.write_all(hello.as_bytes());
                            conns.push(s);
                        }
                        Err(e) => eprintln!("connect failed: {e}"),
                    }
                }
                let ok = conns
                    .iter()
                    .filter(|s| await_reply(s, subscribed, Duration::from_secs(60)))
                    .count();
                (ok, conns)
            })
        })
        .collect();
    let started = Instant::now();
    go.wait();
    let mut ok = 0;
    let mut held = Vec::new();
    for w in workers {
        let (k, conns) = w.join().unwrap();
        ok += k;
        held.push(conns);
    }
    let secs = started.elapsed().as_secs_f64();
    if ok < threads * each {
        println!("  only {ok} of {} subscribed", threads * each);
    }
    secs
}

/// Reads from `s` until what arrived holds `marker` (true), or it closes or `wait`
/// passes (false).
fn await_reply(mut s: &TcpStream, marker: &str, wait: Duration) -> bool {
    let _ = s.set_read_timeout(Some(wait));
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    // Bounded: replies here are a few hundred bytes.
    while seen.len() < 1 << 16 {
        if String::from_utf8_lossy(&seen).contains(marker) {
            return true;
        }
        match s.read(&mut buf) {
            Ok(k) if k > 0 => seen.extend_from_slice(&buf[..k]),
            _ => return false,
        }
    }
    false
}

/// Server memory per idle connection subscribed to a channel, at `n` connections.
fn memory_per_connection(target: &Target, n: usize) -> (f64, usize) {
    let ch = format!("idle{}", target.pid);
    target.create(&ch);
    let (hello, subscribed) = target.subscribe_at_once(&ch);
    thread::sleep(Duration::from_millis(300));
    let before = target.rss_kib();
    // One descriptor per connection here (no try_clone): the bench process has the
    // same open-file limit as the server.
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(target.addr) else {
            break;
        };
        if s.write_all(hello.as_bytes()).is_err() {
            break;
        }
        conns.push(s);
    }
    let ok = conns
        .iter()
        .filter(|s| await_reply(s, subscribed, Duration::from_secs(30)))
        .count();
    thread::sleep(Duration::from_millis(500));
    let after = target.rss_kib();
    println!(
        "  {:?}: RSS {before} KiB before, {after} KiB with {ok} idle subscribed connections",
        target.proto
    );
    let per = (after.saturating_sub(before)) as f64 / ok.max(1) as f64;
    (per, ok)
}

/// The peers that started, as targets.
fn peer_targets(
    nats: &Option<common::peers::Peer>,
    redis: &Option<common::peers::Peer>,
) -> Vec<(&'static str, Target)> {
    [("nats", nats, Proto::Nats), ("redis", redis, Proto::Redis)]
        .into_iter()
        .filter_map(|(who, peer, proto)| {
            let p = peer.as_ref()?;
            Some((
                who,
                Target {
                    proto,
                    addr: p.addr,
                    pid: p.child.id(),
                    create_with: "",
                },
            ))
        })
        .collect()
}

/// Runs of each throughput figure (`quick`: one; `LEVIATHAN_ROUNDS=N`: N).
const ROUNDS: usize = 3;

/// Runs of the latency figure: its tail varies most from run to run on a shared machine.
const LATENCY_ROUNDS: usize = 5;

/// `default` runs, or `LEVIATHAN_ROUNDS` when set, or one when `quick`.
fn rounds(quick: bool, default: usize) -> usize {
    let asked = std::env::var("LEVIATHAN_ROUNDS").ok();
    match asked.and_then(|v| v.parse::<usize>().ok()) {
        Some(n) if n > 0 => n,
        _ if quick => 1,
        _ => default,
    }
}

/// The order `n` targets take their turns in round `round`: each round starts with
/// the next one, so none always runs first (on the coldest machine) or last.
fn turns(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
}

/// One-way latency at 20,000 msgs/s through each target, in rounds, each server
/// warmed by an unmeasured second first. The tail moves with whatever else this
/// machine runs, so p99 is given two ways: the median of the rounds' p99s, and the
/// p99 of every sample of every round; a plain relay process, measured in each round,
/// shows the floor.
fn latency_scenario(targets: &[(&str, Target)], quick: bool) {
    let secs = if quick { 1 } else { 5 };
    let rounds = rounds(quick, LATENCY_ROUNDS);
    for (_, target) in targets {
        let _ = latency(target, 20_000, 1);
    }
    let mut runs: Vec<Vec<Latencies>> = targets.iter().map(|_| Vec::new()).collect();
    let mut relay = Vec::new();
    for round in 0..rounds {
        for i in turns(targets.len(), round) {
            let (who, target) = &targets[i];
            let measured = latency(target, 20_000, secs);
            println!(
                "one-way latency at 20000 msgs/s:   {who:<10} {}",
                measured.line()
            );
            runs[i].push(measured);
        }
        let measured = baseline_latency(20_000, secs);
        println!(
            "  baseline (plain relay process):             {}",
            measured.line()
        );
        relay.push(measured);
    }
    let of_runs = |runs: &[Latencies], p: f64| median(runs.iter().map(|r| r.at(p)).collect());
    let p50s: Vec<f64> = runs.iter().map(|r| of_runs(r, 0.50)).collect();
    let p99s: Vec<f64> = runs.iter().map(|r| of_runs(r, 0.99)).collect();
    let pooled: Vec<Latencies> = runs.iter().map(|r| Latencies::pooled(r)).collect();
    if rounds > 1 {
        for (i, (who, _)) in targets.iter().enumerate() {
            println!(
                "  medians of {rounds}: {who:<10} p50 {:.1} us, p99 {:.1} us",
                p50s[i], p99s[i]
            );
        }
        let whos = targets.iter().map(|(who, _)| *who).chain(["relay"]);
        for (who, all) in whos.zip(pooled.iter().chain([&Latencies::pooled(&relay)])) {
            println!("  all {rounds} rounds: {who:<10} {}", all.line());
        }
    }
    let best = |v: &[f64]| v[1..].iter().cloned().reduce(f64::min);
    let pooled_p99s: Vec<f64> = pooled.iter().map(|l| l.at(0.99)).collect();
    if let (Some(b50), Some(b99), Some(a99)) = (best(&p50s), best(&p99s), best(&pooled_p99s)) {
        println!(
            "  leviathan / best peer: p50 {:.2}x, p99 {:.2}x (median of rounds), p99 {:.2}x (all samples) (lower is better)",
            p50s[0] / b50,
            p99s[0] / b99,
            pooled_p99s[0] / a99
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("relay") {
        return relay_main();
    }
    leviathan::server::raise_open_file_limit();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let quick = args.iter().any(|a| a == "quick");
    // Scenario names given on the command line select scenarios; none means all.
    let names = [
        "1to1", "fanout", "channels", "latency", "memory", "storm", "history", "cluster",
    ];
    let chosen: Vec<&str> = names
        .into_iter()
        .filter(|n| args.iter().any(|a| a == n))
        .collect();
    let run = |name: &str| chosen.is_empty() || chosen.contains(&name);
    let scale = if quick { 10 } else { 1 };
    println!(
        "leviathan pub/sub benchmark (16-byte messages, loopback, servermain in its own process)"
    );
    let extra: Vec<&str> = std::env::var("LEVIATHAN_BENCH_ARGS")
        .ok()
        .map(|s| s.leak().split_whitespace().collect())
        .unwrap_or_default();
    let server = Server::start(&extra);
    // The peers, measured by the same load generator in the same run (LEVIATHAN_PEERS=0
    // leaves them out, to compare builds of leviathan alone).
    let with_peers = std::env::var("LEVIATHAN_PEERS").map_or(true, |v| v != "0");
    let nats = with_peers.then(common::peers::nats).flatten();
    let redis = with_peers.then(common::peers::redis).flatten();
    let mut targets = vec![("leviathan", server.target())];
    targets.extend(peer_targets(&nats, &redis));
    let scenarios: [(&str, &str, usize, usize, u64); 3] = [
        ("1to1", "1 publisher -> 1 subscriber:", 1, 1, 4_000_000),
        ("fanout", "1 publisher -> 100 subscribers:", 1, 100, 200_000),
        (
            "channels",
            "50 publishers, 50 channels (1 sub each):",
            50,
            1,
            100_000,
        ),
    ];
    // Each figure is the median of `rounds` runs, the targets taking turns within a
    // round (and a different one going first each round): one run of any server swings
    // by 20% here with which core each connection lands on.
    let rounds = rounds(quick, ROUNDS);
    for (name, what, pubs, subs, per_pub) in scenarios {
        if !run(name) {
            continue;
        }
        let mut rates = vec![Vec::new(); targets.len()];
        for round in 0..rounds {
            for i in turns(targets.len(), round) {
                let (who, target) = &targets[i];
                let (rate, cpu) = fanout(target, pubs, subs, per_pub / scale);
                println!(
                    "{what:<42} {who:<10} {rate:>10.0} msgs/s delivered, server CPU {cpu:.3} us/msg"
                );
                rates[i].push(rate);
            }
        }
        let rates: Vec<f64> = rates.into_iter().map(median).collect();
        if rounds > 1 {
            for ((who, _), rate) in targets.iter().zip(&rates) {
                println!("  median of {rounds}: {who:<10} {rate:>10.0} msgs/s");
            }
        }
        if let Some(best) = rates[1..].iter().cloned().reduce(f64::max) {
            println!("  leviathan / best peer: {:.2}x", rates[0] / best);
        }
    }
    if run("latency") {
        latency_scenario(&targets, quick);
    }
    if run("history") {
        history::run(&server, quick);
    }
    if run("cluster") {
        cluster::run(&server, quick);
    }
    drop(targets);
    drop(server);
    if run("storm") {
        let n = if quick { 3_000 } else { 9_000 };
        let mut times = Vec::new();
        // The standard library's backlog of 128, which servermain used before it
        // listened with the system's maximum, measured in the same run.
        for (who, args) in [
            ("leviathan", &["--max-connections", "20000"][..]),
            (
                "leviathan --listen-backlog 128",
                &["--max-connections", "20000", "--listen-backlog", "128"][..],
            ),
        ] {
            let server = Server::start(args);
            let secs = storm(&server.target(), n, 90);
            println!("{n} clients connecting and subscribing at once: {who:<30} {secs:.2} s");
            times.push(secs);
        }
        for (who, target) in peer_targets(&nats, &redis) {
            let secs = storm(&target, n, 90);
            println!("{n} clients connecting and subscribing at once: {who:<30} {secs:.2} s");
            times.push(secs);
        }
        if let Some(best) = times[2..].iter().cloned().reduce(f64::min) {
            println!(
                "  leviathan / best peer: {:.2}x (lower is better)",
                times[0] / best
            );
        }
    }
    if run("memory") {
        let n = if quick { 2_000 } else { 10_000 };
        let server = Server::start(&["--max-connections", "20000"]);
        let mut kib = Vec::new();
        let mut all = vec![("leviathan", server.target())];
        // Fresh peers: memory the earlier scenarios left them (Go's heap keeps what it
        // grew to) would hide what the connections take.
        drop((nats, redis));
        let nats = with_peers.then(common::peers::nats).flatten();
        let redis = with_peers.then(common::peers::redis).flatten();
        all.extend(peer_targets(&nats, &redis));
        for (who, target) in &all {
            let (per, got) = memory_per_connection(target, n);
            println!(
                "memory per idle subscribed connection: {who:<10} {per:.1} KiB (at {got} connections)"
            );
            kib.push(per);
        }
        if let Some(best) = kib[1..].iter().cloned().reduce(f64::min) {
            println!(
                "  leviathan / best peer: {:.2}x (lower is better)",
                kib[0] / best
            );
        }
    }
}
