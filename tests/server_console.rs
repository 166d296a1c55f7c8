//! The server console: servermain on a terminal (a pseudo-terminal here) reads operator
//! commands; not on a terminal, it reads nothing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Client;

#[test]
fn an_operator_lists_kicks_and_stops_from_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_servermain"));
    cmd.args(["127.0.0.1", "0", "--in-memory", "--no-http"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let mut p = rexpect::session::spawn_command(cmd, Some(15_000)).expect("servermain in a pty");
    p.exp_string("server console: type help for commands")
        .unwrap();
    p.exp_string("listening on ").unwrap();
    let (_, addr) = p.exp_regex(r"127\.0\.0\.1:[0-9]+").unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let mut c = Client::connect(addr);
    c.ok("NAME ann");
    c.ok("CREATE news");
    p.send_line("help").unwrap();
    p.exp_string("kick <id>").unwrap();
    p.send_line("clients").unwrap();
    p.exp_regex(r"\* [0-9]+ ann ").unwrap();
    p.exp_string("+OK 1").unwrap();
    p.send_line("channels").unwrap();
    p.exp_string("* news 0").unwrap();
    p.send_line("stats").unwrap();
    p.exp_string("connections=1").unwrap();
    p.send_line("kick 999").unwrap();
    p.exp_string("no connection 999").unwrap();
    p.send_line("frob").unwrap();
    p.exp_string("unknown or incomplete command 'frob'; type help")
        .unwrap();
    p.send_line("log warn").unwrap();
    p.exp_string("logging at most WARN").unwrap();
    let (reply, _) = c.request("WHOAMI");
    let id = reply[0]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("id="))
        .unwrap()
        .to_string();
    p.send_line(&format!("kick {id}")).unwrap();
    p.exp_string(&format!("connection {id} closed (BYE kicked)"))
        .unwrap();
    assert_eq!(c.line(), "BYE kicked");
    assert!(c.line_or_eof().is_none(), "closed after BYE");
    p.send_line("shutdown").unwrap();
    p.exp_string("shutting down").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn off_a_terminal_the_server_reads_no_commands() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_servermain"))
        .args(["127.0.0.1", "0", "--in-memory", "--no-http"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = log.next().expect("a log line").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || log.for_each(drop));
    // A pipe is not an operator: "shutdown" on it is not read.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"shutdown\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "servermain stopped");
    let mut c = Client::connect(addr);
    assert_eq!(c.ok("PING"), "+PONG");
    let _ = child.kill();
    let _ = child.wait();
}
