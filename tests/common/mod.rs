//! Helpers for integration tests: an in-process server on 127.0.0.1:0 and a line
//! client with bounded waits.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use leviathan::{Config, Server, ServerHandle};

/// How long any single expected line may take to arrive.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn start() -> ServerHandle {
    start_with(Config::default())
}

pub fn start_with(config: Config) -> ServerHandle {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    Server::start(listener, config).expect("server starts")
}

/// The built example `name` (a plain `cargo test` builds the examples):
/// target/<profile>/deps/<this test> -> target/<profile>/examples/<name>.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

/// A test client speaking the line protocol.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
    /// The name from the greeting.
    pub name: String,
    /// Pushes read while waiting for a reply, handed out by `push()` first.
    pub seen_pushes: std::collections::VecDeque<String>,
}

impl Client {
    /// Connects and reads the greeting (sent once the client has been silent a moment).
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Client::connect_raw(addr);
        let hello = c.line();
        assert!(hello.starts_with("HELLO leviathan "), "greeting: {hello:?}");
        c.name = hello.rsplit(' ').next().unwrap_or_default().to_string();
        c
    }

    /// Connects without reading anything.
    pub fn connect_raw(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
            name: String::new(),
            seen_pushes: Default::default(),
        }
    }

    pub fn send(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// The next line, without its line ending; panics after `WAIT` or at EOF.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = match self.reader.read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("no line came in {WAIT:?}: {e}");
                show_server_threads();
                panic!("a line before the timeout: {e}");
            }
        };
        assert!(n > 0, "connection closed while waiting for a line");
        assert_eq!(buf.pop(), Some(b'\n'), "partial line {buf:?}");
        String::from_utf8(buf).expect("server sent UTF-8")
    }

    /// The next line, or None at EOF.
    pub fn line_or_eof(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => Some(
                String::from_utf8_lossy(&buf)
                    .trim_end_matches('\n')
                    .to_string(),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// The next line if one arrives within the socket's read timeout; `None` on EOF or
    /// timeout.
    pub fn line_or_eof_quick(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(
                String::from_utf8_lossy(&buf)
                    .trim_end_matches('\n')
                    .to_string(),
            ),
        }
    }

    /// Sends `lines` pipelined, `batch` at a time, and checks each is answered `+OK…`.
    pub fn pipelined(&mut self, lines: impl IntoIterator<Item = String>, batch: usize) {
        let mut lines = lines.into_iter().peekable();
        while lines.peek().is_some() {
            let chunk: Vec<String> = lines.by_ref().take(batch).collect();
            let text: String = chunk.iter().map(|l| format!("{l}\n")).collect();
            self.send_raw(text.as_bytes());
            for l in &chunk {
                let reply = self.line();
                assert!(reply.starts_with("+OK"), "{l}: {reply}");
            }
        }
    }

    /// Sends a command and returns its reply lines (items then the status line). Push
    /// lines arriving meanwhile are returned separately, and also kept for `push()`.
    pub fn request(&mut self, line: &str) -> (Vec<String>, Vec<String>) {
        self.send(line);
        self.reply()
    }

    /// Reads lines up to and including the next status line.
    pub fn reply(&mut self) -> (Vec<String>, Vec<String>) {
        let mut reply = Vec::new();
        let mut pushes = Vec::new();
        loop {
            let l = self.line();
            if l.starts_with('+') || l.starts_with('-') {
                reply.push(l);
                return (reply, pushes);
            } else if l.starts_with("* ") {
                reply.push(l);
            } else {
                self.seen_pushes.push_back(l.clone());
                pushes.push(l);
            }
        }
    }

    /// Sends a command whose reply is one status line, and returns it.
    pub fn ok(&mut self, line: &str) -> String {
        let (reply, _) = self.request(line);
        assert_eq!(reply.len(), 1, "{line}: {reply:?}");
        reply.into_iter().next().unwrap()
    }

    /// Sends a JSON request and returns the parsed reply (pushes kept for `push()`).
    pub fn json(&mut self, req: serde_json::Value) -> serde_json::Value {
        self.send(&req.to_string());
        loop {
            let l = self.line();
            let v: serde_json::Value = serde_json::from_str(&l).expect("JSON reply");
            if v.get("ok").is_some() {
                return v;
            }
            self.seen_pushes.push_back(l);
        }
    }

    /// The next push: one already seen while waiting for a reply, else the next push
    /// line to arrive.
    pub fn push(&mut self) -> String {
        if let Some(p) = self.seen_pushes.pop_front() {
            return p;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no push arrived");
            let l = self.line();
            if !(l.starts_with('+') || l.starts_with('-') || l.starts_with("* ")) {
                return l;
            }
        }
    }
}

