//! Services between clients over real sockets: SERVE, REQ, REPLY, FAIL, UNSERVE,
//! SERVICES in text and JSON; balancing; errors that come at once.

mod common;
use std::time::{Duration, Instant};

use common::{start_with, Client};
use leviathan::Config;
use serde_json::json;

fn server() -> leviathan::ServerHandle {
    start_with(Config {
        request_timeout: Duration::from_millis(500),
        max_pending_requests: 8,
        ..Config::default()
    })
}

/// The request id and payload of a `REQ` push.
fn req_push(p: &str, service: &str, from: &str) -> (String, String) {
    let rest = p
        .strip_prefix("REQ ")
        .unwrap_or_else(|| panic!("not a REQ: {p}"));
    let mut f = rest.splitn(4, ' ');
    let id = f.next().unwrap().to_string();
    assert_eq!(f.next(), Some(service), "{p}");
    assert_eq!(f.next(), Some(from), "{p}");
    (id, f.next().unwrap_or("").to_string())
}

/// A provider's loop: answers every `REQ` with `ok` until the connection ends or says
/// `BYE`; returns how many it answered.
fn answer_ok(p: &mut Client) -> i32 {
    let mut served = 0;
    while let Some(l) = p.line_or_eof() {
        if let Some(rest) = l.strip_prefix("REQ ") {
            let id = rest.split(' ').next().unwrap().to_string();
            p.send(&format!("REPLY {id} ok"));
            served += 1;
        } else if l.starts_with("BYE") {
            break;
        }
    }
    served
}

