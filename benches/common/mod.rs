//! What the load benchmarks share: the real `servermain` in a process of its own.
#![allow(dead_code)]

pub mod peers;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Reads a server's log until the line that says where it listens, and returns that
/// address; `seen` is shown every line before it.
pub fn listening_addr(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    mut seen: impl FnMut(&str),
) -> SocketAddr {
    loop {
        let line = lines.next().expect("server log").expect("log line");
        if let Some(rest) = line.split("listening on ").nth(1) {
            return rest.split_whitespace().next().unwrap().parse().unwrap();
        }
        seen(&line);
    }
}

/// A `servermain` child process, killed when dropped.
pub struct Servermain {
    pub child: Child,
    pub addr: SocketAddr,
    /// Its HTTP port, when it logged one.
    pub http: Option<SocketAddr>,
}

/// The address in a log line `HTTP on http://ADDR/ …`, if it is one.
pub fn http_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("HTTP on http://").nth(1)?;
    rest.split('/').next()?.parse().ok()
}

impl Servermain {
    /// Starts `servermain 127.0.0.1 0 <args>` with `envs`, and waits until it listens.
    /// `LEVIATHAN_SERVERMAIN=/path/to/servermain` runs another build instead (a previous
    /// one, to compare in the same session).
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Servermain {
        let program = std::env::var("LEVIATHAN_SERVERMAIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_servermain").to_string());
        let mut child = Command::new(program)
            .args(["127.0.0.1", "0"])
            .args(args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "warn,leviathan::app=info")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start servermain");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut http = None;
        let addr = listening_addr(&mut lines, |l| http = http.or(http_addr(l)));
        std::thread::spawn(move || lines.for_each(drop));
        Servermain { child, addr, http }
    }
}

impl Drop for Servermain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line connection that has passed the greeting (it speaks first, so the greeting
/// comes at once).
pub fn line_client(addr: SocketAddr) -> (BufReader<TcpStream>, TcpStream) {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::with_capacity(1 << 16, s);
    w.write_all(b"PING\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HELLO"), "{line}");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("+PONG"), "{line}");
    (r, w)
}
