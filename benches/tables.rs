//! Table benchmarks over loopback against the real `servermain` in its own process,
//! with a real data folder (fsync everysec, the default).
//!
//! `cargo bench --bench tables` prints inserts/s and point GETs/s for 50 clients
//! (pipelined 16 deep, and one request at a time), `SELECT ... WHERE` over 1,000,000
//! rows, snapshot and load time, and memory per row. `-- quick` uses 100,000 rows.
//! Every loop is bounded in count and time; nothing asserts on time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
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
            .env(
                "RUST_LOG",
                "warn,servermain=info,leviathan::app=info,leviathan::server=info",
            )
            .stderr(Stdio::piped())
            .spawn()
            .expect("start servermain");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = common::listening_addr(&mut lines, |line| {
            if line.contains("data:") {
                println!("  server: {}", line.split("] ").nth(1).unwrap_or(line));
            }
        });
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

/// A Redis server for a same-run baseline, when one is installed.
struct Redis {
    child: Child,
    addr: SocketAddr,
    version: String,
}

impl Redis {
    fn start(dir: &std::path::Path) -> Option<Redis> {
        let version = Command::new("redis-server")
            .arg("--version")
            .output()
            .ok()?;
        let version = String::from_utf8_lossy(&version.stdout)
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v=").map(str::to_string))
            .unwrap_or_default();
        // A free port: bind to 0, note it, release it (Redis cannot bind port 0).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let rdir = dir.join("redis");
        std::fs::create_dir_all(&rdir).ok()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(&rdir)
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let mut buf = [0u8; 64];
                if s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).unwrap_or(0) > 0 {
                    return Some(Redis {
                        child,
                        addr,
                        version,
                    });
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
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
    /// A plain connection to Redis (no greeting).
    fn redis(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        Conn {
            r: BufReader::with_capacity(1 << 16, s.try_clone().unwrap()),
            w: s,
        }
    }

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
}

/// `clients` connections each doing `per_client` requests made by `make`, `depth` at a
/// time, all driven from one thread with `poll(2)` the way redis-benchmark drives its
/// connections (50 blocking threads would measure this machine's scheduler instead of
/// the server on 2 cores). Returns requests per second.
fn load(
    addr: SocketAddr,
    clients: usize,
    per_client: usize,
    depth: usize,
    make: impl Fn(usize, usize) -> String,
) -> f64 {
    load_with(addr, clients, per_client, depth, make, b"+-", Conn::new)
}

/// `load` for any line protocol: a reply is a line starting with one of `firsts`.
/// Requests are built before the clock starts, so the client spends its time on I/O.
fn load_with(
    addr: SocketAddr,
    clients: usize,
    per_client: usize,
    depth: usize,
    make: impl Fn(usize, usize) -> String,
    firsts: &[u8],
    open: fn(SocketAddr) -> Conn,
) -> f64 {
    use std::os::unix::io::AsRawFd;
    struct Client {
        conn: Conn,
        /// Every request, and where each batch of `depth` ends in it.
        requests: Vec<u8>,
        batch_ends: Vec<usize>,
        next_batch: usize,
        done: usize,
        in_flight: usize,
        at_line_start: bool,
    }
    let mut cs: Vec<Client> = (0..clients)
        .map(|idx| {
            let mut requests = Vec::new();
            let mut batch_ends = Vec::new();
            for i in 0..per_client {
                requests.extend_from_slice(make(idx, i).as_bytes());
                requests.push(b'\n');
                if (i + 1) % depth == 0 || i + 1 == per_client {
                    batch_ends.push(requests.len());
                }
            }
            Client {
                conn: open(addr),
                requests,
                batch_ends,
                next_batch: 0,
                done: 0,
                in_flight: 0,
                at_line_start: true,
            }
        })
        .collect();
    let send = |c: &mut Client| {
        let from = if c.next_batch == 0 {
            0
        } else {
            c.batch_ends[c.next_batch - 1]
        };
        let to = c.batch_ends[c.next_batch];
        c.conn.w.write_all(&c.requests[from..to]).unwrap();
        c.in_flight = depth.min(per_client - c.next_batch * depth);
        c.next_batch += 1;
    };
    let start = Instant::now();
    for c in cs.iter_mut() {
        send(c);
    }
    let deadline = start + Duration::from_secs(60);
    let mut buf = vec![0u8; 1 << 16];
    let mut fds: Vec<libc::pollfd> = cs
        .iter()
        .map(|c| libc::pollfd {
            fd: c.conn.w.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while cs.iter().any(|c| c.done < per_client) && Instant::now() < deadline {
        // SAFETY: fds points to fds.len() valid pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if n <= 0 {
            continue;
        }
        for (i, c) in cs.iter_mut().enumerate() {
            if fds[i].revents & libc::POLLIN == 0 {
                continue;
            }
            let k = c.conn.r.get_mut().read(&mut buf).unwrap();
            assert!(k > 0, "server closed");
            let data = &buf[..k];
            // A reply starts where a line starts with one of `firsts`.
            if c.at_line_start && firsts.contains(&data[0]) {
                c.done += 1;
                c.in_flight -= 1;
            }
            for nl in memchr::memchr_iter(b'\n', data) {
                if let Some(b) = data.get(nl + 1) {
                    if firsts.contains(b) {
                        c.done += 1;
                        c.in_flight -= 1;
                    }
                }
            }
            c.at_line_start = data[k - 1] == b'\n';
            if c.in_flight == 0 && c.at_line_start && c.next_batch < c.batch_ends.len() {
                send(c);
            }
        }
    }
    let done: usize = cs.iter().map(|c| c.done).sum();
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

    if let Some(redis) = Redis::start(dir.path()) {
        let raddr = redis.addr;
        // Redis speaks RESP; its inline commands are plain lines, and each reply starts
        // with one of + - : $ (a bulk value's data line follows its $ header).
        let firsts = b"+-:$";
        let rset = load_with(
            raddr,
            50,
            per,
            16,
            |c, i| format!("SET k{c}x{i} val{c}x{i}"),
            firsts,
            Conn::redis,
        );
        let rget = load_with(
            raddr,
            50,
            per,
            16,
            |c, i| format!("GET k{c}x{}", (i * 7) % per),
            firsts,
            Conn::redis,
        );
        let rset1 = load_with(
            raddr,
            50,
            small,
            1,
            |c, i| format!("SET j{c}x{i} one{c}x{i}"),
            firsts,
            Conn::redis,
        );
        let rget1 = load_with(
            raddr,
            50,
            small,
            1,
            |c, i| format!("GET k{c}x{}", (i * 7) % per),
            firsts,
            Conn::redis,
        );
        println!(
            "same client against Redis {} (appendonly, fsync everysec):",
            redis.version
        );
        println!(
            "  SET pipelined 16: {rset:>10.0} /s   leviathan INSERT / Redis SET = {:.2}x",
            ins / rset
        );
        println!(
            "  GET pipelined 16: {rget:>10.0} /s   leviathan GET / Redis GET    = {:.2}x",
            get / rget
        );
        println!(
            "  SET unpipelined:  {rset1:>10.0} /s   leviathan / Redis = {:.2}x",
            ins1 / rset1
        );
        println!(
            "  GET unpipelined:  {rget1:>10.0} /s   leviathan / Redis = {:.2}x",
            get1 / rget1
        );
    } else {
        println!("(redis-server is not on PATH: no same-run Redis baseline; apt-get install redis-server)");
    }

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
