//! The HTTP side under load, against the real `servermain` in its own process:
//! `GET /metrics` and `POST /api/publish` requests per second (keep-alive connections,
//! one request at a time each), and what scraping `/metrics` every 100 ms costs the
//! 1 → 1 pub/sub figure (with and without a scraper, interleaved, medians of 3), and
//! files: `PUT` and `GET /files/…` of 256 MiB against what the same bytes cost through
//! a plain loopback socket and written to the same disk with an fsync, in the same run.
//!
//! `cargo bench --bench http [-- quick]`. Every loop is bounded in count and time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

mod common;

/// One keep-alive HTTP connection.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// Sends a request and reads its response; returns the status.
    fn request(&mut self, head: &str, body: &[u8]) -> u16 {
        self.w.write_all(head.as_bytes()).unwrap();
        self.w.write_all(body).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut len = 0;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if line.trim_end().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).unwrap();
        status
    }
}

/// Requests per second from `conns` connections sending `head`+`body` for `secs`.
fn rate(addr: SocketAddr, conns: usize, secs: f64, head: String, body: Vec<u8>) -> f64 {
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (head, body, done) = (head.clone(), body.clone(), done.clone());
            thread::spawn(move || {
                let mut c = Conn::open(addr);
                while Instant::now() < stop {
                    assert_eq!(c.request(&head, &body), 200);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    for w in workers {
        w.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn command(r: &mut BufReader<TcpStream>, w: &mut TcpStream, cmd: &str) -> String {
    w.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

/// Counts `n` lines (bounded by time); returns when they came.
fn count_lines(r: BufReader<TcpStream>, n: u64) -> Instant {
    let mut got = memchr::memchr_iter(b'\n', r.buffer()).count() as u64;
    let mut s = r.into_inner();
    let mut buf = vec![0u8; 1 << 18];
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < n && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += memchr::memchr_iter(b'\n', &buf[..k]).count() as u64,
        }
    }
    Instant::now()
}

/// 1 → 1 pub/sub, `n` 16-byte messages pipelined: messages per second.
fn one_to_one(addr: SocketAddr, ch: &str, n: u64) -> f64 {
    let (mut sr, mut sw) = common::line_client(addr);
    assert!(command(&mut sr, &mut sw, &format!("SUB {ch}")).starts_with("+OK"));
    let (pr, mut pw) = common::line_client(addr);
    let replies = thread::spawn(move || count_lines(pr, n));
    let sub = thread::spawn(move || count_lines(sr, n));
    let line = format!("PUB {ch} 0123456789abcdef\n");
    let batch = line.repeat(4096);
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        let k = 4096.min(n - sent) as usize;
        pw.write_all(&batch.as_bytes()[..k * line.len()]).unwrap();
        sent += k as u64;
    }
    let end = sub.join().unwrap();
    let _ = replies.join();
    drop(sw);
    n as f64 / end.duration_since(start).as_secs_f64()
}

/// MiB per second moving `bytes` through a plain loopback socket to a thread that
/// reads and drops them: what any transfer here costs at least.
fn raw_tcp(bytes: usize) -> f64 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let sink = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0;
        while got < bytes {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        Instant::now()
    });
    let block = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    for _ in 0..bytes >> 20 {
        s.write_all(&block).unwrap();
    }
    let end = sink.join().unwrap();
    mib(bytes) / end.duration_since(start).as_secs_f64()
}

/// MiB per second writing `bytes` to a file in `dir`, synced, as an upload does.
fn raw_disk(dir: &std::path::Path, bytes: usize) -> f64 {
    let block = vec![7u8; 1 << 20];
    let path = dir.join("raw-disk.bin");
    let start = Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    for _ in 0..bytes >> 20 {
        f.write_all(&block).unwrap();
    }
    f.sync_all().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    mib(bytes) / secs
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// `GRANT …` on a line connection: the token.
fn grant(addr: SocketAddr, line: &str) -> String {
    let (mut r, mut w) = common::line_client(addr);
    let reply = command(&mut r, &mut w, line);
    reply
        .trim_end()
        .strip_prefix("+OK ")
        .unwrap_or_else(|| panic!("{line}: {reply}"))
        .to_string()
}

/// Uploads and downloads `bytes` through a servermain with its data in a temporary
/// folder, three times each; prints the medians beside the plain socket and disk.
fn files(bytes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::Servermain::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--http-port",
            "0",
            "--auth",
            "off",
        ],
        &[],
    );
    let http = server.http.expect("servermain logs its HTTP port");
    let up = grant(server.addr, "GRANT put bench/");
    let down = grant(server.addr, "GRANT get bench/");
    let block = vec![7u8; 1 << 20];
    let (mut puts, mut gets, mut tcps, mut disks) = (vec![], vec![], vec![], vec![]);
    for round in 0..3 {
        tcps.push(raw_tcp(bytes));
        disks.push(raw_disk(dir.path(), bytes));
        let mut c = Conn::open(http);
        let head = format!(
            "PUT /files/bench/{round}.bin HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {up}\r\nContent-Length: {bytes}\r\n\r\n"
        );
        let start = Instant::now();
        c.w.write_all(head.as_bytes()).unwrap();
        for _ in 0..bytes >> 20 {
            c.w.write_all(&block).unwrap();
        }
        assert_eq!(c.request("", &[]), 201);
        puts.push(mib(bytes) / start.elapsed().as_secs_f64());
        let head =
            format!("GET /files/bench/{round}.bin?token={down} HTTP/1.1\r\nHost: {http}\r\n\r\n");
        let start = Instant::now();
        assert_eq!(c.request(&head, &[]), 200);
        gets.push(mib(bytes) / start.elapsed().as_secs_f64());
    }
    let (put, get, tcp, disk) = (median(puts), median(gets), median(tcps), median(disks));
    println!(
        "files, {} MiB (medians of 3): PUT {put:.0} MiB/s, GET {get:.0} MiB/s; plain loopback socket {tcp:.0} MiB/s, disk write+fsync {disk:.0} MiB/s",
        bytes >> 20
    );
    println!(
        "  PUT / min(socket, disk) = {:.2}x, GET / socket = {:.2}x",
        put / tcp.min(disk),
        get / tcp
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let secs = if quick { 1.0 } else { 5.0 };
    println!("leviathan HTTP benchmark (servermain in its own process, loopback)");
    let server = common::Servermain::start(&["--in-memory", "--http-port", "0"], &[]);
    let http = server.http.expect("servermain logs its HTTP port");
    let get_metrics = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\n\r\n");
    for conns in [1, 8] {
        let r = rate(http, conns, secs, get_metrics.clone(), Vec::new());
        println!("GET /metrics, {conns} connection(s):        {r:>9.0} requests/s");
    }
    let (mut r, mut w) = common::line_client(server.addr);
    assert!(command(&mut r, &mut w, "CREATE bench").starts_with("+OK"));
    // A subscriber that reads everything, so nobody is a slow consumer.
    let (mut sr, mut sw) = common::line_client(server.addr);
    assert!(command(&mut sr, &mut sw, "SUB bench").starts_with("+OK"));
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let reading = reading.clone();
        thread::spawn(move || {
            let mut s = sr.into_inner();
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = vec![0u8; 1 << 16];
            let deadline = Instant::now() + Duration::from_secs(120);
            while reading.load(Ordering::Relaxed) && Instant::now() < deadline {
                let _ = s.read(&mut buf);
            }
        })
    };
    let body = br#"{"channel":"bench","data":"0123456789abcdef"}"#.to_vec();
    let post = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    for conns in [1, 8] {
        let r = rate(http, conns, secs, post.clone(), body.clone());
        println!("POST /api/publish, {conns} connection(s):  {r:>9.0} requests/s");
    }
    reading.store(false, Ordering::Relaxed);
    let _ = reader.join();
    drop(sw);
    // 1 → 1 with and without a scraper every 100 ms.
    let n = if quick { 300_000 } else { 2_000_000 };
    let (mut plain, mut scraped) = (Vec::new(), Vec::new());
    for round in 0..3 {
        assert!(command(&mut r, &mut w, &format!("CREATE p{round}")).starts_with("+OK"));
        assert!(command(&mut r, &mut w, &format!("CREATE s{round}")).starts_with("+OK"));
        let scraped_run = || {
            let scraping = Arc::new(AtomicBool::new(true));
            let scraper = {
                let (scraping, head) = (scraping.clone(), get_metrics.clone());
                thread::spawn(move || {
                    let mut c = Conn::open(http);
                    let mut scrapes = 0;
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while scraping.load(Ordering::Relaxed) && Instant::now() < deadline {
                        assert_eq!(c.request(&head, &[]), 200);
                        scrapes += 1;
                        thread::sleep(Duration::from_millis(100));
                    }
                    scrapes
                })
            };
            let rate = one_to_one(server.addr, &format!("s{round}"), n);
            scraping.store(false, Ordering::Relaxed);
            (rate, scraper.join().unwrap())
        };
        // Each first in turn: whichever runs first in a round runs on a colder server.
        let (alone, (with, scrapes)) = if round % 2 == 0 {
            let alone = one_to_one(server.addr, &format!("p{round}"), n);
            (alone, scraped_run())
        } else {
            let with = scraped_run();
            (one_to_one(server.addr, &format!("p{round}"), n), with)
        };
        plain.push(alone);
        scraped.push(with);
        println!(
            "1 -> 1 pub/sub: {:>9.0} msgs/s alone, {:>9.0} msgs/s while /metrics is scraped every 100 ms ({scrapes} scrapes)",
            plain[round], scraped[round]
        );
    }
    let (p, s) = (median(plain), median(scraped));
    println!(
        "  scraped / alone (medians of 3): {:.3}x ({:+.1}%)",
        s / p,
        (s / p - 1.0) * 100.0
    );
    drop(server);
    files(if quick { 64 << 20 } else { 256 << 20 });
}
