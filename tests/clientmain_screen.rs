//! What interactive `clientmain` shows on the screen, read back through tmux (a real
//! terminal emulator): each reply on its own lines under the command that asked for it.

mod common;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Client;

/// A tmux server of its own (its own socket), running one program in a 200x40 window.
struct Screen {
    socket: String,
}

impl Screen {
    /// `None` (after saying why) without tmux; under CI a missing tmux fails instead.
    fn start(program: &[&str]) -> Option<Screen> {
        if Command::new("tmux").arg("-V").output().is_err() {
            let msg = "tmux is not installed (apt-get install -y tmux)";
            assert!(std::env::var("CI").is_err(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("leviathan-test-{}-{n}", std::process::id());
        let status = Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x", "200", "-y", "40"])
            .args(program)
            .env("NO_COLOR", "1")
            .env("HOME", std::env::temp_dir())
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux new-session failed");
        Some(Screen { socket })
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `line` and Enter.
    fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "0", "-l", line]);
        self.tmux(&["send-keys", "-t", "0", "Enter"]);
    }

    /// The visible lines, trailing blanks removed.
    fn lines(&self) -> Vec<String> {
        self.tmux(&["capture-pane", "-p", "-t", "0"])
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .skip_while(|l| l.is_empty())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }

    /// Waits (bounded) until the screen ends with `tail` (then a fresh prompt).
    fn wait_for(&self, tail: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.lines();
            let n = lines.len();
            let shown = n > tail.len()
                && lines[n - 1] == "leviathan>"
                && lines[n - 1 - tail.len()..n - 1] == *tail;
            if shown {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "the screen does not end with {tail:?}:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

#[test]
fn each_reply_shows_under_its_command() {
    let server = common::start();
    let addr = server.local_addr();
    let port = addr.port().to_string();
    let bin = env!("CARGO_BIN_EXE_clientmain");
    let Some(screen) = Screen::start(&[bin, "127.0.0.1", &port]) else {
        return;
    };
    screen.wait_for(&["connected: HELLO leviathan 0.1.0 client-1"]);
    screen.type_line("PING one");
    screen.wait_for(&["leviathan> PING one", "PONG one"]);
    screen.type_line("HELP PUB");
    let shown = screen.wait_for(&[
        "leviathan> HELP PUB",
        "  usage: PUB <channel> <message...>",
        r#"  json:  {"op":"pub","channel":"news","data":{"any":"json"}}"#,
        "  publish the rest of the line; answered +OK <receivers>",
        "OK 3",
    ]);
    // The earlier reply is still there above.
    assert!(shown.iter().any(|l| l == "PONG one"), "{shown:?}");
    screen.type_line("SUB news");
    screen.wait_for(&[
        "leviathan> SUB news",
        "error (no_such_channel): no channel named 'news' (CREATE it first; CHANNELS lists them)",
    ]);
    // A push arrives while the user types nothing: it shows above the prompt.
    screen.type_line("NAME watcher");
    screen.wait_for(&["leviathan> NAME watcher", "OK name=watcher"]);
    let mut other = Client::connect(addr);
    other.ok("SEND watcher hello there");
    screen.wait_for(&["OK name=watcher", "(direct) client-2: hello there"]);
}

#[test]
fn a_reconnection_restores_the_session_and_says_what_it_could_not() {
    let mut first = common::start();
    let addr = first.local_addr();
    let port = addr.port().to_string();
    let bin = env!("CARGO_BIN_EXE_clientmain");
    let Some(screen) = Screen::start(&[bin, "127.0.0.1", &port]) else {
        return;
    };
    screen.wait_for(&["connected: HELLO leviathan 0.1.0 client-1"]);
    for (line, reply) in [
        ("NAME watcher", "OK name=watcher"),
        ("CREATE news", "OK"),
        ("SUB news", "OK"),
        ("SUB jobs.>", "OK"),
        ("DEFINE t n:int", "OK"),
    ] {
        screen.type_line(line);
        screen.wait_for(&[&format!("leviathan> {line}"), reply]);
    }
    // Answered with the change number the watch starts after.
    let watch = r#"{"op":"watch","table":"t"}"#;
    screen.type_line(watch);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !screen
        .lines()
        .iter()
        .any(|l| l.starts_with(r#"{"ok":true,"watch":{"seq":"#))
    {
        assert!(Instant::now() < deadline, "{:?}", screen.lines());
        std::thread::sleep(Duration::from_millis(50));
    }
    first.shutdown();
    // An in-memory server comes back on the port: no channel news, no table t.
    std::thread::sleep(Duration::from_millis(300));
    let listener = std::net::TcpListener::bind(addr).expect("the port is free again");
    let _second = leviathan::Server::start(listener, leviathan::Config::default()).unwrap();
    let shown = screen.wait_for(&[
        "restored: NAME watcher",
        "restored: SUB jobs.>",
        "NOT restored: SUB news: error (no_such_channel): no channel named 'news' (CREATE it first; CHANNELS lists them)",
        // Sent as JSON, answered as JSON.
        r#"NOT restored: {"op":"watch","table":"t"}: {"ok":false,"error":{"code":"no_such_table","message":"no table named 't' (TABLES lists them; DEFINE creates one)"}}"#,
        "2 part(s) of this session could not be restored",
    ]);
    assert!(
        shown
            .iter()
            .any(|l| l.starts_with("reconnected to 127.0.0.1:")),
        "{shown:?}"
    );
    // The restored name is the session's again.
    screen.type_line("WHOAMI");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !screen
        .lines()
        .iter()
        .any(|l| l.starts_with("OK id=") && l.contains(" name=watcher "))
    {
        assert!(Instant::now() < deadline, "{}", screen.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
}
