//! The client library against a real server.

mod common;
use std::time::{Duration, Instant};

use leviathan::client::{Client, ClientError, Event, Options};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Quote {
    sym: String,
    price: f64,
}

fn next_event(c: &Client) -> Event {
    c.events()
        .recv_timeout(Duration::from_secs(10))
        .expect("an event in time")
}

#[test]
fn requests_replies_and_typed_errors() {
    let server = common::start();
    let c = Client::connect(&server.local_addr().to_string()).unwrap();
    c.ping().unwrap();
    c.name("lib").unwrap();
    let me = c.call("whoami", serde_json::json!({})).unwrap();
    assert_eq!(me["client"]["name"], "lib");
    c.create("news").unwrap();
    match c.create("news") {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, "channel_exists");
            assert!(message.contains("news"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.subscribe("nope").unwrap_err().code(),
        Some("no_such_channel")
    );
    let r = c.call("frob", serde_json::json!({})).unwrap_err();
    assert_eq!(r.code(), Some("unknown_command"));
    // Tables through the same raw request.
    c.call(
        "define",
        serde_json::json!({"table":"t","columns":["v:int"]}),
    )
    .unwrap();
    let r = c
        .call("insert", serde_json::json!({"table":"t","row":{"v":1}}))
        .unwrap();
    assert_eq!(r["row_id"], 1);
}

#[test]
fn typed_payloads_through_pub_sub_and_direct_messages() {
    let server = common::start();
    let addr = server.local_addr().to_string();
    let a = Client::connect(&addr).unwrap();
    let b = Client::connect(&addr).unwrap();
    a.name("alice").unwrap();
    b.name("bob").unwrap();
    a.create("quotes").unwrap();
    b.subscribe("quotes").unwrap();
    let q = Quote {
        sym: "ACME".into(),
        price: 12.5,
    };
    assert_eq!(a.publish("quotes", &q).unwrap(), 1);
    match next_event(&b) {
        Event::Message(d) => {
            assert_eq!(d.channel.as_deref(), Some("quotes"));
            assert_eq!(d.from, "alice");
            assert_eq!(d.decode::<Quote>().unwrap(), q);
        }
        other => panic!("{other:?}"),
    }
    a.send("bob", "psst").unwrap();
    match next_event(&b) {
        Event::Direct(d) => assert_eq!(d.decode::<String>().unwrap(), "psst"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        a.send("nobody", &1).unwrap_err().code(),
        Some("no_such_client")
    );
    // A filtered subscription, and an event handler on its own thread.
    let (tx, rx) = crossbeam_channel::unbounded();
    b.unsubscribe("quotes").unwrap();
    b.subscribe_where("quotes", Some("price > 100")).unwrap();
    b.on_event(move |e| {
        let _ = tx.send(e);
    });
    assert_eq!(
        a.publish(
            "quotes",
            &Quote {
                sym: "X".into(),
                price: 1.0
            }
        )
        .unwrap(),
        0
    );
    assert_eq!(
        a.publish(
            "quotes",
            &Quote {
                sym: "Y".into(),
                price: 101.0
            }
        )
        .unwrap(),
        1
    );
    match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
        Event::Message(d) => assert_eq!(d.decode::<Quote>().unwrap().sym, "Y"),
        other => panic!("{other:?}"),
    }
}

/// A client that reconnects, with a short request timeout.
fn reconnecting_client(addr: std::net::SocketAddr) -> Client {
    let opts = Options {
        timeout: Duration::from_secs(5),
        ..Options::default()
    };
    Client::connect_with(&addr.to_string(), opts).unwrap()
}

/// A new in-memory server on the port a stopped one used.
fn restart_on(addr: std::net::SocketAddr) -> leviathan::ServerHandle {
    let listener = std::net::TcpListener::bind(addr).expect("the port is free again");
    leviathan::Server::start(listener, leviathan::Config::default()).unwrap()
}

#[test]
fn reconnects_and_restores_name_and_subscriptions() {
    let mut first = common::start();
    let addr = first.local_addr();
    let c = reconnecting_client(addr);
    c.name("node-a").unwrap();
    c.subscribe("jobs.>").unwrap();
    first.shutdown();
    let mut saw_bye = false;
    loop {
        match next_event(&c) {
            Event::Bye { reason } => {
                assert_eq!(reason, "shutdown");
                saw_bye = true;
            }
            Event::Disconnected => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_bye);
    assert!(matches!(c.ping(), Err(ClientError::Disconnected)));
    // The server comes back on the same port; the client finds it within the
    // backoff cap.
    let second = restart_on(addr);
    let started = Instant::now();
    assert_eq!(
        next_event(&c),
        Event::Reconnected {
            not_restored: vec![],
            lost: vec![]
        }
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    let me = c.call("whoami", serde_json::json!({})).unwrap();
    assert_eq!(me["client"]["name"], "node-a", "name restored");
    let p = Client::connect(&second.local_addr().to_string()).unwrap();
    p.create("jobs.build").unwrap();
    assert_eq!(
        p.publish("jobs.build", "go").unwrap(),
        1,
        "subscription restored"
    );
    match next_event(&c) {
        Event::Message(d) => assert_eq!(d.data, "go"),
        other => panic!("{other:?}"),
    }
    c.close();
}

#[test]
fn the_same_api_over_websocket() {
    let server = common::start();
    let addr = server.local_addr();
    let ws = Client::connect(&format!("ws://{addr}/")).unwrap();
    let tcp = Client::connect(&addr.to_string()).unwrap();
    ws.name("web").unwrap();
    let me = ws.call("whoami", serde_json::json!({})).unwrap();
    assert_eq!(me["client"]["via"], "ws");
    tcp.create("room").unwrap();
    ws.subscribe("room").unwrap();
    assert_eq!(
        tcp.publish(
            "room",
            &Quote {
                sym: "W".into(),
                price: 2.0
            }
        )
        .unwrap(),
        1
    );
    match next_event(&ws) {
        Event::Message(d) => assert_eq!(d.decode::<Quote>().unwrap().sym, "W"),
        other => panic!("{other:?}"),
    }
    // Many requests in a row while pushes arrive: replies still match their requests.
    for i in 0..50 {
        assert_eq!(ws.publish("room", &i).unwrap(), 1);
    }
    for i in 0..50 {
        match next_event(&ws) {
            Event::Message(d) => assert_eq!(d.decode::<i32>().unwrap(), i),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        ws.create("room").unwrap_err().code(),
        Some("channel_exists")
    );
    ws.close();
}

#[test]
fn a_reconnection_says_what_it_could_not_restore() {
    let mut first = common::start();
    let addr = first.local_addr();
    let c = reconnecting_client(addr);
    c.name("node-b").unwrap();
    c.create("news").unwrap();
    c.subscribe("news").unwrap();
    c.subscribe("jobs.>").unwrap();
    c.call(
        "define",
        serde_json::json!({"table": "t", "columns": ["n:int"]}),
    )
    .unwrap();
    c.watch("t", Some("n > 1")).unwrap();
    // Also through the generic call: tracked the same way.
    c.call("watch", serde_json::json!({"table": "t"})).unwrap();
    first.shutdown();
    while next_event(&c) != Event::Disconnected {}
    // An in-memory server comes back: no channel news, no table t.
    let _second = restart_on(addr);
    let not_restored = match next_event(&c) {
        Event::Reconnected { not_restored, .. } => not_restored,
        other => panic!("{other:?}"),
    };
    assert_eq!(not_restored.len(), 2, "{not_restored:?}");
    assert!(
        not_restored[0].starts_with("SUB news: ") && not_restored[0].contains("no_such_channel"),
        "{not_restored:?}"
    );
    assert!(
        not_restored[1].starts_with("WATCH t: ") && not_restored[1].contains("no_such_table"),
        "{not_restored:?}"
    );
    let me = c.call("whoami", serde_json::json!({})).unwrap();
    assert_eq!(me["client"]["name"], "node-b", "the name was restored");
    c.close();
}

#[test]
fn a_logged_in_client_resumes_its_session_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || leviathan::Config {
        data_dir: Some(dir.path().join("data")),
        auth: leviathan::auth::AuthSettings {
            mode: leviathan::auth::AuthMode::Required,
            session_ttl: Duration::from_secs(600),
            admin_password: Some("admin-secret-1".into()),
            ..Default::default()
        },
        ..leviathan::Config::default()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut first = leviathan::Server::start(listener, config()).unwrap();
    let addr = first.local_addr();
    let c = reconnecting_client(addr);
    let login = c.login("admin", "admin-secret-1").unwrap();
    assert_eq!(login["user"], "admin");
    c.create("jobs").unwrap();
    c.subscribe("jobs").unwrap();
    first.shutdown();
    while !matches!(next_event(&c), Event::Disconnected) {}
    let listener = std::net::TcpListener::bind(addr).expect("the port is free again");
    let second = leviathan::Server::start(listener, config()).unwrap();
    assert_eq!(
        next_event(&c),
        Event::Reconnected {
            not_restored: vec![],
            lost: vec![]
        }
    );
    let me = c.call("whoami", serde_json::json!({})).unwrap();
    assert_eq!(me["client"]["user"], "admin", "{me}");
    assert_eq!(me["client"]["name"], "admin");
    let p = Client::connect(&second.local_addr().to_string()).unwrap();
    p.login("admin", "admin-secret-1").unwrap();
    assert_eq!(
        p.publish("jobs", "go").unwrap(),
        1,
        "the subscription is back"
    );
    c.logout().unwrap();
    c.close();
}

#[test]
fn history_channels_resume_after_a_reconnect_and_say_what_was_lost() {
    let server = common::start();
    let relay = common::Relay::start(server.local_addr());
    let direct = Client::connect(&server.local_addr().to_string()).unwrap();
    direct
        .call(
            "create",
            serde_json::json!({"channel": "news", "history": 10}),
        )
        .unwrap();
    direct.create("plain").unwrap();
    direct
        .call(
            "define",
            serde_json::json!({"table": "t", "columns": ["n:int"]}),
        )
        .unwrap();
    let c = reconnecting_client(relay.addr);
    c.subscribe("news").unwrap();
    c.subscribe("plain").unwrap();
    c.watch("t", None).unwrap();
    let row = |e: Event| match e {
        Event::Row { row: Some(r), .. } => r["n"].as_i64().unwrap(),
        other => panic!("{other:?}"),
    };
    let text = |e: Event| match e {
        Event::Message(d) => d.data.as_str().unwrap_or_default().to_string(),
        other => panic!("{other:?}"),
    };
    for i in 1..=3 {
        direct.publish("news", &format!("m{i}")).unwrap();
    }
    for i in 1..=3 {
        assert_eq!(text(next_event(&c)), format!("m{i}"));
    }
    // Away while four more are published; back, it gets them first, in order.
    relay.cut();
    assert_eq!(next_event(&c), Event::Disconnected);
    for i in 4..=7 {
        direct.publish("news", &format!("m{i}")).unwrap();
    }
    direct.publish("plain", "gone").unwrap();
    for n in [1, 2] {
        direct
            .call("insert", serde_json::json!({"table": "t", "row": {"n": n}}))
            .unwrap();
    }
    relay.open();
    for i in 4..=7 {
        assert_eq!(text(next_event(&c)), format!("m{i}"));
    }
    assert_eq!(row(next_event(&c)), 1, "row changes missed come too");
    assert_eq!(row(next_event(&c)), 2);
    assert_eq!(
        next_event(&c),
        Event::Reconnected {
            not_restored: vec![],
            lost: vec![]
        }
    );
    direct.publish("news", "m8").unwrap();
    assert_eq!(text(next_event(&c)), "m8", "live again, nothing twice");
    // Away for longer than the history holds: told so.
    relay.cut();
    assert_eq!(next_event(&c), Event::Disconnected);
    for i in 9..=30 {
        direct.publish("news", &format!("m{i}")).unwrap();
    }
    relay.open();
    assert_eq!(
        next_event(&c),
        Event::Reconnected {
            not_restored: vec![],
            lost: vec!["SUB news".to_string()]
        }
    );
    direct.publish("news", "m31").unwrap();
    assert_eq!(text(next_event(&c)), "m31");
}
