//! Channel history, resume and presence (DESIGN section 11), over real sockets.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, ServerProcess};
use serde_json::{json, Value};

/// The `offset=` and `epoch=` of a text status line.
fn field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {status:?}"))
}

#[test]
fn create_options_replay_and_offsets_in_text_and_json() {
    let server = common::start();
    let mut c = Client::connect(server.local_addr());
    for (bad, why) in [
        ("CREATE a HISTORY 0", "at least 1"),
        ("CREATE a HISTORY x", "whole number"),
        ("CREATE a TTL 5", "TTL needs HISTORY"),
        ("CREATE a HISTORY 5 TTL 0", "at least 1 second"),
        ("CREATE a HISTORY 1000000", "at most"),
        ("CREATE a PRESENCE PRESENCE", "unexpected argument"),
    ] {
        let r = c.ok(bad);
        assert!(
            r.starts_with("-ERR bad_args") && r.contains(why),
            "{bad}: {r}"
        );
    }
    let r = c.json(json!({"op":"create","channel":"a","history":"many"}));
    assert_eq!(r["error"]["code"], "bad_args", "{r}");
    assert_eq!(c.ok("CREATE news HISTORY 3 TTL 60"), "+OK");
    assert_eq!(c.ok("CREATE plain"), "+OK");
    let r = c.ok("SUB news");
    assert_eq!(field(&r, "offset"), "0", "{r}");
    let epoch = field(&r, "epoch").to_string();
    assert_eq!(epoch.len(), 12);
    for i in 1..=4 {
        assert_eq!(c.ok(&format!("PUB news m{i}")), "+OK 1");
        assert_eq!(c.push(), format!("MSG news {} m{i}", c.name));
    }
    // Three kept: offsets 2, 3, 4.
    let (lines, _) = c.request("REPLAY news");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].starts_with("* 2 20") && lines[0].ends_with(&format!(" {} m2", c.name)));
    assert_eq!(lines[3], format!("+OK 3 offset=4 epoch={epoch}"));
    let (lines, _) = c.request("REPLAY news SINCE 2 LAST 1");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("* 4 "), "{lines:?}");
    let r = c.json(json!({"op":"replay","channel":"news","since":3}));
    assert_eq!(r["count"], 1, "{r}");
    assert_eq!(r["messages"][0]["offset"], 4);
    assert_eq!(r["messages"][0]["data"], "m4");
    assert_eq!(r["epoch"], epoch.as_str());
    assert_eq!(r["offset"], 4);
    // A JSON receiver sees each message's offset and epoch.
    c.json(json!({"op":"pub","channel":"news","data":{"n":5}}));
    let push: Value = serde_json::from_str(&c.push()).unwrap();
    assert_eq!(push["offset"], 5, "{push}");
    assert_eq!(push["epoch"], epoch.as_str());
    assert_eq!(push["data"], json!({"n":5}));
    // A channel without history says so; text MSG lines never change.
    assert!(c.ok("FORMAT text").starts_with("+OK"));
    assert!(c.ok("REPLAY plain").starts_with("-ERR no_history"));
    assert!(c.ok("REPLAY nope").starts_with("-ERR no_such_channel"));
    assert!(c.ok("REPLAY news SINCE").starts_with("-ERR bad_args"));
    assert!(c
        .ok(&format!("SUB plain SINCE 1 EPOCH {epoch}"))
        .starts_with("-ERR no_history"));
    assert!(c
        .ok(&format!("SUB news.* SINCE 1 EPOCH {epoch}"))
        .starts_with("-ERR bad_args"));
    assert!(c.ok("SUB news SINCE 1").starts_with("-ERR bad_args"));
    assert!(
        c.ok(&format!("SUB news SINCE 1 EPOCH {epoch}"))
            .contains("already receive"),
        "a resume on a channel already received would repeat what it got"
    );
    assert_eq!(c.ok("PUB plain hi"), "+OK 0");
    // The same errors in JSON.
    for (req, code) in [
        (json!({"op":"replay","channel":"plain"}), "no_history"),
        (json!({"op":"replay","channel":"nope"}), "no_such_channel"),
        (
            json!({"op":"replay","channel":"news","last":-1}),
            "bad_args",
        ),
        (json!({"op":"presence","channel":"news"}), "no_presence"),
        (json!({"op":"create","channel":"x","ttl":5}), "bad_args"),
        (
            json!({"op":"create","channel":"x","presence":"yes"}),
            "bad_args",
        ),
        (
            json!({"op":"sub","channel":"plain","since":1,"epoch":epoch}),
            "no_history",
        ),
    ] {
        let r = c.json(req.clone());
        assert_eq!(r["error"]["code"], code, "{req}: {r}");
    }
    let r = c.json(json!({"op":"create","channel":"room","presence":true,"history":2,"ttl":9}));
    assert_eq!(r["ok"], true, "{r}");
}