/// Publishes 1 KB messages on `channel` in pipelined batches of 100 until `stats` counts
/// a slow consumer, at most `batches` batches; every publish must be acknowledged.
pub fn publish_until_cut(
    publisher: &mut Client,
    channel: &str,
    stats: &leviathan::server::Stats,
    batches: usize,
) {
    let payload = "p".repeat(1000);
    for chunk in 0..batches {
        if stats
            .slow_consumers
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            return;
        }
        let batch: String = (0..100)
            .map(|i| format!("PUB {channel} {payload} {}\n", chunk * 100 + i))
            .collect();
        publisher.send_raw(batch.as_bytes());
        for _ in 0..100 {
            assert!(publisher.line().starts_with("+OK"));
        }
    }
}

/// The server processes this test binary started that still run.
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Prints where each running server process's threads wait (with gdb, when installed),
/// so that a reply that never came leaves more in a CI log than the timeout.
pub fn show_server_threads() {
    // Once per process: a second gdb attaching to this process while the first is
    // attached would wait for good (several threads may time out together).
    static SHOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SHOWN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let mut pids = RUNNING.lock().map(|r| r.clone()).unwrap_or_default();
    // A server started in-process runs on this process's threads.
    pids.push(std::process::id());
    for pid in pids {
        // Bounded: gdb itself must not become the hang.
        let out = std::process::Command::new("timeout")
            .args([
                "-s",
                "KILL",
                "60",
                "gdb",
                "-p",
                &pid.to_string(),
                "-batch",
                "-ex",
                "thread apply all bt",
            ])
            .output();
        match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                // Each thread's name and its innermost frames, shortened.
                let frames: Vec<String> = text
                    .lines()
                    .filter(|l| {
                        l.starts_with("Thread ")
                            || (l.starts_with('#')
                                && l[1..].split(' ').next().and_then(|n| n.parse::<u32>().ok())
                                    < Some(12))
                    })
                    .map(|l| l.chars().take(200).collect())
                    .collect();
                eprintln!(
                    "--- server process {pid}, its threads when a reply was overdue ---\n{}",
                    frames.join("\n")
                );
            }
            Err(_) => eprintln!("(install gdb to see where server process {pid} waited)"),
        }
    }
}

/// The real `servermain` binary running in a child process.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Its log lines, as they arrive.
    pub log: std::sync::mpsc::Receiver<String>,
    /// What it logged before it listened.
    pub startup_log: Vec<String>,
}

