//! Services between clients with the client library: a provider process and a
//! requester process that keep working while either is restarted, or the server is.
//!
//! ```text
//! cargo run --release --bin servermain -- 127.0.0.1 7000 &
//! cargo run --example services -- provider 127.0.0.1:7000 &
//! cargo run --example services -- requester 127.0.0.1:7000 --count 20
//! ```
//!
//! The provider offers `clock` (answers with the time and its process id) and `upper`;
//! the requester asks `clock` once a second and prints each answer, or the error
//! (`no_responders` while no provider runs), then goes on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leviathan::client::{Client, ClientError, Options, ServiceError};
use serde_json::{json, Value};

fn connect(addr: &str) -> Client {
    let opts = Options {
        timeout: Duration::from_secs(5),
        ..Options::default()
    };
    loop {
        match Client::connect_with(addr, opts.clone()) {
            Ok(c) => return c,
            Err(e) => {
                eprintln!("cannot connect to {addr} ({e}); trying again");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

fn provider(addr: &str, seconds: u64) {
    let c = connect(addr);
    let pid = std::process::id();
    let served = c.serve("clock", move |_| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(json!({"unix": now, "provider": pid}))
    });
    let upper = c.serve("upper", |v: Value| match v.as_str() {
        Some(s) => Ok(json!(s.to_uppercase())),
        None => Err(ServiceError::new("not_text", "send a string")),
    });
    if let Err(e) = served.and(upper) {
        eprintln!("cannot serve: {e}");
        std::process::exit(1);
    }
    println!("provider {pid} serving clock and upper on {addr}");
    // The library answers on threads of its own, and offers the services again after
    // a reconnect; this thread only waits.
    std::thread::sleep(Duration::from_secs(seconds));
}

fn requester(addr: &str, count: u64) {
    let c = connect(addr);
    for i in 0..count {
        match c.request_service("clock", &json!({}), Duration::from_secs(2)) {
            Ok(v) => println!("{i} answer {v}"),
            Err(ClientError::Server { code, .. }) => println!("{i} error {code}"),
            Err(e) => println!("{i} error {e}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |flag: &str, default: u64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("provider"), Some(addr)) => provider(addr, number("--seconds", 3600)),
        (Some("requester"), Some(addr)) => requester(addr, number("--count", 10)),
        _ => {
            eprintln!("usage: services provider HOST:PORT [--seconds N] | services requester HOST:PORT [--count N]");
            std::process::exit(2);
        }
    }
}
