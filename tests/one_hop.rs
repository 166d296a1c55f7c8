//! Publishing in one hop (the publishing connection delivers to the subscribers'
//! outboxes itself) keeps every guarantee of PUB/SUB under concurrency: a `+OK` to
//! `SUB` means the next `PUB` from anyone reaches you, `UNSUB`'s `+OK` means nothing
//! more arrives, each publisher's messages arrive in order and without gaps, a
//! connection subscribed several ways gets a message once, and `PUB`'s count is exact.

mod common;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Client;

const PUBLISHERS: usize = 4;

/// Publishers that publish numbered messages to `c` in small pipelined batches, and a
/// marker `mark-<k>-<epoch>` each time the subscriber announces a new epoch.
struct Publishers {
    stop: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
    /// The epoch each publisher has published its marker for (after its `+OK`).
    marked: Arc<Vec<AtomicU64>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Publishers {
    fn start(addr: std::net::SocketAddr) -> Publishers {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicU64::new(0));
        let marked = Arc::new(
            (0..PUBLISHERS)
                .map(|_| AtomicU64::new(0))
                .collect::<Vec<_>>(),
        );
        let threads = (0..PUBLISHERS)
            .map(|k| {
                let (stop, epoch, marked) = (stop.clone(), epoch.clone(), marked.clone());
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    c.ok(&format!("NAME pub{k}"));
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut seq = 0u64;
                    for _ in 0..1_000_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            return;
                        }
                        let e = epoch.load(Ordering::SeqCst);
                        if e != marked[k].load(Ordering::SeqCst) {
                            assert!(c.ok(&format!("PUB c mark-{k}-{e}")).starts_with("+OK"));
                            marked[k].store(e, Ordering::SeqCst);
                        }
                        let batch: String = (0..10)
                            .map(|_| {
                                seq += 1;
                                format!("PUB c {k} {seq}\n")
                            })
                            .collect();
                        c.send_raw(batch.as_bytes());
                        for _ in 0..10 {
                            let l = c.line();
                            assert!(l.starts_with("+OK "), "{l}");
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        Publishers {
            stop,
            epoch,
            marked,
            threads,
        }
    }

    /// Announces `e` and waits (bounded) until every publisher has published its marker.
    fn announce(&self, e: u64) {
        self.epoch.store(e, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.marked.iter().any(|m| m.load(Ordering::SeqCst) != e) {
            assert!(
                Instant::now() < deadline,
                "publishers did not mark epoch {e}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a publisher failed");
        }
    }
}

#[test]
fn sub_and_unsub_hold_while_many_publish() {
    let s = common::start();
    let addr = s.local_addr();
    let mut admin = Client::connect(addr);
    admin.ok("CREATE c");
    let publishers = Publishers::start(addr);
    let mut sub = Client::connect(addr);
    for cycle in 0..15u64 {
        assert_eq!(sub.ok("SUB c"), "+OK");
        // Every PUB that starts after this +OK reaches us: the markers of this epoch.
        let e = cycle * 2 + 1;
        publishers.epoch.store(e, Ordering::SeqCst);
        let mut last: [Option<u64>; PUBLISHERS] = [None; PUBLISHERS];
        let mut marks = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while marks < PUBLISHERS {
            assert!(Instant::now() < deadline, "markers of epoch {e} missing");
            let l = sub.line();
            let rest = l.strip_prefix("MSG c pub").unwrap_or_else(|| panic!("{l}"));
            let (k, data) = rest.split_once(' ').unwrap();
            let k: usize = k.parse().unwrap();
            if let Some(m) = data.strip_prefix("mark-") {
                if m == format!("{k}-{e}") {
                    marks += 1;
                }
                continue;
            }
            let (dk, n) = data.split_once(' ').unwrap();
            assert_eq!(dk, k.to_string(), "{l}");
            let n: u64 = n.parse().unwrap();
            // In order and without gaps, per publisher.
            if let Some(prev) = last[k] {
                assert_eq!(n, prev + 1, "publisher {k}: {prev} then {n}");
            }
            last[k] = Some(n);
        }
        // Nothing arrives after UNSUB's +OK, whatever the publishers do next.
        sub.send("UNSUB c");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "no +OK to UNSUB");
            let l = sub.line();
            if l == "+OK" {
                break;
            }
            assert!(l.starts_with("MSG c "), "{l}");
        }
        publishers.announce(cycle * 2 + 2);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            sub.ok("PING after"),
            "+PONG after",
            "a message arrived after UNSUB's +OK"
        );
    }
    publishers.finish();
}

