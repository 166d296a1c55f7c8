//! The HTTP side over real sockets: health, Prometheus metrics read by a real parser,
//! the JSON API with the wire's errors and rights, and the port flags of servermain.

mod common;

use common::{http, Client, ServerProcess};
use leviathan::Config;

fn get(addr: std::net::SocketAddr, path: &str) -> common::HttpResponse {
    http(addr, "GET", path, &[], "")
}

/// `/metrics` parsed by prometheus-parse, as name (with labels) → value.
fn scrape(addr: std::net::SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    // Every line is a comment or `name[{labels}] value`, every family has HELP and TYPE,
    // and counters end in _total.
    let mut typed = std::collections::BTreeMap::new();
    for line in r.body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(name.starts_with("leviathan_"), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            typed.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with("# HELP ") {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| typed.get(*b).is_some_and(|k| k == "histogram"))
                .unwrap_or(name);
            assert!(typed.contains_key(base), "{line} has no # TYPE before it");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
    let lines = r.body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format");
    assert!(parsed.docs.len() >= 20, "{:?}", parsed.docs);
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                // A histogram by its count (the +Inf bucket), its buckets in order.
                prometheus_parse::Value::Histogram(buckets) => {
                    let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
                    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
                    counts.last().copied().unwrap_or(0.0)
                }
                other => panic!("{other:?}"),
            };
            let labels = s.labels.to_string();
            let key = if labels.is_empty() {
                s.metric
            } else {
                format!("{}{{{labels}}}", s.metric)
            };
            (key, v)
        })
        .collect()
}