#[test]
fn a_request_reaches_a_provider_and_its_answer_comes_back() {
    let s = server();
    let mut provider = Client::connect(s.local_addr());
    let mut asker = Client::connect(s.local_addr());
    provider.ok("NAME weather-1");
    asker.ok("NAME ann");
    assert_eq!(provider.ok("SERVE weather"), "+OK");
    asker.send(r#"REQ weather {"city":"Oslo"}"#);
    let (id, data) = req_push(&provider.push(), "weather", "ann");
    assert_eq!(data, r#"{"city":"Oslo"}"#);
    assert_eq!(provider.ok(&format!("REPLY {id} sunny")), "+OK");
    assert_eq!(asker.line(), "+OK sunny");
    // FAIL passes the provider's code through.
    asker.send("REQ weather Atlantis");
    let (id, _) = req_push(&provider.push(), "weather", "ann");
    provider.ok(&format!("FAIL {id} no_city there is no such city"));
    assert_eq!(asker.line(), "-ERR no_city there is no such city");
    // Answering twice, or a request that does not exist.
    assert!(provider
        .ok(&format!("REPLY {id} late"))
        .starts_with("-ERR no_such_request "));
    assert!(provider
        .ok("FAIL 99 x")
        .starts_with("-ERR no_such_request "));
    let (items, _) = asker.request("SERVICES");
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(
        items[0].starts_with("* weather providers=1 pending=0 served=1 failed=1 latency_ms="),
        "{items:?}"
    );
    // JSON forms.
    let mut j = Client::connect(s.local_addr());
    j.send(&json!({"op":"req","service":"weather","data":{"city":"Rome"},"id":7}).to_string());
    provider.ok("PING");
    let (id, data) = req_push(&provider.push(), "weather", &j.name);
    assert_eq!(data, r#"{"city":"Rome"}"#);
    let r = provider.json(json!({"op":"reply","req": id,"data":{"temp":21}}));
    assert_eq!(r["ok"], true);
    let line: serde_json::Value = serde_json::from_str(&j.line()).unwrap();
    assert_eq!(line, json!({"ok":true,"id":7,"data":{"temp":21}}));
    assert_eq!(provider.ok("UNSERVE weather"), "+OK");
    assert!(provider
        .ok("UNSERVE weather")
        .starts_with("-ERR not_serving "));
}

#[test]
fn errors_come_at_once() {
    let s = server();
    let mut asker = Client::connect(s.local_addr());
    let e = asker.ok("REQ nobody hello");
    assert!(e.starts_with("-ERR no_responders "), "{e}");
    // The provider leaves while a request waits: service_gone, at once.
    let mut provider = Client::connect(s.local_addr());
    provider.ok("SERVE echo");
    asker.send("REQ echo hi");
    let _ = provider.push();
    let t = Instant::now();
    drop(provider);
    assert!(asker.line().starts_with("-ERR service_gone "));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // Nobody answers: timeout (500 ms here).
    let mut slow = Client::connect(s.local_addr());
    slow.ok("SERVE slow");
    let t = Instant::now();
    let e = asker.ok("REQ slow x");
    assert!(e.starts_with("-ERR timeout "), "{e}");
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    let r = asker.json(json!({"op":"req","service":"slow","timeout_ms":50}));
    assert_eq!(r["error"]["code"], "timeout");
    // Unserving fails what waits.
    asker.send("REQ slow y");
    // The request must be pending at the provider before it leaves (else it is
    // refused with no_responders): the provider sees it first.
    // (The requests that timed out above came first; bounded: three in all.)
    let seen: Vec<String> = (0..3).map(|_| slow.push()).collect();
    assert!(
        seen[2].starts_with("REQ ") && seen[2].ends_with(" y"),
        "{seen:?}"
    );
    slow.ok("UNSERVE slow");
    let l = asker.line();
    assert!(l.starts_with("-ERR service_gone "), "{l}");
}

#[test]
fn a_requester_that_leaves_cancels_its_requests() {
    let s = server();
    let mut provider = Client::connect(s.local_addr());
    provider.ok("SERVE job");
    let mut asker = Client::connect(s.local_addr());
    asker.send("REQ job 1");
    let p = provider.push();
    let id = p.split(' ').nth(1).unwrap().to_string();
    drop(asker);
    std::thread::sleep(Duration::from_millis(100));
    assert!(provider
        .ok(&format!("REPLY {id} done"))
        .starts_with("-ERR no_such_request "));
}

#[test]
fn requests_are_spread_over_providers_fairly() {
    let s = start_with(Config {
        max_pending_requests: 64,
        ..Config::default()
    });
    let addr = s.local_addr();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut p = Client::connect(addr);
                p.ok("SERVE work");
                answer_ok(&mut p)
            })
        })
        .collect();
    let mut asker = Client::connect(addr);
    // Until all three serve.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !asker.request("SERVICES").0[0].contains("providers=3") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..30 {
        let batch: String = (0..10).map(|_| "REQ work x\n").collect();
        asker.send_raw(batch.as_bytes());
        for _ in 0..10 {
            assert_eq!(asker.line(), "+OK ok");
        }
    }
    let mut s = s;
    s.shutdown();
    let served: Vec<i32> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(served.iter().sum::<i32>(), 300, "{served:?}");
    for n in &served {
        assert!(
            (80..=120).contains(n),
            "each gets its share within 20%: {served:?}"
        );
    }
}

#[test]
fn a_slow_request_holds_back_no_json_reply_with_an_id_and_text_keeps_order() {
    let s = server();
    let mut provider = Client::connect(s.local_addr());
    provider.ok("SERVE slow");
    let mut j = Client::connect(s.local_addr());
    j.send(&json!({"op":"req","service":"slow","data":1,"id":"a"}).to_string());
    j.send(&json!({"op":"ping","id":"b"}).to_string());
    let first: serde_json::Value = serde_json::from_str(&j.line()).unwrap();
    assert_eq!(
        first["id"], "b",
        "the ping is answered before the request: {first}"
    );
    let id = provider.push().split(' ').nth(1).unwrap().to_string();
    provider.ok(&format!("REPLY {id} late"));
    let second: serde_json::Value = serde_json::from_str(&j.line()).unwrap();
    assert_eq!(second, json!({"ok":true,"id":"a","data":"late"}));
    // A text client's replies stay in request order.
    let mut t = Client::connect(s.local_addr());
    t.send("REQ slow 2\nPING after");
    let id = provider.push().split(' ').nth(1).unwrap().to_string();
    provider.ok(&format!("REPLY {id} first"));
    assert_eq!(t.line(), "+OK first");
    assert_eq!(t.line(), "+PONG after");
    // Bounded: past --max-pending-requests, a clear error.
    let batch: String = (0..9).map(|_| "REQ slow x\n").collect();
    t.send_raw(batch.as_bytes());
    let mut lines = Vec::new();
    for _ in 0..9 {
        lines.push(t.line());
    }
    assert!(
        lines.iter().any(|l| l.starts_with("-ERR limit_reached ")),
        "{lines:?}"
    );
}

