//! What an action call costs: `CALL` of an action that returns its payload, against
//! `PING` on the same server in the same run (the dispatch overhead as a ratio), and
//! against the same round trip done with `PUB` to a channel the client subscribes to.
//!
//! `cargo bench --bench calls` runs each for 5 s; `cargo bench --bench calls -- 2` for
//! 2 s. The server is this bench's own binary run as an app (`--serve`), in a process
//! of its own. 50 clients pipeline 64 requests at a time. Every loop is bounded in
//! count and time; nothing asserts on time.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use leviathan::framework::{ActionError, Answer, Ctx};

// As servermain: messages are allocated on one thread and freed on another.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENTS: usize = 50;
const PIPELINE: usize = 64;
const PAYLOAD: &str = "0123456789abcdef";

fn serve() {
    let app = leviathan::App::new()
        .config(leviathan::Config {
            data_dir: None,
            ..leviathan::Config::default()
        })
        .action(
            "echo",
            "answers with its payload",
            |_ctx: &mut Ctx, v: serde_json::Value| -> Result<Answer, ActionError> {
                Ok(Answer::new(v))
            },
        );
    std::process::exit(match app.run("127.0.0.1", 0) {
        std::process::ExitCode::SUCCESS => 0,
        _ => 1,
    });
}

/// Runs `line(i)` pipelined from every client for `secs`; each request is answered
/// by `lines_per` lines. Returns requests answered per second.
fn measure(addr: SocketAddr, secs: u64, setup: &str, line: &str, lines_per: usize) -> f64 {
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            let setup = setup.replace("{i}", &i.to_string());
            let line = line.replace("{i}", &i.to_string());
            thread::spawn(move || {
                let s = TcpStream::connect(addr).expect("connect");
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut buf = String::new();
                w.write_all(format!("{setup}\n").as_bytes()).unwrap();
                // The greeting, then a reply per setup line.
                for _ in 0..1 + setup.lines().count() {
                    buf.clear();
                    r.read_line(&mut buf).unwrap();
                }
                let batch: String = (0..PIPELINE).map(|_| format!("{line}\n")).collect();
                barrier.wait();
                let started = Instant::now();
                let mut done = 0u64;
                // Bounded in time and in count.
                while started.elapsed() < Duration::from_secs(secs) && done < 100_000_000 {
                    w.write_all(batch.as_bytes()).unwrap();
                    for _ in 0..PIPELINE * lines_per {
                        buf.clear();
                        r.read_line(&mut buf).unwrap();
                    }
                    done += PIPELINE as u64;
                }
                (done, started.elapsed())
            })
        })
        .collect();
    barrier.wait();
    let mut total = 0;
    let mut longest = Duration::ZERO;
    for h in handles {
        let (n, t) = h.join().unwrap();
        total += n;
        longest = longest.max(t);
    }
    total as f64 / longest.as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--serve") {
        return serve();
    }
    let secs = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .env("RUST_LOG", "warn,leviathan::app=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the bench app");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = common::listening_addr(&mut lines, |_| {});
    thread::spawn(move || lines.for_each(drop));
    println!("calls: {CLIENTS} clients, {PIPELINE} pipelined, {secs} s each, server {addr}");
    let ping = measure(addr, secs, "PING", &format!("PING {PAYLOAD}"), 1);
    println!("PING                     {ping:>12.0} /s");
    let call = measure(addr, secs, "PING", &format!("CALL echo {PAYLOAD}"), 1);
    println!(
        "CALL echo                {call:>12.0} /s   {:.2}x PING",
        call / ping
    );
    let pubsub = measure(
        addr,
        secs,
        "CREATE bench.{i}\nSUB bench.{i}",
        &format!("PUB bench.{{i}} {PAYLOAD}"),
        2,
    );
    println!(
        "PUB to own channel + MSG {pubsub:>12.0} /s   CALL is {:.2}x of it",
        call / pubsub
    );
    let _ = child.kill();
    let _ = child.wait();
}