#[test]
fn health_and_metrics_follow_what_clients_do() {
    // The main port + 1 by default; another test's socket may hold that port (the
    // server then takes a free one, logged), so a few starts get a chance at it.
    let mut tries = 0;
    let (server, addr) = loop {
        let server = common::start();
        let addr = server.http_addr().expect("an HTTP port by default");
        tries += 1;
        if addr.port() == server.local_addr().port() + 1 || tries == 5 {
            break (server, addr);
        }
    };
    assert_eq!(addr.port(), server.local_addr().port() + 1, "main port + 1");
    let r = get(addr, "/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let before = scrape(addr);
    assert_eq!(before["leviathan_up"], 1.0);
    assert_eq!(before["leviathan_connections"], 0.0);
    let mut a = Client::connect(server.local_addr());
    let mut b = Client::connect(server.local_addr());
    a.ok("CREATE news");
    b.ok("SUB news");
    for i in 0..5 {
        a.ok(&format!("PUB news m{i}"));
    }
    for _ in 0..5 {
        b.push();
    }
    a.ok("DEFINE users name:str");
    a.ok("INSERT users name=ann");
    a.ok("INSERT users name=bob");
    // One request in 16 per connection is timed.
    for _ in 0..48 {
        b.ok("PING");
    }
    let during = scrape(addr);
    let timed = |family: &str| {
        during[&format!(r#"leviathan_request_duration_seconds{{family="{family}"}}"#)]
    };
    assert!(timed("session") >= 3.0, "{during:?}");
    assert_eq!(during["leviathan_connections"], 2.0);
    assert_eq!(during["leviathan_clients"], 2.0);
    assert_eq!(during["leviathan_channels"], 1.0);
    assert_eq!(during["leviathan_subscriptions"], 1.0);
    assert_eq!(during["leviathan_messages_published_total"], 5.0);
    assert_eq!(during["leviathan_messages_delivered_total"], 5.0);
    assert_eq!(during[r#"leviathan_table_rows{table="users"}"#], 2.0);
    assert!(during["leviathan_connections_total"] >= before["leviathan_connections_total"] + 2.0);
    assert!(during["leviathan_received_bytes_total"] > before["leviathan_received_bytes_total"]);
    assert!(during["leviathan_sent_bytes_total"] > before["leviathan_sent_bytes_total"]);
    assert!(during["leviathan_resident_memory_bytes"] > 1e6);
    drop((a, b));
    let deadline = std::time::Instant::now() + common::WAIT;
    while scrape(addr)["leviathan_connections"] != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections never went"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_api_answers_with_the_wire_replies_and_errors() {
    let server = common::start();
    let addr = server.http_addr().unwrap();
    let mut c = Client::connect(server.local_addr());
    c.ok("NAME ann");
    c.ok("CREATE news");
    c.ok("SUB news");
    c.ok("SERVE echo");
    let info = get(addr, "/api/info");
    assert_eq!(info.status, 200);
    assert_eq!(info.header("content-type"), Some("application/json"));
    let v = info.json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["info"]["channels"], 1, "{v}");
    let v = get(addr, "/api/clients").json();
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(v["clients"][0]["name"], "ann");
    assert_eq!(
        v["clients"][0]["addr"],
        serde_json::Value::Null,
        "guests see no addresses"
    );
    let v = get(addr, "/api/channels").json();
    assert_eq!(v["channels"][0]["name"], "news");
    assert_eq!(v["channels"][0]["subscribers"], 1);
    let v = get(addr, "/api/services").json();
    assert_eq!(v["services"][0]["service"], "echo", "{v}");
    assert_eq!(v["services"][0]["providers"], 1, "{v}");
    // Errors: JSON, the wire's shape, a fitting status.
    let r = get(addr, "/api/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let r = http(addr, "DELETE", "/api/info", &[], "");
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    let r = http(addr, "GET", "/api/info", &["Content-Length: x"], "");
    assert_eq!(r.status, 400);
    let r = http(
        addr,
        "GET",
        "/api/info",
        &["Authorization: Bearer nonsense"],
        "",
    );
    assert_eq!(
        r.status, 401,
        "a bad token is refused, not taken as a guest"
    );
    assert_eq!(r.json()["error"]["code"], "unauthorized");
}

#[test]
fn under_auth_required_the_api_needs_a_session_and_checks_rights() {
    let config = Config {
        auth: leviathan::auth::AuthSettings {
            mode: leviathan::auth::AuthMode::Required,
            admin_password: Some("s3cret-pass".into()),
            ..Config::default().auth
        },
        ..Config::default()
    };
    let server = common::start_with(config);
    let addr = server.http_addr().unwrap();
    let r = get(addr, "/api/clients");
    assert_eq!(r.status, 401);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Authorization: Bearer"));
    // Health and metrics stay open.
    assert_eq!(get(addr, "/healthz").status, 200);
    assert_eq!(get(addr, "/metrics").status, 200);
    let mut c = Client::connect(server.local_addr());
    let login = c.ok("LOGIN admin s3cret-pass");
    let token = login
        .split_whitespace()
        .find_map(|f| f.strip_prefix("session="))
        .expect("a session token")
        .to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let r = http(addr, "GET", "/api/clients", &[&bearer], "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["clients"][0]["name"], "admin");
    assert!(
        v["clients"][0]["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "an admin sees addresses, as on the wire: {v}"
    );
}

#[test]
fn servermain_logs_the_http_url_and_honours_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start(dir.path(), &["--in-memory", "--http-port", "0"]).unwrap();
    let http_addr = s.http_addr();
    assert_ne!(http_addr.port(), 0);
    assert_eq!(get(http_addr, "/healthz").status, 200);
    drop(s);
    let s = ServerProcess::start(dir.path(), &["--in-memory", "--no-http"]).unwrap();
    assert!(
        !s.startup_log.iter().any(|l| l.contains("HTTP on")),
        "{:?}",
        s.startup_log
    );
    // A port that is taken stops the start, saying which.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = ServerProcess::start(dir.path(), &["--in-memory", "--http-port", &port])
        .err()
        .expect("servermain refuses to start");
    assert!(err.contains(&format!("HTTP port {port}")), "{err}");
}

#[test]
fn tables_publish_and_calls_over_the_api() {
    use leviathan::framework::{ActionError, Answer, Ctx};
    #[derive(serde::Deserialize)]
    struct Echo {
        text: String,
    }
    fn echo(_ctx: &mut Ctx, req: Echo) -> Result<Answer, ActionError> {
        Ok(Answer::new(req.text))
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = leviathan::App::new()
        .action("echo", "answers with the text it is given", echo)
        .start(listener)
        .unwrap();
    let addr = server.http_addr().unwrap();
    let mut c = Client::connect(server.local_addr());
    c.ok("DEFINE users name:str age:int");
    c.ok("INSERT users name=ann age=30");
    c.ok("INSERT users name=\"bob, jr\" age=12");
    c.ok("INSERT users name==cmd age=40");
    // Rows as JSON, with the WHERE language, order and limit from the query string.
    let r = get(
        addr,
        "/api/tables/users?where=age%20%3E%2020&order=age+desc&limit=1",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        v["rows"],
        serde_json::json!([{"id":3,"name":"=cmd","age":40}]),
        "{v}"
    );
    // And as CSV, formulas guarded as in the data folder.
    let r = get(addr, "/api/tables/users.csv?order=id");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(
        r.body,
        "id,name,age\n1,ann,30\n2,\"bob, jr\",12\n3,'=cmd,40\n"
    );
    for (path, status, code) in [
        ("/api/tables/nope", 404, "no_such_table"),
        ("/api/tables/users?where=age%20%3E", 400, "bad_args"),
        ("/api/tables/users?limit=lots", 400, "bad_args"),
        ("/api/tables/users?frob=1", 400, "bad_args"),
        ("/api/tables/us%20ers", 400, "bad_args"),
        ("/api/tables/users?where=%ZZ", 400, "bad_args"),
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], code, "{path}: {}", r.body);
    }
    // Publishing: a subscriber gets it, from the server.
    c.ok("CREATE news");
    c.ok("SUB news");
    let body = r#"{"channel":"news","data":{"x":1}}"#;
    let r = http(addr, "POST", "/api/publish", &[], body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["receivers"], 1);
    assert_eq!(c.push(), r#"MSG news server {"x":1}"#);
    for (body, status, code) in [
        ("{", 400, "bad_json"),
        ("[1]", 400, "bad_args"),
        (r#"{"channel":"nope","data":1}"#, 404, "no_such_channel"),
        (r#"{"channel":"news"}"#, 400, "bad_args"),
    ] {
        let r = http(addr, "POST", "/api/publish", &[], body);
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], code, "{body}: {}", r.body);
    }
    assert_eq!(get(addr, "/api/publish").status, 405);
    // Calling an action.
    let r = http(addr, "POST", "/api/call/echo", &[], r#"{"text":"hi"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"], "hi", "{}", r.body);
    let r = http(addr, "POST", "/api/call/nope", &[], "{}");
    assert_eq!(r.json()["error"]["code"], "no_such_action", "{}", r.body);
    let r = http(addr, "POST", "/api/call/echo", &[], r#"{"wrong":1}"#);
    assert_eq!(r.json()["error"]["code"], "bad_args", "{}", r.body);
    // A body over --max-line is refused unread.
    let big = "x".repeat((1 << 20) + 1);
    let r = http(addr, "POST", "/api/publish", &[], &big);
    assert_eq!(r.status, 413);
}

#[test]
fn api_keys_act_with_their_role() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let hash = |k: &str| leviathan::auth::token_hash(k);
    std::fs::write(
        &keys,
        format!(
            "# name role sha256\nops admin {}\nnobody nothing {}\n",
            hash("ops-key-1"),
            hash("weak-key-2")
        ),
    )
    .unwrap();
    let config = Config {
        auth: leviathan::auth::AuthSettings {
            mode: leviathan::auth::AuthMode::Required,
            ..Config::default().auth
        },
        api_key_file: Some(keys.clone()),
        ..Config::default()
    };
    let server = common::start_with(config.clone());
    let addr = server.http_addr().unwrap();
    let mut c = Client::connect(server.local_addr());
    assert!(c.ok("LOGIN nobody x").starts_with("-ERR"), "no users here");
    let with = |key: &str, path: &str| {
        let auth = format!("Authorization: Bearer {key}");
        http(addr, "GET", path, &[&auth], "")
    };
    let r = with("ops-key-1", "/api/channels");
    assert_eq!(r.status, 200, "{}", r.body);
    // Addresses for an admin key, none for another.
    let r = with("ops-key-1", "/api/clients");
    assert!(r.json()["clients"][0]["addr"].is_string(), "{}", r.body);
    let r = with("weak-key-2", "/api/clients");
    assert!(r.json()["clients"][0]["addr"].is_null(), "{}", r.body);
    let r = with("ops-key-1", "/api/tables/t");
    assert_eq!(
        r.json()["error"]["code"],
        "no_such_table",
        "admins may read any table"
    );
    let r = with("weak-key-2", "/api/tables/t");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["message"], "read t");
    let r = with("not-a-key", "/api/channels");
    assert_eq!(r.status, 401);
    drop(server);
    // A key file with the key itself in it (not its hash) stops the start, naming the line.
    std::fs::write(&keys, "ops admin ops-key-1\n").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = leviathan::Server::start(listener, config)
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("line 1") && text.contains("SHA-256"),
        "{text}"
    );
}

#[test]
fn healthz_says_starting_and_stopping_while_tasks_run() {
    use leviathan::framework::Ctx;
    use std::time::Duration;
    // A free port for the HTTP side, known before the server has started.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = Config {
        http: leviathan::server::HttpPort::Port(port),
        ..Config::default()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let starting = std::thread::spawn(move || {
        leviathan::App::new()
            .config(config)
            .on_startup("warm up", |_ctx: &mut Ctx| {
                std::thread::sleep(Duration::from_millis(800));
                Ok(())
            })
            .on_shutdown("drain", |_ctx: &mut Ctx| {
                std::thread::sleep(Duration::from_millis(800));
                Ok(())
            })
            .start(listener)
            .unwrap()
    });
    let deadline = std::time::Instant::now() + common::WAIT;
    let mut seen_starting = false;
    while !starting.is_finished() && std::time::Instant::now() < deadline {
        if let Ok(s) = std::net::TcpStream::connect(http_addr) {
            drop(s);
            let r = get(http_addr, "/healthz");
            if r.status == 503 {
                assert_eq!(r.body, "starting\n");
                seen_starting = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen_starting, "/healthz never said starting");
    let mut server = starting.join().unwrap();
    assert_eq!(get(http_addr, "/healthz").status, 200);
    let stopping = std::thread::spawn(move || server.shutdown());
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let r = get(http_addr, "/healthz");
        if r.status == 503 {
            assert_eq!(r.body, "stopping\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never stopping");
        std::thread::sleep(Duration::from_millis(20));
    }
    stopping.join().unwrap();
}

#[test]
fn sighup_reads_the_api_keys_again_and_closed_connections_log_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let hash = leviathan::auth::token_hash;
    std::fs::write(&keys, format!("first admin {}\n", hash("key-one"))).unwrap();
    let args = [
        "--in-memory",
        "--http-port",
        "0",
        "--auth",
        "required",
        "--api-key-file",
        keys.to_str().unwrap(),
    ];
    let s = ServerProcess::start(dir.path(), &args).unwrap();
    let url = s
        .startup_log
        .iter()
        .find_map(|l| l.split("HTTP on http://").nth(1))
        .unwrap();
    let addr: std::net::SocketAddr = url.split('/').next().unwrap().parse().unwrap();
    let with = |key: &str| {
        let auth = format!("Authorization: Bearer {key}");
        http(addr, "GET", "/api/info", &[&auth], "").status
    };
    assert_eq!(with("key-one"), 200);
    assert_eq!(with("key-two"), 401);
    std::fs::write(&keys, format!("second admin {}\n", hash("key-two"))).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + common::WAIT;
    while with("key-two") != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the keys were not read again"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(with("key-one"), 401, "the old key no longer opens anything");
    // A file that does not read keeps the keys in force.
    std::fs::write(&keys, "second admin not-a-hash\n").unwrap();
    unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + common::WAIT;
    let mut log = Vec::new();
    while !log
        .iter()
        .any(|l: &String| l.contains("the API keys stay as they were"))
    {
        assert!(std::time::Instant::now() < deadline, "{log:?}");
        log.extend(s.log.recv_timeout(std::time::Duration::from_millis(100)));
    }
    assert_eq!(with("key-two"), 200);

    // A browser sends many headers (client hints, fetch metadata, cookies): 40 pass.
    let many: Vec<String> = (0..40).map(|i| format!("X-Header-{i}: {i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(http(addr, "GET", "/healthz", &many, "").status, 200);
    // Every request above was on a connection the client then closed: nothing of
    // that is an error for the operator's log.
    std::thread::sleep(std::time::Duration::from_millis(200));
    log.extend(s.log.try_iter());
    assert!(!log.iter().any(|l| l.contains("ERROR")), "{log:#?}");
}

#[test]
fn a_server_stopped_in_process_closes_its_keep_alive_http_connections() {
    use std::io::{Read, Write};
    let server = common::start();
    let addr = server.http_addr().unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(server);
    // The connection is closed by the server, not left to serve on.
    let started = std::time::Instant::now();
    let end = s.read(&mut buf);
    assert!(
        matches!(end, Ok(0))
            || matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{end:?} after {:?}",
        started.elapsed()
    );
}

#[test]
fn journal_bytes_not_yet_synced_show_until_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(Config {
        data_dir: Some(dir.path().to_path_buf()),
        fsync: leviathan::store::journal::FsyncPolicy::No,
        snapshot_secs: 0,
        ..Config::default()
    });
    let addr = server.http_addr().unwrap();
    let mut c = Client::connect(server.local_addr());
    assert_eq!(scrape(addr)["leviathan_journal_unsynced_bytes"], 0.0);
    c.ok("DEFINE notes text:str");
    for i in 0..20 {
        c.ok(&format!("INSERT notes text=note-{i}"));
    }
    // Under --fsync no nothing syncs them but a snapshot.
    let unsynced = scrape(addr)["leviathan_journal_unsynced_bytes"];
    assert!(unsynced > 20.0 * 20.0, "{unsynced}");
    assert!(c.ok("SAVE").starts_with("+OK saved"));
    assert_eq!(scrape(addr)["leviathan_journal_unsynced_bytes"], 0.0);
}