#[test]
fn the_client_library_serves_and_requests_across_a_server_restart() {
    use leviathan::client::{Client as Lib, ClientError, Options, ServiceError};
    let mut first = server();
    let addr = first.local_addr();
    let opts = || Options {
        timeout: Duration::from_secs(5),
        ..Options::default()
    };
    let provider = Lib::connect_with(&addr.to_string(), opts()).unwrap();
    provider
        .serve("upper", |v| match v.as_str() {
            Some(s) => Ok(json!(s.to_uppercase())),
            None => Err(ServiceError::new("not_text", "send a string")),
        })
        .unwrap();
    let requester = Lib::connect_with(&addr.to_string(), opts()).unwrap();
    let wait = Duration::from_secs(2);
    assert_eq!(
        requester.request_service("upper", "abc", wait).unwrap(),
        "ABC"
    );
    match requester.request_service("upper", &5, wait) {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, "not_text"),
        other => panic!("{other:?}"),
    }
    match requester.request_service("lower", "x", wait) {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, "no_responders"),
        other => panic!("{other:?}"),
    }
    // The server restarts under both: the provider offers its service again by itself.
    first.shutdown();
    let listener = std::net::TcpListener::bind(addr).expect("the port is free again");
    let _second = leviathan::Server::start(listener, Config::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match requester.request_service("upper", "again", wait) {
            Ok(v) => {
                assert_eq!(v, "AGAIN");
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "not back: {e:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn every_error_has_its_json_form() {
    let s = server();
    let mut j = Client::connect(s.local_addr());
    let r = j.json(json!({"op":"req","service":"nobody","id":1}));
    assert_eq!(r["error"]["code"], "no_responders", "{r}");
    assert_eq!(r["id"], 1);
    let r = j.json(json!({"op":"reply","req":42,"data":"x"}));
    assert_eq!(r["error"]["code"], "no_such_request", "{r}");
    let r = j.json(json!({"op":"fail","req":42,"code":"nope","message":"x"}));
    assert_eq!(r["error"]["code"], "no_such_request", "{r}");
    let r = j.json(json!({"op":"unserve","service":"nothing"}));
    assert_eq!(r["error"]["code"], "not_serving", "{r}");
    // A provider that leaves: service_gone, in JSON too.
    let mut provider = Client::connect(s.local_addr());
    provider.ok("SERVE echo");
    j.send(&json!({"op":"req","service":"echo","data":"hi","id":"g"}).to_string());
    let _ = provider.push();
    drop(provider);
    let r: serde_json::Value = serde_json::from_str(&j.line()).unwrap();
    assert_eq!(r["error"]["code"], "service_gone", "{r}");
    assert_eq!(r["id"], "g");
    // Past --max-pending-requests (8 here).
    let mut slow = Client::connect(s.local_addr());
    slow.ok("SERVE slow");
    for i in 0..9 {
        j.send(&json!({"op":"req","service":"slow","id":i}).to_string());
    }
    let r: serde_json::Value = serde_json::from_str(&j.line()).unwrap();
    assert_eq!(r["error"]["code"], "limit_reached", "{r}");
    assert_eq!(r["id"], 8);
    let r = j.json(json!({"op":"services"}));
    let services = r["services"].as_array().expect("a services list");
    let slow_row = services.iter().find(|x| x["service"] == "slow").unwrap();
    assert_eq!(slow_row["providers"], 1, "{r}");
    assert_eq!(slow_row["pending"], 8, "{r}");
}

/// A provider that stops reading holds back nobody: the other provider's answers come
/// while its requests wait (it gets fewer, holding the most pending), and once its
/// outbox overflows it is cut as a slow consumer like any subscriber, failing what it
/// held at once.
#[test]
fn a_provider_that_never_reads_stalls_no_other() {
    let s = start_with(Config {
        outbox_limit: 1 << 20,
        max_pending_requests: 4096,
        request_timeout: Duration::from_secs(20),
        ..Config::default()
    });
    let addr = s.local_addr();
    let mut stuck = Client::connect(addr);
    stuck.ok("SERVE work");
    let mut p = Client::connect(addr);
    p.ok("SERVE work");
    let good_socket = p.writer.try_clone().unwrap();
    let good = std::thread::spawn(move || answer_ok(&mut p));
    let mut asker = Client::connect(addr);
    // 200 JSON requests at once (shared in turn while both hold as many), then 50 more
    // while the stuck provider holds its share: every answer the good provider gives
    // arrives before the first of the stuck provider's requests times out.
    let batch = |ids: std::ops::Range<i32>| -> String {
        ids.map(|i| {
            json!({"op":"req","service":"work","data":"x","id":i,"timeout_ms":3000}).to_string()
                + "\n"
        })
        .collect()
    };
    asker.send_raw(batch(0..200).as_bytes());
    let (mut ok, mut timed_out) = (0, 0);
    let mut answer = |asker: &mut Client| {
        let r: serde_json::Value = serde_json::from_str(&asker.line()).unwrap();
        if r["ok"] == true {
            assert_eq!(timed_out, 0, "an answer came after a timeout: {r}");
            ok += 1;
        } else {
            assert_eq!(r["error"]["code"], "timeout", "{r}");
            timed_out += 1;
        }
    };
    for _ in 0..100 {
        answer(&mut asker);
    }
    asker.send_raw(batch(200..250).as_bytes());
    for _ in 0..150 {
        answer(&mut asker);
    }
    assert!(timed_out > 0, "the stuck provider got its share");
    assert!(ok >= 150, "the good provider served the rest: {ok} of 250");
    // The good provider leaves; 16 KiB requests pile up at the stuck one until it is
    // cut (the requester is paused meanwhile, a bounded time, as a publisher is).
    good_socket.shutdown(std::net::Shutdown::Both).unwrap();
    assert_eq!(good.join().unwrap(), ok);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !asker.request("SERVICES").0[0].contains("providers=1") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    const N: usize = 1000;
    let payload = "x".repeat(16 << 10);
    let writer = asker.writer.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(writer);
        for _ in 0..N {
            w.write_all(format!("REQ work {payload}\n").as_bytes())
                .unwrap();
        }
        w.flush().unwrap();
    });
    let (mut gone, mut none) = (0, 0);
    for _ in 0..N {
        let l = asker.line();
        if l.starts_with("-ERR service_gone ") {
            assert_eq!(none, 0, "service_gone after no_responders");
            gone += 1;
        } else if l.starts_with("-ERR no_responders ") {
            none += 1;
        } else {
            panic!("unexpected answer after {gone} gone, {none} none: {l}");
        }
    }
    sender.join().unwrap();
    // Those it held failed when it was cut (those sent after, if any, found nobody).
    assert!(gone > 0, "{gone} gone, {none} without responders");
    assert!(asker.ok("REQ work x").starts_with("-ERR no_responders "));
    drop(stuck);
}

