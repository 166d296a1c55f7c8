//! Long scans never freeze other connections: `COUNT … WHERE` and `SELECT` over a big
//! table go in chunks, yielding between them, and a `SELECT` streams as its client reads.

mod common;
use std::time::{Duration, Instant};

use common::{start_with, Client};
use leviathan::Config;

/// Fills `t` with `n` rows through pipelined inserts.
pub fn fill(c: &mut Client, n: usize, payload: &str) {
    c.ok("DEFINE t v:int s:str");
    c.pipelined((0..n).map(|i| format!("INSERT t v={i} s={payload}")), 1000);
}

#[test]
fn pipelined_scans_leave_a_canary_on_the_same_worker_responsive() {
    let server = start_with(Config {
        workers: 1,
        ..Config::default()
    });
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    fill(&mut c, 100_000, "x");

    let mut canary = Client::connect(addr);
    assert_eq!(canary.ok("PING"), "+PONG");
    // 200 full scans, pipelined, and a whole-table SELECT whose reply nobody reads yet.
    let mut scans = String::new();
    for _ in 0..200 {
        scans.push_str("COUNT t WHERE v > 5\n");
    }
    scans.push_str("SELECT t ORDER BY v DESC\n");
    c.send_raw(scans.as_bytes());

    let mut worst = Duration::ZERO;
    let started = Instant::now();
    // Bounded: 300 pings, 10 ms apart.
    for i in 0..300 {
        let t = Instant::now();
        assert_eq!(canary.ok(&format!("PING {i}")), format!("+PONG {i}"));
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "canary: worst PING {worst:?} over {:?} of scans",
        started.elapsed()
    );
    assert!(
        worst < Duration::from_millis(500),
        "worst PING took {worst:?}"
    );

    // The scans all answered, in order, with the right figures.
    for _ in 0..200 {
        assert_eq!(c.line(), "+OK 99994");
    }
    let first = c.line();
    assert!(first.starts_with("* id=100000 v=99999 "), "{first}");
    let mut rows = 1;
    loop {
        let l = c.line();
        if let Some(n) = l.strip_prefix("+OK ") {
            assert_eq!(n, "100000");
            break;
        }
        rows += 1;
    }
    assert_eq!(rows, 100_000);
    assert_eq!(c.ok("PING after"), "+PONG after");
}

#[test]
fn select_replies_keep_their_shape_and_order_with_offset_and_limit() {
    let server = start_with(Config::default());
    let mut c = Client::connect(server.local_addr());
    fill(&mut c, 10_000, "y");
    let (rows, _) = c.request("SELECT t WHERE v >= 100 LIMIT 3 OFFSET 5000");
    assert_eq!(
        rows,
        vec![
            "* id=5101 v=5100 s=y",
            "* id=5102 v=5101 s=y",
            "* id=5103 v=5102 s=y",
            "+OK 3"
        ]
    );
    let (rows, _) = c.request("SELECT t ORDER BY v DESC LIMIT 2 OFFSET 1");
    assert_eq!(
        rows,
        vec!["* id=9999 v=9998 s=y", "* id=9998 v=9997 s=y", "+OK 2"]
    );
    let r = c.json(serde_json::json!({"op":"select","table":"t","where":"v < 2","id":7}));
    assert_eq!(
        r,
        serde_json::json!({"ok":true,"id":7,"rows":[{"id":1,"v":0,"s":"y"},{"id":2,"v":1,"s":"y"}],"count":2})
    );
    // A request after a streamed reply waits its turn.
    c.send("SELECT t\nPING next");
    let mut n = 0;
    loop {
        let l = c.line();
        if l.starts_with("+OK") {
            break;
        }
        n += 1;
    }
    assert_eq!(n, 10_000);
    assert_eq!(c.line(), "+PONG next");
}