#[test]
fn a_resume_recovers_what_it_can_and_says_when_it_cannot() {
    let server = common::start();
    let addr = server.local_addr();
    let mut p = Client::connect(addr);
    assert_eq!(p.ok("CREATE news HISTORY 5"), "+OK");
    for i in 1..=8 {
        p.ok(&format!("PUB news m{i}"));
    }
    let (lines, _) = p.request("REPLAY news LAST 0");
    let epoch = field(&lines[0], "epoch").to_string();
    // Offsets 4..=8 are kept: from 3 on, everything; from 2, no longer.
    let mut c = Client::connect(addr);
    let (reply, pushes) = c.request(&format!("SUB news SINCE 5 EPOCH {epoch}"));
    assert_eq!(
        reply,
        [format!("+OK recovered=true offset=8 epoch={epoch}")]
    );
    let from = p.name.clone();
    assert_eq!(
        pushes,
        [6, 7, 8].map(|i| format!("MSG news {from} m{i}")),
        "missed messages come first, in order"
    );
    let mut c = Client::connect(addr);
    let (reply, pushes) = c.request(&format!("SUB news SINCE 2 EPOCH {epoch}"));
    assert_eq!(
        reply,
        [format!("+OK recovered=false offset=8 epoch={epoch}")]
    );
    assert!(pushes.is_empty(), "{pushes:?}");
    // Subscribed all the same: live messages come.
    p.ok("PUB news live");
    assert_eq!(c.push(), format!("MSG news {from} live"));
    let mut c = Client::connect(addr);
    let r = c.json(json!({"op":"sub","channel":"news","since":3,"epoch":"000000000000"}));
    assert_eq!(r["history"]["recovered"], false, "{r}");
    let r = c.json(json!({"op":"sub","channel":"news","since":1}));
    assert_eq!(r["error"]["code"], "bad_args", "{r}");
    // Nothing missed: recovered, nothing pushed.
    let mut c = Client::connect(addr);
    let (reply, pushes) = c.request(&format!("SUB news SINCE 9 EPOCH {epoch}"));
    assert_eq!(
        reply,
        [format!("+OK recovered=true offset=9 epoch={epoch}")]
    );
    assert!(pushes.is_empty(), "{pushes:?}");
    // A filtered resume gives only what the filter passes.
    for n in [1, 20, 3, 40] {
        p.json(json!({"op":"pub","channel":"news","data":{"n":n}}));
    }
    let mut c = Client::connect(addr);
    c.send(&format!(
        r#"{{"op":"sub","channel":"news","since":9,"epoch":"{epoch}","where":"n > 10"}}"#
    ));
    let a: Value = serde_json::from_str(&c.line()).unwrap();
    let b: Value = serde_json::from_str(&c.line()).unwrap();
    let ok: Value = serde_json::from_str(&c.line()).unwrap();
    assert_eq!((&a["data"]["n"], &a["offset"]), (&json!(20), &json!(11)));
    assert_eq!((&b["data"]["n"], &b["offset"]), (&json!(40), &json!(13)));
    assert_eq!(ok["history"]["recovered"], true, "{ok}");
}

/// Reads JSON pushes until `want` messages of `channel` came (bounded), returning their
/// offsets.
fn offsets(c: &mut Client, want: usize) -> Vec<u64> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} came",
            got.len()
        );
        let l = c.push();
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|_| panic!("{l}"));
        if v["event"] == "msg" {
            got.push(v["offset"].as_u64().expect("an offset"));
        }
    }
    got
}