/// Requesters pipelining while providers come, serve a little, and then unserve or
/// vanish: every request gets exactly one answer, at once (no request is stranded
/// until a timeout), from the provider it was sent to; and once a provider's `UNSERVE`
/// is answered, no request reaches it.
#[test]
fn requests_racing_providers_that_come_and_go_each_get_one_answer() {
    let s = start_with(Config {
        request_timeout: Duration::from_secs(60),
        ..Config::default()
    });
    let addr = s.local_addr();
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    let done = Arc::new(AtomicBool::new(false));
    // Provider rounds so far: requesters go on until there were enough.
    let rounds = Arc::new(AtomicUsize::new(0));
    let mut steady = Client::connect(addr);
    steady.ok("SERVE work");
    let steady_socket = steady.writer.try_clone().unwrap();
    let steady = std::thread::spawn(move || answer_echo(&mut steady, None));
    let churn = {
        let (done, rounds) = (done.clone(), rounds.clone());
        std::thread::spawn(move || {
            while !done.load(SeqCst) && rounds.load(SeqCst) < 400 {
                let round = rounds.fetch_add(1, SeqCst) + 1;
                // Not waiting for the greeting a silent client gets: a request first.
                let mut p = Client::connect_raw(addr);
                p.send("SERVE work");
                assert!(p.line().starts_with("HELLO "));
                // Requests may come before the +OK: they are answered after it.
                let (reply, early) = p.reply();
                assert_eq!(reply, ["+OK"]);
                for r in &early {
                    let (id, payload) = req_push(r, "work", r.split(' ').nth(3).unwrap());
                    p.send(&format!("REPLY {id} {payload}"));
                }
                p.writer
                    .set_read_timeout(Some(Duration::from_millis(5)))
                    .unwrap();
                let (sent, seen) = answer_echo(&mut p, Some(10));
                // Replies to its REPLYs still to come.
                let replies = early.len() as i32 + sent - seen;
                if round % 2 == 0 {
                    // Abruptly gone: what it holds fails with service_gone.
                    drop(p);
                    continue;
                }
                p.writer
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                p.send("UNSERVE work");
                // Requests that come meanwhile are left unanswered: UNSERVE fails them.
                let mut status = 0;
                while status < replies + 1 {
                    let l = p.line();
                    if l.starts_with('+') || l.starts_with('-') {
                        status += 1;
                        if status == replies + 1 {
                            assert_eq!(l, "+OK", "UNSERVE");
                        }
                    }
                }
                p.writer
                    .set_read_timeout(Some(Duration::from_millis(30)))
                    .unwrap();
                while let Some(l) = p.line_or_eof_quick() {
                    assert!(!l.starts_with("REQ "), "a request after UNSERVE's +OK: {l}");
                }
            }
        })
    };
    let requesters: Vec<_> = (0..3)
        .map(|r| {
            let rounds = rounds.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let (mut ok, mut gone) = (0, 0);
                for round in 0..2000 {
                    if rounds.load(SeqCst) >= 40 {
                        break;
                    }
                    let batch: String = (0..20)
                        .map(|i| format!("REQ work {r}-{round}-{i}\n"))
                        .collect();
                    c.send_raw(batch.as_bytes());
                    for i in 0..20 {
                        let l = c.line();
                        if l.starts_with("-ERR service_gone ") {
                            gone += 1;
                        } else {
                            // The answer to this request, not another's.
                            assert_eq!(l, format!("+OK {r}-{round}-{i}"));
                            ok += 1;
                        }
                    }
                }
                (ok, gone)
            })
        })
        .collect();
    let (mut ok, mut gone) = (0, 0);
    for r in requesters {
        let (o, g) = r.join().unwrap();
        ok += o;
        gone += g;
    }
    done.store(true, SeqCst);
    churn.join().unwrap();
    steady_socket.shutdown(std::net::Shutdown::Both).unwrap();
    steady.join().unwrap();
    let rounds = rounds.load(SeqCst);
    assert!(
        ok > 0 && gone > 0 && rounds >= 40,
        "{ok} answered, {gone} gone, {rounds} rounds"
    );
}

/// A provider's loop: answers each `REQ` with its payload, until `most` requests (then
/// returns as soon as no line comes within the read timeout) or the connection ends.
/// Returns how many `REPLY`s it sent and how many replies (status lines) it read.
fn answer_echo(p: &mut Client, most: Option<i32>) -> (i32, i32) {
    let (mut sent, mut seen) = (0, 0);
    while most.is_none_or(|m| sent < m) {
        let Some(l) = p.line_or_eof_quick() else {
            break;
        };
        if l.starts_with('+') || l.starts_with('-') {
            seen += 1;
        }
        if let Some(rest) = l.strip_prefix("REQ ") {
            let mut f = rest.splitn(4, ' ');
            let id = f.next().unwrap();
            let payload = f.nth(2).unwrap_or("");
            p.send(&format!("REPLY {id} {payload}"));
            sent += 1;
        } else if l.starts_with("BYE") {
            break;
        }
    }
    (sent, seen)
}
