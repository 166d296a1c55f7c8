//! Every contract command in its text form, over a real socket.

mod common;
use common::{start, Client};

#[test]
fn ping_help_name_whoami_quit() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    assert!(c.name.starts_with("client-"), "{}", c.name);
    assert_eq!(c.ok("PING"), "+PONG");
    assert_eq!(c.ok("ping hello there"), "+PONG hello there");

    let (help, _) = c.request("HELP");
    let verbs = [
        "PING", "HELP", "NAME", "WHOAMI", "CLIENTS", "HISTORY", "CREATE", "DROP", "CHANNELS",
        "SUB", "UNSUB", "PUB", "SEND", "QUIT",
    ];
    for v in verbs {
        assert!(
            help.iter().any(|l| l.starts_with(&format!("* {v}"))),
            "HELP lacks {v}: {help:?}"
        );
    }
    assert_eq!(help.last().unwrap(), &format!("+OK {}", help.len() - 1));
    let (one, _) = c.request("HELP pub");
    assert!(one[0].contains("PUB <channel> <message...>"), "{one:?}");
    assert!(c.ok("HELP nosuch").starts_with("-ERR unknown_command"));

    assert_eq!(c.ok("NAME alice"), "+OK name=alice");
    let me = c.ok("WHOAMI");
    assert!(me.starts_with("+OK id="), "{me}");
    assert!(me.contains(" name=alice addr=127.0.0.1:"), "{me}");
    assert!(me.contains(" since=20"), "{me}");

    assert_eq!(c.ok("QUIT"), "+OK bye");
    assert_eq!(c.line_or_eof(), None, "connection closes after QUIT");
}

#[test]
fn names_are_unique_and_checked() {
    let server = start();
    let mut a = Client::connect(server.local_addr());
    let mut b = Client::connect(server.local_addr());
    assert_eq!(a.ok("NAME alice"), "+OK name=alice");
    assert!(b.ok("NAME alice").starts_with("-ERR name_taken "));
    assert_eq!(
        a.ok("NAME alice"),
        "+OK name=alice",
        "renaming to yourself is fine"
    );
    assert!(
        b.ok("NAME client-99").starts_with("-ERR bad_args "),
        "reserved form"
    );
    assert!(b.ok("NAME bad/name").starts_with("-ERR bad_args "));
    assert!(b
        .ok("NAME")
        .starts_with("-ERR bad_args missing name; usage: NAME <name>"));
    assert!(b
        .ok("NAME a b")
        .starts_with("-ERR bad_args unexpected argument 'b'"));
    // A name is released when its holder leaves.
    a.ok("QUIT");
    drop(a);
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let r = b.ok("NAME alice");
        if r == "+OK name=alice" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "name never released: {r}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn clients_and_history() {
    let server = start();
    let mut a = Client::connect(server.local_addr());
    a.ok("NAME alice");
    let mut b = Client::connect(server.local_addr());
    b.ok("NAME bob");
    let (list, _) = a.request("CLIENTS");
    assert_eq!(list.len(), 3, "{list:?}");
    // Addresses are for admins; a guest sees `-` in their place.
    assert!(
        list[0].starts_with("* ") && list[0].contains(" alice - since="),
        "{list:?}"
    );
    assert!(list[0].contains(" since="), "{list:?}");
    assert!(list[1].contains(" bob "), "{list:?}");
    assert_eq!(list[2], "+OK 2");

    b.ok("QUIT");
    drop(b);
    // bob shows in HISTORY with a disconnect time once the server has seen him go.
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let (hist, _) = a.request("HISTORY");
        let bob = hist.iter().find(|l| l.contains(" bob ")).cloned();
        if let Some(bob) = bob.filter(|l| !l.contains("disconnected=-")) {
            assert!(
                bob.contains("connected=20") && bob.contains("disconnected=20"),
                "{bob}"
            );
            assert!(hist
                .iter()
                .any(|l| l.contains(" alice ") && l.contains("disconnected=-")));
            let (now, _) = a.request("CLIENTS");
            assert_eq!(now.last().unwrap(), "+OK 1", "{now:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob never left: {hist:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn channel_commands() {
    let server = start();
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.ok("CREATE news"), "+OK");
    assert!(c.ok("CREATE news").starts_with("-ERR channel_exists "));
    assert!(c.ok("CREATE bad..name").starts_with("-ERR bad_args "));
    assert!(c.ok("CREATE news.*").starts_with("-ERR bad_args "));
    assert_eq!(c.ok("CREATE sport.eu"), "+OK");
    assert_eq!(c.ok("SUB news"), "+OK");
    assert!(c.ok("SUB typo").starts_with("-ERR no_such_channel "));
    let (chans, _) = c.request("CHANNELS");
    assert_eq!(chans, vec!["* news 1", "* sport.eu 0", "+OK 2"]);
    assert_eq!(c.ok("UNSUB news"), "+OK");
    assert!(c.ok("UNSUB news").starts_with("-ERR not_subscribed "));
    assert!(c.ok("PUB typo hi").starts_with("-ERR no_such_channel "));
    assert!(c
        .ok("PUB news")
        .starts_with("-ERR bad_args missing message"));
    assert_eq!(c.ok("PUB news nobody listens"), "+OK 0");
    assert_eq!(c.ok("DROP news"), "+OK");
    assert!(c.ok("DROP news").starts_with("-ERR no_such_channel "));
    assert!(c.ok("SEND nobody hi").starts_with("-ERR no_such_client "));
}
