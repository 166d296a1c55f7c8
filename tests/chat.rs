//! Clients talking to each other: channels, patterns, direct messages.

mod common;
use common::{start, Client};

#[test]
fn two_clients_chat_through_a_channel_and_directly() {
    let server = start();
    let mut alice = Client::connect(server.local_addr());
    let mut bob = Client::connect(server.local_addr());
    alice.ok("NAME alice");
    bob.ok("NAME bob");
    alice.ok("CREATE lobby");
    alice.ok("SUB lobby");
    bob.ok("SUB lobby");
    assert_eq!(alice.ok("PUB lobby hi bob"), "+OK 2");
    assert_eq!(bob.push(), "MSG lobby alice hi bob");
    // The publisher, being subscribed, gets its own message too.
    assert_eq!(alice.push(), "MSG lobby alice hi bob");
    assert_eq!(bob.ok("PUB lobby hello alice"), "+OK 2");
    assert_eq!(alice.push(), "MSG lobby bob hello alice");
    assert_eq!(bob.push(), "MSG lobby bob hello alice");
    assert_eq!(bob.ok("SEND alice psst: just you"), "+OK");
    assert_eq!(alice.push(), "DM bob psst: just you");
    // Nothing else was delivered to bob.
    assert_eq!(bob.ok("PING"), "+PONG");
}

#[test]
fn pushes_arrive_without_the_receiver_sending_anything() {
    let server = start();
    let mut rx = Client::connect(server.local_addr());
    let mut tx = Client::connect(server.local_addr());
    tx.ok("CREATE t");
    rx.ok("SUB t");
    for i in 0..100 {
        tx.ok(&format!("PUB t m{i}"));
    }
    for i in 0..100 {
        assert_eq!(rx.line(), format!("MSG t {} m{i}", tx.name));
    }
}

#[test]
fn pattern_subscriptions() {
    let server = start();
    let mut p = Client::connect(server.local_addr());
    let mut tx = Client::connect(server.local_addr());
    tx.ok("NAME tx");
    for ch in [
        "news",
        "news.sport",
        "news.sport.eu",
        "news.weather",
        "other.sport",
    ] {
        tx.ok(&format!("CREATE {ch}"));
    }
    // Patterns need no existing channel, and apply to channels created later.
    assert_eq!(p.ok("SUB news.*"), "+OK");
    assert_eq!(p.ok("SUB *.sport"), "+OK");
    assert_eq!(p.ok("SUB future.>"), "+OK");
    assert!(p.ok("SUB news.>.x").starts_with("-ERR bad_args"));
    tx.ok("CREATE future.a.b");

    assert_eq!(tx.ok("PUB news nope"), "+OK 0");
    assert_eq!(tx.ok("PUB news.sport both-patterns-once"), "+OK 1");
    assert_eq!(tx.ok("PUB news.sport.eu nope"), "+OK 0");
    assert_eq!(tx.ok("PUB news.weather w"), "+OK 1");
    assert_eq!(tx.ok("PUB other.sport o"), "+OK 1");
    assert_eq!(tx.ok("PUB future.a.b f"), "+OK 1");
    assert_eq!(p.push(), "MSG news.sport tx both-patterns-once");
    assert_eq!(p.push(), "MSG news.weather tx w");
    assert_eq!(p.push(), "MSG other.sport tx o");
    assert_eq!(p.push(), "MSG future.a.b tx f");

    assert_eq!(p.ok("UNSUB news.*"), "+OK");
    assert_eq!(tx.ok("PUB news.weather w2"), "+OK 0");
    assert_eq!(
        tx.ok("PUB news.sport s2"),
        "+OK 1",
        "still matched by *.sport"
    );
    assert_eq!(p.push(), "MSG news.sport tx s2");
    assert!(p.ok("UNSUB news.*").starts_with("-ERR not_subscribed"));

    // news.> covers every depth below news, but not news itself.
    let mut deep = Client::connect(server.local_addr());
    deep.ok("SUB news.>");
    assert_eq!(tx.ok("PUB news.sport.eu deep"), "+OK 1");
    assert_eq!(deep.push(), "MSG news.sport.eu tx deep");
}

#[test]
fn drop_tells_subscribers_and_stops_delivery() {
    let server = start();
    let mut a = Client::connect(server.local_addr());
    let mut b = Client::connect(server.local_addr());
    a.ok("CREATE tmp");
    b.ok("SUB tmp");
    a.ok("DROP tmp");
    assert_eq!(b.push(), "DROPPED tmp");
    assert!(a.ok("PUB tmp x").starts_with("-ERR no_such_channel"));
    // Re-created, it starts with no subscribers.
    a.ok("CREATE tmp");
    assert_eq!(a.ok("PUB tmp x"), "+OK 0");
    assert!(b.ok("UNSUB tmp").starts_with("-ERR not_subscribed"));
}

#[test]
fn disconnect_removes_subscriptions() {
    let server = start();
    let mut a = Client::connect(server.local_addr());
    let mut b = Client::connect(server.local_addr());
    a.ok("CREATE c");
    b.ok("SUB c");
    b.ok("SUB c.>");
    b.ok("QUIT");
    drop(b);
    let deadline = std::time::Instant::now() + common::WAIT;
    while a.ok("PUB c x") != "+OK 0" {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
