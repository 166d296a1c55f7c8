//! Several servermain nodes joined through a real redis-server (`--redis`): publications
//! cross nodes once and in order, a node never gets its own back, and a Redis outage
//! leaves local traffic going and heals by itself.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, ServerProcess};

/// One test at a time: each starts a redis-server and two or three nodes, which a
/// 2-core machine running all of them at once would starve.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A redis-server of the test's own on a free loopback port, without persistence;
/// killed when dropped.
struct Redis {
    port: u16,
    child: Child,
    /// What `--requirepass` it was started with.
    password: Option<&'static str>,
}

impl Redis {
    /// Starts one, or `None` (said, and a failure under CI) when redis-server is missing.
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            let msg = "redis-server is missing: apt-get install redis-server";
            assert!(std::env::var("CI").is_err(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        Some(Redis::start_on(port, None))
    }

    fn start_on(port: u16, password: Option<&'static str>) -> Redis {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Redis {
            port,
            child,
            password,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.query(&["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server answers PING");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        match self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// One command's reply.
    fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node of the cluster whose Redis is `redis`.
fn node(dir: &std::path::Path, redis: &Redis) -> ServerProcess {
    node_at(dir, &redis.url())
}

fn node_at(dir: &std::path::Path, url: &str) -> ServerProcess {
    ServerProcess::start(dir, &["--in-memory", "--http-port", "0", "--redis", url])
        .expect("servermain starts")
}

/// Two nodes of the cluster whose Redis is `redis`, both joined (with their folders).
fn joined_pair(redis: &Redis) -> ([tempfile::TempDir; 2], ServerProcess, ServerProcess) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (a, b) = (node(dirs[0].path(), redis), node(dirs[1].path(), redis));
    wait_joined(&a);
    wait_joined(&b);
    (dirs, a, b)
}

/// Waits (bounded) until both links of `node` to Redis are up.
fn wait_joined(node: &ServerProcess) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::metric(node.http_addr(), "cluster_up") != 1.0 {
        assert!(Instant::now() < deadline, "the node joins its cluster");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads lines until nothing comes for `quiet`: what arrived late or twice.
fn drain(c: &mut Client, quiet: Duration) -> Vec<String> {
    c.writer.set_read_timeout(Some(quiet)).unwrap();
    let mut extra = Vec::new();
    while let Some(l) = c.line_or_eof_quick() {
        extra.push(l);
        assert!(extra.len() < 10_000, "an endless stream");
    }
    extra
}

#[test]
fn publications_cross_nodes_once_in_order_and_never_come_back() {
    let _serial = one_at_a_time();
    let Some(redis) = Redis::start() else { return };
    let (_dirs, a, b) = joined_pair(&redis);
    let mut pa = Client::connect(a.addr);
    let mut sa = Client::connect(a.addr);
    let mut sb = Client::connect(b.addr);
    let mut pb = Client::connect(b.addr);
    assert_eq!(pa.ok("CREATE room.1"), "+OK");
    sub_when_there(&mut sb, "room.1");
    assert_eq!(sa.ok("SUB room.1"), "+OK");
    // By the channel and two patterns: each message once all the same.
    for sub in ["SUB room.*", "SUB room.>"] {
        assert_eq!(sb.ok(sub), "+OK");
    }
    // Publishers on both nodes, pipelined: each one's messages in its own order.
    let n = 500;
    pa.pipelined((0..n).map(|i| format!("PUB room.1 a{i}")), 100);
    pb.pipelined((0..n).map(|i| format!("PUB room.1 b{i}")), 100);
    for (who, sub) in [("a", &mut sa), ("b", &mut sb)] {
        let (mut from_a, mut from_b) = (0, 0);
        while from_a + from_b < 2 * n {
            let l = sub.push();
            let text = l.rsplit(' ').next().unwrap();
            if text.starts_with('a') {
                assert_eq!(
                    l,
                    format!("MSG room.1 {} a{from_a}", pa.name),
                    "on node {who}"
                );
                from_a += 1;
            } else {
                assert_eq!(
                    l,
                    format!("MSG room.1 {} b{from_b}", pb.name),
                    "on node {who}"
                );
                from_b += 1;
            }
        }
        let extra = drain(sub, Duration::from_millis(500));
        assert!(extra.is_empty(), "node {who} got more: {extra:?}");
    }
    // JSON crosses as JSON.
    let mut ja = Client::connect(a.addr);
    let r = ja.json(serde_json::json!({"op": "sub", "channel": "room.1"}));
    assert_eq!(r["ok"], true, "{r}");
    // A filter on one node applies to what another publishes.
    let mut fa = Client::connect(a.addr);
    assert_eq!(fa.ok("SUB room.1 WHERE n > 0"), "+OK");
    let r = pb.json(serde_json::json!({"op": "pub", "channel": "room.1", "data": {"n": 0}}));
    assert_eq!(r["ok"], true, "{r}");
    assert!(ja.push().contains(r#""n":0"#));
    let data = serde_json::json!({"n": 1, "s": "two\nlines", "list": [true, null]});
    let r = pb.json(serde_json::json!({"op": "pub", "channel": "room.1", "data": data}));
    assert_eq!(r["ok"], true, "{r}");
    let push: serde_json::Value = serde_json::from_str(&ja.push()).unwrap();
    assert_eq!(push["data"], data, "{push}");
    assert_eq!(push["from"], pb.name.as_str(), "{push}");
    let filtered = fa.push();
    assert!(
        filtered.contains(r#""n":1"#),
        "only n > 0 passes: {filtered}"
    );
    // Each node keeps a key that expires unless refreshed.
    let keys = redis.query(&["KEYS", "leviathan:node:*"]).unwrap();
    let redis::Value::Array(keys) = keys else {
        panic!("{keys:?}")
    };
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in &keys {
        let redis::Value::BulkString(k) = k else {
            panic!("{k:?}")
        };
        let ttl = redis
            .query(&["PTTL", std::str::from_utf8(k).unwrap()])
            .unwrap();
        assert!(
            matches!(ttl, redis::Value::Int(ms) if ms > 0 && ms <= 3000),
            "{ttl:?}"
        );
    }
    assert!(common::metric(a.http_addr(), "cluster_sent_total") >= n as f64);
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::metric(b.http_addr(), "cluster_nodes") != 1.0 {
        assert!(Instant::now() < deadline, "node b sees node a");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(common::metric(b.http_addr(), "cluster_received_total") >= n as f64);
    let nodes = || match redis.query(&["KEYS", "leviathan:node:*"]) {
        Ok(redis::Value::Array(k)) => k.len(),
        other => panic!("{other:?}"),
    };
    // A node that stops says so: its key goes at once.
    let (status, _) = a.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "{status}");
    assert_eq!(nodes(), 1);
    // A node killed outright is gone once its key expires (3 s unrefreshed).
    let mut b = b;
    b.child.kill().unwrap();
    let _ = b.child.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while nodes() > 0 {
        assert!(Instant::now() < deadline, "the killed node's key expires");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Subscribes `c` to `channel`, made on another node: it is there within moments.
fn sub_when_there(c: &mut Client, channel: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.ok(&format!("SUB {channel}"));
        if r.starts_with("+OK") {
            return;
        }
        assert!(r.starts_with("-ERR no_such_channel"), "{r}");
        assert!(Instant::now() < deadline, "{channel} reaches this node");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The channels `CHANNELS` lists on the node at `addr` (JSON), by name.
fn channels(addr: std::net::SocketAddr) -> serde_json::Map<String, serde_json::Value> {
    let r = Client::connect(addr).json(serde_json::json!({"op": "channels"}));
    r["channels"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|ch| (ch["name"].as_str().unwrap().to_string(), ch.clone()))
        .collect()
}

/// Waits (bounded) until `CLIENTS` on `c` says what `ready` looks for; returns its items.
fn clients_until(c: &mut Client, what: &str, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (reply, _) = c.request("CLIENTS");
        let items = reply[..reply.len() - 1].to_vec();
        if ready(&items) {
            return items;
        }
        assert!(Instant::now() < deadline, "{what}: {items:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The item of `CLIENTS` for the client named `name`.
fn listed<'a>(items: &'a [String], name: &str) -> Option<&'a String> {
    items.iter().find(|l| l.split(' ').nth(2) == Some(name))
}

/// The node id `WHOAMI` gives on `c`.
fn node_of(c: &mut Client) -> String {
    let w = c.ok("WHOAMI");
    w.split(' ')
        .find_map(|f| f.strip_prefix("node="))
        .unwrap_or_else(|| panic!("WHOAMI names the node: {w}"))
        .to_string()
}

#[test]
fn names_clients_and_direct_messages_are_cluster_wide() {
    let _serial = one_at_a_time();
    let Some(redis) = Redis::start() else { return };
    let (_dirs, a, b) = joined_pair(&redis);
    let mut ca = Client::connect(a.addr);
    let mut cb = Client::connect(b.addr);
    let (node_a, node_b) = (node_of(&mut ca), node_of(&mut cb));
    assert_ne!(node_a, node_b);
    // Default names never meet: each node numbers its clients in a range of its own.
    assert_ne!(ca.name, cb.name);
    for n in [&ca.name, &cb.name] {
        let id = n.strip_prefix("client-").expect("a default name");
        assert!(id.parse::<u64>().unwrap() > 1_000_000_000, "{n}");
    }
    // A name is granted once in the cluster.
    assert!(ca.ok("NAME alice").starts_with("+OK"));
    let taken = cb.ok("NAME alice");
    assert!(taken.starts_with("-ERR name_taken"), "{taken}");
    assert!(taken.contains("another node"), "{taken}");
    assert!(cb.ok("NAME bob").starts_with("+OK"));
    let r = cb.ok("WHOAMI");
    assert!(r.contains("name=bob"), "{r}");
    // Everyone is listed everywhere, with their node.
    let items = clients_until(&mut ca, "node a lists bob", |i| listed(i, "bob").is_some());
    let bob = listed(&items, "bob").unwrap();
    assert!(bob.ends_with(&format!("via=tcp node={node_b}")), "{bob}");
    assert!(bob.contains("since="), "{bob}");
    let alice = listed(&items, "alice").unwrap();
    assert!(alice.ends_with(&format!("node={node_a}")), "{alice}");
    let mut jb = Client::connect(b.addr);
    let r = jb.json(serde_json::json!({"op": "clients"}));
    let list = r["clients"].as_array().expect("a list");
    let alice = list.iter().find(|c| c["name"] == "alice").expect("alice");
    assert_eq!(alice["node"], node_a.as_str(), "{r}");
    // Direct messages cross, text and JSON.
    assert_eq!(cb.ok("SEND alice hello from b"), "+OK");
    assert_eq!(ca.push(), "DM bob hello from b");
    assert_eq!(ca.ok("SEND bob and back"), "+OK");
    assert_eq!(cb.push(), "DM alice and back");
    let r = jb.json(serde_json::json!({"op": "name", "name": "jay"}));
    assert_eq!(r["ok"], true, "{r}");
    clients_until(&mut ca, "node a lists jay", |i| listed(i, "jay").is_some());
    assert_eq!(ca.ok("SEND jay {\"n\":1}"), "+OK");
    let dm: serde_json::Value = serde_json::from_str(&jb.push()).unwrap();
    assert_eq!(dm["event"], "dm", "{dm}");
    assert_eq!(dm["from"], "alice", "{dm}");
    let r = jb.json(serde_json::json!({"op": "send", "to": "alice", "data": {"x": [1, 2]}}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(ca.push(), r#"DM jay {"x":[1,2]}"#);
    let none = ca.ok("SEND nobody hi");
    assert!(none.starts_with("-ERR no_such_client"), "{none}");
    // Tables stay on their node, and a question about one elsewhere says so.
    assert_eq!(cb.ok("DEFINE scores name:str points:int"), "+OK");
    let r = ca.ok("SELECT scores");
    assert!(r.starts_with("-ERR no_such_table"), "{r}");
    assert!(
        r.contains(&format!(
            "each node holds its own tables, and this is node {node_a}"
        )),
        "{r}"
    );
    // A name given up on one node can be taken on another.
    assert!(ca.ok("NAME alice2").starts_with("+OK"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = cb.ok("NAME alice");
        if r.starts_with("+OK") {
            break;
        }
        assert!(Instant::now() < deadline, "alice is free again: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Who leaves is no longer listed elsewhere.
    assert_eq!(ca.ok("QUIT"), "+OK bye");
    clients_until(&mut cb, "alice2 leaves node b's list", |i| {
        listed(i, "alice2").is_none()
    });

    // A node joining late lists who is there.
    let dir_c = tempfile::tempdir().unwrap();
    let c = node(dir_c.path(), &redis);
    wait_joined(&c);
    let mut cc = Client::connect(c.addr);
    let items = clients_until(&mut cc, "the late node lists alice and jay", |i| {
        listed(i, "alice").is_some() && listed(i, "jay").is_some()
    });
    assert_eq!(items.len(), 3, "alice, jay and itself: {items:?}");
    assert!(cc.ok("NAME carol").starts_with("+OK"));
    clients_until(&mut cb, "node b lists carol", |i| {
        listed(i, "carol").is_some()
    });

    // A node killed outright is forgotten within 5 s of its last refresh: its clients
    // leave the others' lists and its names are free.
    let mut c = c;
    c.child.kill().unwrap();
    let _ = c.child.wait();
    let killed = Instant::now();
    clients_until(&mut cb, "carol's node is forgotten", |i| {
        listed(i, "carol").is_none()
    });
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "{:?}",
        killed.elapsed()
    );
    assert!(cb.ok("NAME carol").starts_with("+OK"));
}

#[test]
fn channels_are_cluster_wide() {
    let _serial = one_at_a_time();
    let Some(redis) = Redis::start() else { return };
    // A node that held a channel before it ever joined a cluster.
    let dir_old = tempfile::tempdir().unwrap();
    let alone = ServerProcess::start(dir_old.path(), &["--http-port", "0"]).unwrap();
    let mut c = Client::connect(alone.addr);
    assert_eq!(c.ok("CREATE old.news HISTORY 5"), "+OK");
    drop(c);
    let (status, _) = alone.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "{status}");

    let (_dirs, a, b) = joined_pair(&redis);
    let mut ca = Client::connect(a.addr);
    let mut cb = Client::connect(b.addr);
    // Made once in the cluster: a second CREATE anywhere is channel_exists.
    assert_eq!(ca.ok("CREATE news"), "+OK");
    let r = cb.ok("CREATE news");
    assert!(r.starts_with("-ERR channel_exists"), "{r}");
    sub_when_there(&mut cb, "news");
    assert_eq!(ca.ok("PUB news hello"), "+OK 0");
    assert_eq!(cb.push(), format!("MSG news {} hello", ca.name));
    // With its options.
    assert_eq!(cb.ok("CREATE talk HISTORY 10 PRESENCE"), "+OK");
    sub_when_there(&mut ca, "talk");
    let talk = channels(a.addr)["talk"].clone();
    assert_eq!(talk["history"], 10, "{talk}");
    assert_eq!(talk["presence"], true, "{talk}");
    // Concurrent CREATEs of one name on two nodes: exactly one wins.
    let (mut xa, mut xb) = (Client::connect(a.addr), Client::connect(b.addr));
    xa.send("CREATE race");
    xb.send("CREATE race");
    let (ra, rb) = (xa.reply().0.remove(0), xb.reply().0.remove(0));
    assert_eq!(
        [&ra, &rb].iter().filter(|r| r.as_str() == "+OK").count(),
        1,
        "{ra} / {rb}"
    );
    // DROP on one node drops it everywhere; its subscribers there are told.
    assert_eq!(cb.ok("DROP news"), "+OK");
    let mut dropped = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while dropped.is_none() {
        assert!(Instant::now() < deadline, "node a drops news too");
        if !channels(a.addr).contains_key("news") {
            dropped = Some(());
        }
    }
    let r = ca.ok("PUB news again");
    assert!(r.starts_with("-ERR no_such_channel"), "{r}");
    assert_eq!(ca.ok("CREATE news"), "+OK");

    // A node joining registers what it held, and learns what the others hold.
    let old = ServerProcess::start(
        dir_old.path(),
        &["--http-port", "0", "--redis", &redis.url()],
    )
    .unwrap();
    wait_joined(&old);
    let mut co = Client::connect(old.addr);
    sub_when_there(&mut co, "talk");
    sub_when_there(&mut cb, "old.news");
    let all = channels(old.addr);
    for name in ["news", "talk", "race", "old.news"] {
        assert!(all.contains_key(name), "{name}: {all:?}");
    }
    assert_eq!(channels(a.addr)["old.news"]["history"], 5);
    let r = ca.ok("CREATE old.news");
    assert!(r.starts_with("-ERR channel_exists"), "{r}");
}

/// Waits (bounded) until `SERVICES` on `c` shows `service` with `remote=<n>`.
fn services_until(c: &mut Client, service: &str, remote: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (reply, _) = c.request("SERVICES");
        let want = format!(" remote={remote}");
        let found = reply
            .iter()
            .any(|l| l.starts_with(&format!("* {service} ")) && l.ends_with(&want));
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service} remote={remote}: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The id of a `REQ` push a provider was given, after checking what it asks.
fn request_id(push: &str, service: &str, from: &str, payload: &str) -> String {
    let parts: Vec<&str> = push.splitn(5, ' ').collect();
    assert_eq!(parts[0], "REQ", "{push}");
    assert_eq!(&parts[2..], &[service, from, payload], "{push}");
    parts[1].to_string()
}

#[test]
fn service_requests_cross_nodes() {
    let _serial = one_at_a_time();
    let Some(redis) = Redis::start() else { return };
    let (_dirs, a, b) = joined_pair(&redis);
    let mut asker = Client::connect(a.addr);
    let mut provider = Client::connect(b.addr);
    let r = asker.ok("REQ weather oslo");
    assert!(r.starts_with("-ERR no_responders"), "{r}");
    assert_eq!(provider.ok("SERVE weather"), "+OK");
    services_until(&mut asker, "weather", 1);
    // Asked on one node, answered on another.
    asker.send("REQ weather oslo");
    let req = request_id(&provider.push(), "weather", &asker.name, "oslo");
    assert_eq!(provider.ok(&format!("REPLY {req} sunny, -3")), "+OK");
    assert_eq!(asker.reply().0, ["+OK sunny, -3"]);
    // JSON both ways, and an id answered whenever ready.
    asker.send(r#"{"op":"req","service":"weather","data":{"city":"bergen"},"id":7}"#);
    let req = request_id(
        &provider.push(),
        "weather",
        &asker.name,
        r#"{"city":"bergen"}"#,
    );
    assert_eq!(
        provider.ok(&format!(r#"REPLY {req} {{"rain":true}}"#)),
        "+OK"
    );
    let r: serde_json::Value = serde_json::from_str(&asker.line()).unwrap();
    assert_eq!(
        r,
        serde_json::json!({"ok": true, "data": {"rain": true}, "id": 7})
    );
    // A provider's FAIL crosses with its code.
    asker.send("REQ weather atlantis");
    let req = request_id(&provider.push(), "weather", &asker.name, "atlantis");
    assert_eq!(
        provider.ok(&format!("FAIL {req} no_city no such place")),
        "+OK"
    );
    assert_eq!(asker.reply().0, ["-ERR no_city no such place"]);
    // A provider that never answers: the asker hears timeout.
    asker.send(r#"{"op":"req","service":"weather","data":"slow","timeout_ms":300}"#);
    let _ = provider.push();
    let r: serde_json::Value = serde_json::from_str(&asker.line()).unwrap();
    assert_eq!(r["error"]["code"], "timeout", "{r}");
    // A provider here goes first.
    let mut local = Client::connect(a.addr);
    assert_eq!(local.ok("SERVE weather"), "+OK");
    asker.send("REQ weather here");
    let req = request_id(&local.push(), "weather", &asker.name, "here");
    assert_eq!(local.ok(&format!("REPLY {req} local")), "+OK");
    assert_eq!(asker.reply().0, ["+OK local"]);
    assert_eq!(local.ok("UNSERVE weather"), "+OK");
    // The provider's node dies while a request waits: service_gone, within a beat or
    // a few of its key's expiry.
    asker.send(r#"{"op":"req","service":"weather","data":"doomed","timeout_ms":20000}"#);
    let _ = provider.push();
    let mut b = b;
    b.child.kill().unwrap();
    let _ = b.child.wait();
    asker
        .writer
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let r: serde_json::Value = serde_json::from_str(&asker.line()).unwrap();
    assert_eq!(r["error"]["code"], "service_gone", "{r}");
    let r = asker.ok("REQ weather again");
    assert!(r.starts_with("-ERR no_responders"), "{r}");
}

/// The next push on `c` that is not about `skip` (its own presence, say).
fn push_not_about(c: &mut Client, skip: &str) -> String {
    loop {
        let p = c.push();
        if !p.ends_with(&format!(" {skip}")) {
            return p;
        }
    }
}

#[test]
fn presence_crosses_nodes() {
    let _serial = one_at_a_time();
    let Some(redis) = Redis::start() else { return };
    let (_dirs, a, b) = joined_pair(&redis);
    let (mut alice, mut bob) = (Client::connect(a.addr), Client::connect(b.addr));
    assert!(alice.ok("NAME alice").starts_with("+OK"));
    assert!(bob.ok("NAME bob").starts_with("+OK"));
    assert_eq!(alice.ok("CREATE lobby PRESENCE"), "+OK");
    assert_eq!(alice.ok("SUB lobby"), "+OK");
    sub_when_there(&mut bob, "lobby");
    assert_eq!(push_not_about(&mut alice, "alice"), "JOIN lobby bob");
    // Everyone, on every node.
    for c in [&mut alice, &mut bob] {
        let (reply, _) = c.request("PRESENCE lobby");
        let mut names: Vec<&str> = reply.iter().filter_map(|l| l.split(' ').nth(1)).collect();
        names.sort();
        assert_eq!(names, ["2", "alice", "bob"], "{reply:?}");
        assert!(reply[0].contains(" since="), "{reply:?}");
    }
    let mut dave = Client::connect(a.addr);
    assert!(dave.ok("NAME dave").starts_with("+OK"));
    assert_eq!(dave.ok("SUB lobby"), "+OK");
    // (Bob may hear of alice too: her JOIN can reach his node after his SUB did.)
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("JOIN lobby dave") {
        assert!(seen.len() < 3, "{seen:?}");
        seen.push(push_not_about(&mut bob, "bob"));
    }
    assert_eq!(push_not_about(&mut alice, "alice"), "JOIN lobby dave");
    // A rename is a LEAVE and a JOIN elsewhere too; so is an UNSUB.
    assert!(bob.ok("NAME bobby").starts_with("+OK"));
    assert_eq!(push_not_about(&mut alice, "alice"), "LEAVE lobby bob");
    assert_eq!(alice.push(), "JOIN lobby bobby");
    assert_eq!(bob.ok("UNSUB lobby"), "+OK");
    assert_eq!(push_not_about(&mut alice, "alice"), "LEAVE lobby bobby");
    // A node that dies: its members leave, once its key expires.
    let mut carol = Client::connect(b.addr);
    assert!(carol.ok("NAME carol").starts_with("+OK"));
    assert_eq!(carol.ok("SUB lobby"), "+OK");
    assert_eq!(push_not_about(&mut alice, "alice"), "JOIN lobby carol");
    let mut b = b;
    b.child.kill().unwrap();
    let _ = b.child.wait();
    alice
        .writer
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    assert_eq!(push_not_about(&mut alice, "alice"), "LEAVE lobby carol");
    let (reply, _) = alice.request("PRESENCE lobby");
    assert_eq!(reply.len(), 3, "alice and dave: {reply:?}");
}

#[test]
fn an_action_asks_a_named_client_on_another_node() {
    let _serial = one_at_a_time();
    let Some(redis) = Redis::start() else { return };
    // A program embedding leviathan, with an action that asks one client's service.
    let app = leviathan::App::new()
        .config(leviathan::Config {
            data_dir: None,
            http: leviathan::server::HttpPort::Off,
            cluster: Some(leviathan::cluster::ClusterSettings {
                url: redis.url(),
                prefix: "leviathan".into(),
            }),
            ..leviathan::Config::default()
        })
        .action(
            "probe",
            "asks one client's status",
            |ctx: &mut leviathan::framework::Ctx, client: String| {
                let answer =
                    ctx.request_client(&client, "status", "how are you", Duration::from_secs(2))?;
                Ok(leviathan::framework::Answer::new(answer))
            },
        );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = app.start(listener).expect("the program starts");
    let dir = tempfile::tempdir().unwrap();
    let b = node(dir.path(), &redis);
    wait_joined(&b);
    let mut bob = Client::connect(b.addr);
    assert!(bob.ok("NAME bob").starts_with("+OK"));
    assert_eq!(bob.ok("SERVE status"), "+OK");
    let mut ann = Client::connect(a.local_addr());
    clients_until(&mut ann, "the program's node lists bob", |i| {
        listed(i, "bob").is_some()
    });
    ann.send(r#"CALL probe "bob""#);
    let req = request_id(&bob.push(), "status", &ann.name, "how are you");
    assert_eq!(bob.ok(&format!("REPLY {req} fine")), "+OK");
    assert_eq!(ann.reply().0, ["+OK fine"]);
    // A named client elsewhere that does not serve it: no_responders, from its node.
    let mut carl = Client::connect(b.addr);
    assert!(carl.ok("NAME carl").starts_with("+OK"));
    clients_until(&mut ann, "carl", |i| listed(i, "carl").is_some());
    let r = ann.ok(r#"CALL probe "carl""#);
    assert!(r.starts_with("-ERR no_responders"), "{r}");
}

#[test]
fn a_slow_subscriber_on_another_node_is_paced_not_cut() {
    let _serial = one_at_a_time();
    let Some(redis) = Redis::start() else { return };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = node(dirs[0].path(), &redis);
    // A small outbox: what the subscriber has not read crowds it soon.
    let args = [
        "--in-memory",
        "--http-port",
        "0",
        "--outbox-limit",
        "2097152",
    ];
    let b = ServerProcess::start(
        dirs[1].path(),
        &[&args[..], &["--redis", &redis.url()]].concat(),
    )
    .expect("servermain starts");
    wait_joined(&a);
    wait_joined(&b);
    let mut publisher = Client::connect(a.addr);
    assert_eq!(publisher.ok("CREATE burst"), "+OK");
    let mut sub = Client::connect(b.addr);
    sub_when_there(&mut sub, "burst");
    // 15 MB, more than the subscriber's outbox and the sockets between hold, published
    // at full speed on the other node to a subscriber that reads slower (it pauses
    // 100 ms every 5,000 messages, so 3 s in all): its node takes from Redis only as
    // fast as the subscriber reads, instead of overflowing its outbox.
    let n = 150_000;
    let from = publisher.name.clone();
    sub.writer.set_read_timeout(Some(common::WAIT)).unwrap();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        for got in 0..n {
            if got % 5_000 == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            line.clear();
            let read = std::io::BufRead::read_line(&mut sub.reader, &mut line).expect("a line");
            assert!(read > 0, "the subscriber was cut after {got} messages");
            assert!(
                line.starts_with(&format!("MSG burst {from} {got:06} ")),
                "{got}: {line}"
            );
        }
    });
    let body = "x".repeat(90);
    publisher.pipelined((0..n).map(|i| format!("PUB burst {i:06} {body}")), 1000);
    reader.join().expect("every message arrives, in order");
    assert_eq!(common::metric(b.http_addr(), "slow_consumers_total"), 0.0);
}

#[test]
fn a_redis_outage_keeps_local_traffic_and_heals() {
    let _serial = one_at_a_time();
    let Some(redis) = Redis::start() else { return };
    let port = redis.port;
    let (_dirs, a, b) = joined_pair(&redis);
    let mut pa = Client::connect(a.addr);
    let mut sa = Client::connect(a.addr);
    let mut sb = Client::connect(b.addr);
    assert_eq!(pa.ok("CREATE room"), "+OK");
    assert_eq!(sa.ok("SUB room"), "+OK");
    sub_when_there(&mut sb, "room");
    assert_eq!(pa.ok("PUB room before"), "+OK 1");
    assert!(sa.push().ends_with(" before"));
    assert!(sb.push().ends_with(" before"));
    assert!(sa.ok("NAME keeper").starts_with("+OK"));
    assert!(sb.ok("NAME bob").starts_with("+OK"));
    clients_until(&mut pa, "node a lists bob", |i| listed(i, "bob").is_some());
    let mut echo = Client::connect(b.addr);
    assert_eq!(echo.ok("SERVE echo"), "+OK");
    let node_b = node_of(&mut echo);

    drop(redis);
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::metric(a.http_addr(), "cluster_up") != 0.0 {
        assert!(Instant::now() < deadline, "the node sees Redis go");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Local traffic goes on; what would have crossed is counted as dropped.
    for i in 0..20 {
        assert_eq!(pa.ok(&format!("PUB room during{i}")), "+OK 1");
        assert!(sa.push().ends_with(&format!(" during{i}")));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::metric(a.http_addr(), "cluster_dropped_total") < 20.0 {
        assert!(
            Instant::now() < deadline,
            "the dropped publications are counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(common::metric(a.http_addr(), "cluster_outages_total") >= 1.0);
    let missed = drain(&mut sb, Duration::from_millis(300));
    assert!(
        missed.is_empty(),
        "nothing crossed without Redis: {missed:?}"
    );
    // What needs the other nodes is refused with a reason, not lost in silence.
    sb.writer.set_read_timeout(Some(common::WAIT)).unwrap();
    let r = pa.ok("NAME newcomer");
    assert!(r.starts_with("-ERR unavailable"), "{r}");
    assert!(!r.contains("redis://"), "no URL to clients: {r}");
    let r = pa.ok("SEND bob hi");
    assert!(r.starts_with("-ERR unavailable"), "{r}");
    for cmd in ["CREATE lonely", "DROP room"] {
        let r = pa.ok(cmd);
        assert!(r.starts_with("-ERR unavailable"), "{cmd}: {r}");
    }

    // Redis comes back on the same port: both nodes rejoin by themselves.
    let redis = Redis::start_on(port, None);
    wait_joined(&a);
    wait_joined(&b);
    sb.writer.set_read_timeout(Some(common::WAIT)).unwrap();
    assert_eq!(pa.ok("PUB room after"), "+OK 1");
    assert!(sa.push().ends_with(" after"));
    let got = sb.push();
    assert_eq!(got, format!("MSG room {} after", pa.name));
    // The new Redis knew nothing: the nodes announced their clients and claimed their
    // names again.
    clients_until(&mut sb, "node b lists keeper again", |i| {
        listed(i, "keeper").is_some()
    });
    let r = sb.ok("NAME keeper");
    assert!(r.starts_with("-ERR name_taken"), "{r}");
    // ... and what they serve.
    let served = redis.query(&["HGET", &format!("leviathan:directory:{node_b}"), "svc:echo"]);
    assert_eq!(served, Ok(redis::Value::BulkString(b"1".to_vec())));
    pa.send("REQ echo ping");
    let req = request_id(&echo.push(), "echo", &pa.name, "ping");
    assert_eq!(echo.ok(&format!("REPLY {req} pong")), "+OK");
    assert_eq!(pa.reply().0, ["+OK pong"]);
    assert_eq!(pa.ok("SEND bob back"), "+OK");
    assert_eq!(sb.push(), format!("DM {} back", pa.name));
    let log: Vec<String> = a.log.try_iter().collect();
    assert!(
        log.iter()
            .any(|l| l.contains("lost the") && l.contains("link to Redis")),
        "{log:?}"
    );
}

#[test]
fn a_bad_redis_url_or_prefix_stops_the_start_and_no_password_is_shown() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let err = ServerProcess::start(dir.path(), &["--in-memory", "--redis", "http://nope"])
        .err()
        .expect("a bad URL refuses the start");
    assert!(err.contains("--redis"), "{err}");
    let err = ServerProcess::start(
        dir.path(),
        &[
            "--in-memory",
            "--redis",
            "redis://u:hunter2@127.0.0.1:1",
            "--redis-prefix",
            "a b",
        ],
    )
    .err()
    .expect("a bad prefix refuses the start");
    assert!(err.contains("--redis-prefix"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // An unreachable Redis is not a reason to refuse: the node serves locally.
    let s = ServerProcess::start(
        dir.path(),
        &["--in-memory", "--redis", "redis://u:hunter2@127.0.0.1:1"],
    )
    .expect("servermain starts without its Redis");
    let mut c = Client::connect(s.addr);
    assert_eq!(c.ok("PING"), "+PONG");
    std::thread::sleep(Duration::from_millis(300));
    let log: Vec<String> = s.log.try_iter().collect();
    let all = [s.startup_log.clone(), log].concat();
    assert!(all.iter().all(|l| !l.contains("hunter2")), "{all:?}");
}

#[test]
fn nodes_log_in_to_a_redis_that_wants_a_password_and_never_show_it() {
    let _serial = one_at_a_time();
    if Redis::start().is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let redis = Redis::start_on(port, Some("s3cret-pw"));
    let (_dirs, a, b) = joined_pair(&redis);
    let dc = tempfile::tempdir().unwrap();
    let (mut pa, mut sb) = (Client::connect(a.addr), Client::connect(b.addr));
    assert_eq!(pa.ok("CREATE room"), "+OK");
    sub_when_there(&mut sb, "room");
    assert_eq!(pa.ok("PUB room with a password"), "+OK 0");
    assert_eq!(sb.push(), format!("MSG room {} with a password", pa.name));
    // A wrong password: the node serves alone and says why, without the password.
    let wrong = node_at(dc.path(), &format!("redis://:not-the-pw@127.0.0.1:{port}"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(common::metric(wrong.http_addr(), "cluster_up"), 0.0);
    let mut c = Client::connect(wrong.addr);
    assert_eq!(c.ok("PING"), "+PONG");
    let logs = |s: &ServerProcess| [s.startup_log.clone(), s.log.try_iter().collect()].concat();
    let said = logs(&wrong);
    assert!(
        said.iter().any(|l| l.contains("cannot reach Redis")),
        "{said:?}"
    );
    for said in [said, logs(&a), logs(&b)] {
        assert!(
            said.iter()
                .all(|l| !l.contains("s3cret-pw") && !l.contains("not-the-pw")),
            "{said:?}"
        );
    }
}