#[test]
fn resume_under_running_publishers_gives_every_message_once_in_order() {
    let server = common::start();
    let addr = server.local_addr();
    let mut admin = Client::connect(addr);
    assert_eq!(admin.ok("CREATE feed HISTORY 100000"), "+OK");
    assert_eq!(admin.ok("CREATE other"), "+OK");
    let stop = Arc::new(AtomicBool::new(false));
    // Three publishers throughout: two pipelining (one hop), one that subscribes and
    // unsubscribes between its messages, so its PUBs go through the channel manager.
    let publishers: Vec<_> = (0..3)
        .map(|k| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut p = Client::connect(addr);
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if k == 2 {
                        p.send_raw(b"SUB other\nPUB feed x\nUNSUB other\n");
                        for _ in 0..3 {
                            assert!(p.line().starts_with("+OK"));
                        }
                        sent += 1;
                    } else {
                        let batch: String =
                            (0..20).map(|i| format!("PUB feed {k}-{i}\n")).collect();
                        p.send_raw(batch.as_bytes());
                        for _ in 0..20 {
                            assert!(p.line().starts_with("+OK"));
                        }
                        sent += 20;
                        // Slower than the subscriber reads, so that what it misses
                        // while away stays within the history.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                sent
            })
        })
        .collect();
    let mut c = Client::connect(addr);
    let r = c.json(json!({"op":"sub","channel":"feed"}));
    let epoch = r["history"]["epoch"].as_str().unwrap().to_string();
    let mut last = r["history"]["offset"].as_u64().unwrap();
    let mut checked = 0;
    for round in 0..12 {
        // Live for a while: consecutive offsets, from the first after the one the
        // subscription started after.
        for o in offsets(&mut c, 200) {
            assert_eq!(o, last + 1, "round {round}: {o} after {last}");
            last = o;
            checked += 1;
        }
        // Gone for a moment, then back from the last offset seen.
        drop(c);
        std::thread::sleep(Duration::from_millis(5 + round * 3));
        c = Client::connect(addr);
        c.send(&json!({"op":"sub","channel":"feed","since":last,"epoch":epoch}).to_string());
        // Missed messages, then the reply, then live ones: all consecutive.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no reply to the resume");
            let l = c.line();
            let v: Value = serde_json::from_str(&l).unwrap();
            if v.get("ok").is_some() {
                // Live messages may come before it: `offset` is the newest as of
                // the resume.
                assert_eq!(
                    v["history"]["recovered"], true,
                    "round {round}, from {last}: {v}"
                );
                break;
            }
            if v["event"] == "msg" {
                let o = v["offset"].as_u64().unwrap();
                assert_eq!(o, last + 1, "round {round}: missed message out of order");
                last = o;
                checked += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = publishers.into_iter().map(|p| p.join().unwrap()).sum();
    assert!(checked > 2000 && sent > 0, "checked {checked} of {sent}");
}

#[test]
fn presence_tells_joins_and_leaves_once_per_connection() {
    let server = common::start();
    let addr = server.local_addr();
    let mut a = Client::connect(addr);
    assert!(a.ok("NAME ann").starts_with("+OK"));
    assert_eq!(a.ok("CREATE room.1 PRESENCE"), "+OK");
    assert!(a.ok("PRESENCE nope").starts_with("-ERR no_such_channel"));
    a.ok("CREATE quiet");
    assert!(a.ok("PRESENCE quiet").starts_with("-ERR no_presence"));
    assert_eq!(a.ok("SUB room.1"), "+OK");
    assert_eq!(a.push(), "JOIN room.1 ann");
    let mut b = Client::connect(addr);
    b.ok("NAME bob");
    // Through a pattern and the channel itself: one JOIN.
    b.ok("SUB room.*");
    b.ok("SUB room.1");
    assert_eq!(a.push(), "JOIN room.1 bob");
    assert_eq!(b.push(), "JOIN room.1 bob");
    let (list, _) = a.request("PRESENCE room.1");
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(list[0].starts_with("* ann since=20"), "{list:?}");
    assert!(list[1].starts_with("* bob since=20"), "{list:?}");
    assert_eq!(list[2], "+OK 2");
    // Still subscribed through the pattern: no LEAVE.
    b.ok("UNSUB room.1");
    a.ok("PING");
    let mut c = Client::connect(addr);
    c.json(json!({"op":"name","name":"cy"}));
    c.json(json!({"op":"sub","channel":"room.1"}));
    assert_eq!(a.push(), "JOIN room.1 cy", "no LEAVE for bob came before");
    let j: Value = serde_json::from_str(&c.push()).unwrap();
    assert_eq!(j, json!({"event":"join","channel":"room.1","name":"cy"}));
    // Gone without a word: LEAVE all the same.
    drop(b);
    assert_eq!(a.push(), "LEAVE room.1 bob");
    let l: Value = serde_json::from_str(&c.push()).unwrap();
    assert_eq!(l, json!({"event":"leave","channel":"room.1","name":"bob"}));
    let r = c.json(json!({"op":"presence","channel":"room.1"}));
    assert_eq!(r["count"], 2, "{r}");
    assert_eq!(r["members"][1]["name"], "cy");
    c.json(json!({"op":"unsub","channel":"room.1"}));
    assert_eq!(a.push(), "LEAVE room.1 cy");
    // A rename is told as the old name leaving and the new one joining.
    assert!(a.ok("NAME anna").starts_with("+OK"));
    assert_eq!(a.push(), "LEAVE room.1 ann");
    assert_eq!(a.push(), "JOIN room.1 anna");
    let (list, _) = a.request("PRESENCE room.1");
    assert!(list[0].starts_with("* anna since="), "{list:?}");
}

#[test]
fn a_clean_restart_keeps_history_and_epoch_and_a_crash_changes_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    c.ok("CREATE news HISTORY 3 PRESENCE");
    for i in 1..=4 {
        c.ok(&format!("PUB news m{i}"));
    }
    let (before, _) = c.request("REPLAY news");
    assert_eq!(before.len(), 4, "{before:?}");
    let epoch = field(before.last().unwrap(), "epoch").to_string();
    let (status, logs) = s.signal_and_wait(libc::SIGINT);
    assert!(status.success(), "{logs:?}");

    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    let (after, _) = c.request("REPLAY news");
    assert_eq!(after, before, "same messages, offsets and epoch");
    // A resume across the restart.
    let (reply, pushes) = c.request(&format!("SUB news SINCE 3 EPOCH {epoch}"));
    assert_eq!(
        reply,
        [format!("+OK recovered=true offset=4 epoch={epoch}")]
    );
    assert_eq!(pushes[0], "MSG news client-1 m4", "{pushes:?}");
    c.ok("PUB news m5");
    drop(c);
    drop(s); // kill -9

    let s = ServerProcess::start(dir.path(), &[]).unwrap();
    let mut c = Client::connect(s.addr);
    let (lines, _) = c.request("REPLAY news");
    let status = lines.last().unwrap();
    assert_ne!(field(status, "epoch"), epoch, "a crash starts a new epoch");
    let (reply, _) = c.request(&format!("SUB news SINCE 4 EPOCH {epoch}"));
    assert!(reply[0].starts_with("+OK recovered=false"), "{reply:?}");
    // The channel kept its options.
    assert_eq!(c.push(), format!("JOIN news {}", c.name));
}

#[test]
fn messages_older_than_the_ttl_are_gone() {
    let server = common::start();
    let mut c = Client::connect(server.local_addr());
    c.ok("CREATE short HISTORY 10 TTL 1");
    c.ok("PUB short old");
    std::thread::sleep(Duration::from_millis(1100));
    c.ok("PUB short new");
    let (lines, _) = c.request("REPLAY short");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("* 2 ") && lines[0].ends_with(" new"));
    let epoch = field(&lines[1], "epoch").to_string();
    let mut r = Client::connect(server.local_addr());
    let (reply, pushes) = r.request(&format!("SUB short SINCE 0 EPOCH {epoch}"));
    assert_eq!(
        reply,
        [format!("+OK recovered=false offset=2 epoch={epoch}")],
        "offset 1 expired"
    );
    assert!(pushes.is_empty());
}
