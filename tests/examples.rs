//! Runs the examples, so they cannot rot. `cargo test` builds them first.

mod common;
use common::example;

use std::process::Command;

#[test]
fn embedded_example_runs_and_shows_the_conversation() {
    let out = Command::new(example("embedded"))
        .output()
        .expect("the example is built by a plain `cargo test` (or `cargo build --examples`)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("server listening on 127.0.0.1:"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("< HELLO leviathan "), "{stdout}");
    assert_eq!(lines[2], "< +OK name=demo");
    assert_eq!(lines[3], "< +OK");
    assert_eq!(lines[4], "< +OK");
    // The publisher is subscribed: its own message, then the receiver count.
    assert_eq!(lines[5], "< MSG greetings demo hello, world");
    assert_eq!(lines[6], "< +OK 1");
    assert_eq!(lines[7], r#"row 1: {"id":1,"name":"ann","age":30}"#);
    assert!(
        lines[8].starts_with("refused: bad_value: column 'age'"),
        "{stdout}"
    );
    assert_eq!(lines[9], "server stopped");
}

/// The services example: a requester keeps asking while its provider is killed and
/// started again; it sees answers, then `no_responders`, then answers from the new one.
#[test]
fn services_example_keeps_working_while_the_provider_restarts() {
    use std::io::BufRead;
    let server = common::start();
    let addr = server.local_addr().to_string();
    let provider = || {
        Command::new(example("services"))
            .args(["provider", &addr, "--seconds", "60"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the example is built by a plain `cargo test`")
    };
    let wait_serving = |p: &mut std::process::Child| {
        let out = p.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert!(line.starts_with("provider "), "{line}");
    };
    let mut first = provider();
    wait_serving(&mut first);
    let requester = Command::new(example("services"))
        .args(["requester", &addr, "--count", "8"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2000));
    let mut second = provider();
    wait_serving(&mut second);
    let out = requester.wait_with_output().unwrap();
    second.kill().unwrap();
    let _ = second.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    let first_pid = first.id().to_string();
    let second_pid = second.id().to_string();
    let by = |pid: &str| {
        lines
            .iter()
            .position(|l| l.contains(&format!("\"provider\":{pid}")))
    };
    let (a, b) = (by(&first_pid), by(&second_pid));
    assert!(
        a.is_some() && b.is_some(),
        "answers from both providers: {text}"
    );
    assert!(a < b, "{text}");
    assert!(
        lines.iter().any(|l| l.ends_with("error no_responders")),
        "{text}"
    );
}
