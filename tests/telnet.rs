//! The real `telnet` client in a pseudo-terminal, as a person uses it: Ctrl-C, and
//! UTF-8 text whose bytes telnet turns into commands.

mod common;
use std::process::Command;

use common::Client;

/// Whether `telnet` is installed; without it the test says how to get it and skips,
/// except under CI, where it fails.
fn telnet_or_skip() -> bool {
    let found = Command::new("telnet").arg("--version").output().is_ok();
    if !found {
        let msg = "the telnet client is not installed (apt-get install -y telnet)";
        assert!(std::env::var("CI").is_err(), "{msg}");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

fn telnet(addr: std::net::SocketAddr) -> rexpect::session::PtySession {
    let mut cmd = Command::new("telnet");
    cmd.args([addr.ip().to_string(), addr.port().to_string()]);
    let mut p = rexpect::session::spawn_command(cmd, Some(10_000)).expect("telnet in a pty");
    p.exp_string("HELLO leviathan").expect("the greeting");
    p
}

#[test]
fn ctrl_c_in_telnet_discards_the_line_and_the_session_goes_on() {
    if !telnet_or_skip() {
        return;
    }
    let server = common::start();
    let mut p = telnet(server.local_addr());
    p.send_line("PING before").unwrap();
    p.exp_string("+PONG before").unwrap();
    // Ctrl-C: telnet sends IAC IP IAC DO TIMING-MARK and shows nothing until answered.
    p.send_control('c').unwrap();
    p.send_line("PING after").unwrap();
    let (_, got) = p.exp_regex(r"\+PONG after|-ERR [a-z_]+").unwrap();
    assert_eq!(got, "+PONG after");
    p.send_line("PING again").unwrap();
    p.exp_string("+PONG again").unwrap();
}

#[test]
fn utf8_that_telnet_mangles_arrives_whole() {
    if !telnet_or_skip() {
        return;
    }
    let server = common::start();
    let addr = server.local_addr();
    let mut listener = Client::connect(addr);
    listener.ok("NAME listener");
    let mut p = telnet(addr);
    // 本 holds 0x9c (sent as IAC BRK), ă 0x83 (IAC IP), Ϛ 0x9a (IAC SUSP), Ï 0x8f (IAC AO).
    p.send_line("SEND listener 本 ă Ϛ Ï ok").unwrap();
    let (_, got) = p.exp_regex(r"\+OK|-ERR [a-z_]+").unwrap();
    assert_eq!(got, "+OK");
    let push = listener.push();
    assert!(push.ends_with(" 本 ă Ϛ Ï ok"), "{push}");
    p.send_line("PING 本").unwrap();
    // rexpect shows the terminal's bytes one char each.
    let as_read: String = "+PONG 本".bytes().map(char::from).collect();
    p.exp_string(&as_read).unwrap();
}
