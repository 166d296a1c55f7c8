//! The servers leviathan is measured against, started by the benches in the same run:
//! Debian's `nats-server` and `redis-server` on free loopback ports, each killed when
//! dropped. A missing one is reported (with how to install it) and skipped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A peer server process.
pub struct Peer {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Option<u16> {
    Some(
        TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port(),
    )
}

/// Starts `program args…` (with the port put where `{port}` is) and waits until it
/// accepts connections.
fn start(program: &str, args: &[&str], install: &str) -> Option<Peer> {
    let port = free_port()?;
    let p = port.to_string();
    let args: Vec<String> = args.iter().map(|a| a.replace("{port}", &p)).collect();
    let child = match Command::new(program)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => {
            println!("({program} is not on PATH: no same-run baseline from it; {install})");
            return None;
        }
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let peer = Peer { child, addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            println!("({program} did not start listening within 10 s)");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(peer)
}

/// `nats-server` on a free port.
pub fn nats() -> Option<Peer> {
    start(
        "nats-server",
        &["-a", "127.0.0.1", "-p", "{port}"],
        "apt-get install nats-server",
    )
}

/// `redis-server` on a free port, without persistence.
pub fn redis() -> Option<Peer> {
    start(
        "redis-server",
        &[
            "--bind",
            "127.0.0.1",
            "--port",
            "{port}",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        "apt-get install redis-server",
    )
}