impl ServerProcess {
    /// The HTTP port's address, from the start-up log (logged before the main port's).
    pub fn http_addr(&self) -> SocketAddr {
        self.startup_log
            .iter()
            .find_map(|l| {
                l.split("HTTP on http://")
                    .nth(1)?
                    .split('/')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no HTTP address logged: {:?}", self.startup_log))
    }

    /// Starts `servermain 127.0.0.1 0 <args>` in `dir`, waiting until it listens.
    /// `Err` holds its log when it exits instead.
    pub fn start(dir: &std::path::Path, args: &[&str]) -> Result<ServerProcess, String> {
        Self::start_as(dir, args, None)
    }

    /// As [`ServerProcess::start`], as the user `uid` when given (the test runs as root).
    pub fn start_as(
        dir: &std::path::Path,
        args: &[&str],
        uid: Option<u32>,
    ) -> Result<ServerProcess, String> {
        Self::start_logging(dir, args, uid, "info")
    }

    /// As [`ServerProcess::start_as`], with `RUST_LOG` set to `rust_log`.
    pub fn start_logging(
        dir: &std::path::Path,
        args: &[&str],
        uid: Option<u32>,
        rust_log: &str,
    ) -> Result<ServerProcess, String> {
        let program = std::path::Path::new(env!("CARGO_BIN_EXE_servermain"));
        Self::start_program(program, dir, args, uid, rust_log, &[])
    }

    /// Starts `program 127.0.0.1 0 <args>` (servermain, or an example app that runs
    /// like it) in `dir`, waiting until it listens.
    pub fn start_program(
        program: &std::path::Path,
        dir: &std::path::Path,
        args: &[&str],
        uid: Option<u32>,
        rust_log: &str,
        envs: &[(&str, &str)],
    ) -> Result<ServerProcess, String> {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(program);
        cmd.args(["127.0.0.1", "0"])
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", rust_log)
            .envs(envs.iter().copied())
            // Not the test's terminal: a server on a terminal reads operator commands.
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().expect("servermain starts");
        if let Ok(mut running) = RUNNING.lock() {
            running.push(child.id());
        }
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                        return Ok(ServerProcess {
                            child,
                            addr,
                            log: rx,
                            startup_log: seen,
                        });
                    }
                    seen.push(line);
                }
                Err(_) => {
                    if let Ok(Some(_)) = child.try_wait() {
                        seen.extend(rx.try_iter());
                        return Err(seen.join("\n"));
                    }
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{} neither listened nor exited: {seen:?}",
            program.display()
        );
    }

    /// Sends `sig` and waits (bounded) for the process to exit.
    pub fn signal_and_wait(mut self, sig: i32) -> (std::process::ExitStatus, Vec<String>) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (s, self.log.try_iter().collect());
            }
            assert!(Instant::now() < deadline, "servermain did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(mut running) = RUNNING.lock() {
            running.retain(|&p| p != self.child.id());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay between clients and a server that a test can cut, to make a client
/// lose its connection while the server goes on: [`Relay::cut`] closes every
/// connection through it and turns new ones away until [`Relay::open`].
pub struct Relay {
    pub addr: SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Relays connections to `to`, open.
    pub fn start(to: SocketAddr) -> Relay {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, s, c) = (open.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            // Until the relay is dropped, and at most ten minutes.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if !o.load(Ordering::Relaxed) {
                    continue; // dropped: turned away
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ];
                for (mut from, mut into) in pairs {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
                let mut c = c.lock().unwrap();
                c.push(client);
                c.push(server);
            }
        });
        Relay {
            addr,
            open,
            stop,
            conns,
        }
    }

    /// Closes every relayed connection and turns new ones away.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Relaxed);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.cut();
    }
}

/// An HTTP response as a test reads it.
pub struct HttpResponse {
    pub status: u16,
    /// Header lines, `Name: value`, as sent.
    pub headers: Vec<String>,
    pub body: String,
}

impl HttpResponse {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("a JSON body ({e}): {}", self.body))
    }
}

/// The value of metric `leviathan_<name>` (one without labels) on the `/metrics` page
/// of the HTTP port at `http`.
pub fn metric(http: SocketAddr, name: &str) -> f64 {
    let page = self::http(http, "GET", "/metrics", &[], "").body;
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("leviathan_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no leviathan_{name} in /metrics:\n{page}"))
}

/// Sends one HTTP/1.1 request (`extra` header lines, `body`) on a new connection and
/// reads one response by its Content-Length (bounded by the read timeout).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[&str],
    body: &str,
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP port");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let (status, headers, body) = read_http(&mut BufReader::new(s));
    HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).expect("a UTF-8 body"),
    }
}

/// Reads one HTTP response: its status, header lines and body (by its Content-Length).
pub fn read_http(r: &mut impl BufRead) -> (u16, Vec<String>, Vec<u8>) {
    let mut status_line = String::new();
    r.read_line(&mut status_line).expect("a status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("a status: {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("a header line");
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    let len: usize = find_header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    let mut body = vec![0u8; len];
    std::io::Read::read_exact(r, &mut body).expect("the whole body");
    (status, headers, body)
}

/// The value of header `name` (any case) among `Name: value` lines.
pub fn find_header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        let (n, v) = h.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
