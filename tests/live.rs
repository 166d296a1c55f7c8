//! Live data over real sockets: WATCH on tables and SUB ... WHERE on channels.

mod common;
use common::{start, Client};
use serde_json::json;

#[test]
fn watch_pushes_every_change() {
    let server = start();
    let mut w = Client::connect(server.local_addr());
    let mut c = Client::connect(server.local_addr());
    c.ok("DEFINE users name:str age:int?");
    assert!(w.ok("WATCH users").starts_with("+OK seq="));
    c.ok("INSERT users name=alice age=30");
    assert_eq!(w.push(), "ROW users insert id=1 name=alice age=30");
    c.ok("UPDATE users 1 age=31");
    assert_eq!(w.push(), "ROW users update id=1 name=alice age=31");
    c.ok("INSERT users name=\"bob b\"");
    c.ok("DELETE users WHERE age IS NULL");
    assert_eq!(w.push(), r#"ROW users insert id=2 name="bob b" age=null"#);
    assert_eq!(w.push(), r#"ROW users delete id=2 name="bob b" age=null"#);
    // Reads push nothing; a watcher's own writes are pushed to it too.
    c.request("SELECT users");
    w.ok("INSERT users name=w");
    assert_eq!(w.push(), "ROW users insert id=3 name=w age=null");
    assert_eq!(w.ok("UNWATCH users"), "+OK");
    c.ok("INSERT users name=late");
    assert_eq!(w.ok("PING"), "+PONG");
    assert!(w.seen_pushes.is_empty(), "{:?}", w.seen_pushes);
}

#[test]
fn watch_where_sends_rows_entering_or_leaving_the_filter() {
    let server = start();
    let mut w = Client::connect(server.local_addr());
    let mut c = Client::connect(server.local_addr());
    c.ok("DEFINE users name:str age:int");
    c.ok("INSERT users name=young age=10");
    assert!(w.ok("WATCH users WHERE age >= 18").starts_with("+OK seq="));
    c.ok("INSERT users name=kid age=5");
    c.ok("INSERT users name=adult age=40");
    assert_eq!(w.push(), "ROW users insert id=3 name=adult age=40");
    c.ok("UPDATE users 1 age=18"); // enters the filter
    assert_eq!(w.push(), "ROW users update id=1 name=young age=18");
    c.ok("UPDATE users 3 age=17"); // leaves it: the watcher learns
    assert_eq!(w.push(), "ROW users update id=3 name=adult age=17");
    c.ok("UPDATE users 2 age=6"); // never in it
    c.ok("DELETE users 2");
    assert_eq!(w.ok("PING"), "+PONG");
    assert!(w.seen_pushes.is_empty(), "{:?}", w.seen_pushes);
    // WATCH again replaces the filter.
    w.ok("WATCH users WHERE name = kid");
    c.ok("INSERT users name=kid age=1");
    assert_eq!(w.push(), "ROW users insert id=4 name=kid age=1");
}

#[test]
fn watch_in_json_and_errors() {
    let server = start();
    let mut w = Client::connect(server.local_addr());
    let mut c = Client::connect(server.local_addr());
    c.ok("DEFINE t n:int");
    let r = w.json(json!({"op":"watch","table":"t","where":"n > 1"}));
    let from = r["watch"]["seq"]
        .as_u64()
        .expect("the change number it starts after");
    c.ok("INSERT t n=2");
    let ev: serde_json::Value = serde_json::from_str(&w.push()).unwrap();
    let seq = ev["seq"].as_u64().expect("each change is numbered");
    assert!(seq > from, "{seq} after {from}");
    assert_eq!(
        ev,
        json!({"event":"row","table":"t","change":"insert","row":{"id":1,"n":2},"seq":seq})
    );
    let err = |w: &mut Client, req| w.json(req)["error"]["code"].as_str().unwrap().to_string();
    assert_eq!(
        err(&mut w, json!({"op":"watch","table":"nope"})),
        "no_such_table"
    );
    assert_eq!(
        err(&mut w, json!({"op":"watch","table":"t","where":"x = 1"})),
        "no_such_column"
    );
    assert_eq!(
        err(&mut w, json!({"op":"watch","table":"t","where":"n = abc"})),
        "bad_where"
    );
    assert_eq!(
        err(&mut w, json!({"op":"watch","table":"t","where":"n >"})),
        "bad_args"
    );
    assert_eq!(
        err(&mut w, json!({"op":"unwatch","table":"other"})),
        "not_watching"
    );
    // Dropping the table tells its watchers and ends the watch.
    c.ok("UNDEFINE t");
    let ev: serde_json::Value = serde_json::from_str(&w.push()).unwrap();
    assert_eq!(ev, json!({"event":"row","table":"t","change":"drop"}));
    assert_eq!(
        err(&mut w, json!({"op":"unwatch","table":"t"})),
        "not_watching"
    );
}

#[test]
fn sub_where_filters_json_messages() {
    let server = start();
    let mut s = Client::connect(server.local_addr());
    let mut p = Client::connect(server.local_addr());
    p.ok("NAME feed");
    p.ok("CREATE prices");
    assert_eq!(s.ok("SUB prices WHERE price > 10 AND sym = ACME"), "+OK");
    let publish = |p: &mut Client, v: serde_json::Value| {
        p.json(json!({"op":"pub","channel":"prices","data":v}))["receivers"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(publish(&mut p, json!({"sym":"ACME","price":12})), 1);
    assert_eq!(publish(&mut p, json!({"sym":"ACME","price":9})), 0);
    assert_eq!(publish(&mut p, json!({"sym":"OTHER","price":50})), 0);
    assert_eq!(publish(&mut p, json!("not an object")), 0);
    assert_eq!(
        p.ok("PUB prices price=99 sym=ACME"),
        "+OK 0",
        "text messages never match a filter"
    );
    assert_eq!(s.push(), r#"MSG prices feed {"sym":"ACME","price":12}"#);
    assert_eq!(s.ok("PING"), "+PONG");
    assert!(s.seen_pushes.is_empty(), "{:?}", s.seen_pushes);
    // SUB again changes the filter; an unfiltered subscription through a pattern
    // delivers everything, once.
    s.ok("SUB prices WHERE price < 5");
    s.ok("SUB prices.>"); // no channel below prices: nothing changes
    assert_eq!(publish(&mut p, json!({"price":1})), 1);
    assert_eq!(s.push(), r#"MSG prices feed {"price":1}"#);
    s.ok("SUB pri*");
    let (chans, _) = s.request("CHANNELS");
    assert_eq!(chans[0], "* prices 1");
    assert_eq!(s.ok("UNSUB prices"), "+OK");
    assert_eq!(publish(&mut p, json!({"price":1})), 0);
    assert!(s
        .ok("SUB prices WHERE price >")
        .starts_with("-ERR bad_args"));
}

#[test]
fn pattern_subscription_with_a_filter() {
    let server = start();
    let mut s = Client::connect(server.local_addr());
    let mut p = Client::connect(server.local_addr());
    p.ok("NAME feed");
    assert_eq!(
        s.json(json!({"op":"sub","channel":"t.*","where":"level = error"})),
        json!({"ok":true})
    );
    p.ok("CREATE t.a");
    p.ok("CREATE t.b");
    p.json(json!({"op":"pub","channel":"t.a","data":{"level":"info"}}));
    p.json(json!({"op":"pub","channel":"t.b","data":{"level":"error","msg":"disk"}}));
    let ev: serde_json::Value = serde_json::from_str(&s.push()).unwrap();
    assert_eq!(ev["channel"], "t.b");
    assert_eq!(ev["data"]["msg"], "disk");
    // Both a filtered and an unfiltered subscription reach t.a: each message once.
    s.json(json!({"op":"sub","channel":"t.a"}));
    p.json(json!({"op":"pub","channel":"t.a","data":{"level":"error"}}));
    let ev: serde_json::Value = serde_json::from_str(&s.push()).unwrap();
    assert_eq!(ev["channel"], "t.a");
    assert_eq!(s.json(json!({"op":"ping"}))["pong"], "");
    assert!(s.seen_pushes.is_empty(), "{:?}", s.seen_pushes);
}

#[test]
fn watch_since_gives_the_missed_changes_or_says_it_cannot() {
    let server = start();
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    c.ok("DEFINE t n:int");
    c.ok("DEFINE never n:int");
    c.ok("INSERT t n=1");
    let mut w = Client::connect(addr);
    let r = w.ok("WATCH t");
    let seq = |l: &str| -> u64 {
        l.split_whitespace()
            .find_map(|f| f.strip_prefix("seq="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no seq= in {l}"))
    };
    let from = seq(&r);
    drop(w);
    // Missed while away: an insert, an update, a delete, and one the filter skips.
    c.ok("INSERT t n=2");
    c.ok("UPDATE t 1 n=10");
    c.ok("INSERT t n=0");
    c.ok("DELETE t 2");
    let mut w = Client::connect(addr);
    let (reply, pushes) = w.request(&format!("WATCH t SINCE {from} WHERE n > 0"));
    assert_eq!(
        pushes,
        [
            "ROW t insert id=2 n=2",
            "ROW t update id=1 n=10",
            "ROW t delete id=2 n=2"
        ]
    );
    assert!(reply[0].starts_with("+OK recovered=true seq="), "{reply:?}");
    let resumed = seq(&reply[0]);
    w.seen_pushes.clear();
    // Then live, nothing twice.
    c.ok("INSERT t n=5");
    assert_eq!(w.push(), "ROW t insert id=4 n=5");
    // In JSON, each missed change carries its number.
    let mut j = Client::connect(addr);
    let r = j.json(json!({"op":"watch","table":"t","since":resumed}));
    assert_eq!(r["watch"]["recovered"], true, "{r}");
    let ev: serde_json::Value = serde_json::from_str(&j.push()).unwrap();
    assert_eq!(ev["row"]["n"], 5, "{ev}");
    assert!(ev["seq"].as_u64().unwrap() > resumed);
    // A table nobody watched keeps nothing; nor does one whose changes went past
    // what it keeps.
    let mut x = Client::connect(addr);
    let (reply, pushes) = x.request("WATCH never SINCE 1");
    assert!(
        reply[0].starts_with("+OK recovered=false seq="),
        "{reply:?}"
    );
    assert!(pushes.is_empty());
    let lines = (0..1100).map(|i| format!("INSERT t n={i}"));
    c.pipelined(lines, 100);
    let (reply, pushes) = x.request(&format!("WATCH t SINCE {resumed}"));
    assert!(
        reply[0].starts_with("+OK recovered=false seq="),
        "{reply:?}"
    );
    assert!(pushes.is_empty(), "{}", pushes.len());
    assert!(x.ok("WATCH t SINCE x").starts_with("-ERR bad_args"));
}

#[test]
fn watch_since_under_a_running_writer_gives_every_change_once_in_order() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let server = start();
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    c.ok("DEFINE t n:int");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let lines = (n..n + 10).map(|i| format!("INSERT t n={i}"));
                c.pipelined(lines, 10);
                n += 10;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // Another watcher throughout, so changes keep flowing to the channel manager
    // while the resuming one is away and while it comes back.
    let mut other = Client::connect(addr);
    assert!(other.ok("WATCH t").starts_with("+OK"));
    let drain = std::thread::spawn(move || while other.line_or_eof_quick().is_some() {});
    let mut w = Client::connect(addr);
    let r = w.json(json!({"op":"watch","table":"t"}));
    let mut last_seq = r["watch"]["seq"].as_u64().unwrap();
    let mut last_n: Option<i64> = None;
    let mut seen = 0;
    let mut take = |l: &str, last_seq: &mut u64| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let s = v["seq"].as_u64().unwrap();
        assert!(s > *last_seq, "{s} after {last_seq}");
        *last_seq = s;
        let n = v["row"]["n"].as_i64().unwrap();
        if let Some(prev) = last_n {
            assert_eq!(n, prev + 1, "a change missed or repeated");
        }
        last_n = Some(n);
        seen += 1;
    };
    for _ in 0..8 {
        for _ in 0..50 {
            let l = w.push();
            take(&l, &mut last_seq);
        }
        drop(w);
        std::thread::sleep(Duration::from_millis(20));
        w = Client::connect(addr);
        w.send(&json!({"op":"watch","table":"t","since":last_seq}).to_string());
        loop {
            let l = w.line();
            if l.contains(r#""ok":"#) {
                assert!(l.contains(r#""recovered":true"#), "{l}");
                break;
            }
            take(&l, &mut last_seq);
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    drop(server);
    drain.join().unwrap();
    assert!(seen >= 400, "{seen}");
}
