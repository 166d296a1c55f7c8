//! The real `clientmain` binary: piped scripts with exact output and exit codes, and
//! an interactive session in a pseudo-terminal.

mod common;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Client;

fn clientmain(addr: std::net::SocketAddr, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clientmain"))
        .args([addr.ip().to_string(), addr.port().to_string()])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("clientmain starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The interactive clientmain in a pseudo-terminal, connected to `addr`.
fn clientmain_in_pty(addr: std::net::SocketAddr) -> rexpect::session::PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clientmain"));
    cmd.args([addr.ip().to_string(), addr.port().to_string()])
        .env("NO_COLOR", "1")
        .env("HOME", std::env::temp_dir());
    rexpect::session::spawn_command(cmd, Some(15_000)).expect("clientmain in a pty")
}

#[test]
fn a_piped_script_prints_each_reply_for_people() {
    let server = common::start();
    let script = "NAME sam\nCREATE news\nCHANNELS\nPING there\n{\"op\":\"ping\",\"id\":7}\n";
    let (code, out, err) = clientmain(server.local_addr(), &[], script);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "OK name=sam\nOK\n  news 0\nOK 1\nPONG there\n{\"ok\":true,\"id\":7,\"pong\":\"\"}\n"
    );
}

#[test]
fn a_failing_command_stops_the_script_with_a_non_zero_exit() {
    let server = common::start();
    let (code, out, _) = clientmain(server.local_addr(), &[], "PING\nSUB nope\nPING after\n");
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "PONG\nerror (no_such_channel): no channel named 'nope' (CREATE it first; CHANNELS lists them)\n"
    );
    let (code, out, _) = clientmain(
        server.local_addr(),
        &["--keep-going"],
        "SUB nope\nPING after\n",
    );
    assert_eq!(
        code, 1,
        "--keep-going runs everything but still reports the failure"
    );
    assert!(out.ends_with("PONG after\n"), "{out}");
}