#[test]
fn a_message_arrives_once_however_it_is_subscribed_and_pub_counts_receivers() {
    let s = common::start();
    let addr = s.local_addr();
    let mut admin = Client::connect(addr);
    admin.ok("CREATE news.eu");
    let mut both = Client::connect(addr);
    both.ok("SUB news.eu");
    both.ok("SUB news.>");
    both.ok("SUB news.*");
    let mut others: Vec<Client> = (0..20).map(|_| Client::connect(addr)).collect();
    for o in &mut others {
        o.ok("SUB news.>");
    }
    // Publishers racing each other: every PUB counts the same 21 receivers.
    let racers: Vec<_> = (0..4)
        .map(|k| {
            std::thread::spawn(move || {
                let mut p = Client::connect(addr);
                for i in 0..25 {
                    assert_eq!(p.ok(&format!("PUB news.eu {k}-{i}")), "+OK 21");
                }
            })
        })
        .collect();
    for r in racers {
        r.join().unwrap();
    }
    let mut got = std::collections::HashSet::new();
    for _ in 0..100 {
        let l = both.line();
        assert!(got.insert(l.clone()), "delivered twice: {l}");
    }
    assert_eq!(both.ok("PING"), "+PONG", "more than one copy of a message");
    for o in &mut others {
        for _ in 0..100 {
            assert!(o.line().starts_with("MSG news.eu "));
        }
    }
}

/// An idle subscriber's socket is written by the publishers themselves; when it fills
/// (the client stops reading), what it did not take is queued and written by the
/// connection once it can: every message arrives whole and in order, from two
/// publishers at once, text and JSON subscribers alike.
#[test]
fn messages_written_to_an_idle_subscribers_socket_arrive_whole_and_in_order() {
    use std::io::{BufRead, BufReader, Write};
    let server = common::start();
    let addr = server.local_addr();
    let mut admin = Client::connect(addr);
    admin.ok("CREATE bulk");
    let mut text = Client::connect(addr);
    text.ok("SUB bulk");
    let mut json = Client::connect(addr);
    json.ok("FORMAT json");
    json.ok("SUB bulk");
    // Both go idle (lending their sockets) and do not read for a while.
    std::thread::sleep(Duration::from_millis(100));
    let per_publisher = 3000;
    let pad = "x".repeat(900);
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let pad = pad.clone();
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                let mut batch = String::new();
                for i in 0..per_publisher {
                    batch.push_str(&format!("PUB bulk p{p}-{i} {pad}\n"));
                    if i % 100 == 99 {
                        s.write_all(batch.as_bytes()).unwrap();
                        batch.clear();
                    }
                }
                // Read the replies, so this publisher is never the slow one.
                let mut r = BufReader::new(s);
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                assert!(line.starts_with("HELLO"), "{line}");
                for _ in 0..per_publisher {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    assert!(line.starts_with("+OK"), "{line}");
                }
            })
        })
        .collect();
    // The subscribers' sockets fill meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    let check = |lines: Vec<String>, json: bool| {
        let mut next = [0usize; 2];
        for line in lines {
            let data = if json {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                v["data"].as_str().unwrap().to_string()
            } else {
                line.splitn(4, ' ').nth(3).unwrap().to_string()
            };
            let (tag, rest) = data.split_once(' ').unwrap();
            assert_eq!(rest, pad, "a whole message");
            let (p, i) = tag.trim_start_matches('p').split_once('-').unwrap();
            let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[p], "publisher {p}'s messages in order");
            next[p] += 1;
        }
        assert_eq!(next, [per_publisher; 2]);
    };
    let read_all =
        |c: &mut Client| -> Vec<String> { (0..2 * per_publisher).map(|_| c.push()).collect() };
    let t = read_all(&mut text);
    check(t, false);
    let j = read_all(&mut json);
    check(j, true);
    for p in publishers {
        p.join().unwrap();
    }
}
