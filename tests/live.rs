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
    assert_eq!(w.ok("WATCH users"), "+OK");
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
    assert_eq!(w.ok("WATCH users WHERE age >= 18"), "+OK");
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
    assert_eq!(
        w.json(json!({"op":"watch","table":"t","where":"n > 1"})),
        json!({"ok":true})
    );
    c.ok("INSERT t n=2");
    let ev: serde_json::Value = serde_json::from_str(&w.push()).unwrap();
    assert_eq!(
        ev,
        json!({"event":"row","table":"t","change":"insert","row":{"id":1,"n":2}})
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