#[test]
fn one_command_raw_and_json_modes() {
    let server = common::start();
    let (code, out, _) = clientmain(server.local_addr(), &["-c", "PING x", "--raw"], "");
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("HELLO leviathan "), "{out}");
    assert_eq!(lines[1], "+PONG x");
    let (code, out, _) = clientmain(
        server.local_addr(),
        &["--json"],
        "{\"op\":\"ping\",\"data\":\"j\"}\n",
    );
    assert_eq!(code, 0);
    assert_eq!(out, "{\n  \"ok\": true,\n  \"pong\": \"j\"\n}\n");
    let (code, _, err) = clientmain("127.0.0.1:1".parse().unwrap(), &["-c", "PING"], "");
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn wait_keeps_printing_pushes_after_the_script() {
    let server = common::start();
    let addr = server.local_addr();
    let mut admin = Client::connect(addr);
    admin.ok("NAME admin");
    admin.ok("CREATE news");
    let publisher = std::thread::spawn(move || {
        // Publish once the subscriber is in.
        for _ in 0..200 {
            if admin.ok("PUB news breaking") == "+OK 1" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the subscriber never subscribed");
    });
    let (code, out, _) = clientmain(addr, &["--wait", "2"], "SUB news\n");
    publisher.join().unwrap();
    assert_eq!(code, 0);
    assert!(out.starts_with("OK\n"), "{out}");
    assert!(out.contains("[news] admin: breaking\n"), "{out}");
}

#[test]
fn in_a_terminal_a_request_shows_and_the_user_answers_it() {
    let server = common::start();
    let addr = server.local_addr();
    let mut p = clientmain_in_pty(addr);
    p.exp_string("leviathan> ").unwrap();
    p.send_line("NAME oracle").unwrap();
    p.exp_string("OK name=oracle").unwrap();
    p.send_line("SERVE ask").unwrap();
    p.exp_string("OK").unwrap();
    p.exp_string("leviathan> ").unwrap();
    let mut asker = Client::connect(addr);
    asker.ok("NAME ann");
    asker.send("REQ ask what is the answer?");
    p.exp_string("request ").unwrap();
    let (_, id) = p.exp_regex(r"[0-9]+").unwrap();
    p.exp_string(" for ask from ann: what is the answer?")
        .unwrap();
    p.send_line(&format!("REPLY {id} 42")).unwrap();
    assert_eq!(asker.line(), "+OK 42");
    p.exp_string("OK").unwrap();
    p.exp_string("leviathan> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn in_a_terminal_a_published_message_shows_while_nothing_is_typed() {
    let server = common::start();
    let addr = server.local_addr();
    let mut p = clientmain_in_pty(addr);
    p.exp_string("connected: HELLO leviathan").unwrap();
    p.exp_string("leviathan> ").unwrap();
    p.send_line("NAME watcher").unwrap();
    p.exp_string("OK name=watcher").unwrap();
    p.send_line("SUB news.>").unwrap();
    p.exp_string("OK").unwrap();
    p.exp_string("leviathan> ").unwrap();
    // Someone else publishes; the user types nothing.
    let mut other = Client::connect(addr);
    other.ok("NAME bob");
    other.ok("CREATE news.eu");
    assert_eq!(other.ok("PUB news.eu hello from bob"), "+OK 1");
    p.exp_string("[news.eu] bob: hello from bob").unwrap();
    // The prompt still works afterwards, and Ctrl-D leaves cleanly.
    p.send_line("PING still").unwrap();
    p.exp_string("PONG still").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    // Ctrl-C leaves cleanly too.
    let mut p = clientmain_in_pty(addr);
    p.exp_string("leviathan> ").unwrap();
    p.send_control('c').unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn it_says_when_the_server_goes_away_and_when_it_is_back() {
    let mut first = common::start();
    let addr = first.local_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_clientmain"))
        .args([addr.ip().to_string(), addr.port().to_string()])
        .args(["-c", "PING", "--wait", "4"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    first.shutdown();
    std::thread::sleep(Duration::from_millis(300));
    let listener = std::net::TcpListener::bind(addr).expect("the port is free again");
    let _second = leviathan::Server::start(listener, leviathan::Config::default()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("PONG\n"), "{stdout}");
    assert!(
        stdout.contains("server closed the connection: shutdown"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("connection to {addr} lost; reconnecting")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("reconnected to {addr}")),
        "{stderr}"
    );
}

#[test]
fn after_a_reconnect_it_resumes_history_channels_and_says_what_was_lost() {
    let server = common::start();
    let addr = server.local_addr();
    let relay = common::Relay::start(addr);
    let mut admin = Client::connect(addr);
    admin.ok("NAME admin");
    admin.ok("CREATE news HISTORY 100");
    let child = Command::new(env!("CARGO_BIN_EXE_clientmain"))
        .args([relay.addr.ip().to_string(), relay.addr.port().to_string()])
        .args(["--wait", "6"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"NAME reader\nSUB news\n")
        .unwrap();
    let receivers = |admin: &mut Client, want: &str| {
        for _ in 0..250 {
            if admin.ok("PUB news probe") == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("never {want}");
    };
    receivers(&mut admin, "+OK 1");
    admin.ok("PUB news m1");
    admin.ok("PUB news m2");
    std::thread::sleep(Duration::from_millis(200));
    relay.cut();
    receivers(&mut admin, "+OK 0");
    admin.ok("PUB news m3");
    admin.ok("PUB news m4");
    relay.open();
    receivers(&mut admin, "+OK 1");
    admin.ok("PUB news m5");
    std::thread::sleep(Duration::from_millis(300));
    // Away for longer than the history keeps.
    relay.cut();
    receivers(&mut admin, "+OK 0");
    for i in 0..120 {
        admin.ok(&format!("PUB news lost{i}"));
    }
    relay.open();
    receivers(&mut admin, "+OK 1");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let got: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("[news] admin: "))
        .filter(|m| m.starts_with('m'))
        .collect();
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5"], "{stdout}\n{stderr}");
    assert!(stderr.contains("restored: NAME reader"), "{stderr}");
    assert!(stderr.contains("restored: SUB news SINCE "), "{stderr}");
    assert!(
        stderr.contains("messages published on news while disconnected are lost"),
        "{stderr}"
    );
}
