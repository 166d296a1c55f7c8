//! The real `servermain` binary: started, used, and stopped by SIGINT with status 0.

mod common;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Client;

#[test]
fn servermain_serves_and_shuts_down_cleanly_on_sigint() {
    // Its own folder: the checkout's ./data may belong to a server someone is running.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_servermain"))
        .args(["127.0.0.1", "0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("servermain starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a log line");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let mut c = Client::connect(addr);
    c.ok("NAME sam");
    c.ok("CREATE x");
    c.ok("SUB x");
    assert_eq!(c.ok("PUB x hi"), "+OK 1");
    assert_eq!(c.push(), "MSG x sam hi");

    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(c.line(), "BYE shutdown");
    assert_eq!(c.line_or_eof(), None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "servermain did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
    let logs: Vec<String> = rx.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("stopped")), "{logs:?}");
}

#[test]
fn servermain_help_and_bad_args() {
    let out = Command::new(env!("CARGO_BIN_EXE_servermain"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--max-line",
        "--max-connections",
        "--outbox-limit",
        "--workers",
        "HOST",
        "PORT",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_servermain"))
        .args(["127.0.0.1", "notaport"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn debug_logging_shows_connections_and_keeps_the_runtime_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::ServerProcess::start_logging(dir.path(), &["--in-memory"], None, "debug")
        .expect("servermain starts");
    let mut c = Client::connect(server.addr);
    let port = c.writer.local_addr().unwrap().port();
    assert_eq!(c.ok("PING"), "+PONG");
    c.send("QUIT");
    let _ = c.line_or_eof();
    drop(c);
    // Bounded: the close is logged once the connection's coroutine ends.
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !log.iter().any(|l: &String| l.contains("closed after")) {
        if let Ok(l) = server.log.recv_timeout(Duration::from_millis(100)) {
            log.push(l);
        }
    }
    let (_, rest) = server.signal_and_wait(libc::SIGINT);
    log.extend(rest);
    let all = log.join("\n");
    let peer = format!("127.0.0.1:{port}");
    assert!(
        log.iter()
            .any(|l| l.contains("opened") && l.contains(&peer) && l.contains("(tcp)")),
        "no open logged for {peer}: {all}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("closed after") && l.contains(&peer)),
        "no close logged for {peer}: {all}"
    );
    assert!(
        !log.iter()
            .any(|l| l.contains(" may::") || l.contains(" may]")),
        "the runtime's debug logs leaked: {all}"
    );
}

/// The listen backlog is the system's maximum unless lowered: the standard library's 128
/// overflowed in a burst of connections and left clients waiting seconds for SYN retries.
#[test]
fn the_listen_backlog_is_the_systems_maximum_or_the_flag() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    for (args, want) in [
        (&["--in-memory"][..], somaxconn),
        (&["--in-memory", "--listen-backlog", "64"][..], 64),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = common::ServerProcess::start(dir.path(), args).expect("servermain starts");
        assert!(
            server
                .startup_log
                .iter()
                .any(|l| l.contains(&format!("listen backlog {want},"))),
            "{:?}",
            server.startup_log
        );
        // What the kernel holds, as `ss` reports it (Send-Q of a listening socket).
        if let Ok(out) = Command::new("ss")
            .args(["-ltnH", &format!("sport = :{}", server.addr.port())])
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            let fields: Vec<&str> = text.split_whitespace().collect();
            assert_eq!(fields.get(2), Some(&want.to_string().as_str()), "{text}");
        }
        let mut c = Client::connect(server.addr);
        assert_eq!(c.ok("PING"), "+PONG");
    }
}

/// Workers float over the cores unless `--pin-workers` pins each to one: a pinned worker
/// whose core a client process is using waits while another core idles.
#[test]
fn workers_are_pinned_only_when_asked() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        eprintln!("one core: pinned and unpinned threads look alike here; nothing to check");
        return;
    }
    // Threads allowed on one core only, as /proc reports each thread's affinity.
    let pinned_threads = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
            .filter_map(|status| {
                let list = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                    .trim()
                    .to_string();
                Some(!list.contains(',') && !list.contains('-'))
            })
            .filter(|&one| one)
            .count()
    };
    for (args, want_pinned) in [
        (&["--in-memory", "--workers", "2"][..], false),
        (
            &["--in-memory", "--workers", "2", "--pin-workers"][..],
            true,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = common::ServerProcess::start(dir.path(), args).expect("servermain starts");
        let mut c = Client::connect(server.addr);
        assert_eq!(c.ok("PING"), "+PONG");
        let pinned = pinned_threads(server.child.id());
        if want_pinned {
            assert_eq!(pinned, 2, "{args:?}: one thread per worker on one core");
        } else {
            assert_eq!(pinned, 0, "{args:?}: no thread is held to one core");
        }
    }
}
