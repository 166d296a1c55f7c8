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
